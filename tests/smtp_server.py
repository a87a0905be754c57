"""A real aiosmtpd SMTP server living in the test's event loop, recording what it receives.

async with RecordingSMTPServer(reject=lambda rcpt: (550, "5.1.1 no") if ... else None) as srv:
    transport = SMTPTransport(srv.url)
    ...
    await srv.wait_for(3)
    assert srv.messages[0].data == expected_bytes
    assert srv.connections == 1

Fault injection, deterministic for a given ``seed``: each DATA transfer's fate is drawn from
the seed, its (first) recipient and how many DATA transfers that recipient had before, so it
depends neither on the order in which concurrent connections arrive nor on Message-IDs:

async with RecordingSMTPServer(fail_rate=0.1, drop_data_rate=0.01, slow=0.05, seed=7) as srv:
    ...
    assert srv.faults["fail"] > 0 and srv.faults["drop_data"] > 0
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from gateway.smtp.server import SMTP, Listener

__all__ = ["FAULT_KINDS", "Received", "RecordingSMTPServer", "message_id_of"]

# Keys of RecordingSMTPServer.faults (always all present, starting at 0):
#   reject     RCPT refused by reject(rcpt)
#   drop       connection aborted at RCPT by drop(rcpt)
#   fail       DATA answered with FAIL_REPLY (fail_rate)
#   drop_data  connection aborted after the data arrived, before any reply (drop_data_rate)
#   slow       DATA replies delayed by `slow`
#   abandoned  the client went away while a slow reply was pending (nothing recorded)
FAULT_KINDS = ("reject", "drop", "fail", "drop_data", "slow", "abandoned")
FAIL_REPLY = "451 4.3.0 try again"

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def message_id_of(data: bytes) -> str | None:
    """The Message-ID header of raw message bytes (None when it has none)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly as received (dot-unstuffed), CRLF line ends
    mail_options: list[str] = field(default_factory=list)
    peer: object = None

    @property
    def message_id(self) -> str | None:
        return message_id_of(self.data)


class _Handler:
    def __init__(self, server: RecordingSMTPServer) -> None:
        self._srv = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options
    ) -> str:
        srv = self._srv
        if srv.drop is not None and srv.drop(address):
            # Vanish without a reply; connection_lost() then cancels this coroutine.
            srv.faults["drop"] += 1
            server.transport.abort()
            await asyncio.sleep(3600)
        if srv.reject is not None:
            verdict = srv.reject(address)
            if verdict is not None:
                code, text = verdict
                srv.faults["reject"] += 1
                return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        srv = self._srv
        data = envelope.original_content or b""
        fate, delay, key = srv._fate(data, envelope.rcpt_tos)
        if fate == "drop_data":
            # The data has arrived; vanish before answering. Not recorded: the client cannot
            # know whether the message was taken, so it must try again.
            srv.faults["drop_data"] += 1
            srv.dropped[key] += 1
            server.transport.abort()
            await asyncio.sleep(3600)  # connection_lost() cancels this coroutine
        if delay > 0:
            srv.faults["slow"] += 1
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                srv.faults["abandoned"] += 1  # client timed out or closed: nothing recorded
                srv.abandoned[key] += 1
                raise
        if fate == "fail":
            srv.faults["fail"] += 1
            srv.failed[key] += 1
            return FAIL_REPLY
        srv.received += 1
        if not srv.discard:
            srv.messages.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=data,
                    mail_options=list(envelope.mail_options),
                    peer=session.peer,
                )
            )
        srv._arrived.set()
        return "250 OK"


