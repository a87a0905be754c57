"""SMTP submission's side of the gateway: who may submit, which recipients are refused at
RCPT, and what a submitted message becomes (one message per recipient through accept, with
the same policy as `send()`). The SMTP dialogue itself is gateway/smtp/submission.py; this
module answers each step with the reply to give.

Replies:
- AUTH with a wrong name or key: ``535 5.7.8``. Failed attempts are counted per client
  address; past FAILURES_BEFORE_SLOWDOWN within a minute each further attempt waits longer
  (up to MAX_DELAY seconds), and the count empties as the minute passes: never a lock-out.
- RCPT to an address no mail may reach: ``550 5.7.1`` with the reason.
- End of DATA: ``250 2.0.0`` with the queue id (the Message-ID) of every recipient's
  message; a message that cannot go to every recipient (refused for its category, or
  blocked by the scan) is refused whole with ``550 5.7.1`` naming why, and nothing is queued:
  never accepted and then dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence

from . import apikeys, submitted
from .accept import Accepter, SendRequest
from .config import Settings
from .errors import InvalidInput
from .smtp import parse_hostport
from .smtp.submission import SubmissionServer, server_tls
from .store import Store

log = logging.getLogger("gateway.submission")

FAILURES_BEFORE_SLOWDOWN = 10
WINDOW = 60.0  # seconds over which failed AUTH attempts are counted
MAX_DELAY = 30.0
MAX_RECIPIENTS = 1000
COPIES = 4  # a message's size times its recipients may reach this many times the size limit
MAX_REPLY = 400  # characters of reasons in one reply line

REPLY_BAD_KEY = (
    "535 5.7.8 user name or key not accepted: use an API key's NAME as the user and the key"
    " as the password (gateway apikey create NAME --scope send)"
)


class FailedLogins:
    """Failed AUTH attempts per client address, over the last WINDOW seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, client: str) -> deque[float]:
        seen = self._seen[client]
        horizon = self.clock() - WINDOW
        while seen and seen[0] <= horizon:
            seen.popleft()
        if not seen:
            del self._seen[client]  # nothing kept about a client that stopped failing
            return deque()
        return seen

    def delay(self, client: str) -> float:
        """How long the next attempt from `client` waits before it is answered."""
        excess = len(self._recent(client)) - FAILURES_BEFORE_SLOWDOWN
        return 0.0 if excess < 0 else min(MAX_DELAY, 2.0**excess)

    def failed(self, client: str) -> None:
        self._recent(client)
        self._seen[client].append(self.clock())


class Submission:
    """The answers of the submission listener, one method per step of the dialogue."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        accepter: Accepter,
        *,
        failures: FailedLogins | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.accepter = accepter
        self.failures = failures or FailedLogins()
        self.sleep = sleep

    async def authenticate(self, client: str, user: str, password: str) -> apikeys.Key | None:
        """The key whose NAME is `user` and which `password` is, or None (after the delay
        this client's recent failures earned)."""
        delay = self.failures.delay(client)
        if delay:
            log.warning("submission: slowing AUTH from %s by %.0f s after failures", client, delay)
            await self.sleep(delay)
        key = await apikeys.authenticate(self.store, password)
        if key is None or key.name != user or not key.may("send"):
            self.failures.failed(client)
            log.warning("submission: AUTH failed from %s as %r", client, user[:64])
            return None
        return key

    async def recipient(self, address: str) -> str | None:
        """The reply refusing `address` at RCPT, or None to accept it."""
        try:
            refusal = await self.accepter.refusal(address)
        except InvalidInput as exc:
            return f"553 5.1.3 {_line(str(exc))}"
        return f"550 5.7.1 {_line(refusal)}" if refusal else None

    async def submit(self, key: apikeys.Key, client: str, rcpts: Sequence[str], data: bytes) -> str:
        """Accept the message for every recipient, or for none; the reply says which."""
        who = f"smtp:{key.name}"
        if len(data) * len(rcpts) > self.settings.submission_max_bytes * COPIES:
            # each recipient gets a copy of its own: bounded, so one DATA cannot fill the disk
            return (
                "552 5.3.4 this message is too large to copy to so many recipients:"
                " send it to fewer at once"
            )
        try:
            message = submitted.read(data)
            self._check_sender(message.sender)
            requests = [
                SendRequest(
                    to=rcpt,
                    subject=message.subject,
                    category=message.category,
                    topic=message.topic,
                    source=who,
                    message=message,
                )
                for rcpt in rcpts
            ]
            prepared = await self.accepter.prepare(requests)
        except _ForeignSender as exc:
            log.info("submission %s from %s: refused: %s", who, client, exc)
            return f"550 5.7.1 {_line(str(exc))}"
        except InvalidInput as exc:
            log.info("submission %s from %s: refused: %s", who, client, exc)
            return f"550 5.6.0 {_line(str(exc))}"
        refused = [
            (rcpt, result)
            for rcpt, result in zip(rcpts, prepared.results, strict=True)
            if not result.queued
        ]
        if refused:
            # Nothing is queued: the application learns of every recipient at once, and sends
            # again to those it may reach. What was refused is in the message log.
            await self.accepter.commit(
                type(prepared)(
                    prepared.results, [], [e for e in prepared.logs if e["status"] != "accepted"]
                )
            )
            reasons = "; ".join(
                f"{rcpt}: {'blocked: ' if r.status == 'blocked' else ''}{r.reason}"
                for rcpt, r in refused
            )
            # The log names no address: an erasure could not take it out of the log files.
            log.info(
                "submission %s from %s: refused for %d of %d recipient(s)",
                who,
                client,
                len(refused),
                len(rcpts),
            )
            tail = " (nothing was queued)" if len(rcpts) > len(refused) else ""
            return f"550 5.7.1 {_line(reasons, MAX_REPLY - len(tail))}{tail}"
        await self.accepter.commit(prepared)
        ids = " ".join(r.message_id or "" for r in prepared.results)
        log.info("submission %s from %s: %d queued: %s", who, client, len(rcpts), ids)
        return f"250 2.0.0 queued as {ids}"

    def _check_sender(self, sender: str) -> None:
        """The From must be the gateway's sender domain (GATEWAY_FROM's, its subdomains, or
        the DKIM domain): the gateway signs and answers for it."""
        domain = sender.rpartition("@")[2]
        own = {self.settings.from_domain}
        if self.settings.dkim_domain:
            own.add(self.settings.dkim_domain.lower())
        if not any(domain == d or domain.endswith("." + d) for d in own if d):
            raise _ForeignSender(
                f"the From address {sender} is not in this gateway's domains"
                f" ({', '.join(sorted(d for d in own if d))}): send from one of them"
            )


def listener(settings: Settings, store: Store, accepter: Accepter) -> SubmissionServer:
    """The listener on GATEWAY_SUBMISSION_SMTP with its STARTTLS certificate, answered by a
    `Submission` (start it with ``async with``)."""
    host, port = parse_hostport(settings.submission_smtp, "GATEWAY_SUBMISSION_SMTP")
    return SubmissionServer(
        host,
        port,
        Submission(settings, store, accepter),
        tls=server_tls(settings.tls_cert, settings.tls_key),
        max_size=settings.submission_max_bytes,
        max_recipients=MAX_RECIPIENTS,
        bad_key=REPLY_BAD_KEY,
    )


class _ForeignSender(Exception):
    pass


def _line(text: str, limit: int = MAX_REPLY) -> str:
    """One printable ASCII line of at most `limit` characters, for an SMTP reply."""
    flat = " ".join(text.split()).encode("ascii", "replace").decode()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
