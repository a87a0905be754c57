"""The audit log in the console (admin only): who did or read what and when, newest first,
filtered by actor, action and dates (Vietnam's time), in pages."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...catalog import TIMEZONE
from ...i18n import N_
from .auth import require
from .views import gateway, page, words

TITLE = N_("Audit log")
PAGE_SIZE = 50


def _day(text: str, field: str, errors: list[str], request: Request) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(words(request, "%(field)s is not a date (YYYY-MM-DD).", field=field))
        return None


def _start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=TIMEZONE).timestamp()


async def audit_log(request: Request) -> Response:
    await require(request, "admin")
    q = request.query_params
    actor = (q.get("actor") or "").strip()[:120]
    action = (q.get("action") or "").strip()[:64]
    errors: list[str] = []
    since = _day(q.get("from", ""), words(request, "From"), errors, request)
    until = _day(q.get("to", ""), words(request, "To"), errors, request)
    before = q.get("before", "")
    before_id = int(before) if before.isdigit() else None
    rows = await gateway(request).store.audit_page(
        actor=actor or None,
        action=action or None,
        since=_start(since) if since else None,
        # "to" is a whole day: everything before the next day starts
        until=_start(until + timedelta(days=1)) if until else None,
        before_id=before_id,
        limit=PAGE_SIZE + 1,
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    filters = {
        k: v
        for k, v in (("actor", actor), ("action", action), ("from", q.get("from", "")),
                     ("to", q.get("to", "")))
        if v
    }  # fmt: skip
    older = "/admin/audit?" + urlencode({**filters, "before": rows[-1]["id"]}) if more else None
    newest = "/admin/audit?" + urlencode(filters) if before_id else None
    return page(
        request,
        "audit.html",
        TITLE,
        status=400 if errors else 200,
        rows=rows,
        filters=filters,
        errors=errors,
        older=older,
        newest=newest,
    )


routes: list[BaseRoute] = [Route("/audit", audit_log, methods=["GET"])]
