"""A person's own data: everything held about them (PD-2), erasure (PD-3), retention (PD-4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, or_, select

from ..records import Contact
from . import schema as t
from .base import StoreBase
from .consent import consent_rows

# Every table an erasure deletes or overwrites rows of.
ERASED_TABLES = (
    "contacts",
    "contact_attributes",
    "subscriptions",
    "consent_ledger",
    "message_log",
    "bounces",
    "outbox",
    "outbox_bodies",
    "suppressions",
)


class PersonalData(StoreBase):
    async def export(self, email: str, contact: Contact | None) -> dict[str, Any]:
        """Everything held about one person, as plain data. Someone who only ever received
        service mail has no contact row but still has a message log and maybe suppressions."""
        cid = contact.id if contact is not None else -1
        profile = await self.db.fetch_one(t.contacts.select().where(t.contacts.c.id == cid))
        attributes = await self.db.fetch_all(
            select(
                t.contact_attributes.c.key,
                t.contact_attributes.c.value,
                t.contact_attributes.c.source,
                t.contact_attributes.c.updated_at,
            ).where(t.contact_attributes.c.contact_id == cid)
        )
        subscriptions = await self.db.fetch_all(
            select(
                t.topics.c.slug,
                t.topics.c.name,
                t.subscriptions.c.status,
                t.subscriptions.c.created_at,
                t.subscriptions.c.subscribed_at,
                t.subscriptions.c.unsubscribed_at,
            )
            .select_from(t.subscriptions.join(t.topics))
            .where(t.subscriptions.c.contact_id == cid)
        )
        consent = await consent_rows(self, cid, "slug")
        messages = await self.db.fetch_all(
            select(
                t.message_log.c.created_at,
                t.message_log.c.subject,
                t.message_log.c.category,
                t.message_log.c.status,
            )
            .where(
                or_(
                    t.message_log.c.contact_id == cid,
                    t.message_log.c.email == email,
                )
            )
            .order_by(t.message_log.c.id)
        )
        # A message's sending is its outbox row's sent_at (no log entry): listed among them.
        sendings = await self.db.fetch_all(
            select(
                t.outbox.c.sent_at.label("created_at"),
                t.outbox.c.category,
            ).where(
                or_(t.outbox.c.contact_id == cid, t.outbox.c.email == email),
                t.outbox.c.sent_at.is_not(None),
            )
        )
        events = [dict(r._mapping) for r in messages] + [
            {
                "created_at": r["created_at"],
                "subject": None,
                "category": r["category"],
                "status": "sent",
            }
            for r in sendings
        ]
        events.sort(key=lambda e: e["created_at"])  # stable: the log's order within a time
        suppressions = await self.db.fetch_all(
            select(
                t.suppressions.c.created_at,
                t.suppressions.c.scope,
                t.topics.c.slug.label("topic"),
                t.suppressions.c.reason,
                t.suppressions.c.source,
            )
            .select_from(t.suppressions.outerjoin(t.topics))
            .where(t.suppressions.c.email == email)
            .order_by(t.suppressions.c.id)
        )
        bounces = await self.db.fetch_all(
            select(
                t.bounces.c.created_at,
                t.bounces.c.kind,
                t.bounces.c.status,
                t.bounces.c.detail,
                t.bounces.c.source,
            )
            .where(t.bounces.c.email == email)
            .order_by(t.bounces.c.id)
        )
        fields = (
            "email",
            "name",
            "phone",
            "postal_address",
            "language",
            "status",
            "stopped_at",
            "source",
            "created_at",
            "updated_at",
        )
        return {
            "profile": {k: profile[k] for k in fields} if profile else {"email": email},
            "attributes": [dict(r._mapping) for r in attributes],
            "subscriptions": [dict(r._mapping) for r in subscriptions],
            "consent": consent,
            "suppressions": [dict(r._mapping) for r in suppressions],
            "messages": events,
            "bounces": [dict(r._mapping) for r in bounces],
        }

    async def erase(
        self, email: str, contact: Contact | None, hashes: Sequence[str], now: float
    ) -> None:
        """Remove the person and every personal field that mentions them; keep only the keyed
        hash (reason erased) so the address is never mailed again. Call inside a transaction:
        once it commits, the database's files are scrubbed of what the rows held (PD-3)."""
        # First of all: a worker recording mail to this address takes the same lock, so it
        # either finishes before this scrubs, or sees the tombstone and writes no address.
        await self.serialize(f"suppression:{hashes[0]}")
        cid = contact.id if contact is not None else -1
        await self.db.execute(
            t.contact_attributes.delete().where(t.contact_attributes.c.contact_id == cid)
        )
        await self.db.execute(t.subscriptions.delete().where(t.subscriptions.c.contact_id == cid))
        # Consent records stay (PD-4: kept at least a year), tied only to the keyed hash.
        await self.db.execute(
            t.consent_ledger.update()
            .where(t.consent_ledger.c.contact_id == cid)
            .values(contact_id=None, ip=None)
        )
        mine = or_(t.outbox.c.contact_id == cid, t.outbox.c.email == email)
        their_messages = select(t.outbox.c.message_id).where(mine)
        # Free text can quote the address (a server's "550 <an@…> unknown"): cleared with it.
        mentions = or_(
            t.message_log.c.contact_id == cid,
            t.message_log.c.email == email,
            t.message_log.c.message_id.in_(their_messages),
        )
        await self.db.execute(
            t.message_log.update()
            .where(mentions)
            .values(contact_id=None, email=None, subject=None, reason=None)
        )
        await self.db.execute(t.bounces.delete().where(t.bounces.c.email == email))
        # Reports about their mail naming another address (an alias): kept as counts only.
        await self.db.execute(
            t.bounces.update()
            .where(t.bounces.c.message_id.in_(their_messages))
            .values(email=None, detail=None)
        )
        # Mail still waiting for them is stopped; every message's content and free text is
        # dropped (the caller's idempotency key and a template's context can name them too).
        await self.db.execute(
            t.outbox_bodies.delete().where(
                t.outbox_bodies.c.outbox_id.in_(select(t.outbox.c.id).where(mine))
            )
        )
        await self.db.execute(
            t.outbox.update()
            .where(mine)
            .where(t.outbox.c.state.in_(("queued", "sending")))
            .values(state="suppressed", last_error="erased", updated_at=now)
        )
        await self.db.execute(
            t.outbox.update()
            .where(mine)
            .values(
                contact_id=None,
                email=None,
                raw=None,
                context=None,
                idempotency_key=None,
                last_error=case((t.outbox.c.last_error == "erased", "erased"), else_=None),
            )
        )
        await self.db.execute(
            t.suppressions.update()
            .where(
                or_(t.suppressions.c.email_hash.in_(list(hashes)), t.suppressions.c.email == email)
            )
            .values(email=None)
        )
        await self.db.execute(
            t.suppressions.insert().values(
                email=None,
                email_hash=hashes[0],
                scope="all",
                reason="erased",
                source="person",
                created_at=now,
            )
        )
        await self.db.execute(t.contacts.delete().where(t.contacts.c.id == cid))
        await self.scrub_after_commit(ERASED_TABLES)

    async def stopped_before(self, cutoff: float, limit: int = 500) -> list[Contact]:
        """Contacts marked as no longer using the service since before `cutoff` (PD-4)."""
        from .rows import _contact

        rows = await self.db.fetch_all(
            t.contacts.select()
            .where(t.contacts.c.status == "stopped")
            .where(t.contacts.c.stopped_at < cutoff)
            .order_by(t.contacts.c.id)
            .limit(limit)
        )
        return [_contact(r) for r in rows]
