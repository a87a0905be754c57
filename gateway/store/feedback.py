"""Queries of what receiving servers reported: bounces, complaints and sender-side alerts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import StoreBase
from .outbox import withheld_hash

BOUNCE_COLUMNS = ("email", "message_id", "kind", "status", "detail", "source", "created_at")


class FeedbackQueries(StoreBase):
    async def record_bounces(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Call inside a transaction."""
        await self.run_many(
            f"INSERT INTO bounces ({', '.join(BOUNCE_COLUMNS)})"
            f" VALUES ({self.marks(len(BOUNCE_COLUMNS))})",
            [tuple(row.get(c) for c in BOUNCE_COLUMNS) for row in rows],
        )
        # BN-2's sender-side refusals (5.7.x), per day for the dashboard's alerts
        await self.tally((r["created_at"], "sender_refused") for r in rows if r["kind"] == "policy")

    async def count_bounces(self, email: str, kind: str, since: float) -> int:
        """Messages (not reports: one message may be reported delayed several times) to this
        address with a bounce of this kind since `since`."""
        rows = await self.rows(
            "SELECT COUNT(DISTINCT COALESCE(message_id, CAST(id AS VARCHAR(20)))) FROM bounces"
            " WHERE email = ? AND kind = ? AND created_at > ?",
            (email, kind, since),
        )
        return int(rows[0][0])

    async def count_alerts(self, since: float) -> int:
        rows = await self.rows(
            "SELECT COUNT(*) FROM bounces WHERE kind = 'policy' AND created_at > ?", (since,)
        )
        return int(rows[0][0])

    async def find_message(
        self, *, outbox_id: int | None = None, message_id: str | None = None
    ) -> dict[str, Any] | None:
        """The message a report is about, by the id in its VERP token or by its Message-ID.
        `email_hash` is the keyed hash a message recorded without its address kept (None
        for any other)."""
        columns = (
            "id, message_id, email, contact_id, category, topic_id, campaign_id, state, context"
        )
        if outbox_id is not None:
            rows = await self.rows(f"SELECT {columns} FROM outbox WHERE id = ?", (outbox_id,))
        elif message_id is not None:
            rows = await self.rows(
                f"SELECT {columns} FROM outbox WHERE message_id = ?", (message_id,)
            )
        else:
            return None
        if not rows:
            return None
        found = dict(zip(columns.split(", "), rows[0], strict=True))
        context = found.pop("context")
        found["email_hash"] = withheld_hash(context) if found["email"] is None else None
        return found

    async def mailed_since(self, emails: Sequence[str], since: float) -> set[str]:
        """Which of these addresses the gateway sent mail to since `since` (BN-5)."""
        if not emails:
            return set()
        rows = await self.rows(
            f"SELECT DISTINCT email FROM outbox WHERE email IN ({self.marks(len(emails))})"
            " AND sent_at > ?",
            (*emails, since),
        )
        return {r[0] for r in rows}

    async def mark_bounced(self, outbox_id: int, reason: str, now: float) -> None:
        """A report about a message already sent: it counts as bounced. Call inside a
        transaction."""
        changed = await self.rows(
            "UPDATE outbox SET state = 'bounced', last_error = ?, updated_at = ?"
            " WHERE id = ? AND state IN ('sent', 'failed') RETURNING id",
            (reason, now, outbox_id),
        )
        await self.tally((now, "bounced") for _ in changed)

    async def forget_bounces(self, email: str) -> None:
        """Erasure: the person's bounce history goes with them. Call inside a transaction."""
        await self.run("DELETE FROM bounces WHERE email = ?", (email,))
