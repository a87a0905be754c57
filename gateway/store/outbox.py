"""Queries of the outbox and the message log."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select

from ..errors import NotFound
from . import schema as t
from .base import StoreBase
from .records import OutboxItem


class OutboxQueries(StoreBase):
    # -- outbox and message log ------------------------------------------------------------

    async def enqueue(
        self, rows: Sequence[Mapping[str, Any]], logs: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write accepted messages and their log entries. Call inside a transaction."""
        if rows:
            await self.db.execute_many(t.outbox.insert(), [dict(r) for r in rows])
        if logs:
            await self.log(logs)

    async def log(self, logs: Sequence[Mapping[str, Any]]) -> None:
        await self.db.execute_many(t.message_log.insert(), [dict(r) for r in logs])

    async def find_idempotent(self, key: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            select(t.outbox.c.message_id, t.outbox.c.state).where(t.outbox.c.idempotency_key == key)
        )
        return dict(row._mapping) if row else None

    async def claim(self, limit: int, lease_seconds: float, now: float) -> list[OutboxItem]:
        """Lease up to `limit` due messages: queued and due, or leased by a worker whose
        lease ran out (it crashed). One statement, so two workers never claim one row."""
        o = t.outbox
        due = (
            select(o.c.id)
            .where(
                or_(
                    and_(o.c.state == "queued", o.c.next_attempt_at <= now),
                    and_(o.c.state == "sending", o.c.lease_until < now),
                )
            )
            .order_by(o.c.next_attempt_at, o.c.id)
            .limit(limit)
        )
        async with self.transaction():
            rows = await self.db.fetch_all(
                o.update()
                .where(o.c.id.in_(due.scalar_subquery()))
                .values(
                    state="sending",
                    lease_until=now + lease_seconds,
                    attempts=o.c.attempts + 1,
                    updated_at=now,
                )
                .returning(
                    o.c.id,
                    o.c.message_id,
                    o.c.email,
                    o.c.contact_id,
                    o.c.category,
                    o.c.topic_id,
                    o.c.sender,
                    o.c.raw,
                    o.c.attempts,
                    o.c.created_at,
                )
            )
        items = [OutboxItem(**r._mapping) for r in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def finish(
        self,
        *,
        sent: Iterable[int] = (),
        retry: Iterable[tuple[int, float, str]] = (),
        failed: Iterable[tuple[int, str]] = (),
        suppressed: Iterable[tuple[int, str]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        now: float,
    ) -> None:
        """Record the outcome of a batch in one transaction. Sent, failed and suppressed
        messages drop their body: the log keeps what happened, not the content."""
        o = t.outbox
        sent = list(sent)
        async with self.transaction():
            if sent:
                await self.db.execute(
                    o.update()
                    .where(o.c.id.in_(sent))
                    .values(state="sent", raw=None, lease_until=None, updated_at=now)
                )
            for state, pairs in (("failed", failed), ("suppressed", suppressed)):
                for outbox_id, reason in pairs:
                    await self.db.execute(
                        o.update()
                        .where(o.c.id == outbox_id)
                        .values(
                            state=state,
                            raw=None,
                            lease_until=None,
                            last_error=reason,
                            updated_at=now,
                        )
                    )
            for outbox_id, when, reason in retry:
                await self.db.execute(
                    o.update()
                    .where(o.c.id == outbox_id)
                    .values(
                        state="queued",
                        next_attempt_at=when,
                        lease_until=None,
                        last_error=reason,
                        updated_at=now,
                    )
                )
            if logs:
                await self.log(logs)

    async def next_due(self) -> float | None:
        """When the next queued message becomes due (None when nothing waits)."""
        o = t.outbox
        return await self.db.fetch_val(
            select(func.min(func.coalesce(o.c.lease_until, o.c.next_attempt_at))).where(
                o.c.state.in_(("queued", "sending"))
            )
        )

    async def outbox_counts(self) -> dict[str, int]:
        rows = await self.db.fetch_all(
            select(t.outbox.c.state, func.count()).group_by(t.outbox.c.state)
        )
        return {r[0]: r[1] for r in rows}

    async def message_status(self, message_id: str) -> dict[str, Any]:
        row = await self.db.fetch_one(
            select(t.outbox.c.state, t.outbox.c.attempts, t.outbox.c.last_error).where(
                t.outbox.c.message_id == message_id
            )
        )
        if row is None:
            raise NotFound(f"no message {message_id!r}")
        return dict(row._mapping)
