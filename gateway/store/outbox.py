"""Queries of the outbox and the message log."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from ..errors import NotFound
from . import schema as t
from .base import StoreBase
from .records import OutboxItem

OUTBOX_COLUMNS = (
    "message_id", "contact_id", "email", "category", "topic_id", "sender", "raw", "state",
    "attempts", "next_attempt_at", "idempotency_key", "created_at", "updated_at", "campaign_id",
    "template", "context",
)  # fmt: skip
LOG_COLUMNS = (
    "message_id", "contact_id", "email", "category", "topic_id", "subject", "status", "reason",
    "created_at", "campaign_id",
)  # fmt: skip


class OutboxQueries(StoreBase):
    # -- outbox and message log ------------------------------------------------------------

    async def enqueue(
        self, rows: Sequence[Mapping[str, Any]], logs: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write accepted messages and their log entries. Call inside a transaction."""
        await self.run_many(
            f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES ({self.marks(len(OUTBOX_COLUMNS))})",
            [tuple(row.get(c) for c in OUTBOX_COLUMNS) for row in rows],
        )
        await self.log(logs)

    async def log(self, logs: Sequence[Mapping[str, Any]]) -> None:
        await self.run_many(
            f"INSERT INTO message_log ({', '.join(LOG_COLUMNS)}) VALUES ({self.marks(len(LOG_COLUMNS))})",
            [tuple(entry.get(c) for c in LOG_COLUMNS) for entry in logs],
        )

    async def find_idempotent(self, keys: Sequence[str]) -> dict[str, str]:
        """Message-IDs already accepted under these idempotency keys."""
        if not keys:
            return {}
        rows = await self.rows(
            "SELECT idempotency_key, message_id FROM outbox"
            f" WHERE idempotency_key IN ({self.marks(len(keys))})",
            list(keys),
        )
        return dict(rows)  # type: ignore[arg-type]

    async def claim(self, limit: int, lease_seconds: float, now: float) -> list[OutboxItem]:
        """Lease up to `limit` due messages: queued and due, or leased by a worker whose
        lease ran out (it crashed). One statement, so two workers never claim one row."""
        # Each claim its own lease value, which tells this process's rows in flight from
        # other workers' (the jitter keeps other processes' values apart from ours).
        lease = now + lease_seconds + random.uniform(0, 0.001)
        while lease in self.own_leases:
            lease = math.nextafter(lease, math.inf)
        if not self.is_sqlite:
            return await self._claim_locked(limit, lease, now)
        async with self.transaction():
            rows = await self.rows(
                "UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE id IN (SELECT id FROM outbox WHERE"
                " (state = 'queued' AND next_attempt_at <= ?)"
                " OR (state = 'sending' AND lease_until < ?)"
                " ORDER BY next_attempt_at, id LIMIT ?)"
                " RETURNING id, message_id, email, contact_id, category, topic_id, sender, raw,"
                " attempts, created_at, campaign_id, template, context",
                (lease, now, now, now, limit),
            )
        if rows:
            self.own_leases.append(lease)
        items = [OutboxItem(*row) for row in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def _claim_locked(self, limit: int, lease: float, now: float) -> list[OutboxItem]:
        """PostgreSQL, where workers on several machines claim at once: each locks the rows
        it picks and skips rows another has locked (FOR UPDATE SKIP LOCKED), so no row is
        claimed twice and nobody waits. Two index range scans on (state, next_attempt_at):
        leases that ran out first, then the queued rows that are due, oldest first."""
        rows = await self.rows(
            "WITH expired AS (SELECT id FROM outbox WHERE state = 'sending' AND lease_until < ?"
            " ORDER BY lease_until LIMIT ? FOR UPDATE SKIP LOCKED),"
            " due AS (SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED)"
            " UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1,"
            " updated_at = ? WHERE id IN (SELECT id FROM (SELECT id FROM expired UNION ALL"
            " SELECT id FROM due) AS picked LIMIT ?)"
            " RETURNING id, message_id, email, contact_id, category, topic_id, sender, raw,"
            " attempts, created_at, campaign_id, template, context",
            (now, limit, now, limit, lease, now, limit),
        )
        if rows:
            self.own_leases.append(lease)
        items = [OutboxItem(*row) for row in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def finish(
        self,
        *,
        sent: Iterable[int] = (),
        retry: Iterable[tuple[int, float, str]] = (),
        failed: Iterable[tuple[int, str]] = (),
        bounced: Iterable[tuple[int, str]] = (),
        suppressed: Iterable[tuple[int, str]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        now: float,
    ) -> None:
        """Record the outcome of a batch in one transaction (or in the caller's). Sent,
        failed, bounced and suppressed messages drop their body: the log keeps what happened, not the content."""
        sent = list(sent)
        async with self.transaction():
            for start in range(0, len(sent), 500):
                chunk = sent[start : start + 500]
                await self.run(
                    "UPDATE outbox SET state = 'sent', raw = NULL, lease_until = NULL,"
                    f" updated_at = ? WHERE id IN ({self.marks(len(chunk))})",
                    [now, *chunk],
                )
            await self.run_many(
                "UPDATE outbox SET state = ?, raw = NULL, lease_until = NULL, last_error = ?,"
                " updated_at = ? WHERE id = ?",
                [("failed", reason, now, i) for i, reason in failed]
                + [("bounced", reason, now, i) for i, reason in bounced]
                + [("suppressed", reason, now, i) for i, reason in suppressed],
            )
            await self.run_many(
                "UPDATE outbox SET state = 'queued', next_attempt_at = ?, lease_until = NULL,"
                " last_error = ?, updated_at = ? WHERE id = ?",
                [(when, reason, now, i) for i, when, reason in retry],
            )
            await self.log(logs)

    async def next_due(self) -> float | None:
        """When the next queued message becomes due, or a lease runs out (None when nothing
        waits). Two minimums, each read from the end of an index (ix_outbox_due)."""
        rows = await self.rows(
            "SELECT (SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued'),"
            " (SELECT MIN(lease_until) FROM outbox WHERE state = 'sending')"
        )
        times = [t for t in rows[0] if t is not None]
        return min(times) if times else None

    async def message_status(self, message_id: str) -> dict[str, Any]:
        row = await self.db.fetch_one(
            select(t.outbox.c.state, t.outbox.c.attempts, t.outbox.c.last_error).where(
                t.outbox.c.message_id == message_id
            )
        )
        if row is None:
            raise NotFound(f"no message {message_id!r}")
        return dict(row._mapping)
