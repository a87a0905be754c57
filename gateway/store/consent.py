"""Queries about consent: subscriptions and the consent ledger (PD-1, PD-4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..records import Contact, Topic
from . import schema as t
from .base import StoreBase

CONSENT_INSERT = (
    "INSERT INTO consent_ledger (contact_id, subject, topic_id, action, source,"
    " policy_version, ip, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


async def consent_rows(store: StoreBase, contact_id: int, topic_by: str) -> list[dict[str, Any]]:
    rows = await store.db.fetch_all(
        select(
            t.consent_ledger.c.created_at,
            t.topics.c[topic_by].label("topic"),
            t.consent_ledger.c.action,
            t.consent_ledger.c.source,
            t.consent_ledger.c.policy_version,
            t.consent_ledger.c.ip,
        )
        .select_from(t.consent_ledger.outerjoin(t.topics))
        .where(t.consent_ledger.c.contact_id == contact_id)
        .order_by(t.consent_ledger.c.id)
    )
    return [dict(r._mapping) for r in rows]


class ConsentQueries(StoreBase):
    async def subscriptions_of(self, contact_id: int) -> dict[int, str]:
        rows = await self.db.fetch_all(
            select(t.subscriptions.c.topic_id, t.subscriptions.c.status).where(
                t.subscriptions.c.contact_id == contact_id
            )
        )
        return {r["topic_id"]: r["status"] for r in rows}

    async def set_subscription(
        self,
        contact: Contact,
        topic: Topic,
        status: str,
        *,
        subject: str,
        source: str,
        policy_version: str,
        now: float,
        ip: str | None = None,
    ) -> bool:
        """Record a subscription change and its consent entry. Returns False when the
        status was already that (nothing written). Call inside a transaction."""
        row = await self.db.fetch_one(
            t.subscriptions.select()
            .where(t.subscriptions.c.contact_id == contact.id)
            .where(t.subscriptions.c.topic_id == topic.id)
        )
        if row is not None and row["status"] == status:
            return False
        stamps: dict[str, Any] = {"status": status}
        if status == "subscribed":
            stamps["subscribed_at"] = now
        elif status == "unsubscribed":
            stamps["unsubscribed_at"] = now
        if row is None:
            await self.db.execute(
                t.subscriptions.insert().values(
                    contact_id=contact.id, topic_id=topic.id, created_at=now, **stamps
                )
            )
        else:
            await self.db.execute(
                t.subscriptions.update().where(t.subscriptions.c.id == row["id"]).values(**stamps)
            )
        action = {"subscribed": "opt_in", "unsubscribed": "opt_out", "pending": "opt_in"}[status]
        if status == "unsubscribed":  # one topic's mail stopped (the dashboard counts them)
            await self.tally([(now, "unsubscribed")])
        await self.record_consent(
            contact,
            subject=subject,
            action=action,
            source=source,
            policy_version=policy_version,
            now=now,
            topic_id=topic.id,
            ip=ip,
        )
        return True

    async def record_consent(
        self,
        contact: Contact,
        *,
        subject: str,
        action: str,
        source: str,
        policy_version: str,
        now: float,
        topic_id: int | None = None,
        ip: str | None = None,
    ) -> None:
        """Append to the consent ledger (PD-1). Call inside a transaction."""
        await self.run(
            CONSENT_INSERT,
            (contact.id, subject, topic_id, action, source, policy_version, ip, now),
        )

    async def consent_history(
        self, contact_id: int, *, topic_by: str = "name"
    ) -> list[dict[str, Any]]:
        """The person's consent records, oldest first; topics by name (pages) or slug
        (exports)."""
        return await consent_rows(self, contact_id, topic_by)
