"""Queries of the staff console's people pages: contact search, a person's messages, counts."""

from __future__ import annotations

from typing import Any

from .base import StoreBase


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ConsolePeopleQueries(StoreBase):
    # -- contact search ----------------------------------------------------------------------

    async def search_contacts(
        self, text: str, *, after_id: int = 0, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Contacts whose address or name holds `text` (case-insensitive; all when empty),
        by id after `after_id`: a page of the listing, never the whole table at once."""
        columns = "id, email, name, language, status, created_at"
        if not text:
            found = await self.rows(
                f"SELECT {columns} FROM contacts WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        else:
            pattern = _like(text.lower())
            found = await self.rows(
                f"SELECT {columns} FROM contacts WHERE id > ? AND (LOWER(email) LIKE ?"
                " ESCAPE '\\' OR LOWER(COALESCE(name, '')) LIKE ? ESCAPE '\\')"
                " ORDER BY id LIMIT ?",
                (after_id, pattern, pattern, limit),
            )
        keys = ("id", "email", "name", "language", "status", "created_at")
        return [dict(zip(keys, row, strict=True)) for row in found]

    async def contact_profile(self, contact_id: int) -> dict[str, Any] | None:
        keys = (
            "id", "email", "name", "phone", "postal_address", "language", "status",
            "stopped_at", "source", "created_at", "updated_at",
        )  # fmt: skip
        found = await self.rows(
            f"SELECT {', '.join(keys)} FROM contacts WHERE id = ?", (contact_id,)
        )
        return dict(zip(keys, found[0], strict=True)) if found else None

    # -- a person's messages -----------------------------------------------------------------

    async def contact_messages(
        self, contact_id: int, email: str, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The person's latest `limit` messages, newest first, each with what happened to it
        last (the message log keeps one row per event: accepted, held, bounced…; the outbox
        row when it was sent)."""
        found = await self.rows(
            "SELECT message_id, MIN(id), MAX(id) FROM message_log"
            " WHERE (contact_id = ? OR email = ?) AND message_id IS NOT NULL"
            " GROUP BY message_id ORDER BY MIN(id) DESC LIMIT ?",
            (contact_id, email, limit),
        )
        if not found:
            return []
        ids = [row[1] for row in found] + [row[2] for row in found]
        by_id = {
            row[0]: row
            for row in await self.rows(
                "SELECT l.id, l.created_at, l.subject, l.category, t.slug, l.status, l.reason,"
                " l.campaign_id FROM message_log l LEFT JOIN topics t ON t.id = l.topic_id"
                f" WHERE l.id IN ({self.marks(len(ids))})",
                ids,
            )
        }
        # A message's sending is its outbox row's sent_at, not a log entry: it is the last
        # event unless a later one (a bounce report) came after it.
        sent_at = dict(
            await self.rows(
                "SELECT message_id, sent_at FROM outbox WHERE sent_at IS NOT NULL AND"
                f" message_id IN ({self.marks(len(found))})",
                [row[0] for row in found],
            )
        )
        messages = []
        for message_id, first, last in found:
            head, tail = by_id[first], by_id[last]
            when = sent_at.get(message_id)
            if when is not None and when >= tail[1]:
                tail = (None, when, None, None, None, "sent", None)
            messages.append(
                {
                    "message_id": message_id,
                    "created_at": head[1],
                    "subject": head[2],
                    "category": head[3],
                    "topic": head[4],
                    "status": tail[5],
                    "reason": tail[6],
                    "updated_at": tail[1],
                    "campaign_id": head[7],
                }
            )
        return messages

    async def contact_suppressions(self, email: str, hashes: list[str]) -> list[dict[str, Any]]:
        """Every suppression of one address (by the address or its keyed hashes), oldest
        first, with the topic's slug."""
        found = await self.rows(
            "SELECT s.id, s.scope, t.slug, s.reason, s.source, s.created_at FROM suppressions s"
            " LEFT JOIN topics t ON t.id = s.topic_id"
            f" WHERE s.email = ? OR s.email_hash IN ({self.marks(len(hashes))}) ORDER BY s.id",
            [email, *hashes],
        )
        keys = ("id", "scope", "topic", "reason", "source", "created_at")
        return [dict(zip(keys, row, strict=True)) for row in found]

    # -- counts --------------------------------------------------------------------------------

    async def count_suppressions(self) -> int:
        found = await self.rows("SELECT COUNT(*) FROM suppressions")
        return int(found[0][0])

    async def count_erased(self) -> int:
        """Erased addresses: each left only its keyed hash, under reason erased."""
        found = await self.rows(
            "SELECT COUNT(DISTINCT email_hash) FROM suppressions WHERE reason = 'erased'"
        )
        return int(found[0][0])
