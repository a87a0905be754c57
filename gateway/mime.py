"""Email message formatting: RFC 2047 headers, quoted-printable bodies, CRLF bytes (pure).

Messages are written straight to bytes instead of through `email.message.EmailMessage`,
which costs about three times what the SMTP client itself does per message. Tests parse
every variant back with the standard library's parser.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable

from .errors import HeaderInjection, InvalidMessage

# Header names are RFC 5322 ftext: printable ASCII except colon (fullmatch: a `$` would
# also match before a final newline).
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_ATEXT_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What an unstructured value cannot carry as is: an encoded-word lookalike, or any control
# character but tab (CR and LF included).
_NOT_AS_IS = re.compile(r"=\?|[\x00-\x08\x0a-\x1f\x7f]")
_MAX_WORD_BYTES = 45  # 45 bytes -> 60 base64 chars -> a 72-char encoded word (limit 75)


def check_header(name: str, value: str) -> None:
    """MF-2: a caller-supplied header value never carries CR or LF."""
    if not _HEADER_NAME.fullmatch(name):
        raise InvalidMessage(f"header name {name!r} is not valid")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise HeaderInjection(f"header {name} contains a line break, which is not allowed")


def _encoded_words(value: str) -> list[str]:
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        n = len(char.encode())
        if size + n > _MAX_WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    if chunk:
        words.append("".join(chunk))
    return [f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words]


def encode_text(value: str) -> str:
    """An unstructured header value (Subject): ASCII as is, folded at spaces when long;
    anything else as RFC 2047 encoded words, one per folded line. Control characters, CR
    and LF among them, are always encoded: they can never end the header line (MF-2)."""
    if (
        value.isascii()
        and not _NOT_AS_IS.search(value)
        and all(len(word) <= 70 for word in value.split(" "))
    ):
        if len(value) <= 76:
            return value
        lines, line = [], ""
        for word in value.split(" "):
            if line and len(line) + 1 + len(word) > 76:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
        return "\r\n ".join(lines)
    return "\r\n ".join(_encoded_words(value))


def format_address(name: str | None, address: str) -> str:
    """`Name <addr>` with the name quoted or encoded as needed; the address must be ASCII."""
    if not name:
        return address
    if name.isascii() and not _CONTROL.search(name):
        if _ATEXT_PHRASE.match(name):
            return f"{name} <{address}>"
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    return f"{' '.join(_encoded_words(name))} <{address}>"


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def _part(content_type: str, body: str) -> bytes:
    data = crlf(body).encode()
    if data.isascii() and all(len(line) <= 76 for line in data.split(b"\r\n")):
        return (
            f'Content-Type: {content_type}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: 7bit\r\n\r\n"
        ).encode() + data
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + _crlf_bytes(binascii.b2a_qp(data, istext=True))


def _crlf_bytes(data: bytes) -> bytes:
    # b2a_qp writes soft line breaks as CRLF only when the input had a CRLF somewhere.
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def build(headers: Iterable[tuple[str, str]], text: str, html: str | None) -> bytes:
    """A complete message: the headers as given (already encoded), then a text part, or
    multipart/alternative with text first and HTML last (the part clients prefer)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head += "MIME-Version: 1.0\r\n"
    if html is None:
        return head.encode() + _part("text/plain", text) + b"\r\n"
    boundary = "=_" + secrets.token_hex(12)
    return b"".join(
        (
            head.encode(),
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
            f"--{boundary}\r\n".encode(),
            _part("text/plain", text),
            f"\r\n--{boundary}\r\n".encode(),
            _part("text/html", html),
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
