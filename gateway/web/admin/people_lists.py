"""Console pages of topics and of the suppression list (add, import a CSV, remove).

The rules are those of the CLI and the admin API: staff lift what staff added and bounces,
never a person's own refusal, a complaint or an erasure (`consent.staff_may_lift`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ... import addresses, suppression_csv
from ...consent import SUPPRESSION_SCOPES, staff_may_lift
from ...errors import InvalidInput, StoreError, TooLarge
from ...i18n import N_
from ..api_people import _reason as checked_reason
from .people_common import (
    MAX_UPLOAD,
    PAGE_SIZE,
    Refused,
    after_param,
    audit_change,
    audit_person,
    done_message,
    form_fields,
    gateway,
    guarded,
    may,
    moment,
    need,
    render,
)

# Console suppressions are staff's own, lifted by staff like the CLI's.
SOURCE = "admin"
SCOPE_WORDS = {"all": N_("all mail"), "marketing": N_("promotional mail"), "topic": N_("a topic")}


# -- topics ------------------------------------------------------------------------------------


@guarded
async def topics(request: Request) -> Response:
    """GET: topics with how many people would receive each; POST (marketer): add one."""
    if request.method == "POST":
        await need(request, "marketer")
        return await _add_topic(request)
    staff = await need(request, "viewer")
    gw = gateway(request)
    return render(
        request,
        "topics.html",
        N_("Topics"),
        topics=[{"topic": t, "receiving": n} for t, n in await gw.topics()],
        may_change=may(staff, "marketer"),
        done=done_message(request),
    )


async def _add_topic(request: Request) -> Response:
    gw = gateway(request)
    fields = await form_fields(request)
    slug, name = fields.get("slug", "").strip(), fields.get("name", "").strip()
    if len(slug) > 64:
        raise Refused(422, "a topic's short name is at most 64 characters")
    if not name or len(name) > 200:
        raise Refused(422, "a topic needs a name of 1 to 200 characters")
    if await gw.store.get_topic(slug) is not None:
        raise Refused(409, f"a topic {slug!r} already exists")
    try:
        topic = await gw.add_topic(slug, name, double_opt_in=fields.get("double_opt_in") == "on")
    except StoreError as exc:  # made by another request meanwhile
        raise Refused(409, str(exc)) from None
    await audit_change(request, "topics.add", f"topic:{topic.slug}")
    return RedirectResponse("/admin/topics?done=topic", status_code=303)


# -- suppressions ------------------------------------------------------------------------------


@guarded
async def suppressions(request: Request) -> Response:
    """GET: the list, a page at a time by id; POST (marketer): add one address."""
    if request.method == "POST":
        await need(request, "marketer")
        return await _add_suppression(request)
    staff = await need(request, "viewer")
    gw = gateway(request)
    after = after_param(request)
    found = await gw.suppressions(limit=PAGE_SIZE + 1, after_id=after)
    rows = found[:PAGE_SIZE]
    await audit_person(request, "suppressions.list", None)
    return render(
        request,
        "suppressions.html",
        N_("Suppressions"),
        rows=[_row(r) for r in rows],
        next_after=rows[-1]["id"] if len(found) > PAGE_SIZE else None,
        first_page=after == 0,
        total=await gw.store.count_suppressions(),
        scopes=SUPPRESSION_SCOPES,
        scope_words=SCOPE_WORDS,
        may_change=may(staff, "marketer"),
        done=done_message(request),
    )


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        **r,
        "when": moment(r["created_at"]),
        "liftable": r["email"] is not None and staff_may_lift(r["reason"], r["source"]),
    }


async def _add_suppression(request: Request) -> Response:
    gw = gateway(request)
    fields = await form_fields(request)
    email = addresses.normalize(fields.get("email", ""))
    reason = checked_reason(fields.get("reason", "").strip() or "manual")
    scope = fields.get("scope") or None
    added = await gw.suppress(email, reason=reason, scope=scope, source=SOURCE)
    await audit_person(request, "suppressions.add", email)
    return RedirectResponse(
        f"/admin/suppressions?done={'suppressed' if added else 'already'}", status_code=303
    )


@guarded
async def import_suppressions(request: Request) -> Response:
    """POST (marketer): a CSV file of email[,reason], with or without a header line; bad
    rows are reported by line and skipped, as by the admin API."""
    await need(request, "marketer")
    gw = gateway(request)
    fields = await form_fields(request, limit=MAX_UPLOAD, files=("file",))
    text = fields.get("file", "")
    if not text.strip():
        raise Refused(422, "choose a CSV file to import: the one sent is empty")
    try:
        done = await suppression_csv.import_suppressions(
            gw, text, source=SOURCE, check_reason=checked_reason, parts="import it in parts"
        )
    except TooLarge as exc:
        raise Refused(413, str(exc)) from None
    except InvalidInput as exc:
        raise Refused(422, str(exc)) from None
    added, already, bad = done.added, done.already, done.bad
    await audit_change(request, "suppressions.import", "list")
    # The report is the answer (a repeated post adds nothing: every row is then "already").
    return render(
        request,
        "suppressions_import.html",
        N_("Suppressions imported"),
        added=added,
        already=already,
        bad=bad,
    )


@guarded
async def remove_suppression(request: Request) -> Response:
    """POST (marketer): lift what staff may lift for one address; a person's own refusal,
    complaint or erasure answers 409 and stays."""
    await need(request, "marketer")
    gw = gateway(request)
    fields = await form_fields(request)
    email = addresses.normalize(fields.get("email", ""))
    await gw.unsuppress(email)  # NotFound: 404; Conflict (only they may lift it): 409
    await audit_person(request, "suppressions.remove", email)
    back = fields.get("back", "")
    target = back if back.startswith("/admin/contacts/") and back[16:].isdigit() else None
    return RedirectResponse(f"{target or '/admin/suppressions'}?done=lifted", status_code=303)


routes: list[BaseRoute] = [
    Route("/topics", topics, methods=["GET", "POST"]),
    Route("/suppressions", suppressions, methods=["GET", "POST"]),
    Route("/suppressions/import", import_suppressions, methods=["POST"]),
    Route("/suppressions/remove", remove_suppression, methods=["POST"]),
]
