"""The dashboard: mail sent, bounced, complained about and refused per day, rates, alerts, backlog.

Every figure comes from the per-day counts kept as things happen (store/tally.py) or from an
index of the outbox and the bounce reports: the dashboard costs the same with a message log of
a million rows as with an empty one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Gateway

# The lines the README's "What to watch" names. Gmail and Yahoo ask bulk senders to keep the
# spam complaint rate below 0.1% and never reach 0.3%; a hard bounce rate above 2% of the
# mail sent means a list that needs cleaning (and hurts the sender's reputation).
BOUNCE_RATE_LIMIT = 0.02
COMPLAINT_RATE_WARNING = 0.001
COMPLAINT_RATE_LIMIT = 0.003

# The series charted, in order, and every metric the table shows (store/tally.py counts
# them: a message log status, or what a suppression, a bounce report or a topic opt-out is).
CHARTED = ("sent", "bounced", "complained", "refused")
METRICS = (
    *CHARTED,
    "unsubscribed",
    "sender_refused",
    "accepted",
    "suppressed",
    "blocked",
    "failed",
)


@dataclass(frozen=True)
class Alert:
    """Something someone must look at. `kind`: sender_refused | bounce_rate |
    complaint_rate; `level`: error | warning; `value` and `limit` are what was seen and the
    line it crossed (a rate as a fraction, or a count of refusals)."""

    kind: str
    level: str
    value: float
    limit: float


@dataclass(frozen=True)
class Backlog:
    queued: int  # waiting in the outbox (due now or on a retry's schedule)
    due: int  # of those, due now
    sending: int  # on the wire, leased by a worker
    oldest_age: float | None  # seconds since the first message in line was accepted
    late_by: float | None  # seconds since the first due message became due


@dataclass(frozen=True)
class Dashboard:
    first_day: str
    last_day: str
    days: list[str]  # every day of the window, oldest first, YYYY-MM-DD (UTC)
    series: dict[str, list[int]]  # per metric, one count per day of `days`
    totals: dict[str, int]
    bounce_rate: float | None  # bounced ÷ (sent + bounced) over the window; None: nothing sent
    complaint_rate: float | None  # complained ÷ sent over the window
    alerts_24h: int  # sender-side refusals (5.7.x) in the last 24 hours, as /healthz
    alerts: list[Alert] = field(default_factory=list)
    backlog: Backlog | None = None


def window(days: int, now: float) -> list[str]:
    """The `days` UTC dates ending with today's, oldest first."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def alerts_of(
    alerts_24h: int, bounce_rate: float | None, complaint_rate: float | None
) -> list[Alert]:
    """What crossed a line, the worst first."""
    found: list[Alert] = []
    if alerts_24h:  # BN-2: any sender-side refusal needs someone to fix SPF, DKIM or DMARC
        found.append(Alert("sender_refused", "error", alerts_24h, 0))
    if complaint_rate is not None and complaint_rate > COMPLAINT_RATE_LIMIT:
        found.append(Alert("complaint_rate", "error", complaint_rate, COMPLAINT_RATE_LIMIT))
    elif complaint_rate is not None and complaint_rate > COMPLAINT_RATE_WARNING:
        found.append(Alert("complaint_rate", "warning", complaint_rate, COMPLAINT_RATE_WARNING))
    if bounce_rate is not None and bounce_rate > BOUNCE_RATE_LIMIT:
        found.append(Alert("bounce_rate", "warning", bounce_rate, BOUNCE_RATE_LIMIT))
    return found


async def dashboard(gw: Gateway, days: int = 30, now: float | None = None) -> Dashboard:
    """The last `days` days (UTC, today included) of mail as the dashboard shows it."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now = time.time() if now is None else now
    dates = window(days, now)
    counts = await gw.store.daily_counts(dates[0], dates[-1], METRICS)
    series = {m: [counts.get((d, m), 0) for d in dates] for m in METRICS}
    totals = {m: sum(values) for m, values in series.items()}
    sent, bounced = totals["sent"], totals["bounced"]
    bounce_rate = rate(bounced, sent + bounced)
    complaint_rate = rate(totals["complained"], sent)
    alerts_24h = await gw.alerts(now - 86400)
    found = await gw.store.backlog(now)
    oldest, due_since = found["oldest_accepted_at"], found["due_since"]
    backlog = Backlog(
        queued=int(found["queued"] or 0),
        due=int(found["due"] or 0),
        sending=int(found["sending"] or 0),
        oldest_age=max(0.0, now - oldest) if oldest is not None else None,
        late_by=max(0.0, now - due_since) if due_since is not None else None,
    )
    return Dashboard(
        first_day=dates[0],
        last_day=dates[-1],
        days=dates,
        series=series,
        totals=totals,
        bounce_rate=bounce_rate,
        complaint_rate=complaint_rate,
        alerts_24h=alerts_24h,
        alerts=alerts_of(alerts_24h, bounce_rate, complaint_rate),
        backlog=backlog,
    )
