"""Message transports: SMTP connection pool (aiosmtplib), maildir, memory."""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib

from gateway.errors import ConfigError

__all__ = [
    "Envelope",
    "MaildirTransport",
    "MemoryTransport",
    "Outcome",
    "SMTPSettings",
    "SMTPTransport",
    "Transport",
    "transport_from_url",
]

log = logging.getLogger(__name__)


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
    "expected smtp://[user:pass@]host[:port][?starttls=0|1&timeout=SECONDS&verify=0|1], "
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


def transport_from_url(url: str, *, concurrency: int = 4) -> Transport:
    """Build a transport from a URL; raises ConfigError (a ValueError) for a bad one.

    smtp://[user:pass@]host[:port]   STARTTLS if offered; ?starttls=1 requires it (port 587),
                                     ?starttls=0 never uses it (default port 25)
    smtps://[user:pass@]host[:port]  implicit TLS (default port 465)
        both also take ?timeout=SECONDS and ?verify=0 (skip certificate checks)
    maildir:///abs/path, maildir://./relative/path, memory://
    """
    if not isinstance(url, str) or "://" not in url:
        raise _bad(str(url), "missing scheme://")
    scheme = url.partition("://")[0].lower()
    if scheme in ("smtp", "smtps"):
        return SMTPTransport(url, concurrency=concurrency)
    if scheme == "maildir":
        return MaildirTransport(_parse_maildir(url))
    if scheme == "memory":
        if url.partition("://")[2]:
            raise _bad(url, "memory:// takes nothing after the scheme")
        return MemoryTransport()
    raise _bad(url, f"unknown scheme {scheme!r}")


# --------------------------------------------------------------------------- SMTP

_RECONNECT_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    OSError,  # includes ConnectionError and SMTPConnectError
    asyncio.TimeoutError,
)


class SMTPTransport:
    """A pool of up to ``concurrency`` persistent aiosmtplib connections to one relay.

    Connections are opened lazily, reused across messages and ``deliver()`` calls,
    and discarded (then reopened on next use) after any connection-level failure.
    """

    def __init__(self, url: str, *, concurrency: int = 4, timeout: float = 30.0) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        cfg = _parse_smtp(url)
        self.settings = cfg
        self.concurrency = concurrency
        self.timeout = cfg.timeout if cfg.timeout is not None else timeout
        self.url = _redact(url)
        self._slots = asyncio.Semaphore(concurrency)
        self._idle: list[aiosmtplib.SMTP] = []
        self._all: set[aiosmtplib.SMTP] = set()
        self._tls_context: ssl.SSLContext | None = None
        self._local_hostname: str | None = None

    def __repr__(self) -> str:
        return f"SMTPTransport({self.url!r}, concurrency={self.concurrency})"

    async def open(self) -> None:
        """Prepare the pool; connections themselves are opened lazily on first use."""
        await self._prepare()

    async def close(self) -> None:
        """QUIT idle connections and drop any others."""
        idle, self._idle = self._idle, []
        clients, self._all = list(self._all), set()
        if idle:
            await asyncio.gather(*(self._quit(c) for c in idle))
        for c in clients:
            c.close()
        await asyncio.sleep(0)  # let the transports finish closing their sockets

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            if client.is_connected:
                await client.quit(timeout=min(self.timeout, 5.0))
        except Exception:
            pass
        finally:
            client.close()

    async def _prepare(self) -> None:
        cfg = self.settings
        if self._local_hostname is None:
            name = await asyncio.to_thread(socket.getfqdn)
            ok = name and name.isascii() and all(c.isalnum() or c in "-._" for c in name)
            self._local_hostname = name if ok else "localhost"
        if self._tls_context is None and (cfg.use_tls or cfg.start_tls is not False):
            self._tls_context = await asyncio.to_thread(_tls_context, cfg.verify)

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            await self._prepare()
        cfg = self.settings
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password,
            local_hostname=self._local_hostname,
            timeout=self.timeout,
            use_tls=cfg.use_tls,
            start_tls=cfg.start_tls,
            tls_context=self._tls_context,
        )
        await client.connect()
        self._all.add(client)
        return client

    def _discard(self, client: aiosmtplib.SMTP) -> None:
        client.close()
        self._all.discard(client)

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        n = len(envelopes)
        if not n:
            return []
        results: list[Outcome | None] = [None] * n
        # One shared iterator: asyncio is single-threaded, so workers pulling from
        # it never get the same item twice; no queue bookkeeping per message.
        work = iter(enumerate(envelopes))
        errors: list[Outcome] = []
        workers = min(self.concurrency, n)
        if workers == 1:
            await self._worker(work, results, errors)
        else:
            await asyncio.gather(*(self._worker(work, results, errors) for _ in range(workers)))
        if errors:  # every worker gave up (could not connect): fail what is left
            fallback = errors[-1]
            for i, r in enumerate(results):
                if r is None:
                    results[i] = fallback
        return results  # type: ignore[return-value]

    async def _worker(
        self,
        work: Iterator[tuple[int, Envelope]],
        results: list[Outcome | None],
        errors: list[Outcome],
    ) -> None:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            last_ok: Outcome | None = None
            try:
                for i, env in work:
                    if client is None or not client.is_connected:
                        if client is not None:
                            self._discard(client)
                            client = None
                        try:
                            client = await self._connect()
                        except Exception as exc:
                            outcome = _connect_failure(exc)
                            results[i] = outcome
                            errors.append(outcome)
                            return  # leave the rest to workers that can connect
                    try:
                        _, reply = await client.sendmail(
                            env.sender,
                            [env.recipient],
                            env.data,
                            mail_options=_mail_options(client, env),
                        )
                    except Exception as exc:
                        outcome, usable = await self._failure(client, exc)
                        results[i] = outcome
                        if not usable:
                            self._discard(client)
                            client = None
                    else:
                        if last_ok is None or last_ok.message != reply:
                            last_ok = Outcome(True, 250, reply, False)
                        results[i] = last_ok
            except BaseException:
                # Cancelled mid-transaction: the session state is unknown.
                if client is not None:
                    self._discard(client)
                    client = None
                raise
            finally:
                if client is not None:
                    if client.is_connected:
                        self._idle.append(client)
                    else:
                        self._discard(client)

    async def _failure(self, client: aiosmtplib.SMTP, exc: Exception) -> tuple[Outcome, bool]:
        """Map a sendmail() exception to an Outcome; say whether the connection is reusable."""
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            exc = exc.recipients[0]
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 100:
            outcome = Outcome(False, exc.code, exc.message, exc.code >= 500)
            # aiosmtplib sent RSET already but ignores its failure; confirm the
            # session is clean (error path only) or let the caller replace it.
            if not client.is_connected:
                return outcome, False
            try:
                await client.rset(timeout=min(self.timeout, 10.0))
            except Exception:
                return outcome, False
            return outcome, True
        if isinstance(exc, aiosmtplib.SMTPNotSupported):  # e.g. server lacks SMTPUTF8
            return Outcome(False, None, exc.message, True), client.is_connected
        if isinstance(exc, ValueError):  # address unusable on an SMTP command line
            return Outcome(False, None, str(exc), True), client.is_connected
        if not isinstance(exc, _RECONNECT_ERRORS):  # malformed reply, or a surprise
            log.warning("SMTP delivery via %s failed unexpectedly: %r", self.url, exc)
        return Outcome(False, None, _describe(exc), False), False


