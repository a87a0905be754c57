"""Reading bounces, complaints and mailto refusals: pure parsing, no database, no I/O.

`parse_report(data)` turns the raw bytes of one inbound message into a `Report`:

- ``dsn``: a delivery status notification (RFC 3464, ``multipart/report;
  report-type=delivery-status``), one `Failure` per recipient block;
- ``arf``: an abuse/feedback report (RFC 5965, ``report-type=feedback-report``);
- ``detected``: no standard structure, but one of Mailman's heuristic detectors
  (flufl.bounce: qmail, Exim, Exchange, Postfix, Yahoo, ...) named failed addresses;
- ``refusal``: a mail to the ``mailto:`` refusal address ("unsubscribe TOKEN", ST-3);
- ``unreadable``: anything else (auto-replies, read receipts, garbage), with a one-line reason.

It never raises: whatever goes wrong becomes ``kind="unreadable"`` (BN-5: a report that
cannot be read is logged and skipped, never a crash). Taking the message apart (MIME parts,
header blocks, flufl.bounce's heuristics) is `gateway.bounce_mime`'s job; this module says
what the parts mean.

Acting on a report (matching it to a sent message, suppressing) belongs to the caller:
`verp_tokens` extracts the signed token from the envelope recipient (BN-5, first choice),
`Report.message_ids` carries the original Message-ID (second choice) and the failed
addresses themselves are the third (``gateway bounces ingest`` only).
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.utils import getaddresses, parseaddr

from .bounce_mime import (
    clean_address,
    diagnostic_text,
    enhanced_status,
    has_part,
    header_blocks,
    header_line,
    header_lines,
    is_auto_reply,
    message_ids_in,
    one_line,
    originals_in,
    report_type_of,
    run_detectors,
    text_bodies,
    walk,
)

__all__ = ["Failure", "Report", "parse_report", "refusal_token", "verp_tokens"]

_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]+")
_UNSUBSCRIBE_RE = re.compile(r"\bunsubscribe(?:\s+|%20|\s*[:=]\s*)([A-Za-z0-9_.-]+)", re.IGNORECASE)
_VERP_TOKEN = r"[A-Za-z0-9_-]+"
_MESSAGE_ID_LINE_RE = re.compile(r"^message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)

#: DSN Action values that are not failures at all (RFC 3464 section 2.3.3).
_NOT_FAILED = frozenset({"delivered", "relayed", "expanded"})


@dataclass(frozen=True)
class Failure:
    """One recipient named by a report.

    ``kind`` classifies it; the status code decides, then the action:

    ==========================================  ==========  =====================================
    status / action                             kind        rule
    ==========================================  ==========  =====================================
    action delivered / relayed / expanded       ``ignore``  not a failure
    status 2.x.x                                ``ignore``  success
    action delayed (any status)                 ``soft``    BN-3: not final, the MTA retries
    status 5.7.x                                ``policy``  BN-2: sender-side (SPF, DKIM, DMARC,
                                                            reputation): alert, never suppress
    status 5.2.2 (mailbox full)                 ``soft``    BN-3: clears up; counted, not final
    status 5.1.x, 5.2.1                         ``hard``    BN-1: the address is gone/disabled
    any other 5.x.x                             ``hard``    permanent per RFC 3463
    status 4.x.x (also with action failed)      ``soft``    BN-3: the MTA gave up on a temporary
                                                            condition (e.g. 4.4.7 expired)
    no status, action failed                    ``hard``    e.g. flufl.bounce permanent failures
    no status, no/unknown action                ``soft``    unknown: counted, never suppresses
    ==========================================  ==========  =====================================

    5.2.2 is "permanent" in RFC 3463, but a full mailbox usually empties again and most
    senders treat it as soft; it only suppresses through the BN-3 repeat threshold.
    """

    address: str  # the failed recipient, lowercased
    status: str | None  # RFC 3463 enhanced code like "5.1.1", None if unknown
    action: str | None  # failed | delayed | delivered | relayed | expanded, None if unknown
    diagnostic: str  # Diagnostic-Code text without the "smtp;" type, one line, <= 200 chars

    @property
    def kind(self) -> str:
        """One of "hard", "policy", "soft", "ignore" (see the class docstring)."""
        action = self.action
        if action in _NOT_FAILED:
            return "ignore"
        status = self.status
        if status is not None and status.startswith("2."):
            return "ignore"
        if action == "delayed":
            return "soft"
        if status is None:
            return "hard" if action == "failed" else "soft"
        if status.startswith("5.7."):
            return "policy"
        if status == "5.2.2":
            return "soft"
        if status.startswith("5."):
            return "hard"
        return "soft"


@dataclass(frozen=True)
class Report:
    """What one inbound message says. ``kind`` is one of:

    ``dsn`` | ``arf`` | ``detected`` | ``refusal`` | ``unreadable``.

    - ``failures``: one per recipient for ``dsn`` (delivered/relayed ones too, with
      kind "ignore") and ``detected``; empty otherwise.
    - ``message_ids``: Message-ID(s) of the original message, angle brackets kept, from the
      report's message/rfc822, text/rfc822-headers or message/rfc822-headers part (for
      ``detected`` also from a copy of the original quoted in the body text).
    - ``feedback_type``: ARF Feedback-Type, lowercased (abuse, fraud, virus, other, not-spam ...).
    - ``complainant``: ARF: the original recipient (Original-Rcpt-To, else the To of the
      original message); refusal: the From address. Lowercased.
    - ``token``: refusal: the token after "unsubscribe" (not verified here).
    - ``reason``: one line: a short summary, or why the message is unreadable.
    """

    kind: str
    failures: tuple[Failure, ...] = ()
    message_ids: tuple[str, ...] = ()
    feedback_type: str | None = None
    complainant: str | None = None
    reason: str = ""
    token: str | None = None


# ---------------------------------------------------------------- the report kinds


def _parse_dsn(msg: Message) -> Report | None:
    failures: list[Failure] = []
    for part in walk(msg):
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        blocks = header_blocks(part)
        # The first block is per-message (Reporting-MTA, ...); recipients follow. Some MTAs
        # put everything in one block, so look for recipient fields in every block.
        for block in blocks:
            final = header_line(block, "Final-Recipient")
            original = header_line(block, "Original-Recipient")
            address = None
            # Original-Recipient is the address as we sent it (before aliasing/forwarding).
            for candidate in (original, final):
                if candidate:
                    address = clean_address(candidate)
                    if address:
                        break
            if address is None:
                continue
            action_text = (header_line(block, "Action") or "").lower()
            action = action_text.split()[0].rstrip(";,") if action_text.split() else None
            if action == "error":  # opensmtpd's non-standard word for "failed"
                action = "failed"
            diagnostic_raw = header_line(block, "Diagnostic-Code")
            failures.append(
                Failure(
                    address=address,
                    status=enhanced_status(header_line(block, "Status"), diagnostic_raw),
                    action=action or None,
                    diagnostic=diagnostic_text(diagnostic_raw),
                )
            )
    if not failures:
        return None
    summary = ", ".join(f"{f.address} {f.kind} {f.status or f.action or '?'}" for f in failures)
    return Report(
        kind="dsn",
        failures=tuple(failures),
        message_ids=message_ids_in(originals_in(msg)),
        reason=one_line(f"delivery status for {len(failures)} recipient(s): {summary}"),
    )


def _parse_arf(msg: Message) -> Report | None:
    fields: Message | None = None
    for part in walk(msg):
        if part.get_content_type() == "message/feedback-report":
            blocks = header_blocks(part)
            if blocks:
                fields = blocks[0]
                break
    if fields is None:
        return None
    feedback_type = (header_line(fields, "Feedback-Type") or "").lower() or None
    originals = originals_in(msg)
    complainant = None
    for value in header_lines(fields, "Original-Rcpt-To"):
        complainant = clean_address(value)
        if complainant:
            break
    if complainant is None:
        for headers in originals:
            for _, addr in getaddresses(header_lines(headers, "To")):
                complainant = clean_address(addr)
                if complainant:
                    break
            if complainant:
                break
    return Report(
        kind="arf",
        message_ids=message_ids_in(originals),
        feedback_type=feedback_type,
        complainant=complainant,
        reason=one_line(
            f"feedback report ({feedback_type or 'no Feedback-Type'})"
            f" from {complainant or 'an unknown recipient'}"
        ),
    )


def _detect(msg: Message, data: bytes) -> Report | None:
    temporary, permanent = run_detectors(msg, data)
    failures: list[Failure] = []
    seen: set[str] = set()
    for addresses, action in ((permanent, "failed"), (temporary, "delayed")):
        for raw in sorted(addresses):
            text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
            address = clean_address(text)
            if address and address not in seen:
                seen.add(address)
                failures.append(Failure(address=address, status=None, action=action, diagnostic=""))
    if not failures:
        return None
    originals = originals_in(msg)
    ids = list(message_ids_in(originals))
    if not ids:  # qmail and friends quote the original inline
        for body in text_bodies(msg):
            for match in _MESSAGE_ID_LINE_RE.finditer(body):
                if match.group(1) not in ids:
                    ids.append(match.group(1))
    summary = ", ".join(f"{f.address} {f.kind}" for f in failures)
    return Report(
        kind="detected",
        failures=tuple(failures),
        message_ids=tuple(ids),
        reason=one_line(f"non-standard bounce naming {len(failures)} address(es): {summary}"),
    )


def _parse(data: bytes) -> Report:
    msg = email.message_from_bytes(data, policy=policy.compat32)
    if not msg.keys() and not data.strip():
        return Report(kind="unreadable", reason="empty message")
    report_type = report_type_of(msg)
    if report_type == "feedback-report" or has_part(msg, "message/feedback-report"):
        arf = _parse_arf(msg)
        if arf is not None:
            return arf
    if report_type in ("delivery-status", "global-delivery-status") or has_part(
        msg, "message/delivery-status"
    ):
        dsn = _parse_dsn(msg)
        if dsn is not None:
            return dsn
    if report_type == "disposition-notification":
        return Report(kind="unreadable", reason="a read receipt (MDN), not a delivery report")
    detected = _detect(msg, data)
    if detected is not None:
        return detected
    if is_auto_reply(msg):  # out-of-office and friends: neither a bounce nor a refusal
        return Report(kind="unreadable", reason="an automatic reply, not a delivery report")
    sender, token = _refusal(msg)
    if token is not None:
        return Report(
            kind="refusal",
            complainant=sender,
            token=token,
            reason=one_line(f"refusal by email from {sender or 'an unknown sender'}"),
        )
    if report_type:
        return Report(
            kind="unreadable",
            reason=one_line(f"multipart/report ({report_type}) without a recipient in it"),
        )
    return Report(
        kind="unreadable",
        reason="not a delivery report (no multipart/report and no known bounce format)",
    )


def parse_report(data: bytes) -> Report:
    """Parse one inbound message (raw bytes, CRLF or LF). Never raises."""
    try:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return Report(kind="unreadable", reason=f"not bytes: {type(data).__name__}")
        return _parse(bytes(data))
    except Exception as exc:  # BN-5: skipped with a one-line reason, never a crash
        return Report(
            kind="unreadable", reason=one_line(f"cannot parse: {type(exc).__name__}: {exc}")
        )


# ---------------------------------------------------------------- VERP and refusals


def verp_tokens(recipients: Iterable[str], local: str) -> list[str]:
    """Tokens ``T`` of the envelope recipients shaped ``{local}+{T}@domain``, in order, once each.

    The local part before ``+`` matches ``local`` case-insensitively; ``T`` is
    ``[A-Za-z0-9_-]+`` and is returned with its case kept. Other recipients are skipped.
    """
    pattern = re.compile(
        rf"<?{re.escape(local.strip())}\+({_VERP_TOKEN})@[^@\s<>]+>?", re.IGNORECASE
    )
    tokens: list[str] = []
    for recipient in recipients:
        match = pattern.fullmatch(str(recipient).strip())
        if match and match.group(1) not in tokens:
            tokens.append(match.group(1))
    return tokens


def _refusal(msg: Message) -> tuple[str | None, str | None]:
    sender = clean_address(parseaddr(header_line(msg, "From", decode=True) or "")[1])
    subject = header_line(msg, "Subject", decode=True) or ""
    match = _UNSUBSCRIBE_RE.search(subject)
    if match is None:
        for body in text_bodies(msg):
            first = next((line for line in body.splitlines() if line.strip()), "")
            match = _UNSUBSCRIBE_RE.search(first)
            break  # only the first text/plain part
    token = match.group(1).rstrip(".") if match else None
    if token is not None and not _TOKEN_RE.fullmatch(token):
        token = None
    return sender, token or None


def refusal_token(msg_data: bytes) -> tuple[str | None, str | None]:
    """(From address lowercased, token) of a mail sent to the ``mailto:`` refusal address.

    The List-Unsubscribe mailto asks for ``Subject: unsubscribe TOKEN``; the token is the
    word after "unsubscribe" anywhere in the subject (any case, "Re:"/"Fwd:" prefixes fine),
    else in the first non-blank line of the first text/plain part. Either value is None when
    missing. The token is not verified here. Never raises.
    """
    try:
        if isinstance(msg_data, str):
            msg_data = msg_data.encode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(bytes(msg_data), policy=policy.compat32)
        return _refusal(msg)
    except Exception:
        return None, None


# -- what the gateway acts on ------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing a server said about one address."""

    email: str
    kind: str  # hard | soft | policy | complaint
    source: str  # smtp | dsn | arf | detected
    status: str | None = None  # RFC 3463 enhanced status
    detail: str = ""
    message_id: str | None = None
    outbox_id: int | None = None  # when the report is about a message we know


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def classify_reply(code: int | None, message: str) -> tuple[str, str | None]:
    """(kind, enhanced status) of a failed SMTP reply to one recipient: 5.7.x is the
    sender's problem (BN-2: alert), another 5xx a hard bounce (BN-1), the rest soft."""
    match = _ENHANCED.match(message or "")
    status = ".".join(match.groups()) if match else None
    if code is not None and code >= 500:
        if status is not None and status.startswith("5.7."):
            return "policy", status
        return "hard", status
    return "soft", status
