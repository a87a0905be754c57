"""Taking an inbound report apart, whatever shape it arrives in: its parts, the header
blocks of a DSN or ARF part, the original message it quotes, its text, and flufl.bounce's
guesses for bounces that follow no standard.

Pure (no database, no I/O) and forgiving: a part that cannot be decoded reads as absent.
Messages are parsed with the stdlib ``email`` package under ``policy.compat32``: its headers
are plain strings and it records defects instead of raising, which is what broken mail needs
(``policy.default`` builds structured headers lazily and some malformed ones raise on access).
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterable, Iterator
from email import policy
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from typing import Any

__all__ = [
    "clean_address",
    "diagnostic_text",
    "enhanced_status",
    "has_part",
    "header_blocks",
    "header_line",
    "header_lines",
    "is_auto_reply",
    "message_ids_in",
    "one_line",
    "originals_in",
    "raw_payload",
    "report_type_of",
    "run_detectors",
    "text_bodies",
    "walk",
]

_DIAGNOSTIC_MAX = 200
#: flufl.bounce's heuristic detectors read only this much of a message (the notice is at
#: the top; what follows is the returned original). DSN and ARF parts are read in full.
_DETECT_MAX = 256 * 1024
_REASON_MAX = 300

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
#: Content types that carry (the headers of) the original message in a report.
_ORIGINAL_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})


def one_line(value: object, limit: int = _REASON_MAX) -> str:
    """Whitespace collapsed, lone surrogates replaced, cut to ``limit`` characters."""
    text = " ".join(str(value).split())
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def header_line(msg: Message, name: str, *, decode: bool = False) -> str | None:
    """A header as one clean line (RFC 2047 words decoded when ``decode``), None if absent."""
    value = msg.get(name)
    if value is None:
        return None
    if decode or isinstance(value, Header):
        try:
            value = str(make_header(decode_header(value)))
        except Exception:  # broken encoded words, unknown charsets
            value = str(value)
    return one_line(value, 10_000)


def header_lines(msg: Message, name: str) -> list[str]:
    return [one_line(v, 10_000) for v in msg.get_all(name, [])]


def clean_address(value: str) -> str | None:
    """``rfc822; <A@B>`` / ``A@B`` -> ``a@b``; None unless it looks like an address."""
    _, sep, rest = value.partition(";")
    text = (rest if sep else value).strip()
    address = parseaddr(text)[1] or text.strip("<> \t")
    address = address.strip().lower()
    if "@" not in address or any(c.isspace() for c in address) or "\ufffd" in address:
        return None
    return address


def enhanced_status(*texts: str | None) -> str | None:
    for text in texts:
        if text:
            match = _STATUS_RE.search(text)
            if match:
                return ".".join(str(int(group)) for group in match.groups())
    return None


def diagnostic_text(value: str | None) -> str:
    if not value:
        return ""
    kind, sep, rest = value.partition(";")
    if sep and kind.strip().replace("-", "").isalnum() and " " not in kind.strip():
        value = rest  # drop the diagnostic-type ("smtp; ...", "X-Postfix; ...")
    return one_line(value, _DIAGNOSTIC_MAX)


def walk(msg: Message) -> Iterator[Message]:
    """Every part, depth first, without descending into attached original messages."""
    yield msg
    if msg.get_content_type() in _ORIGINAL_TYPES or not msg.is_multipart():
        return
    for part in msg.get_payload():
        if isinstance(part, Message):
            yield from walk(part)


def raw_payload(part: Message) -> bytes | None:
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


def header_blocks(part: Message) -> list[Message]:
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
                rest = raw_payload(block)
                if rest and rest.strip():
                    blocks.extend(_split_blocks(rest))
        return blocks
    raw = raw_payload(part)
    return _split_blocks(raw) if raw else []


def _original_headers(part: Message) -> Message | None:
    """The headers of the original message from a message/rfc822 or *rfc822-headers part."""
    if part.is_multipart():
        payload: Any = part.get_payload()
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    raw = raw_payload(part)
    if not raw or not raw.strip():
        return None
    return BytesHeaderParser(policy=policy.compat32).parsebytes(raw.lstrip())


def originals_in(msg: Message) -> list[Message]:
    found = []
    for part in walk(msg):
        if part.get_content_type() in _ORIGINAL_TYPES:
            headers = _original_headers(part)
            if headers is not None:
                found.append(headers)
    return found


def message_ids_in(originals: Iterable[Message]) -> tuple[str, ...]:
    ids: list[str] = []
    for headers in originals:
        for value in header_lines(headers, "Message-ID"):
            value = value.strip()
            if value and value not in ids:
                ids.append(value)
    return tuple(ids)


def report_type_of(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    value = msg.get_param("report-type", "", header="content-type")
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value).strip().lower()


def has_part(msg: Message, content_type: str) -> bool:
    return any(part.get_content_type() == content_type for part in walk(msg))


def text_bodies(msg: Message) -> Iterator[str]:
    for part in walk(msg):
        if part.get_content_type() != "text/plain":
            continue
        raw = raw_payload(part)
        if raw is not None:
            try:
                yield raw.decode(part.get_content_charset() or "utf-8", "replace")
            except (LookupError, ValueError):
                yield raw.decode("utf-8", "replace")


def run_detectors(msg: Message, data: bytes) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """flufl.bounce's ``all_failures`` on ``msg`` (parsed from ``data``), but one detector
    that crashes does not stop the rest.

    ``all_failures`` re-raises the first detector exception (e.g. its Yale detector on a
    message without From), which would hide what the later detectors find. Its detector
    list is private, so fall back to ``all_failures`` if it moves.
    """
    if len(data) > _DETECT_MAX:  # the heuristics scan every line ~50 times: bound the cost
        msg = email.message_from_bytes(data[:_DETECT_MAX], policy=policy.compat32)
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


def is_auto_reply(msg: Message) -> bool:
    auto = (header_line(msg, "Auto-Submitted") or "no").lower()
    if not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") is not None or msg.get("X-Autorespond") is not None:
        return True
    precedence = (header_line(msg, "Precedence") or "").lower()
    return precedence in ("auto_reply", "auto-reply")