class RecordingSMTPServer(Listener):
    """Async context manager: an SMTP sink on 127.0.0.1 (port 0 = any free port).

    reject(rcpt) -> (code, text) refuses that RCPT (e.g. (550, "5.1.1 user unknown")).
    drop(rcpt) -> True makes the server abort the TCP connection at that RCPT, no reply.
    discard=True counts messages (``.received``) without keeping them (benchmarks).
    credentials={"user": "pass"} offers AUTH PLAIN/LOGIN (also without TLS); see .logins.
    starttls=SSLContext offers STARTTLS; tls=SSLContext makes the listener implicit TLS.

    Faults at DATA (counted in ``.faults``, see FAULT_KINDS; ``seed`` makes them repeatable):
    fail_rate       fraction of DATA transfers answered ``451 4.3.0 try again`` (not recorded)
    drop_data_rate  fraction of DATA transfers after which the server aborts the TCP
                    connection instead of replying (not recorded)
    slow            seconds to wait before each DATA reply, or slow(rcpt) -> seconds for the
                    first recipient; a client that gives up meanwhile gets nothing recorded
    Only a DATA transfer answered 250 is recorded (``.messages``, ``.received``). Per
    Message-ID: ``.attempts`` (DATA transfers), ``.failed``, ``.dropped``, ``.abandoned``.
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
        fail_rate: float = 0.0,
        drop_data_rate: float = 0.0,
        slow: float | Callable[[str], float] = 0.0,
        seed: int | str = 0,
    ) -> None:
        if not (0 <= fail_rate <= 1 and 0 <= drop_data_rate <= 1):
            raise ValueError("fail_rate and drop_data_rate are fractions between 0 and 1")
        if fail_rate + drop_data_rate > 1:
            raise ValueError("fail_rate + drop_data_rate must not exceed 1")
        super().__init__("127.0.0.1", port, tls=tls)
        self.reject = reject
        self.drop = drop
        self.discard = discard
        self.credentials = credentials
        self.messages: list[Received] = []
        self.received = 0  # messages accepted, also counted when discard=True
        self.connections = 0  # TCP connections accepted
        self.logins: list[str] = []  # user names that authenticated
        self.fail_rate = fail_rate
        self.drop_data_rate = drop_data_rate
        self.slow = slow
        self.seed = seed
        self.faults: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self.attempts: Counter[str] = Counter()  # DATA transfers seen, per Message-ID
        self.dropped: Counter[str] = Counter()  # drop_data faults, per Message-ID
        self.failed: Counter[str] = Counter()  # fail (451) faults, per Message-ID
        self.abandoned: Counter[str] = Counter()  # slow replies the client left, per Message-ID
        self._draws: Counter[str] = Counter()  # DATA transfers per first recipient
        self._starttls = starttls
        self._require_starttls = require_starttls
        self._line_length_limit = line_length_limit
        self._handler = _Handler(self)
        self._arrived = asyncio.Event()

    def _fate(self, data: bytes, rcpt_tos: list[str]) -> tuple[str, float, str]:
        """What happens to this DATA transfer: ("ok" | "fail" | "drop_data", delay, key).
        The key is the Message-ID (or a digest of the bytes when there is none)."""
        key = message_id_of(data) or hashlib.sha256(data).hexdigest()
        self.attempts[key] += 1
        rcpt = rcpt_tos[0] if rcpt_tos else ""
        self._draws[rcpt] += 1
        fate = "ok"
        if self.fail_rate or self.drop_data_rate:
            draw = random.Random(f"{self.seed}|{rcpt}|{self._draws[rcpt]}").random()
            if draw < self.drop_data_rate:
                fate = "drop_data"
            elif draw < self.drop_data_rate + self.fail_rate:
                fate = "fail"
        slow = self.slow
        delay = float(slow(rcpt) if callable(slow) else slow)
        return fate, delay, key

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

    def _protocol(self) -> SMTP:
        self.connections += 1
        auth = self.credentials is not None
        return SMTP(
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
        if self._server is None:
            self._arrived = asyncio.Event()  # bound to the loop of this start
        return await super().start()

    async def wait_for(self, n: int, timeout: float = 5) -> None:
        """Wait until at least ``n`` messages have been accepted."""

        async def _wait() -> None:
            while self.received < n:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(_wait(), timeout)
