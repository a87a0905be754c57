"""Email addresses and phone numbers: validation and the one normal form every lookup uses
(pure)."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from .errors import InvalidAddress, InvalidInput

# Numbers written without a country code are read as Vietnamese ones, as people there write
# them ("0912 345 678").
PHONE_REGION = "VN"


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


def normalize_phone(number: str | None) -> str | None:
    """A phone number in E.164 ("+84912345678"), so "0912 345 678" and "+84 912 345 678" are
    one number wherever it is stored, exported or erased; None when none was given."""
    text = (number or "").strip()
    if not text:
        return None
    try:
        parsed = phonenumbers.parse(text, PHONE_REGION)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        raise InvalidInput(
            f"{text!r} is not a phone number: write it with its country code,"
            " e.g. +84 912 345 678, or as dialled in Vietnam, e.g. 0912 345 678"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
