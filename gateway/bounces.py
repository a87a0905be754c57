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
cannot be read is logged and skipped, never a crash). Messages are parsed with the stdlib
``email`` package under ``policy.compat32``: its headers are plain strings and it records
defects instead of raising, which is what broken mail needs (``policy.default`` builds
structured headers lazily and some malformed ones raise on access).

Acting on a report (matching it to a sent message, suppressing) belongs to the caller:
`verp_tokens` extracts the signed token from the envelope recipient (BN-5, first choice),
`Report.message_ids` carries the original Message-ID (second choice) and the failed
addresses themselves are the third (``gateway bounces ingest`` only).
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import policy
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

__all__ = ["Failure", "Report", "parse_report", "refusal_token", "verp_tokens"]

_DIAGNOSTIC_MAX = 200
#: flufl.bounce's heuristic detectors read only this much of a message (the notice is at
#: the top; what follows is the returned original). DSN and ARF parts are read in full.
_DETECT_MAX = 256 * 1024
_REASON_MAX = 300

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]+")
_UNSUBSCRIBE_RE = re.compile(r"\bunsubscribe(?:\s+|%20|\s*[:=]\s*)([A-Za-z0-9_.-]+)", re.IGNORECASE)
_VERP_TOKEN = r"[A-Za-z0-9_-]+"
_MESSAGE_ID_LINE_RE = re.compile(r"^message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)

#: DSN Action values that are not failures at all (RFC 3464 section 2.3.3).
_NOT_FAILED = frozenset({"delivered", "relayed", "expanded"})
#: Content types that carry (the headers of) the original message in a report.
_ORIGINAL_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})


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


# ---------------------------------------------------------------- small helpers


def _one_line(value: object, limit: int = _REASON_MAX) -> str:
    """Whitespace collapsed, lone surrogates replaced, cut to ``limit`` characters."""
    text = " ".join(str(value).split())
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _header(msg: Message, name: str, *, decode: bool = False) -> str | None:
    """A header as one clean line (RFC 2047 words decoded when ``decode``), None if absent."""
    value = msg.get(name)
    if value is None:
        return None
    if decode or isinstance(value, Header):
        try:
            value = str(make_header(decode_header(value)))
        except Exception:  # broken encoded words, unknown charsets
            value = str(value)
    return _one_line(value, 10_000)


def _headers(msg: Message, name: str) -> list[str]:
    return [_one_line(v, 10_000) for v in msg.get_all(name, [])]


def _clean_address(value: str) -> str | None:
    """``rfc822; <A@B>`` / ``A@B`` -> ``a@b``; None unless it looks like an address."""
    _, sep, rest = value.partition(";")
    text = (rest if sep else value).strip()
    address = parseaddr(text)[1] or text.strip("<> \t")
    address = address.strip().lower()
    if "@" not in address or any(c.isspace() for c in address) or "\ufffd" in address:
        return None
    return address


def _status(*texts: str | None) -> str | None:
    for text in texts:
        if text:
            match = _STATUS_RE.search(text)
            if match:
                return ".".join(str(int(group)) for group in match.groups())
    return None


def _diagnostic(value: str | None) -> str:
    if not value:
        return ""
    kind, sep, rest = value.partition(";")
    if sep and kind.strip().replace("-", "").isalnum() and " " not in kind.strip():
        value = rest  # drop the diagnostic-type ("smtp; ...", "X-Postfix; ...")
    return _one_line(value, _DIAGNOSTIC_MAX)


def _walk(msg: Message) -> Iterator[Message]:
    """Every part, depth first, without descending into attached original messages."""
    yield msg
    if msg.get_content_type() in _ORIGINAL_TYPES or not msg.is_multipart():
        return
    for part in msg.get_payload():
        if isinstance(part, Message):
            yield from _walk(part)


def _raw_payload(part: Message) -> bytes | None:
    """The transfer-decoded body of a non-multipart part, None if there is none or it fails."""
    if part.is_multipart():
        return None
    try:
        raw = part.get_payload(decode=True)
    except Exception:  # e.g. a charset parameter the codec machinery rejects
        return None
    return raw if isinstance(raw, bytes) else None


def _split_blocks(raw: bytes) -> list[Message]:
    parser = BytesHeaderParser(policy=policy.compat32)
    blocks = re.split(rb"\r?\n[ \t]*\r?\n", raw)
    return [parser.parsebytes(block.strip() + b"\n") for block in blocks if block.strip()]


