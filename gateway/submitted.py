"""Messages an application built itself and submitted by SMTP: read once, then written again
for each recipient the way the gateway sends mail (pure: no I/O, no database).

What is kept: the application's MIME structure, its parts, charsets and attachments (their
decoded bytes unchanged), its own headers. What the gateway does to it, exactly as for
`send()`: the gateway's Message-ID and Date, the advertising label on a marketing subject, the
footer in the text and the HTML body, the List-* headers of a one-click refusal, no read
receipts, and for marketing the recipient alone in To (no Cc: a person never sees who else
got it). The application's own DKIM signature goes: the gateway signs what it sends.
"""

from __future__ import annotations

import email
import email.charset
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.utils import formatdate, getaddresses

import webencodings

from . import mime
from .errors import InvalidMessage

CATEGORY_HEADER = "X-Gateway-Category"
TOPIC_HEADER = "X-Gateway-Topic"

# The standard library's compat32 parser: several times faster than its modern API, and its
# generator writes back what it did not change as it was.
WRITE = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)
_QP_UTF8 = email.charset.Charset("utf-8")
_QP_UTF8.body_encoding = email.charset.QP
# Any CR or LF alone is a line end on the wire (SMTP clients turn it into CRLF): the parser
# must see the same lines the recipient's server will.
_LINE_END = re.compile(rb"\r\n|\r|\n")
# A header field: a name of printable ASCII but colon, then the colon (RFC 5322 also reads
# spaces before the colon, the obsolete syntax old software writes; they are removed).
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:(.*)", re.S)

# Never passed on from what an application submits: our instructions, signatures that the
# rewrite would break (the gateway signs instead), blind copies, and what the gateway sets.
REMOVED = frozenset(
    {
        CATEGORY_HEADER.lower(),
        TOPIC_HEADER.lower(),
        "dkim-signature",
        "domainkey-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "bcc",
        "return-path",
        "message-id",
        "date",
        "subject",
        # read-receipt requests: the recipient's client would report when they opened it
        "disposition-notification-to",
        "return-receipt-to",
        "x-confirm-reading-to",
    }
)


@dataclass(frozen=True, slots=True)
class Bodies:
    """The text and HTML a recipient reads (what the scan checks), from every body part."""

    text: str
    html: str | None


@dataclass(frozen=True, slots=True)
class Submitted:
    """One submitted message: its bytes (CRLF), what its headers ask for, and its bodies."""

    head: bytes  # the header block, without the blank line
    body: bytes  # everything after the blank line
    category: str
    topic: str | None
    subject: str
    sender: str  # the From address
    bodies: Bodies
    multipart: bool

    def parsed(self) -> Message:
        """A fresh parse (each recipient's copy with a footer is rewritten in place)."""
        return email.message_from_bytes(self.head + b"\r\n\r\n" + self.body)


def read(data: bytes) -> Submitted:
    """Parse a submitted message; `InvalidMessage` (one line) when it cannot be sent as is."""
    head, body = _split(data)
    message = email.message_from_bytes(head + b"\r\n\r\n" + body)
    category = _one(message, CATEGORY_HEADER) or "transactional"
    topic = _one(message, TOPIC_HEADER)
    subject = _decoded(message.get("Subject"), "Subject").strip()
    froms = getaddresses([_decoded(v, "From") for v in message.get_all("From") or []])
    if not message.get_all("From"):
        raise InvalidMessage("the message has no From header")
    sender = froms[0][1] if len(froms) == 1 else ""
    if len(froms) != 1 or "@" not in sender:
        raise InvalidMessage("the From header must hold exactly one address")
    return Submitted(
        head,
        body,
        category.strip().lower(),
        topic,
        subject,
        sender.lower(),
        bodies(message),
        message.is_multipart(),
    )


def _split(data: bytes) -> tuple[bytes, bytes]:
    """The header block (every line a header field or its continuation, as the parser and
    the rewrite both read it) and the body, with CRLF line ends throughout."""
    data = _LINE_END.sub(b"\r\n", data)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        if not data.endswith(b"\r\n"):
            raise InvalidMessage("the message's headers are not followed by a blank line")
        head, body = data.removesuffix(b"\r\n"), b""
    if b"\x00" in head:
        raise InvalidMessage("a header holds a NUL character")
    lines: list[bytes] = []
    for number, line in enumerate(head.split(b"\r\n"), 1):
        if line[:1] in (b" ", b"\t") and lines:
            lines.append(line)
            continue
        field = _FIELD.fullmatch(line)
        if field is None:
            raise InvalidMessage(
                f"line {number} of the headers is not a header field (Name: value):"
                " end the headers with a blank line"
            )
        lines.append(field.group(1) + b":" + field.group(2))
    return b"\r\n".join(lines), body


