"""Per-day counts for the dashboard, kept as things happen (never by scanning the message log).

The places that write an event (a message log entry, a suppression, a bounce report) call
`StoreBase.tally` inside their transaction; the counts wait in the transaction's `Tally` and
are written just before it commits, one upsert per (day, metric), in sorted order: on
PostgreSQL every process's writers then lock each counter row only for their commit, always
in the same order, so they never deadlock on them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

# A person's own refusal of promotional mail, by the suppression's reason: one-click and the
# preference page ("unsubscribe"), the mailto: address ("email"), a refusal by phone or email
# that staff recorded for them (ST-3). A complaint is counted apart.
REFUSALS = frozenset({"unsubscribe", "email", "phone", "refusal"})

UPSERT = (
    "INSERT INTO daily_counts (day, metric, n) VALUES (?, ?, ?)"
    " ON CONFLICT (day, metric) DO UPDATE SET n = daily_counts.n + excluded.n"
)


def utc_day(when: float) -> str:
    """The UTC date of a timestamp, as daily_counts keeps it: YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def suppression_metric(scope: str, reason: str) -> str | None:
    """What a new suppression counts as on the dashboard, if anything."""
    if reason == "complaint":
        return "complained"
    if scope == "marketing" and reason in REFUSALS:
        return "refused"
    return None


class Tally:
    """The counts of one outermost transaction."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, events: Iterable[tuple[float, str]]) -> None:
        days: dict[int, str] = {}  # a batch's entries share a few seconds: one strftime each
        for when, metric in events:
            second = int(when)
            day = days.get(second)
            if day is None:
                day = days[second] = utc_day(when)
            self.counts[(day, metric)] += 1

    def rows(self) -> list[tuple[str, str, int]]:
        """One row per (day, metric), sorted: the order every writer locks them in."""
        return [(day, metric, n) for (day, metric), n in sorted(self.counts.items()) if n]


# The Tally of the current task's outermost transaction (set by `StoreBase.transaction`).
CURRENT: ContextVar[tuple[asyncio.Task[Any] | None, Tally] | None] = ContextVar(
    "gateway_tally", default=None
)


def current() -> Tally | None:
    """The current task's transaction's Tally; None outside a transaction."""
    pending = CURRENT.get()
    if pending is not None and pending[0] is asyncio.current_task():
        return pending[1]
    return None


def backfill_sql(dialect: str, *, sendings_on_outbox: bool = True) -> str:
    """One statement that fills an empty daily_counts from what a database made before them
    still holds (schema version 5 runs it once): the message log's statuses, the sendings
    (`outbox.sent_at` from schema version 6; `sendings_on_outbox=False` for a database
    before it, whose log holds them), complaints and refusals from the suppression list,
    sender-side refusals from the bounce reports, topic opt-outs from the subscriptions
    (their last change only). What was erased, or changed since, cannot be counted any
    more."""
    if dialect == "sqlite":
        day = "strftime('%Y-%m-%d', {}, 'unixepoch')"
    else:
        day = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    refusals = ", ".join(f"'{reason}'" for reason in sorted(REFUSALS))
    return (
        "INSERT INTO daily_counts (day, metric, n) SELECT day, metric, SUM(n) FROM ("
        f" SELECT {day.format('created_at')} AS day, status AS metric, COUNT(*) AS n"
        " FROM message_log GROUP BY 1, 2"
        + (
            f" UNION ALL SELECT {day.format('sent_at')}, 'sent', COUNT(*) FROM outbox"
            " WHERE sent_at IS NOT NULL GROUP BY 1"
            if sendings_on_outbox
            else ""
        )
        + f" UNION ALL SELECT {day.format('created_at')},"
        " CASE WHEN reason = 'complaint' THEN 'complained' ELSE 'refused' END, COUNT(*)"
        " FROM suppressions WHERE reason = 'complaint'"
        f" OR (scope = 'marketing' AND reason IN ({refusals})) GROUP BY 1, 2"
        f" UNION ALL SELECT {day.format('created_at')}, 'sender_refused', COUNT(*)"
        " FROM bounces WHERE kind = 'policy' GROUP BY 1"
        f" UNION ALL SELECT {day.format('unsubscribed_at')}, 'unsubscribed', COUNT(*)"
        " FROM subscriptions WHERE status = 'unsubscribed' AND unsubscribed_at IS NOT NULL"
        " GROUP BY 1"
        ") AS counted WHERE NOT EXISTS (SELECT 1 FROM daily_counts) GROUP BY day, metric"
    )