def _tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _mail_options(client: aiosmtplib.SMTP, env: Envelope) -> list[str] | None:
    opts: list[str] | None = None
    if not env.data.isascii() and client.supports_extension("8bitmime"):
        opts = ["BODY=8BITMIME"]
    if not (env.sender.isascii() and env.recipient.isascii()):
        opts = [*(opts or ()), "SMTPUTF8"]
    return opts


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError | aiosmtplib.SMTPTimeoutError):
        return f"timeout: {text}" if "time" not in text.lower() else text
    return text


def _connect_failure(exc: Exception) -> Outcome:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # Greeting/EHLO/AUTH refused. 5xx AUTH failures are configuration errors
        # (not the message's fault) so they are reported as non-permanent.
        return Outcome(False, exc.code, f"connect: {exc.message}", False)
    return Outcome(False, None, f"connect: {_describe(exc)}", False)


# --------------------------------------------------------------------------- maildir


class MaildirTransport:
    """Writes each message byte-exactly as one file in a Maildir (``new/``)."""

    concurrency = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._box: mailbox.Maildir | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"MaildirTransport({self.path!r})"

    async def open(self) -> None:
        if self._box is None:
            self._box = await asyncio.to_thread(_open_maildir, self.path)

    async def close(self) -> None:
        self._box = None

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if not envelopes:
            return []
        async with self._lock:
            await self.open()
            return await asyncio.to_thread(self._write_all, envelopes)

    def _write_all(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        box = self._box
        assert box is not None
        out: list[Outcome] = []
        for env in envelopes:
            try:
                key = box.add(env.data)
            except OSError as exc:
                out.append(Outcome(False, None, f"maildir: {exc}", False))
            else:
                out.append(Outcome(True, 250, f"saved as {key}", False))
        return out


def _open_maildir(path: str) -> mailbox.Maildir:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return mailbox.Maildir(path, factory=None, create=True)


# --------------------------------------------------------------------------- memory


class MemoryTransport:
    """Keeps delivered envelopes in ``.sent``; ``fail(env)`` may return an Outcome."""

    def __init__(
        self,
        fail: Callable[[Envelope], Outcome | None] | None = None,
        *,
        concurrency: int = 1,
    ) -> None:
        self.fail = fail
        self.concurrency = concurrency
        self.sent: list[Envelope] = []
        self.opened = False

    def __repr__(self) -> str:
        return f"MemoryTransport(sent={len(self.sent)})"

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        out: list[Outcome] = []
        for env in envelopes:
            failed = self.fail(env) if self.fail is not None else None
            if failed is not None:
                out.append(failed)
            else:
                self.sent.append(env)
                out.append(_MEMORY_OK)
        return out


_MEMORY_OK = Outcome(True, 250, "OK", False)
