"""Email address validation and the one normal form every lookup uses (pure)."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from .errors import InvalidAddress


def normalize(address: str) -> str:
    """The address as stored and compared: domain in IDNA ASCII, all lower case.

    Lower-casing the local part is what every large mailbox provider does in practice, and
    it means a refusal by `An@Example.vn` also covers `an@example.vn`.
    """
    raw = (address or "").strip()
    if not raw:
        raise InvalidAddress("an email address is required")
    if any(c in raw for c in "\r\n\x00"):
        raise InvalidAddress("the email address contains a line break")
    try:
        valid = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{raw!r} is not a valid email address: {exc}") from None
    return (valid.ascii_email or valid.normalized).lower()
