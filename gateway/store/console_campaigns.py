"""Queries of the console's campaign pages: the list with counts, editing a draft, and what
came back from a campaign's recipients (complaints, refusals after it reached them)."""

from __future__ import annotations

from typing import Any

from .base import StoreBase
from .campaigns import WAITING

COUNTED = ("queued", "sent", "suppressed", "blocked", "failed", "bounced")


class ConsoleCampaignQueries(StoreBase):
    async def campaign_page(self, limit: int, before_id: int | None = None) -> list[dict[str, Any]]:
        """The newest campaigns (ids below `before_id`), each with the counts of
        `campaign_counts`, in two grouped queries for the whole page."""
        where, params = ("WHERE c.id < ?", [before_id]) if before_id else ("", [])
        rows = await self.rows(
            "SELECT c.id, c.name, t.slug, c.state, c.created_at, c.scheduled_at, c.finished_at"
            f" FROM campaigns c JOIN topics t ON t.id = c.topic_id {where}"
            " ORDER BY c.id DESC LIMIT ?",
            (*params, limit),
        )
        keys = ("id", "name", "topic", "state", "created_at", "scheduled_at", "finished_at")
        found = [dict(zip(keys, r, strict=True)) for r in rows]
        if not found:
            return []
        counts: dict[int, dict[str, int]] = {c["id"]: dict.fromkeys(COUNTED, 0) for c in found}
        ids = list(counts)
        for campaign_id, state, n in await self.rows(
            "SELECT campaign_id, state, COUNT(*) FROM outbox"
            f" WHERE campaign_id IN ({self.marks(len(ids))}) GROUP BY campaign_id, state",
            ids,
        ):
            key = "queued" if state in WAITING else state
            if key in counts[campaign_id]:
                counts[campaign_id][key] += int(n)
        for campaign_id, status, n in await self.rows(
            "SELECT campaign_id, status, COUNT(*) FROM message_log"
            f" WHERE campaign_id IN ({self.marks(len(ids))})"
            " AND status IN ('suppressed', 'blocked', 'failed') AND message_id IS NULL"
            " GROUP BY campaign_id, status",
            ids,
        ):
            counts[campaign_id][status] += int(n)
        for c in found:
            c["counts"] = counts[c["id"]]
        return found

    async def update_draft(self, campaign_id: int, values: dict[str, Any]) -> bool:
        """Change a campaign that is still a draft; False when it is not (any more)."""
        columns = list(values)
        async with self.transaction():
            rows = await self.rows(
                f"UPDATE campaigns SET {', '.join(f'{c} = ?' for c in columns)}"
                " WHERE id = ? AND state = 'draft' RETURNING id",
                (*(values[c] for c in columns), campaign_id),
            )
        return bool(rows)

    async def campaign_feedback(
        self, campaign_id: int, topic_id: int, since: float
    ) -> dict[str, int]:
        """What the campaign's recipients did after it reached them: complaints about its
        messages (by Message-ID), and refusals (opt-outs of its topic or of all promotional
        mail, other than by complaint) recorded after a message of it was sent to them.
        `since`: when the campaign started (no refusal before it can be one of these).

        A refusal link names the person and the topic, not the message, so a refusal is
        attributed to the campaign by time: it came after the campaign reached the person."""
        complaints = await self.rows(
            "SELECT COUNT(DISTINCT b.message_id) FROM bounces b"
            " JOIN outbox o ON o.message_id = b.message_id"
            " WHERE b.kind = 'complaint' AND b.created_at >= ? AND o.campaign_id = ?",
            (since, campaign_id),
        )
        refusals = await self.rows(
            "SELECT COUNT(DISTINCT l.contact_id) FROM consent_ledger l"
            " WHERE l.action = 'opt_out' AND l.source <> 'complaint' AND l.created_at >= ?"
            " AND (l.topic_id IS NULL OR l.topic_id = ?) AND EXISTS (SELECT 1 FROM outbox m"
            "  WHERE m.contact_id = l.contact_id AND m.campaign_id = ?"
            "  AND m.sent_at <= l.created_at)",
            (since, topic_id, campaign_id),
        )
        return {"complaints": int(complaints[0][0]), "unsubscribes": int(refusals[0][0])}
