"""A real aiosmtpd SMTP server living in the test's event loop, recording what it receives.

async with RecordingSMTPServer(reject=lambda rcpt: (550, "5.1.1 no") if ... else None) as srv:
    transport = SMTPTransport(srv.url)
    ...
    await srv.wait_for(3)
    assert srv.messages[0].data == expected_bytes
    assert srv.connections == 1
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "RecordingSMTPServer"]


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly as received (dot-unstuffed), CRLF line ends
    mail_options: list[str] = field(default_factory=list)
    peer: object = None


class _Handler:
    def __init__(self, server: RecordingSMTPServer) -> None:
        self._srv = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options
    ) -> str:
        srv = self._srv
        if srv.drop is not None and srv.drop(address):
            # Vanish without a reply; connection_lost() then cancels this coroutine.
            server.transport.abort()
            await asyncio.sleep(3600)
        if srv.reject is not None:
            verdict = srv.reject(address)
            if verdict is not None:
                code, text = verdict
                return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        srv = self._srv
        srv.received += 1
        if not srv.discard:
            srv.messages.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=envelope.original_content,
                    mail_options=list(envelope.mail_options),
                    peer=session.peer,
                )
            )
        srv._arrived.set()
        return "250 OK"


class _Session(Session):
    """aiosmtpd logs a deprecation warning on every successful AUTH via login_data."""

    @property
    def login_data(self):
        return self._login_data

    @login_data.setter
    def login_data(self, value) -> None:
        self._login_data = value


class _SMTP(SMTP):
    """aiosmtpd.smtp.SMTP that tolerates long lines and tracks itself for shutdown."""

    def __init__(self, *args, line_length_limit: int, registry: set[_SMTP], **kwargs) -> None:
        self.line_length_limit = line_length_limit  # read by SMTP.__init__ for the reader
        self._registry = registry
        super().__init__(*args, **kwargs)

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._registry.discard(self)
        super().connection_lost(error)


class RecordingSMTPServer:
    """Async context manager: an SMTP sink on 127.0.0.1 (port 0 = any free port).

    reject(rcpt) -> (code, text) refuses that RCPT (e.g. (550, "5.1.1 user unknown")).
    drop(rcpt) -> True makes the server abort the TCP connection at that RCPT, no reply.
    discard=True counts messages (``.received``) without keeping them (benchmarks).
    credentials={"user": "pass"} offers AUTH PLAIN/LOGIN (also without TLS); see .logins.
    starttls=SSLContext offers STARTTLS; tls=SSLContext makes the listener implicit TLS.
    """

    def __init__(
        self,
        *,
        reject: Callable[[str], tuple[int, str] | None] | None = None,
        drop: Callable[[str], bool] | None = None,
        discard: bool = False,
        port: int = 0,
        credentials: dict[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        tls: ssl.SSLContext | None = None,
        line_length_limit: int = 1 << 20,
    ) -> None:
        self.reject = reject
        self.drop = drop
        self.discard = discard
        self.credentials = credentials
        self.host = "127.0.0.1"
        self.port = port
        self.messages: list[Received] = []
        self.received = 0  # messages accepted, also counted when discard=True
        self.connections = 0  # TCP connections accepted
        self.logins: list[str] = []  # user names that authenticated
        self._starttls = starttls
        self._require_starttls = require_starttls
        self._tls = tls
        self._line_length_limit = line_length_limit
        self._handler = _Handler(self)
        self._server: asyncio.Server | None = None
        self._live: set[_SMTP] = set()
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{'smtps' if self._tls else 'smtp'}://{self.host}:{self.port}"

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            if (self.credentials or {}).get(user) == auth_data.password.decode("utf-8", "replace"):
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _protocol(self) -> _SMTP:
        self.connections += 1
        auth = self.credentials is not None
        return _SMTP(
            self._handler,
            line_length_limit=self._line_length_limit,
            registry=self._live,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname="localhost",  # avoid a getfqdn() per connection
            data_size_limit=None,
            tls_context=self._starttls,
            require_starttls=self._require_starttls,
            authenticator=self._authenticate if auth else None,
            # Offered (also without TLS) but not required: requiring it without TLS
            # makes aiosmtpd warn on every connection.
            auth_require_tls=not auth,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> RecordingSMTPServer:
        loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._server = await loop.create_server(
            self._protocol, self.host, self.port, ssl=self._tls, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and abort every open connection (clients see a drop)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections()

    async def drop_connections(self) -> None:
        """Abort all open client connections but keep listening."""
        protos = list(self._live)
        for proto in protos:
            if proto.transport is not None:
                proto.transport.abort()
        tasks = [p._handler_coroutine for p in protos if p._handler_coroutine is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)

    async def wait_for(self, n: int, timeout: float = 5) -> None:
        """Wait until at least ``n`` messages have been accepted."""

        async def _wait() -> None:
            while self.received < n:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(_wait(), timeout)

    async def __aenter__(self) -> RecordingSMTPServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
