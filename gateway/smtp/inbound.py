"""The inbound SMTP listener for bounces, complaints and mailto refusals (GATEWAY_INBOUND_SMTP).

It runs aiosmtpd's SMTP protocol directly in the caller's asyncio loop (no thread, unlike
aiosmtpd's Controller) and hands every accepted message to an async handler::

    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        ...  # parse with gateway.bounces, act on it; None answers "250 OK"

    async with InboundServer("127.0.0.1", 2525, handle, accept_rcpt=is_ours) as server:
        ...  # server.port is the bound port (useful with port 0)

- ``accept_rcpt(address)`` refuses recipients the gateway does not handle with
  ``550 5.1.1 no such mailbox here``, so the listener is never an open relay. Without it
  every recipient is accepted: only do that behind an MTA that already filters them.
- A handler that raises is logged (logger ``gateway.inbound``) and answered
  ``451 4.3.0 temporary failure, try again later``: the sending MTA keeps the message and
  retries, and the server keeps serving.
- Messages larger than ``max_size`` bytes are refused with 552 (announced in EHLO SIZE).
- ``data`` is the message exactly as received (dot-unstuffed, CRLF line ends);
  ``mail_from`` is ``""`` for the null reverse-path ``MAIL FROM:<>`` that bounces use.
- `stop()` stops listening and drops open connections; a message whose DATA was not yet
  answered stays with the sending MTA, which retries.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Self

from aiosmtpd.smtp import Envelope, Session

from ..errors import ConfigError
from .server import SMTP, Listener

__all__ = ["Handler", "InboundServer", "parse_hostport"]

log = logging.getLogger("gateway.inbound")

Handler = Callable[[str, list[str], bytes], Awaitable[str | None]]

REPLY_NO_MAILBOX = "550 5.1.1 no such mailbox here"
REPLY_TEMPORARY = "451 4.3.0 temporary failure, try again later"

DEFAULT_HOST = "127.0.0.1"

_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|\*")


def parse_hostport(value: str, what: str = "inbound SMTP address") -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)`` for GATEWAY_INBOUND_SMTP.

    Accepted: ``127.0.0.1:2525``, ``mx.example.com:25``, ``[::1]:2525`` (IPv6 in brackets),
    ``0.0.0.0:25`` (all interfaces), and ``:2525`` or ``2525`` meaning ``127.0.0.1:2525``:
    without a host the listener stays on loopback, so listening publicly is always an explicit
    choice. Port 0 picks a free port. Anything else raises `ConfigError` with one line.
    """
    text = str(value).strip()

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"{what} {text!r}: {why}; expected host:port, e.g. 127.0.0.1:2525 or [::1]:2525"
        )

    if not text:
        raise bad("empty")
    if text.isdigit():
        host, port_text = "", text
    elif text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1 :].startswith(":"):
            raise bad("an IPv6 address needs [brackets] followed by :port")
        host, port_text = text[1:close], text[close + 2 :]
        try:
            socket.inet_pton(socket.AF_INET6, host)
        except (OSError, ValueError):
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        if text.count(":") != 1:
            raise bad("missing :port" if ":" not in text else "put an IPv6 address in [brackets]")
        host, _, port_text = text.partition(":")
        if host and not _HOST_RE.fullmatch(host):
            raise bad(f"{host!r} is not a host name or address")
    if not port_text.isdigit() or not port_text.isascii():
        raise bad(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise bad(f"port {port} is out of range 0-65535")
    return host or DEFAULT_HOST, port


class _Hooks:
    """aiosmtpd handler hooks: RCPT filtering and DATA to the caller's handler."""

    def __init__(self, server: InboundServer) -> None:
        self._server = server

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        accept = self._server.accept_rcpt
        if accept is not None:
            try:
                ok = accept(address)
            except Exception:
                log.exception("accept_rcpt failed for %r", address)
                return REPLY_TEMPORARY
            if not ok:
                return REPLY_NO_MAILBOX
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":  # aiosmtpd keeps the null reverse-path of bounces as "<>"
            mail_from = ""
        rcpt_tos = list(envelope.rcpt_tos)
        try:
            reply = await self._server.handle(mail_from, rcpt_tos, data)
        except Exception:
            log.exception(
                "inbound handler failed (from %r to %r, %d bytes)", mail_from, rcpt_tos, len(data)
            )
            return REPLY_TEMPORARY
        return "250 OK" if reply is None else reply


class InboundServer(Listener):
    """An SMTP listener in the running asyncio loop; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        handle: Handler,
        *,
        accept_rcpt: Callable[[str], bool] | None = None,
        max_size: int = 10 * 1024 * 1024,
        hostname: str | None = None,
    ) -> None:
        super().__init__(host, port, hostname=hostname, max_size=max_size)
        self.handle = handle
        self.accept_rcpt = accept_rcpt
        self._hooks = _Hooks(self)

    def _protocol(self) -> SMTP:
        return self._smtp(self._hooks, "gateway inbound")

    async def start(self) -> Self:
        """Start listening; ``self.port`` then holds the bound port."""
        if self._server is None:
            await super().start()
            log.info("inbound SMTP listening on %s:%d", self.host, self.port)
        return self
