"""Queries of the operator's listings: contacts, messages and one message's story."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import StoreBase

# One line per message as accepted: its `accepted` entry, or the entry of a message refused
# at accept (suppressed, blocked, failed to render), which has no Message-ID. The worker's
# later entries (sent, failed, bounced…) tell its story (`message_story`).
_LISTED = "(l.status = 'accepted' OR l.message_id IS NULL)"
_MESSAGE_COLUMNS = (
    "log_id", "message_id", "email", "category", "topic", "campaign_id", "subject",
    "accepted", "reason", "created_at", "source", "state", "attempts", "last_error",
    "next_attempt_at",
)  # fmt: skip
_MESSAGE_SELECT = (
    "SELECT l.id, l.message_id, l.email, l.category, tp.slug, l.campaign_id, l.subject,"
    " l.status, l.reason, l.created_at, l.source, o.state, o.attempts, o.last_error,"
    " o.next_attempt_at FROM message_log l LEFT JOIN outbox o ON o.message_id = l.message_id"
    " LEFT JOIN topics tp ON tp.id = l.topic_id"
)


def _message(row: Sequence[Any]) -> dict[str, Any]:
    found = dict(zip(_MESSAGE_COLUMNS, row, strict=True))
    # Refused at accept: that is its state for good. Accepted: where the outbox has it.
    found["state"] = found["state"] or (
        found["accepted"] if found["accepted"] != "accepted" else "unknown"
    )
    del found["accepted"]
    return found


class ListingQueries(StoreBase):
    async def list_contacts(
        self, *, topic_id: int | None = None, after_id: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Contacts by id after `after_id`; with `topic_id`, those with a subscription to it
        (any state, given as `subscription`)."""
        if topic_id is None:
            rows = await self.rows(
                "SELECT id, email, name, language, status, created_at, NULL FROM contacts"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        else:
            rows = await self.rows(
                "SELECT c.id, c.email, c.name, c.language, c.status, c.created_at, s.status"
                " FROM subscriptions s JOIN contacts c ON c.id = s.contact_id"
                " WHERE s.topic_id = ? AND c.id > ? ORDER BY c.id LIMIT ?",
                (topic_id, after_id, limit),
            )
        keys = ("id", "email", "name", "language", "status", "created_at", "subscription")
        found = [dict(zip(keys, r, strict=True)) for r in rows]
        if topic_id is None:
            for contact in found:
                del contact["subscription"]
        return found

    async def count_contacts(self, topic_id: int | None = None) -> int:
        if topic_id is None:
            rows = await self.rows("SELECT COUNT(*) FROM contacts")
        else:
            rows = await self.rows(
                "SELECT COUNT(*) FROM subscriptions WHERE topic_id = ?", (topic_id,)
            )
        return int(rows[0][0])

    async def subscription_counts(self, topic_id: int) -> dict[str, int]:
        """How many subscriptions to a topic are in each state (pending, subscribed…)."""
        rows = await self.rows(
            "SELECT status, COUNT(*) FROM subscriptions WHERE topic_id = ? GROUP BY status",
            (topic_id,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def list_messages(
        self,
        *,
        email: str | None = None,
        campaign_id: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Messages as accepted (or refused), newest first, each with where it is now."""
        where = [_LISTED]
        params: list[Any] = []
        for clause, value in (
            ("l.email = ?", email),
            ("l.campaign_id = ?", campaign_id),
            ("l.id < ?", before_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = await self.rows(
            f"{_MESSAGE_SELECT} WHERE {' AND '.join(where)} ORDER BY l.id DESC LIMIT ?",
            (*params, limit),
        )
        return [_message(r) for r in rows]

    async def message_entry(
        self, *, message_id: str | None = None, log_id: int | None = None
    ) -> dict[str, Any] | None:
        """One message by its Message-ID, or a refused one by its log entry's number."""
        value: str | int | None = message_id
        clause = "l.message_id = ? AND l.status = 'accepted'"
        if message_id is None:
            clause, value = f"l.id = ? AND {_LISTED}", log_id
        rows = await self.rows(f"{_MESSAGE_SELECT} WHERE {clause} LIMIT 1", (value,))
        return _message(rows[0]) if rows else None

    async def message_story(self, message_id: str) -> list[dict[str, Any]]:
        """Every event of one message, oldest first: accepted, held, sent, bounced… (its log
        entries, and its sending from the outbox row)."""
        rows = await self.rows(
            "SELECT status, reason, created_at FROM (SELECT id, status, reason, created_at"
            " FROM message_log WHERE message_id = ? UNION ALL SELECT NULL, 'sent', NULL,"
            " sent_at FROM outbox WHERE message_id = ? AND sent_at IS NOT NULL) AS events"
            " ORDER BY created_at, id",
            (message_id, message_id),
        )
        return [{"status": r[0], "reason": r[1], "at": r[2]} for r in rows]

    async def marketing_ahead(
        self, emails: Sequence[str], since: float
    ) -> dict[str, list[tuple[float, int | None, str | None]]]:
        """For the frequency cap's estimate at accept: per address, the marketing mail sent
        since `since` and on the wire (time, None, None), and what waits in the outbox (time
        queued, outbox id, Message-ID: what is queued before a message goes before it)."""
        found: dict[str, list[tuple[float, int | None, str | None]]] = {}
        marks = self.marks(len(emails))
        for email, at, outbox_id, message_id in await self.rows(
            f"SELECT email, sent_at, NULL, NULL FROM outbox WHERE email IN ({marks})"
            " AND sent_at > ? AND category = 'marketing'"
            " UNION ALL SELECT email, updated_at, CASE WHEN state = 'queued' THEN id END,"
            f" message_id FROM outbox WHERE email IN ({marks}) AND category = 'marketing'"
            " AND state IN ('queued', 'sending')",
            (*emails, since, *emails),
        ):
            found.setdefault(email, []).append((float(at), outbox_id, message_id))
        return found