def _decoded(value: object, name: str) -> str:
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError):
        raise InvalidMessage(f"the {name} header cannot be decoded") from None


def _one(message: Message, name: str) -> str | None:
    values = message.get_all(name) or []
    if len(values) > 1:
        raise InvalidMessage(f"the {name} header appears more than once")
    return str(values[0]).strip() if values else None


def _leaves(part: Message, readable: bool = True) -> Iterator[tuple[Message, bool]]:
    """Every leaf part, and whether it is the message's own body (not an attachment, not
    inside an attached message/rfc822)."""
    if part.get_content_maintype() == "message" or (
        part.is_multipart() and part.get_content_disposition() == "attachment"
    ):
        readable = False
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaves(sub, readable)
        return
    yield part, readable and part.get_content_disposition() != "attachment"


def _content(part: Message) -> str:
    """A text part decoded as a browser or mail client would: only charsets those know."""
    label = part.get_content_charset() or "us-ascii"
    encoding = webencodings.lookup(label)
    if encoding is None:
        raise InvalidMessage(
            f"a {part.get_content_type()} part is in charset {label!r}, which mail clients do"
            " not all read: send it in utf-8"
        )
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    text: str = encoding.codec_info.decode(data, "replace")[0]
    return text


def bodies(message: Message) -> Bodies:
    """What the scan reads: every HTML part wherever it is (a client may show an attached
    one), and the text of the body (a link in an attached text file is not one)."""
    texts: list[str] = []
    htmls: list[str] = []
    for part, readable in _leaves(message):
        kind = part.get_content_type()
        if kind == "text/html":
            htmls.append(_content(part))
        elif kind == "text/plain" and readable:
            texts.append(_content(part))
    return Bodies("\n".join(texts), "\n".join(htmls) if htmls else None)


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """The header block as (lower-case name, the field's lines as they were)."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif line:
            name = line.partition(b":")[0].strip().decode("ascii", "replace").lower()
            fields.append((name, line))
    return fields


_CONTENT = ("content-type", "content-transfer-encoding")
_BODY_TYPES = ("text/plain", "text/html")


def rewrite(
    submitted: Submitted,
    *,
    to: str,
    marketing: bool,
    subject: str,
    message_id: str,
    gateway_headers: list[tuple[str, str]],
    text_footer: str | None,
    html_footer: Callable[[str], str] | None,
) -> bytes:
    """The message one recipient gets, as bytes. The application's header lines are kept as
    they were but for those the gateway removes or sets; `gateway_headers` (already encoded)
    are the List-* headers of marketing mail; the body is kept byte for byte unless a footer
    goes into it."""
    body = submitted.body
    content: list[tuple[str, bytes]] = []
    if text_footer is not None or html_footer is not None:
        message = submitted.parsed()
        _add_footers(message, text_footer, html_footer)
        out = message.as_bytes(policy=WRITE)
        new_head, _, body = out.partition(b"\r\n\r\n")
        if not submitted.multipart:  # the body's charset and encoding changed with it
            content = [f for f in _fields(new_head) if f[0] in _CONTENT]
    kept = [
        line
        for name, line in _fields(submitted.head)
        if not (
            name in REMOVED
            or name.startswith("list-")
            or (marketing and name in ("to", "cc"))
            or (content and name in _CONTENT)
        )
    ]
    ours = [
        *(
            [f"To: {to}"]
            if marketing or not any(n == "to" for n, _ in _fields(submitted.head))
            else []
        ),
        f"Subject: {mime.encode_text(subject)}",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {message_id}",
        *(f"{name}: {value}" for name, value in gateway_headers),
    ]
    if not any(n == "mime-version" for n, _ in _fields(submitted.head)):
        ours.append("MIME-Version: 1.0")
    head = b"\r\n".join([*kept, *(line for _, line in content), *(o.encode() for o in ours)])
    return head + b"\r\n\r\n" + body


def _add_footers(
    message: Message,
    text_footer: str | None,
    html_footer: Callable[[str], str] | None,
) -> None:
    """The footer goes into the first text and the first HTML body part (the two faces of
    multipart/alternative); an HTML-only or text-only message gets it in the one it has."""
    done: set[str] = set()
    for part, readable in list(_leaves(message)):
        kind = part.get_content_subtype()
        if not readable or part.get_content_type() not in _BODY_TYPES or kind in done:
            continue
        done.add(kind)
        text = _content(part).replace("\r\n", "\n")
        if kind == "plain" and text_footer is not None:
            text = text.rstrip("\n") + "\n" + text_footer
        elif kind == "html" and html_footer is not None:
            text = html_footer(text)
        else:
            continue
        had_version = "MIME-Version" in part
        del part["Content-Transfer-Encoding"]
        part.set_payload(text, _QP_UTF8)
        if not had_version and part is not message:
            del part["MIME-Version"]  # set_payload adds it; it belongs on the message only
