"""DKIM signing (RFC 6376): dkimpy's canonicalization and tag building, OpenSSL's signature.

    signer = DKIMSigner.from_file("first.vn", "s2025", "/etc/gateway/dkim.pem")
    wire = signer.sign(message)      # b"DKIM-Signature: ...\\r\\n" + message, byte for byte

The key is an RSA (at least 1024 bits; use 2048) or Ed25519 private key in PEM, PKCS#1 or
PKCS#8, unencrypted. Its type chooses the algorithm: `rsa-sha256` (RSASSA-PKCS1-v1_5) or
`ed25519-sha256` (RFC 8463). It is parsed once, when the signer is built; `sign` only
hashes and signs. `dns_txt()` gives the TXT record to publish at `dns_name`.

What is signed: canonicalization relaxed/relaxed; `h=` lists every instance of From, To,
Subject, Date, Message-ID, List-Id, List-Unsubscribe, List-Unsubscribe-Post, MIME-Version
and Content-Type that the message has (LU-5: List-Unsubscribe and List-Unsubscribe-Post are
covered whenever present), in message order, then From, and List-Unsubscribe and
List-Unsubscribe-Post when present, once more ("oversigned": a verifier then hashes an empty
instance for each, so a copy of those headers added anywhere later breaks the signature).
Nothing in the message is changed: the header is prepended to the exact bytes given.

The seam in dkimpy. `dkim.DKIM.sign` parses the PEM on every call with its own ASN.1 code
and `DomainSigner.gen_header` signs with a module-level pure-Python RSA function
(`dkim.crypto.RSASSA_PKCS1_v1_5_sign`, ~8 ms for 2048 bits), and Ed25519 needs PyNaCl; none
of that can be swapped without patching dkimpy's module globals. So `_signature_header`
below repeats the ~20 lines of `DKIM.sign` + `gen_header` that arrange the work, and leaves
all of the work that decides the bytes to dkimpy's module-level helpers, unchanged since
dkimpy 0.6: `rfc822_parse` (header split), `CanonicalizationPolicy` (relaxed header and body
canonicalization), `fold` (folding of the header before and after `b=` is filled in),
`RE_BTAG` (emptying `b=`) and `hash_headers` (header selection in `h=` order, oversigned
entries, and the signature header itself). The only step replaced is the private-key
operation: the SHA-256 digest dkimpy would sign goes to `cryptography` (OpenSSL):
PKCS#1 v1.5 over the prehashed digest for RSA, Ed25519 over the digest for ed25519-sha256,
exactly as dkimpy does. Two shortcuts give dkimpy's bytes without its per-line Python work
on the body (most of a signature's cost besides the key operation): a message whose lines
all end in CRLF (the renderer's) has only its header block parsed (`_split`), and a body
with no tab, double space or space before a line end, as quoted-printable and base64 parts
are, is already relaxed but for its trailing empty lines (`_relaxed_body`); anything else
goes through dkimpy's functions as before. Only the header fields `h=` can name are
canonicalized, each by `_relaxed_header` (dkimpy's relaxed header rule without its regular
expressions where they change nothing). RSA PKCS#1 v1.5 and Ed25519 are deterministic, so
tests check that the header is byte-identical to what `dkim.sign` produces for the same timestamp.

Batches of messages are signed in a process of their own: see gateway/dkim_pool.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import time

import dkim as dkimpy
import idna
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from .errors import ConfigError, InvalidMessage

__all__ = ["DKIMSigner", "SIGNED_HEADERS", "OVERSIGNED_HEADERS"]

log = logging.getLogger(__name__)

#: Header fields signed when present (every instance), lower case, as in `h=`.
SIGNED_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)
#: Of those, the ones named once more in `h=` (when present) so none can be added later.
OVERSIGNED_HEADERS = ("from", "list-unsubscribe", "list-unsubscribe-post")

_SIGNED = frozenset(name.encode() for name in SIGNED_HEADERS)
_OVERSIGNED = tuple(name.encode() for name in OVERSIGNED_HEADERS)
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_HEADER_NAME = b"DKIM-Signature"
_NAMELEN = len(_HEADER_NAME)
_WSP_RUN = re.compile(b"[\t ]+")  # dkimpy's compress_whitespace
_NAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")
_PADDING = padding.PKCS1v15()
_PREHASHED = Prehashed(hashes.SHA256())

_PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _dns_name(value: str, what: str) -> str:
    """A domain or selector as ASCII (IDNA for a non-ASCII domain), or ConfigError."""
    name = value.strip().rstrip(".") if isinstance(value, str) else ""
    if name and not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError:
            name = ""
    if not name or not all(_NAME_RE.match(label) for label in name.split(".")):
        raise ConfigError(f"DKIM {what} {value!r} is not a valid DNS name")
    return name


def _load_key(key_pem: bytes, validated: bool = False) -> tuple[_PrivateKey, bytes]:
    """The private key and its algorithm tag, or ConfigError saying what is wrong. `validated`
    skips OpenSSL's RSA key check (~40 ms), for a key this process's parent has checked."""
    if isinstance(key_pem, str):
        key_pem = key_pem.encode("utf-8", "replace")
    data = bytes(key_pem)
    if not data.strip():
        raise ConfigError("is empty, expected a PEM private key (RSA 2048 bits or Ed25519)")
    if b"-----BEGIN " not in data:
        raise ConfigError(
            "is not PEM (no '-----BEGIN' line), expected an RSA or Ed25519 private key in PEM"
        )
    if (
        re.search(rb"-----BEGIN [A-Z0-9 ]*PUBLIC KEY-----", data)
        and b"PRIVATE KEY-----" not in data
    ):
        raise ConfigError("holds a public key, the private key is needed for signing")
    if b"-----BEGIN CERTIFICATE-----" in data and b"PRIVATE KEY-----" not in data:
        raise ConfigError("holds a certificate, the private key is needed for signing")
    try:
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=validated
        )
    except TypeError:
        raise ConfigError(
            "holds an encrypted private key, store it unencrypted and readable only by the gateway"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            "could not be read as a PEM private key (PKCS#1 or PKCS#8, RSA or Ed25519)"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ConfigError(
                f"holds an RSA key of {key.key_size} bits, DKIM needs at least 1024 (use 2048)"
            )
        if key.key_size < 2048:
            log.warning("DKIM RSA key has %d bits; 2048 is recommended", key.key_size)
        return key, b"rsa-sha256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, b"ed25519-sha256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        kind = f"an EC ({key.curve.name}) key"
    elif isinstance(key, dsa.DSAPrivateKey):
        kind = "a DSA key"
    else:
        kind = f"a {type(key).__name__.removesuffix('PrivateKey') or 'different'} key"
    raise ConfigError(f"holds {kind}, DKIM signs with RSA (2048 bits) or Ed25519 keys only")


def _split(data: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's `rfc822_parse(data)`, without splitting the body into lines when every line
    of `data` ends in CRLF (the renderer's messages): then the body is the bytes after the
    first empty line as they are, and only the header block is parsed, by dkimpy."""
    end = data.find(b"\r\n\r\n")
    if end <= 0 or data.count(b"\n") != data.count(b"\r\n"):
        return dkimpy.rfc822_parse(data)  # bare LF line ends, no body: dkimpy's own way
    headers, _ = dkimpy.rfc822_parse(data[: end + 4])
    return headers, data[end + 4 :]


