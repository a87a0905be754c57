"""The delivery loop: claim with a lease, recheck suppression, hand over, record the outcome."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import withhold
from .bounces import Event, classify_reply
from .config import Settings
from .policy import cap_opens, cap_words, decide
from .records import OutboxItem
from .store import Store
from .tokens import Signer
from .transport import Envelope, Outcome, Transport

log = logging.getLogger("gateway.worker")


DAY = 86400.0

# A claimed batch, ready to hand over, and the rows that could not be made ready (id: why).
Claimed = tuple[list[OutboxItem], dict[int, str]]


@dataclass
class Batch:
    """One claimed batch after the recheck: what goes out and what does not."""

    items: list[OutboxItem] = field(default_factory=list)  # every row claimed
    deliver: list[OutboxItem] = field(default_factory=list)
    suppressed: list[tuple[int, str]] = field(default_factory=list)
    deferred: list[tuple[int, float, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WorkerStats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    alerts: int = 0
    suppressed: int = 0
    deferred: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Worker:
    """Claims due outbox rows in batches. A batch's lease outlives its delivery by far, so a
    live worker never loses its rows; a crashed worker's rows come back when the lease ends."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        transport: Transport,
        *,
        batch_size: int | None = None,
        render: Callable[[OutboxItem], Awaitable[bytes]] | None = None,
        wake: asyncio.Event | None = None,
        return_path: Callable[[int], str] | None = None,
        report: Callable[[Sequence[Event], float, Collection[str]], Awaitable[list[str]]]
        | None = None,
        sign: Callable[[bytes], bytes] | None = None,
        lease_seconds: float | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.transport = transport
        # Enough per batch to keep every connection busy, small enough that the
        # suppression recheck stays close to the moment of hand-over.
        self.render = render  # renders rows queued as a template (raw is None) at dispatch
        self.wake = wake  # set by whoever enqueues in this process: no need to wait for the poll
        # Bounces find their message by its own return path (VERP); failed replies become
        # events that `report` records and acts on in the outcome's transaction; its third
        # argument names the addresses to be recorded by their keyed hash alone.
        self.return_path = return_path
        self.report = report
        self.sign = sign  # DKIM: signs the exact bytes handed over, last of all (LU-5)
        self.batch_size = batch_size or max(100, 50 * transport.concurrency)
        self.lease_seconds = lease_seconds or settings.lease_seconds
        self.poll_seconds = poll_seconds
        self.stats = WorkerStats()
        # Rows this worker claimed and has not recorded yet. A batch slower than its lease
        # (a loaded machine, a slow relay) comes back due while still on the wire; the next
        # claim (made while it is on the wire) must not take it again and send it twice.
        self._held: set[int] = set()

    async def run(
        self,
        *,
        until_idle: bool = False,
        stop: asyncio.Event | None = None,
        progress: Callable[[WorkerStats], Any] | None = None,
    ) -> WorkerStats:
        """Deliver until idle or stopped. The work of one batch overlaps the SMTP work of
        another: the next batch is claimed, rendered and DKIM-signed (in a thread: OpenSSL
        runs beside the event loop), and the last one recorded, while the current one is on
        the wire. The suppression recheck is not moved earlier: it runs for each batch right
        before that batch is handed over (ST-1)."""
        stop = stop or asyncio.Event()
        async with self.store.connection():
            claiming: asyncio.Task[Claimed] | None = asyncio.create_task(self._claim())
            recording: asyncio.Task[None] | None = None
            last = Batch()
            try:
                while claiming is not None:
                    items, unusable = await claiming
                    claiming = None
                    if items:
                        # The frequency cap counts the last batch's marketing mail as sent
                        # while its outcomes are still being recorded (never under-counts).
                        unrecorded = (
                            [i.email for i in last.deliver if i.category == "marketing"]
                            if recording is not None and not recording.done()
                            else []
                        )
                        batch = await self._recheck(items, unrecorded, unusable)
                        if not stop.is_set():
                            claiming = asyncio.create_task(self._claim())
                        outcomes = await self.transport.deliver(
                            [
                                Envelope(self._sender(i), i.email, i.raw or b"")
                                for i in batch.deliver
                            ]
                        )
                        if recording is not None:
                            await recording
                        recording = asyncio.create_task(self._record(batch, outcomes))
                        last = batch
                        if progress is not None:
                            progress(self.stats)
                        continue
                    if recording is not None:
                        await recording
                        recording = None
                        if progress is not None:
                            progress(self.stats)
                    if until_idle or stop.is_set():
                        break
                    await self._idle(stop)
                    if not stop.is_set():
                        claiming = asyncio.create_task(self._claim())
            finally:
                if recording is not None:
                    await recording
                if claiming is not None:
                    # Stopped with a batch claimed but not sent: its lease brings it back.
                    claiming.cancel()
        return self.stats

    async def _idle(self, stop: asyncio.Event) -> None:
        # Sleep until the next message is due, but wake for new ones regularly.
        nxt = await self.store.next_due()
        delay = self.poll_seconds if nxt is None else min(self.poll_seconds, nxt - time.time())
        events = [stop] + ([self.wake] if self.wake is not None else [])
        waiters = [asyncio.create_task(event.wait()) for event in events]
        try:
            await asyncio.wait(
                waiters, timeout=max(delay, 0.05), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self.wake is not None:
            self.wake.clear()

    async def _claim(self) -> Claimed:
        items = await self.store.claim(
            self.batch_size, self.lease_seconds, time.time(), held=self._held
        )
        self._held.update(item.id for item in items)
        self.stats.claimed += len(items)
        return await self._prepare(items)

    async def _prepare(self, items: list[OutboxItem]) -> Claimed:
        """The exact bytes to hand over: rows queued as a template are rendered, then every
        message is DKIM-signed, last of all (LU-5). Rows that cannot be are returned apart
        with the reason (one bad row must not stop the batch)."""
        unusable: dict[int, str] = {}
        ready: list[OutboxItem] = []
        for item in items:
            if item.raw is None:
                try:
                    if self.render is None or item.template is None:
                        raise ValueError("no renderer for a message queued as a template")
                    item = replace(item, raw=await self.render(item))
                except Exception as exc:
                    log.exception("a message queued as a template could not be rendered")
                    unusable[item.id] = f"could not be rendered: {exc}"
            ready.append(item)
        if self.sign is not None:
            from .dkim_pool import sign_batch  # dkimpy is loaded only where mail is signed

            todo = [i for i in ready if i.id not in unusable]
            # One trip off the event loop per batch; a DKIMSigner's process does the work.
            signed = await sign_batch(self.sign, [i.raw or b"" for i in todo])
            by_id: dict[int, OutboxItem] = {}
            for item, result in zip(todo, signed, strict=True):
                if isinstance(result, Exception):
                    log.error("a message could not be DKIM-signed: %s", result)
                    unusable[item.id] = f"could not be signed: {result}"
                else:
                    by_id[item.id] = replace(item, raw=result)
            ready = [by_id.get(i.id, i) for i in ready]
        return ready, unusable

    async def _recheck(
        self,
        items: list[OutboxItem],
        unrecorded: Sequence[str] = (),
        unusable: Mapping[int, str] | None = None,
    ) -> Batch:
        """ST-1: a refusal may have arrived after the message was accepted. AD-3: a fourth
        marketing message to one address within 24 hours waits for the window to open."""
        unusable = unusable or {}
        standings = await self.store.standings(
            {item.email: self.signer.address_hashes(item.email) for item in items}
        )
        marketing = [item.email for item in items if item.category == "marketing"]
        now = time.time()
        recent = await self.store.recent_marketing(marketing, now - DAY) if marketing else {}
        for email in unrecorded:
            recent.setdefault(email, []).append(now)
        cap = self.settings.marketing_daily_cap
        batch = Batch(items=list(items))
        for item in items:
            decision = decide(
                item.category,
                item.topic_id,
                standings[item.email],
                opt_in_confirmation=item.template == withhold.OPT_IN_CONFIRMATION,
            )
            if not decision.allowed:
                # An erased address is recorded by its hash alone (`_record` sees the tombstone).
                batch.suppressed.append((item.id, decision.reason))
                batch.logs.append(self._log(item, "suppressed", decision.reason, now))
                continue
            if item.id in unusable:
                batch.failed.append((item.id, unusable[item.id]))
                batch.logs.append(self._log(item, "failed", unusable[item.id], now))
                continue
            if item.category == "marketing":
                times = recent.setdefault(item.email, [])
                opens = cap_opens(times, cap)  # None: under the cap, or the cap is off (0)
                if opens is not None:
                    batch.deferred.append(
                        (item.id, opens, f"held by the frequency cap: {cap_words(cap)}")
                    )
                    continue
                times.append(now)  # counts for the rest of this batch
            batch.deliver.append(item)
        return batch

    def _sender(self, item: OutboxItem) -> str:
        return self.return_path(item.id) if self.return_path is not None else item.sender

    async def _record(self, batch: Batch, outcomes: list[Outcome]) -> None:
        try:
            await self._write_outcomes(batch, outcomes)
        finally:
            self._held.difference_update(item.id for item in batch.items)

    async def _write_outcomes(self, batch: Batch, outcomes: list[Outcome]) -> None:
        now = time.time()
        sent: list[int] = []
        retry: list[tuple[int, float, str]] = []
        failed: list[tuple[int, str]] = list(batch.failed)
        bounced: list[tuple[int, str]] = []
        logs = list(batch.logs)
        events: list[tuple[int, Event]] = []
        said: dict[int, str] = {}  # the server's own words, per row: they may quote the address
        alerts = 0
        for item, outcome in zip(batch.deliver, outcomes, strict=True):
            if outcome.ok:
                sent.append(item.id)  # recorded as the row's sent_at: no log entry
                continue
            reason = _describe(outcome)
            said[item.id] = outcome.message
            if outcome.permanent and outcome.code is not None:
                kind, status = classify_reply(outcome.code, outcome.message)
                event = Event(item.email, kind, "smtp", status, reason, item.message_id)
                events.append((item.id, event))
                if kind == "hard":  # BN-1: the address is suppressed with the outcome
                    bounced.append((item.id, reason))
                    logs.append(self._log(item, "bounced", reason, now))
                    continue
                if kind == "policy":  # BN-2: alert, do not suppress
                    alerts += 1
                    reason = f"{reason} (sender-side refusal: check authentication and reputation)"
            elif outcome.permanent:  # refused before any reply (an unusable address)
                pass
            else:
                when = self._next_attempt(item, now)
                if when is not None:
                    retry.append((item.id, when, reason))
                    continue
                # BN-3: gave up on temporary failures; repeated, they suppress.
                reason = f"gave up after {item.attempts} attempts: {reason}"
                event = Event(item.email, "soft", "smtp", None, reason, item.message_id)
                events.append((item.id, event))
            failed.append((item.id, reason))
            logs.append(self._log(item, "failed", reason, now))
        suppressed = list(batch.suppressed)
        deferred = list(batch.deferred)
        items = {item.id: item for item in batch.items}
        async with self.store.transaction():
            withheld, gone = await withhold.withheld(self.store, self.signer, batch.items)
            if withheld:

                def hide(i: int, text: str) -> str:
                    return withhold.without_address(text, items[i].email, said.get(i))

                # A row an erasure scrubbed has no address left to try again with: it stops.
                later = [(i, w, hide(i, r) if i in withheld else r) for i, w, r in retry]
                suppressed += [(i, "erased") for i, _, _ in later + deferred if i in gone]
                retry = [entry for entry in later if entry[0] not in gone]
                deferred = [entry for entry in deferred if entry[0] not in gone]
                failed = [(i, hide(i, r) if i in withheld else r) for i, r in failed]
                bounced = [(i, hide(i, r) if i in withheld else r) for i, r in bounced]
                for entry in logs:
                    i = entry["outbox_id"]
                    if i in withheld:
                        reason = entry["reason"]
                        entry.update(
                            email=None,
                            contact_id=None,
                            reason=hide(i, reason) if reason is not None else None,
                        )
            retrying = {i for i, _, _ in retry + deferred}
            await self.store.finish(
                sent=sent,
                retry=retry + deferred,
                failed=failed,
                bounced=bounced,
                suppressed=suppressed,
                logs=logs,
                # (a row an erasure scrubbed has nothing left to forget)
                forget={
                    i: self.signer.address_hash(items[i].email) for i in withheld - gone - retrying
                },
                now=now,
            )
            if events and self.report is not None:
                hidden = {e.email for i, e in events if i in withheld}
                for action in await self.report([e for _, e in events], now, hidden):
                    log.info("%s", action)
        self.stats.sent += len(sent)
        self.stats.retried += len(retry)
        self.stats.deferred += len(deferred)
        self.stats.failed += len(failed)
        self.stats.bounced += len(bounced)
        self.stats.alerts += alerts
        self.stats.suppressed += len(suppressed)

    def _next_attempt(self, item: OutboxItem, now: float) -> float | None:
        schedule = self.settings.retry_schedule
        delay = schedule[min(item.attempts - 1, len(schedule) - 1)]
        delay *= random.uniform(0.9, 1.1)  # jitter: retries of one outage do not arrive together
        if now + delay - item.created_at > self.settings.retry_max_age:
            return None
        return now + delay

    @staticmethod
    def _log(item: OutboxItem, status: str, reason: str | None, now: float) -> dict[str, Any]:
        return {
            "outbox_id": item.id,  # not a column: which row the entry is about
            "message_id": item.message_id,
            "contact_id": item.contact_id,
            "email": item.email,
            "category": item.category,
            "topic_id": item.topic_id,
            "campaign_id": item.campaign_id,
            "subject": None,
            "status": status,
            "reason": reason,
            "created_at": now,
        }


def _describe(outcome: Outcome) -> str:
    return f"{outcome.code} {outcome.message}".strip() if outcome.code else outcome.message
