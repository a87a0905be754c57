"""Queries of the dashboard: per-day counts and the outbox backlog, each read from an index."""

from __future__ import annotations

from collections.abc import Sequence

from .base import StoreBase


class StatsQueries(StoreBase):
    async def daily_counts(
        self, first_day: str, last_day: str, metrics: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        """{(day, metric): n} for the days from `first_day` to `last_day` (YYYY-MM-DD, UTC):
        a range of the (day, metric) unique index, a few rows per day, whatever the size
        of the message log (store/tally.py keeps them)."""
        rows = await self.rows(
            "SELECT day, metric, n FROM daily_counts WHERE day >= ? AND day <= ?"
            f" AND metric IN ({self.marks(len(metrics))})",
            (first_day, last_day, *metrics),
        )
        return {(day, metric): int(n) for day, metric, n in rows}

    async def backlog(self, now: float) -> dict[str, float | int | None]:
        """The outbox's messages waiting (queued: `due` of them now), on the wire
        (sending), and the first in line: the due or leased message whose time came first,
        and when it was accepted. Counts over ix_outbox_due (state, next_attempt_at)
        alone; the first in line is one row at the start of its range."""
        rows = await self.rows(
            "SELECT"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'queued'),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'sending'),"
            " (SELECT created_at FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at LIMIT 1),"
            " (SELECT next_attempt_at FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at LIMIT 1),"
            " (SELECT created_at FROM outbox WHERE state = 'sending'"
            " ORDER BY next_attempt_at LIMIT 1)",
            (now, now, now),
        )
        queued, due, sending, due_created, due_since, sending_created = rows[0]
        accepted = [t for t in (due_created, sending_created) if t is not None]
        return {
            "queued": int(queued),
            "due": int(due),
            "sending": int(sending),
            "oldest_accepted_at": min(accepted) if accepted else None,
            "due_since": due_since,
        }