def _header_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part.

    The stdlib parses message/delivery-status into a list of blocks; other message/* types
    (message/feedback-report, message/global-delivery-status) into one message whose body
    holds any further blocks, which are split here.
    """
    if part.is_multipart():
        blocks: list[Message] = []
        for block in part.get_payload():
            if isinstance(block, Message):
                blocks.append(block)
                rest = _raw_payload(block)
                if rest and rest.strip():
                    blocks.extend(_split_blocks(rest))
        return blocks
    raw = _raw_payload(part)
    return _split_blocks(raw) if raw else []


def _original_headers(part: Message) -> Message | None:
    """The headers of the original message from a message/rfc822 or *rfc822-headers part."""
    if part.is_multipart():
        payload: Any = part.get_payload()
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    raw = _raw_payload(part)
    if not raw or not raw.strip():
        return None
    return BytesHeaderParser(policy=policy.compat32).parsebytes(raw.lstrip())


def _originals(msg: Message) -> list[Message]:
    found = []
    for part in _walk(msg):
        if part.get_content_type() in _ORIGINAL_TYPES:
            headers = _original_headers(part)
            if headers is not None:
                found.append(headers)
    return found


def _message_ids(originals: Iterable[Message]) -> tuple[str, ...]:
    ids: list[str] = []
    for headers in originals:
        for value in _headers(headers, "Message-ID"):
            value = value.strip()
            if value and value not in ids:
                ids.append(value)
    return tuple(ids)


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    value = msg.get_param("report-type", "", header="content-type")
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value).strip().lower()


def _has_part(msg: Message, content_type: str) -> bool:
    return any(part.get_content_type() == content_type for part in _walk(msg))


def _text_bodies(msg: Message) -> Iterator[str]:
    for part in _walk(msg):
        if part.get_content_type() != "text/plain":
            continue
        raw = _raw_payload(part)
        if raw is not None:
            try:
                yield raw.decode(part.get_content_charset() or "utf-8", "replace")
            except (LookupError, ValueError):
                yield raw.decode("utf-8", "replace")


# ---------------------------------------------------------------- the report kinds


def _parse_dsn(msg: Message) -> Report | None:
    failures: list[Failure] = []
    for part in _walk(msg):
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        blocks = _header_blocks(part)
        # The first block is per-message (Reporting-MTA, ...); recipients follow. Some MTAs
        # put everything in one block, so look for recipient fields in every block.
        for block in blocks:
            final = _header(block, "Final-Recipient")
            original = _header(block, "Original-Recipient")
            address = None
            # Original-Recipient is the address as we sent it (before aliasing/forwarding).
            for candidate in (original, final):
                if candidate:
                    address = _clean_address(candidate)
                    if address:
                        break
            if address is None:
                continue
            action_text = (_header(block, "Action") or "").lower()
            action = action_text.split()[0].rstrip(";,") if action_text.split() else None
            if action == "error":  # opensmtpd's non-standard word for "failed"
                action = "failed"
            diagnostic_raw = _header(block, "Diagnostic-Code")
            failures.append(
                Failure(
                    address=address,
                    status=_status(_header(block, "Status"), diagnostic_raw),
                    action=action or None,
                    diagnostic=_diagnostic(diagnostic_raw),
                )
            )
    if not failures:
        return None
    summary = ", ".join(f"{f.address} {f.kind} {f.status or f.action or '?'}" for f in failures)
    return Report(
        kind="dsn",
        failures=tuple(failures),
        message_ids=_message_ids(_originals(msg)),
        reason=_one_line(f"delivery status for {len(failures)} recipient(s): {summary}"),
    )


def _parse_arf(msg: Message) -> Report | None:
    fields: Message | None = None
    for part in _walk(msg):
        if part.get_content_type() == "message/feedback-report":
            blocks = _header_blocks(part)
            if blocks:
                fields = blocks[0]
                break
    if fields is None:
        return None
    feedback_type = (_header(fields, "Feedback-Type") or "").lower() or None
    originals = _originals(msg)
    complainant = None
    for value in _headers(fields, "Original-Rcpt-To"):
        complainant = _clean_address(value)
        if complainant:
            break
    if complainant is None:
        for headers in originals:
            for _, addr in getaddresses(_headers(headers, "To")):
                complainant = _clean_address(addr)
                if complainant:
                    break
            if complainant:
                break
    return Report(
        kind="arf",
        message_ids=_message_ids(originals),
        feedback_type=feedback_type,
        complainant=complainant,
        reason=_one_line(
            f"feedback report ({feedback_type or 'no Feedback-Type'})"
            f" from {complainant or 'an unknown recipient'}"
        ),
    )


def _run_detectors(msg: Message) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """flufl.bounce's ``all_failures``, but one detector that crashes does not stop the rest.

    ``all_failures`` re-raises the first detector exception (e.g. its Yale detector on a
    message without From), which would hide what the later detectors find. Its detector
    list is private, so fall back to ``all_failures`` if it moves.
    """
    try:
        from flufl.bounce._scan import _DETECTORS
    except ImportError:  # pragma: no cover - a future flufl.bounce
        from flufl.bounce import all_failures

        return all_failures(msg)
    for detector in _DETECTORS:
        try:
            temporary, permanent = detector().process(msg)
        except Exception:
            continue
        if temporary or permanent:
            return frozenset(temporary), frozenset(permanent)
    return frozenset(), frozenset()


def _detect(msg: Message, data: bytes) -> Report | None:
    if len(data) > _DETECT_MAX:  # the heuristics scan every line ~50 times: bound the cost
        temporary, permanent = _run_detectors(
            email.message_from_bytes(data[:_DETECT_MAX], policy=policy.compat32)
        )
    else:
        temporary, permanent = _run_detectors(msg)
    failures: list[Failure] = []
    seen: set[str] = set()
    for addresses, action in ((permanent, "failed"), (temporary, "delayed")):
        for raw in sorted(addresses):
            text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
            address = _clean_address(text)
            if address and address not in seen:
                seen.add(address)
                failures.append(Failure(address=address, status=None, action=action, diagnostic=""))
    if not failures:
        return None
    originals = _originals(msg)
    ids = list(_message_ids(originals))
    if not ids:  # qmail and friends quote the original inline
        for body in _text_bodies(msg):
            for match in _MESSAGE_ID_LINE_RE.finditer(body):
                if match.group(1) not in ids:
                    ids.append(match.group(1))
    summary = ", ".join(f"{f.address} {f.kind}" for f in failures)
    return Report(
        kind="detected",
        failures=tuple(failures),
        message_ids=tuple(ids),
        reason=_one_line(f"non-standard bounce naming {len(failures)} address(es): {summary}"),
    )


def _is_auto_reply(msg: Message) -> bool:
    auto = (_header(msg, "Auto-Submitted") or "no").lower()
    if not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") is not None or msg.get("X-Autorespond") is not None:
        return True
    precedence = (_header(msg, "Precedence") or "").lower()
    return precedence in ("auto_reply", "auto-reply")


def _parse(data: bytes) -> Report:
    msg = email.message_from_bytes(data, policy=policy.compat32)
    if not msg.keys() and not data.strip():
        return Report(kind="unreadable", reason="empty message")
    report_type = _report_type(msg)
    if report_type == "feedback-report" or _has_part(msg, "message/feedback-report"):
        arf = _parse_arf(msg)
        if arf is not None:
            return arf
    if report_type in ("delivery-status", "global-delivery-status") or _has_part(
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
    if _is_auto_reply(msg):  # out-of-office and friends: neither a bounce nor a refusal
        return Report(kind="unreadable", reason="an automatic reply, not a delivery report")
    sender, token = _refusal(msg)
    if token is not None:
        return Report(
            kind="refusal",
            complainant=sender,
            token=token,
            reason=_one_line(f"refusal by email from {sender or 'an unknown sender'}"),
        )
    if report_type:
        return Report(
            kind="unreadable",
            reason=_one_line(f"multipart/report ({report_type}) without a recipient in it"),
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
            kind="unreadable", reason=_one_line(f"cannot parse: {type(exc).__name__}: {exc}")
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
    sender = _clean_address(parseaddr(_header(msg, "From", decode=True) or "")[1])
    subject = _header(msg, "Subject", decode=True) or ""
    match = _UNSUBSCRIBE_RE.search(subject)
    if match is None:
        for body in _text_bodies(msg):
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
