"""Queries of campaigns: their rows, their audience in pages by id, their counts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from . import schema as t
from .base import StoreBase

# Outbox states that are still "queued" from a campaign's point of view.
WAITING = ("queued", "sending", "paused")


class CampaignQueries(StoreBase):
    async def create_campaign(self, **values: Any) -> int:
        async with self.transaction():
            return int(await self.db.execute(t.campaigns.insert().values(**values)))

    async def get_campaign(self, campaign_id: int) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            select(t.campaigns, t.topics.c.slug.label("topic"))
            .select_from(t.campaigns.join(t.topics))
            .where(t.campaigns.c.id == campaign_id)
        )
        return dict(row._mapping) if row else None

    async def list_campaigns(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            select(
                t.campaigns.c.id,
                t.campaigns.c.name,
                t.topics.c.slug.label("topic"),
                t.campaigns.c.state,
                t.campaigns.c.created_at,
            )
            .select_from(t.campaigns.join(t.topics))
            .order_by(t.campaigns.c.id)
        )
        return [dict(r._mapping) for r in rows]

    async def update_campaign(self, campaign_id: int, **values: Any) -> None:
        async with self.transaction():
            await self.db.execute(
                t.campaigns.update().where(t.campaigns.c.id == campaign_id).values(**values)
            )

    async def lease_campaign(self, campaign_id: int, now: float, seconds: float) -> bool:
        """Only one process at a time enqueues a campaign; a dead one's lease runs out."""
        async with self.transaction():
            rows = await self.rows(
                "UPDATE campaigns SET lease_until = ? WHERE id = ?"
                " AND (lease_until IS NULL OR lease_until < ?) RETURNING id",
                (now + seconds, campaign_id, now),
            )
        return bool(rows)

    async def release_campaign(self, campaign_id: int) -> None:
        async with self.transaction():
            await self.run("UPDATE campaigns SET lease_until = NULL WHERE id = ?", (campaign_id,))

    async def audience_page(
        self, topic_id: int, after_id: int, limit: int
    ) -> list[tuple[int, str]]:
        """The next `limit` subscribers of a topic after contact id `after_id`: the audience
        is streamed by id (the subscriptions index), never loaded whole."""
        # The page of ids first (a range scan of ix_subscriptions_audience), then their
        # contacts by primary key: as a plain join PostgreSQL may pick a merge join that
        # reads the contacts from the first id up to the cursor, page after page.
        rows = await self.rows(
            "SELECT c.id, c.email FROM (SELECT contact_id FROM subscriptions"
            " WHERE topic_id = ? AND status = 'subscribed' AND contact_id > ?"
            " ORDER BY contact_id LIMIT ?) s JOIN contacts c ON c.id = s.contact_id"
            " ORDER BY c.id",
            (topic_id, after_id, limit),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    async def campaign_backlog(self, campaign_id: int) -> int:
        rows = await self.rows(
            "SELECT COUNT(*) FROM outbox WHERE campaign_id = ? AND state IN (?, ?, ?)",
            (campaign_id, *WAITING),
        )
        return int(rows[0][0])

    async def move_campaign_rows(
        self, campaign_id: int, states: Sequence[str], to: str, now: float
    ) -> int:
        """Pause, resume or cancel what is waiting; a leased batch already on the wire
        finishes, everything else changes at once."""
        async with self.transaction():
            rows = await self.rows(
                f"UPDATE outbox SET state = ?, updated_at = ?"
                f"{', raw = NULL' if to == 'cancelled' else ''}"
                f" WHERE campaign_id = ? AND state IN ({self.marks(len(states))}) RETURNING id",
                (to, now, campaign_id, *states),
            )
            if to == "cancelled":  # what will never be sent keeps no body
                await self.run(
                    "DELETE FROM outbox_bodies WHERE outbox_id IN (SELECT id FROM outbox"
                    " WHERE campaign_id = ? AND state = 'cancelled')",
                    (campaign_id,),
                )
        return len(rows)

    async def campaign_counts(self, campaign_id: int) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "sent", "suppressed", "blocked", "failed", "bounced"), 0)
        rows = await self.rows(
            "SELECT state, COUNT(*) FROM outbox WHERE campaign_id = ? GROUP BY state",
            (campaign_id,),
        )
        for state, n in rows:
            key = "queued" if state in WAITING else state
            if key in counts:
                counts[key] += n
        # Refused at accept time, or a recipient whose message could not be rendered: no
        # outbox row, only the log says so.
        rows = await self.rows(
            "SELECT status, COUNT(*) FROM message_log WHERE campaign_id = ?"
            " AND status IN ('suppressed', 'blocked', 'failed') AND message_id IS NULL"
            " GROUP BY status",
            (campaign_id,),
        )
        for status, n in rows:
            counts[status] += n
        return counts

    async def active_campaigns(self, now: float) -> list[int]:
        """Campaigns with audience left to enqueue: sending, or scheduled and due."""
        rows = await self.rows(
            "SELECT id FROM campaigns WHERE (state = 'sending' AND NOT enqueued_all)"
            " OR (state = 'scheduled' AND scheduled_at <= ?) ORDER BY id",
            (now,),
        )
        return [int(r[0]) for r in rows]

    async def recent_marketing(self, emails: Sequence[str], since: float) -> dict[str, list[float]]:
        """Times of marketing mail sent to each address since `since` (AD-3)."""
        found: dict[str, list[float]] = {}
        for start in range(0, len(emails), 500):
            chunk = list(emails[start : start + 500])
            for email, sent_at in await self.rows(
                f"SELECT email, sent_at FROM outbox WHERE email IN ({self.marks(len(chunk))})"
                " AND sent_at > ? AND category = 'marketing'",
                (*chunk, since),
            ):
                found.setdefault(email, []).append(sent_at)
            # Several workers (processes, machines): marketing mail another worker has
            # claimed for these addresses may go out while this batch does, and is recorded
            # only after. It counts as sent (at its claim), so two workers never exceed the
            # cap between them; at worst both defer a message. This process's own batches
            # are left out (by their leases): the worker counts those itself.
            ours = list(self.own_leases)
            mine = f" AND lease_until NOT IN ({self.marks(len(ours))})" if ours else ""
            for email, claimed_at in await self.rows(
                f"SELECT email, updated_at FROM outbox WHERE email IN ({self.marks(len(chunk))})"
                " AND state = 'sending' AND category = 'marketing' AND lease_until >= ?" + mine,
                (*chunk, time.time(), *ours),
            ):
                found.setdefault(email, []).append(claimed_at)
        return found

    async def sending_campaigns(self) -> list[int]:
        rows = await self.rows("SELECT id FROM campaigns WHERE state = 'sending' ORDER BY id")
        return [int(r[0]) for r in rows]

    async def count_subscribers(self, topic_id: int) -> int:
        rows = await self.rows(
            "SELECT COUNT(*) FROM subscriptions WHERE topic_id = ? AND status = 'subscribed'",
            (topic_id,),
        )
        return int(rows[0][0])
