"""The SMTP submission listener (GATEWAY_SUBMISSION_SMTP): applications send through it.

aiosmtpd's protocol, run in the caller's loop like the inbound listener (gateway/smtp/server.py):
ESMTP with STARTTLS, SIZE, 8BITMIME and SMTPUTF8; AUTH PLAIN and LOGIN offered only after
STARTTLS; nothing but EHLO, STARTTLS, NOOP, RSET and QUIT before it, and no MAIL before AUTH
(``530``). Each step is answered by a `Service` (gateway.submission.Submission): AUTH checks
the key (awaited through the shared protocol's `verify`), RCPT refuses an address no mail may reach, DATA accepts the message for every
recipient or none.
"""

from __future__ import annotations

import logging
import ssl
from typing import Protocol, Self

from aiosmtpd.smtp import Envelope, Session

from ..apikeys import Key
from ..errors import ConfigError
from .server import SMTP, Listener

__all__ = ["Service", "SubmissionServer", "server_tls"]

log = logging.getLogger("gateway.submission")

REPLY_TEMPORARY = "451 4.3.0 temporary failure, try again later"
REPLY_TOO_MANY = "452 4.5.3 too many recipients in one message: send the rest in another"


class Service(Protocol):
    async def authenticate(self, client: str, user: str, password: str) -> Key | None: ...

    async def recipient(self, address: str) -> str | None: ...

    async def submit(self, key: Key, client: str, rcpts: list[str], data: bytes) -> str: ...


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """The STARTTLS context from GATEWAY_TLS_CERT and GATEWAY_TLS_KEY; a file that is missing,
    unreadable or not a matching PEM pair is a `ConfigError` of one line, at start."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise ConfigError(
                f"GATEWAY_TLS_CERT={cert!r} and GATEWAY_TLS_KEY={key!r} are not a PEM certificate"
                f" and its private key ({exc.reason or exc}); SMTP submission needs both"
            ) from None
        name = exc.filename or cert
        which = "GATEWAY_TLS_KEY" if name == key else "GATEWAY_TLS_CERT"
        raise ConfigError(
            f"{which}={name!r} cannot be read ({exc.strerror or exc}); SMTP submission needs it"
        ) from None
    return context


def _client(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class _Hooks:
    def __init__(self, server: SubmissionServer) -> None:
        self._server = server

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self._server.max_recipients:
            return REPLY_TOO_MANY
        try:
            refusal = await self._server.service.recipient(address)
        except Exception:
            log.exception("submission: checking a recipient failed")
            return REPLY_TEMPORARY
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        key = session.auth_data
        if not isinstance(key, Key):  # aiosmtpd requires AUTH before MAIL: cannot happen
            return "530 5.7.0 Authentication required"
        data = envelope.original_content or b""
        try:
            return await self._server.service.submit(
                key, _client(session), list(envelope.rcpt_tos), data
            )
        except Exception:
            log.exception(
                "submission: accepting a message of %d bytes for %d recipient(s) failed",
                len(data),
                len(envelope.rcpt_tos),
            )
            return REPLY_TEMPORARY


class SubmissionServer(Listener):
    """The submission listener in the running loop; `tls` is the STARTTLS context."""

    def __init__(
        self,
        host: str,
        port: int,
        service: Service,
        *,
        tls: ssl.SSLContext,
        max_size: int = 25 * 1024 * 1024,
        max_recipients: int = 1000,
        bad_key: str = "535 5.7.8 Authentication credentials invalid",
        hostname: str | None = None,
    ) -> None:
        super().__init__(host, port, hostname=hostname, max_size=max_size)
        self.service = service
        self.starttls = tls
        self.max_recipients = max_recipients
        self.bad_key = bad_key
        self._hooks = _Hooks(self)

    def _protocol(self) -> SMTP:
        return self._smtp(
            self._hooks,
            "gateway submission",
            verify=self.service.authenticate,
            bad_credentials=self.bad_key,
            tls_context=self.starttls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
        )

    async def start(self) -> Self:
        if self._server is None:
            await super().start()
            log.info("SMTP submission listening on %s:%d", self.host, self.port)
        return self