def _relaxed_body(body: bytes) -> bytes:
    """dkimpy's relaxed body canonicalization (RFC 6376 3.4.4). Its two regular-expression
    passes (trailing whitespace, runs of whitespace) change nothing in a body with no tab, no
    two spaces in a row and no space before a line end, as quoted-printable and base64 parts
    are: then only the empty lines at the end are dropped, as dkimpy drops them."""
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        return bytes(_RELAXED.canonicalize_body(body))
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == len(body):
        return body + b"\r\n" if body else b""  # a line end is added to a last line
    return body[: end + 2] if end else b""


def _relaxed_header(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """dkimpy's `Relaxed.canonicalize_headers` for one field: unfold (drop CRLF and LF),
    compress runs of tabs and spaces, strip. Its two regular expressions are replaced by
    `bytes.replace`, and the second is skipped for a value with no tab and no double space
    (most are), where it changes nothing; the result is the same bytes."""
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.lower().rstrip(), value.strip() + b"\r\n"


class DKIMSigner:
    """Signs complete CRLF messages for one domain and selector with one preloaded key.

    Immutable after construction and safe to share between threads and tasks."""

    __slots__ = (
        "domain",
        "selector",
        "algorithm",
        "_domain",
        "_selector",
        "_alg",
        "_key",
        "__weakref__",
    )

    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256"

    def __init__(self, domain: str, selector: str, key_pem: bytes) -> None:
        self._setup(domain, selector, key_pem, "DKIM private key")

    @classmethod
    def from_file(cls, domain: str, selector: str, path: str | os.PathLike[str]) -> DKIMSigner:
        """A signer whose key is read from the PEM file at `path`; ConfigError (one line,
        naming the file) when it cannot be read or holds no usable private key."""
        where = f"DKIM key file {os.fspath(path)}"
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ConfigError(f"{where} cannot be read ({reason})") from None
        signer = cls.__new__(cls)
        signer._setup(domain, selector, data, where)
        return signer

    def _setup(
        self, domain: str, selector: str, key_pem: bytes, where: str, validated: bool = False
    ) -> None:
        self.domain = _dns_name(domain, "domain")
        self.selector = _dns_name(selector, "selector")
        try:
            self._key, self._alg = _load_key(key_pem, validated)
        except ConfigError as error:
            raise ConfigError(f"{where} {error}") from None
        self.algorithm = self._alg.decode()
        self._domain = self.domain.encode("ascii")
        self._selector = self.selector.encode("ascii")

    def __repr__(self) -> str:
        return f"DKIMSigner(domain={self.domain!r}, selector={self.selector!r}, {self.algorithm})"

    @property
    def dns_name(self) -> str:
        """Where the public key is published: `selector._domainkey.domain`."""
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_txt(self) -> str:
        """The TXT record to publish at `dns_name`."""
        public = self._key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            der = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"

    def sign(self, data: bytes, *, timestamp: int | None = None) -> bytes:
        """`data` (a complete message, CRLF line ends) with a DKIM-Signature header
        prepended; `data` itself is not changed. `timestamp` (the `t=` tag) defaults to now.

        Raises InvalidMessage for a message with no From header or a malformed header."""
        return self._signature_header(data, timestamp) + data

    def header(self, data: bytes, *, timestamp: int | None = None) -> bytes:
        """The DKIM-Signature header `sign` would prepend to `data` (CRLF-terminated)."""
        return self._signature_header(data, timestamp)

    def _signature_header(self, data: bytes, timestamp: int | None) -> bytes:
        fields, digest = self._digest(data, timestamp)
        return _header(fields, self._key_sign(digest))

    def _digest(
        self, data: bytes, timestamp: int | None
    ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The header's tags with `b=` still empty, and the SHA-256 digest the key signs."""
        # Mirrors dkim.DKIM.sign + DomainSigner.gen_header (dkimpy 1.1) step by step.
        try:
            headers, body = _split(data)
        except dkimpy.MessageFormatError as error:
            raise InvalidMessage(f"cannot DKIM-sign the message: {error}") from None
        include = [name.lower() for name, _ in headers if name.lower() in _SIGNED]
        if b"from" not in include:
            raise InvalidMessage("cannot DKIM-sign a message without a From header")
        include += [name for name in _OVERSIGNED if name in include]

        bodyhash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
        when = int(time.time()) if timestamp is None else int(timestamp)
        fields = [
            (b"v", b"1"),
            (b"a", self._alg),
            (b"c", _RELAXED.to_c_value()),
            (b"d", self._domain),
            (b"i", b"@" + self._domain),
            (b"q", b"dns/txt"),
            (b"s", self._selector),
            (b"t", str(when).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", bodyhash),
            # dkimpy: force b= onto its own line so that refolding after the signature
            # is filled in does not move the whitespace of the tags before it.
            (b"b", b"0" * 60),
        ]
        value = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields), namelen=_NAMELEN)
        value = dkimpy.RE_BTAG.sub(b"\\1", value)
        hasher = hashlib.sha256()
        dkimpy.hash_headers(
            hasher,
            _RELAXED,
            # Only the fields `h=` can select are canonicalized: the selection is the same.
            [_relaxed_header(name, value) for name, value in headers if name.lower() in _SIGNED],
            include,
            (_HEADER_NAME, b" " + value),
            dict(fields),
        )
        return fields, hasher.digest()

    def _key_sign(self, digest: bytes) -> bytes:
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest, _PADDING, _PREHASHED)
        return key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest


def _header(fields: list[tuple[bytes, bytes]], signature: bytes) -> bytes:
    """The DKIM-Signature header line(s) once `b=` holds `signature` (dkimpy's refold)."""
    fields[-1] = (b"b", base64.b64encode(signature))
    value = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", namelen=_NAMELEN)
    return _HEADER_NAME + b": " + value
