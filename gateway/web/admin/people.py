"""Console pages about people: contact search, a contact's page, export and erase.

Every page that shows a person's data is written to the audit log (who, what, when; a keyed
hash of whose) under the action names the admin API uses. Topics, suppressions and policy
versions live in people_lists.py and people_policies.py; their routes are collected here.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ... import addresses
from ...consent import staff_may_lift
from ...errors import InvalidInput
from ...i18n import N_
from ..models import MAX_INTEGER
from . import people_lists, people_policies
from .people_common import (
    PAGE_SIZE,
    Refused,
    after_param,
    audit_person,
    done_message,
    form_fields,
    gateway,
    guarded,
    may,
    moment,
    need,
    render,
    text_param,
)

MESSAGES_SHOWN = 50
# Stored codes in words (an unknown code is shown as stored).
STATUSES = {
    "active": N_("active"),
    "stopped": N_("no longer using the service"),
    "subscribed": N_("subscribed"),
    "pending": N_("waiting for the person's confirmation"),
    "unsubscribed": N_("unsubscribed"),
}
ACTIONS = {"opt_in": N_("opted in"), "confirm": N_("confirmed"), "opt_out": N_("opted out")}
OUTCOMES = {
    "accepted": N_("accepted"),
    "sent": N_("sent"),
    "bounced": N_("bounced"),
    "failed": N_("failed"),
    "suppressed": N_("not sent: suppressed"),
    "blocked": N_("not sent: blocked"),
}


@guarded
async def contacts(request: Request) -> Response:
    """GET /admin/contacts?q=&after=: search by address or name, a page at a time."""
    await need(request, "viewer")
    gw = gateway(request)
    q = text_param(request, "q", 320)
    after = after_param(request)
    found = await gw.store.search_contacts(q.strip(), after_id=after, limit=PAGE_SIZE + 1)
    rows = found[:PAGE_SIZE]
    await audit_person(request, "contacts.list", None)
    return render(
        request,
        "people.html",
        N_("Contacts"),
        q=q,
        rows=[{**r, "created": moment(r["created_at"])} for r in rows],
        statuses=STATUSES,
        next_after=rows[-1]["id"] if len(found) > PAGE_SIZE else None,
        first_page=after == 0,
        done=done_message(request),
    )


async def _target(request: Request) -> dict[str, Any]:
    contact_id = request.path_params["id"]
    # An id past the database's integers names nobody (and must not reach the driver).
    profile = None
    if contact_id <= MAX_INTEGER:
        profile = await gateway(request).store.contact_profile(contact_id)
    if profile is None:
        raise Refused(404, f"no contact {contact_id}: it may have been erased")
    return profile


@guarded
async def contact(request: Request) -> Response:
    """GET /admin/contacts/{id}: the profile, subscriptions as they take effect now, the
    consent history, the messages sent and what became of them, the suppressions."""
    staff = await need(request, "viewer")
    gw = gateway(request)
    profile = await _target(request)
    email = profile["email"]
    record = (await gw.store.contact_records([profile["id"]]))[0]
    effective = (await gw.reception([email])).get(email, {})
    subscriptions = [
        {
            "topic": slug,
            "status": status,
            "effect": effective.get(slug, {}).get("state", "stopped"),
            "why": effective.get(slug, {}).get("why", ""),
        }
        for slug, status in record["subscriptions"].items()
    ]
    consent = [
        {**entry, "when": moment(entry["created_at"])}
        for entry in await gw.store.consent_history(profile["id"])
    ]
    messages = [
        {**m, "when": moment(m["created_at"]), "last": moment(m["updated_at"])}
        for m in await gw.store.contact_messages(profile["id"], email, MESSAGES_SHOWN)
    ]
    suppressions = [
        {**s, "when": moment(s["created_at"]), "liftable": staff_may_lift(s["reason"], s["source"])}
        for s in await gw.store.contact_suppressions(email, gw.signer.address_hashes(email))
    ]
    await audit_person(request, "contacts.get", email)
    return render(
        request,
        "contact.html",
        email,  # the page is headed by the address (not a msgid: shown as it is)
        contact={
            **profile,
            "created": moment(profile["created_at"]),
            "updated": moment(profile["updated_at"]),
        },
        attributes=record["attributes"],
        subscriptions=subscriptions,
        statuses=STATUSES,
        actions=ACTIONS,
        outcomes=OUTCOMES,
        scope_words=people_lists.SCOPE_WORDS,
        consent=consent,
        messages=messages,
        messages_shown=MESSAGES_SHOWN,
        suppressions=suppressions,
        may_change=may(staff, "marketer"),
        done=done_message(request),
    )


@guarded
async def export(request: Request) -> Response:
    """GET /admin/contacts/{id}/export: the JSON `gateway contact export` prints, as a file."""
    await need(request, "marketer")
    gw = gateway(request)
    profile = await _target(request)
    data = await gw.export_contact(profile["email"])
    await audit_person(request, "contacts.export", profile["email"])
    body = json.dumps(data, ensure_ascii=False, indent=2)
    return Response(
        body,
        media_type="application/json; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="contact-{profile["id"]}.json"'},
    )


@guarded
async def erase(request: Request) -> Response:
    """GET: a form that asks to type the address; POST: erase when it matches, else nothing
    changes and the page says why."""
    await need(request, "marketer")
    gw = gateway(request)
    profile = await _target(request)
    email = profile["email"]
    if request.method == "GET":
        await audit_person(request, "contacts.get", email)
        return render(request, "contact_erase.html", N_("Erase a contact"), contact=profile)
    fields = await form_fields(request)
    typed = fields.get("confirm", "").strip()
    try:
        matches = bool(typed) and addresses.normalize(typed) == email
    except InvalidInput:
        matches = False
    if not matches:
        await audit_person(request, "contacts.get", email)
        return render(
            request,
            "contact_erase.html",
            N_("Erase a contact"),
            status=422,
            contact=profile,
            typed=typed,
            mismatch=True,
        )
    await gw.erase_contact(email)
    await audit_person(request, "contacts.erase", email)
    return RedirectResponse("/admin/contacts?done=erased", status_code=303)


routes: list[BaseRoute] = [
    Route("/contacts", contacts, methods=["GET"]),
    Route("/contacts/{id:int}", contact, methods=["GET"]),
    Route("/contacts/{id:int}/export", export, methods=["GET"]),
    Route("/contacts/{id:int}/erase", erase, methods=["GET", "POST"]),
    *people_lists.routes,
    *people_policies.routes,
]
