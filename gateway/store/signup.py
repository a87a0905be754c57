"""Queries of the sign-up form and its confirmation link (AD-4, PD-1)."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import Contact, Topic
from .base import StoreBase


class SignupQueries(StoreBase):
    async def confirm_subscription(
        self,
        contact: Contact,
        topic: Topic,
        now: float,
    ) -> bool:
        """The person confirmed from their mailbox: the subscription starts (the caller
        records the `confirm` in the consent ledger). False (nothing written) when already
        subscribed. Call inside a transaction."""
        found = await self.rows(
            "SELECT id, status FROM subscriptions WHERE contact_id = ? AND topic_id = ?",
            (contact.id, topic.id),
        )
        if found and found[0][1] == "subscribed":
            return False
        if found:
            await self.run(
                "UPDATE subscriptions SET status = 'subscribed', subscribed_at = ? WHERE id = ?",
                (now, found[0][0]),
            )
        else:
            await self.run(
                "INSERT INTO subscriptions (contact_id, topic_id, status, created_at,"
                " subscribed_at) VALUES (?, ?, 'subscribed', ?, ?)",
                (contact.id, topic.id, now, now),
            )
        return True

    async def newest_objection(
        self, hashes: Sequence[str], topic_ids: Sequence[int]
    ) -> float | None:
        """When the person last objected: an erasure, a refusal of all promotional mail or
        a refusal of one of these topics (None: never). A confirmation link asked for before
        that moment is withdrawn by it."""
        marks = self.marks(len(hashes))
        topics = f" OR (scope = 'topic' AND topic_id IN ({self.marks(len(topic_ids))}))"
        found = await self.rows(
            f"SELECT MAX(created_at) FROM suppressions WHERE email_hash IN ({marks}) AND"
            f" (reason = 'erased' OR scope = 'marketing'{topics if topic_ids else ''})",
            [*hashes, *topic_ids],
        )
        return float(found[0][0]) if found and found[0][0] is not None else None

    async def lift_erasure(self, hashes: Sequence[str]) -> int:
        """The erased person confirmed a fresh opt-in from their own mailbox: the tombstone
        goes (nothing of the old data comes back: it was deleted). Call inside a
        transaction."""
        marks = self.marks(len(hashes))
        found = await self.rows(
            f"SELECT COUNT(*) FROM suppressions WHERE reason = 'erased' AND"
            f" email_hash IN ({marks})",
            list(hashes),
        )
        await self.run(
            f"DELETE FROM suppressions WHERE reason = 'erased' AND email_hash IN ({marks})",
            list(hashes),
        )
        return int(found[0][0])

    async def lift_objections(self, hashes: Sequence[str], topic_ids: Sequence[int]) -> int:
        """A confirmed fresh opt-in lifts the person's earlier refusal of all promotions
        and their refusals of these topics; returns how many refusals of all promotions
        were lifted. Never a block for all mail (hard bounce, manual). Call inside a
        transaction."""
        marks = self.marks(len(hashes))
        found = await self.rows(
            f"SELECT COUNT(*) FROM suppressions WHERE email_hash IN ({marks}) AND"
            f" scope = 'marketing'",
            list(hashes),
        )
        await self.run(
            f"DELETE FROM suppressions WHERE email_hash IN ({marks}) AND scope = 'marketing'",
            list(hashes),
        )
        if topic_ids:
            await self.run(
                f"DELETE FROM suppressions WHERE email_hash IN ({marks}) AND scope = 'topic'"
                f" AND topic_id IN ({self.marks(len(topic_ids))})",
                [*hashes, *topic_ids],
            )
        return int(found[0][0])

    async def reactivate(self, contact_id: int, now: float) -> None:
        """A person marked as no longer using the service signed up again."""
        await self.run(
            "UPDATE contacts SET status = 'active', stopped_at = NULL, updated_at = ? WHERE id = ?",
            (now, contact_id),
        )
