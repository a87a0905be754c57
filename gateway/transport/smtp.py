"""SMTP delivery over a small pool of persistent aiosmtplib connections."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator, Sequence

import aiosmtplib

from .base import Envelope, Outcome, _parse_smtp, _redact

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- SMTP

_RECONNECT_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    OSError,  # includes ConnectionError and SMTPConnectError
    asyncio.TimeoutError,
)


class TLSRequired(aiosmtplib.SMTPException):
    """The relay would take credentials only in clear text: nothing is sent to it."""


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
        manual = cfg.requires_tls  # STARTTLS, then AUTH, checked here step by step
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=None if manual else cfg.username,
            password=None if manual else cfg.password,
            local_hostname=self._local_hostname,
            timeout=self.timeout,
            use_tls=cfg.use_tls,
            start_tls=False if manual else cfg.start_tls,
            tls_context=self._tls_context,
        )
        await client.connect()
        if manual:
            try:
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise TLSRequired(
                        f"{self.url} offers no STARTTLS, and the user name and password are"
                        " sent only encrypted: use a port that offers STARTTLS, smtps://, or"
                        " ?tls=none for a relay on this machine; the mail stays queued"
                    )
                await client.starttls()
                await client.login(cfg.username or "", cfg.password or "")
            except BaseException as exc:
                client.close()
                if isinstance(exc, TLSRequired):
                    log.error("SMTP delivery held: %s", exc)
                raise
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
