"""What every transport shares: the records it delivers, its protocol, and what a
GATEWAY_SMTP_URL says (below the transports, so each reads its own URL without a cycle)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message for one recipient; ``data`` is final and is sent byte-exactly."""

    sender: str  # envelope MAIL FROM ("" for the null reverse-path)
    recipient: str  # exactly one RCPT TO
    data: bytes  # complete message, CRLF line ends (may be DKIM-signed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of delivering one Envelope."""

    ok: bool
    code: int | None  # SMTP reply code; None when there was no reply
    message: str  # server reply text or error description
    permanent: bool  # True for 5xx (do not retry); False for 4xx/timeouts/drops


@runtime_checkable
class Transport(Protocol):
    concurrency: int

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]: ...


# --------------------------------------------------------------------------- URLs

_EXPECTED = (
    "expected smtp://[user:pass@]host[:port][?starttls=0|1&timeout=SECONDS&verify=0|1"
    "&tls=none (loopback host only)], "
    "smtps://[user:pass@]host[:port][?timeout=SECONDS&verify=0|1], "
    "maildir:///abs/path, maildir://./relative/path or memory://"
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for error messages)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{head}://{user}{':***' if colon else ''}@{hostpart}"


def _bad(url: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid transport URL {_redact(url)!r}: {problem}; {_EXPECTED}")


def _flag(url: str, name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise _bad(url, f"{name} must be 0 or 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class SMTPSettings:
    """What an smtp:// or smtps:// URL says (the password is never shown by repr)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    use_tls: bool  # implicit TLS (smtps)
    start_tls: bool | None  # True: required, False: never, None: if offered
    verify: bool
    timeout: float | None  # None: use the constructor's value
    plain: bool = False  # ?tls=none: no TLS even with credentials (loopback hosts only)

    @property
    def requires_tls(self) -> bool:
        """Credentials never cross the network in clear text: with a user name, a relay
        that offers no STARTTLS gets nothing (unless ?tls=none named a loopback relay)."""
        return self.username is not None and not self.use_tls and not self.plain


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_smtp(url: str) -> SMTPSettings:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _bad(url, "cannot parse URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise _bad(url, f"scheme must be smtp or smtps for SMTP, got {parts.scheme!r}")
    if parts.path not in ("", "/"):
        raise _bad(url, "unexpected path (percent-encode '/', '@', ':' in user/password)")
    if parts.fragment:
        raise _bad(url, "unexpected #fragment")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise _bad(url, "port must be a number 1-65535") from None
    if not host:
        raise _bad(url, "missing host")
    if port == 0:
        raise _bad(url, "port must be a number 1-65535")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise _bad(url, "password given without a user name")
    if username == "":
        username = None

    start_tls: bool | None = None
    plain = False
    verify = True
    timeout: float | None = None
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _bad(url, "malformed query string") from None
    for key, value in query:
        k = key.lower()
        if k == "starttls":
            if scheme == "smtps":
                raise _bad(url, "starttls is not allowed with smtps (implicit TLS)")
            start_tls = _flag(url, key, value)
        elif k == "tls":
            if value.strip().lower() != "none":
                raise _bad(url, f"tls takes only 'none', got {value!r}")
            plain = True
        elif k == "verify":
            verify = _flag(url, key, value)
        elif k == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout < float("inf"):
                raise _bad(url, f"timeout must be a positive number of seconds, got {value!r}")
        else:
            raise _bad(url, f"unknown parameter {key!r}")

    if plain:
        if scheme == "smtps" or start_tls:
            raise _bad(url, "tls=none contradicts smtps:// and starttls=1")
        if not _is_loopback(host):
            raise _bad(
                url,
                "tls=none is allowed only for a relay on this machine (127.0.0.1, ::1,"
                f" localhost), not {host!r}: the password and mail would cross the network"
                " unencrypted",
            )
        start_tls = False
    elif username is not None and start_tls is False:
        raise _bad(url, "starttls=0 with a user name would send the password unencrypted")
    if scheme == "smtps":
        use_tls, default_port = True, 465
    else:
        use_tls, default_port = False, (587 if start_tls else 25)
    return SMTPSettings(
        host=host,
        port=port or default_port,
        username=username,
        password=password,
        use_tls=use_tls,
        start_tls=start_tls,
        verify=verify,
        timeout=timeout,
        plain=plain,
    )


def _parse_maildir(url: str) -> str:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise _bad(url, "maildir URLs take no query or fragment")
    path = unquote(parts.path)
    if parts.netloc == ".":
        path = path.lstrip("/")
        if not path:
            raise _bad(url, "missing relative path after maildir://./")
        return path
    if parts.netloc:
        raise _bad(url, "maildir host must be empty (absolute path) or '.' (relative path)")
    if not path.startswith("/") or path == "/":
        raise _bad(url, "missing absolute path after maildir://")
    return path
