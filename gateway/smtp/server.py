"""aiosmtpd's SMTP protocol as every gateway listener runs it, and the listener around it.

aiosmtpd's `Controller` runs the server in a thread of its own; `Listener` runs it in the
caller's asyncio loop instead, so a handler can await the gateway's database directly and a
test can start, fault and stop the server between two awaits.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Self

from aiosmtpd.smtp import SMTP as _AiosmtpdSMTP
from aiosmtpd.smtp import AuthResult, LoginPassword, Session

__all__ = ["LINE_LENGTH_LIMIT", "SMTP", "Listener", "Verify"]

#: Checks AUTH credentials: (client address, user, password) -> what the session holds as
#: `auth_data`, or None to refuse. Awaited, so it may look in the database.
Verify = Callable[[str, str, str], Awaitable[Any | None]]

#: Longest line accepted (RFC 5321 says 1000; broken bounces quote longer ones).
LINE_LENGTH_LIMIT = 64 * 1024


class _Session(Session):
    """A session whose `login_data` does not warn: aiosmtpd sets that deprecated attribute
    on every successful AUTH, which would warn (an error under strict warnings) each time."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class SMTP(_AiosmtpdSMTP):
    """aiosmtpd's SMTP protocol that accepts long lines and registers itself in `registry`
    while connected, so its listener can end every connection when it stops. With `verify`,
    AUTH PLAIN and LOGIN are answered by awaiting it (aiosmtpd's own authenticator is
    synchronous); a refusal is answered `bad_credentials`."""

    def __init__(
        self,
        *args: Any,
        registry: set[SMTP],
        line_length_limit: int = LINE_LENGTH_LIMIT,
        verify: Verify | None = None,
        bad_credentials: str = "535 5.7.8 Authentication credentials invalid",
        **kwargs: Any,
    ) -> None:
        self.line_length_limit = line_length_limit  # read by SMTP.__init__ for its StreamReader
        self._registry = registry
        self._verify_credentials = verify
        self._bad_credentials = bad_credentials
        super().__init__(*args, **kwargs)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        if self._verify_credentials is None:
            return super()._authenticate(mechanism, auth_data)
        # Called synchronously with the decoded credentials: hand them to `_verify`.
        return AuthResult(success=True, handled=False, auth_data=auth_data)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

    async def _verify(self, result: AuthResult) -> AuthResult:
        credentials = result.auth_data
        verify = self._verify_credentials
        if verify is None or not result.success or not isinstance(credentials, LoginPassword):
            return result  # aiosmtpd's own answer (a malformed exchange is answered already)
        assert self.session is not None
        peer = self.session.peer
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        found = await verify(
            client,
            credentials.login.decode("utf-8", "replace"),
            credentials.password.decode("utf-8", "replace"),
        )
        if found is None:
            return AuthResult(success=False, handled=False, message=self._bad_credentials)
        return AuthResult(success=True, auth_data=found)

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._registry.discard(self)
        super().connection_lost(error)


class Listener:
    """An SMTP server in the running loop; a subclass says how each connection is served
    (`_protocol`, an `SMTP` with ``registry=self._live``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        hostname: str | None = None,
        max_size: int = 10 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port  # 0 picks a free port; start() then holds the bound one
        self._tls = tls
        # The name in the greeting; computed once (aiosmtpd would look it up per connection).
        self.hostname = hostname or socket.gethostname() or "localhost"
        self.max_size = max_size  # announced with SIZE; larger messages get 552
        self._server: asyncio.Server | None = None
        self._live: set[SMTP] = set()

    def _protocol(self) -> SMTP:
        raise NotImplementedError

    def _smtp(self, handler: Any, ident: str, **options: Any) -> SMTP:
        """The protocol every gateway listener speaks: raw bytes (no decoding), SMTPUTF8,
        SIZE, in the running loop; `options` add what one listener needs (TLS, AUTH)."""
        return SMTP(
            handler,
            registry=self._live,
            hostname=self.hostname,
            ident=ident,
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=self.max_size,
            loop=asyncio.get_running_loop(),
            **options,
        )

    async def start(self) -> Self:
        """Start listening (once); ``self.port`` then holds the bound port."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                self._protocol, self.host, self.port, ssl=self._tls, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening, drop open connections and wait until their tasks have ended."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        await self.drop_connections()

    async def drop_connections(self) -> None:
        """Abort every open connection (the client sees a drop) but keep listening."""
        protocols = list(self._live)
        for protocol in protocols:
            transport = protocol.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            elif transport is not None:
                transport.close()
        tasks = [p._handler_coroutine for p in protocols if p._handler_coroutine is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports run connection_lost

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
