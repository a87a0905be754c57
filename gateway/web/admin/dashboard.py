"""The dashboard, the console's home page (`/admin`): mail sent, bounced, complained about
and refused per day as charts drawn here in SVG (no script, nothing from elsewhere), with the
numbers in a table, the rates and alerts, and the outbox backlog. Any staff role may see it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from babel.numbers import format_compact_decimal, format_decimal, format_percent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...errors import InvalidInput
from ...i18n import N_
from ...stats import CHARTED, METRICS, Dashboard, dashboard
from . import i18n
from .auth import require
from .views import gateway, lang_of, page

TITLE = N_("Dashboard")
PERIODS = (7, 30, 90)  # the spans offered as links; ?days= takes any from 1 to MAX_DAYS
MAX_DAYS = 366

# The charts' words and colours (presentation attributes, not CSS: the console's CSP allows
# no inline style). Each colour has at least 4.5:1 contrast on white.
SERIES = {
    "sent": (N_("Sent"), N_("Messages sent per day"), "#0b4a8b"),
    "bounced": (N_("Bounced"), N_("Messages bounced per day"), "#a4161a"),
    "complained": (N_("Complaints"), N_("Complaints per day"), "#8a4b00"),
    "refused": (N_("Refusals"), N_("Refusals of promotional mail per day"), "#5b2a86"),
}
# The table's columns: every charted series, then the rest of what is counted.
COLUMNS = METRICS
COLUMN_NAMES = {
    **{metric: words[0] for metric, words in SERIES.items()},
    "unsubscribed": N_("Topic opt-outs"),
    "sender_refused": N_("Sender-side refusals"),
    "accepted": N_("Accepted"),
    "suppressed": N_("Suppressed"),
    "blocked": N_("Blocked"),
    "failed": N_("Failed"),
}

# The drawing, in the SVG's own units (it scales to the width it is given).
WIDTH, HEIGHT = 320, 160
LEFT, RIGHT, TOP, BOTTOM = 40, 14, 8, 22


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: str
    n: int


@dataclass(frozen=True)
class Chart:
    metric: str
    name: str  # msgid
    title: str  # msgid
    colour: str
    total: int
    peak: int
    peak_day: str | None
    bars: list[Bar]
    ticks: list[tuple[float, int]]  # (y, value) of the horizontal lines
    labels: list[tuple[float, str]]  # (x, MM-DD) under some bars


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k (at least 2) that is ≥ value: a round top for an axis."""
    if value <= 2:
        return 2
    magnitude = 10 ** int(math.log10(value))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= value)


def chart(board: Dashboard, metric: str) -> Chart:
    values = board.series[metric]
    top = nice_ceiling(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(values), 1)
    width = max(slot * 0.7, 1.0)
    bars = []
    for i, (day, n) in enumerate(zip(board.days, values, strict=True)):
        h = plot_h * n / top
        if n and h < 1:
            h = 1.0  # a day with any mail stays visible next to a day of thousands
        x = LEFT + i * slot + (slot - width) / 2
        bars.append(
            Bar(round(x, 2), round(TOP + plot_h - h, 2), round(width, 2), round(h, 2), day, n)
        )
    ticks = [(round(TOP + plot_h - plot_h * v / top, 2), v) for v in (0, top // 2, top)]
    every = max(1, math.ceil(len(values) / 5))  # at most about five dates under the axis
    labels = [
        (round(LEFT + i * slot + slot / 2, 2), day[5:])
        for i, day in enumerate(board.days)
        if (len(values) - 1 - i) % every == 0
    ]
    peak = max(values, default=0)
    name, title, colour = SERIES[metric]
    return Chart(
        metric=metric,
        name=name,
        title=title,
        colour=colour,
        total=board.totals[metric],
        peak=peak,
        peak_day=board.days[values.index(peak)] if peak else None,
        bars=bars,
        ticks=ticks,
        labels=labels,
    )


def duration(lang: str, seconds: float | None) -> str:
    """A span as staff read it: minutes, hours or days, in the console's language."""
    if seconds is None:
        return "–"
    minutes = seconds / 60
    if minutes < 1:
        return i18n.gettext(lang, "under a minute")
    if minutes < 120:
        return i18n.ngettext(lang, "%(num)s minute", "%(num)s minutes", int(minutes))
    hours = minutes / 60
    if hours < 48:
        return i18n.ngettext(lang, "%(num)s hour", "%(num)s hours", int(hours))
    return i18n.ngettext(lang, "%(num)s day", "%(num)s days", int(hours / 24))


def formats(lang: str) -> dict[str, Any]:
    """The template's number filters in the console's language (1.234 in Vietnamese)."""

    def number(n: float) -> str:
        return str(format_decimal(n, locale=lang))

    def percent(rate: float | None) -> str:
        if rate is None:
            return "–"
        return str(format_percent(rate, format="#,##0.0#%", locale=lang))

    def compact(n: float) -> str:  # an axis label: 12K, not 12,000
        return str(format_compact_decimal(n, locale=lang, fraction_digits=1))

    return {
        "number": number,
        "compact": compact,
        "percent": percent,
        "duration": lambda s: duration(lang, s),
    }


def days_of(request: Request) -> int:
    given = request.query_params.get("days", "30")
    if not given.isdigit() or not 1 <= int(given) <= MAX_DAYS:
        raise InvalidInput(f"days must be a whole number from 1 to {MAX_DAYS}, not {given!r}")
    return int(given)


async def home(request: Request) -> Response:
    await require(request, "viewer")
    days = days_of(request)
    board = await dashboard(gateway(request), days=days)
    lang = lang_of(request)
    return page(
        request,
        "dashboard.html",
        TITLE,
        board=board,
        days=days,
        periods=PERIODS,
        charts=[chart(board, metric) for metric in CHARTED],
        columns=[(metric, COLUMN_NAMES[metric]) for metric in COLUMNS],
        rows=list(reversed(range(len(board.days)))),  # the table: newest day first
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=RIGHT,
        **formats(lang),
    )


routes: list[BaseRoute] = [Route("/", home, methods=["GET"])]
