"""Admin API handlers about people: contacts, their subscriptions, topics, suppressions."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import addresses, suppression_csv
from ..contacts import check_profile_text
from ..errors import InvalidInput, NotFound, StoreError, TooLarge
from ..records import Contact
from .api_io import audit, csv_body, fail, gateway, json_body, paging, path_id, query
from .models import ContactCreate, ContactUpdate, SuppressionCreate, TopicCreate

PROFILE = (("name", "name"), ("phone", "phone"), ("address", "postal_address"))
REASON = re.compile(r"[a-z0-9_-]{1,32}")
SLUG = re.compile(r"[A-Za-z0-9_-]{1,64}")
FORMULA_START = frozenset("=+-@\t\r")


def contact_json(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "email": record["email"],
        "name": record["name"],
        "phone": record["phone"],
        "address": record["postal_address"],
        "language": record["language"],
        "status": record["status"],
        "source": record["source"],
        "attributes": record["attributes"],
        "subscriptions": record["subscriptions"],
        # what the recorded status leads to now: a refusal of all promotional mail, a
        # block or an erasure stops a topic's mail whatever its status says
        "effective": record.get("effective", {}),
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
    }


async def _records(request: Request, ids: list[int]) -> list[dict[str, Any]]:
    gw = gateway(request)
    records = await gw.store.contact_records(ids)
    reception = await gw.reception([r["email"] for r in records])
    for r in records:
        r["effective"] = reception.get(r["email"], {})
    return records


async def _record(request: Request, contact_id: int) -> dict[str, Any]:
    records = await _records(request, [contact_id])
    if not records:
        fail(404, f"no contact {contact_id}")
    return records[0]


async def _contact(request: Request) -> Contact:
    contact_id = path_id(request, "contact")
    contact = await gateway(request).store.contact_by_id(contact_id)
    if contact is None:
        fail(404, f"no contact {contact_id}")
    return contact


# -- contacts ----------------------------------------------------------------------------------


async def contacts(request: Request) -> Response:
    """GET: one contact by ?email=, or a page of contacts by id. Both are audited."""
    gw = gateway(request)
    params = query(request, "email", "after", "limit")
    if "email" in params:
        if "after" in params or "limit" in params:
            fail(422, "'email' finds one contact: it does not combine with 'after' or 'limit'")
        email = addresses.normalize(params["email"])
        contact = await gw.store.get_contact(email)
        if contact is None:
            fail(404, "no contact with that address")
        record = await _record(request, contact.id)
        await audit(request, "contacts.get", email)
        return JSONResponse(contact_json(record))
    after, limit = paging(params)
    ids = await gw.store.contact_ids(after, limit + 1)
    records = await _records(request, ids[:limit])
    await audit(request, "contacts.list", None)
    return JSONResponse(
        {
            "items": [contact_json(r) for r in records],
            "next": ids[limit - 1] if len(ids) > limit else None,
        }
    )


async def create_contact(request: Request) -> Response:
    gw = gateway(request)
    data = await json_body(request, ContactCreate)
    email = addresses.normalize(data["email"])
    existing = await gw.store.get_contact(email)
    if existing is not None:
        # The answer tells that this person is a contact, and their id: a read (promise 9).
        await audit(request, "contacts.exists", email)
        fail(
            409,
            f"a contact with that address exists (id {existing.id}): change it with"
            f" PATCH /contacts/{existing.id}",
        )
    contact, _, _ = await gw.add_contact(
        email,
        name=data.get("name"),
        phone=data.get("phone"),
        address=data.get("address"),
        language=data.get("language"),
        attributes=data.get("attributes") or {},
        subscribe=data.get("topics") or [],
        source="api",
    )
    return JSONResponse(contact_json(await _record(request, contact.id)), status_code=201)


async def get_contact(request: Request) -> Response:
    target = await _contact(request)
    record = await _record(request, target.id)
    await audit(request, "contacts.get", target.email)
    return JSONResponse(contact_json(record))


async def update_contact(request: Request) -> Response:
    gw = gateway(request)
    data = await json_body(request, ContactUpdate)
    target = await _contact(request)
    for key, _ in PROFILE:
        check_profile_text(key, data.get(key))
    fields = {column: data[key] for key, column in PROFILE if key in data}
    if fields.get("phone") is not None:
        fields["phone"] = addresses.normalize_phone(fields["phone"])
    if "language" in data:
        fields["language"] = data["language"]
    async with gw.store.transaction():
        await gw.store.update_contact(
            target.id, fields, data.get("attributes") or {}, source="api", now=time.time()
        )
    record = await _record(request, target.id)
    # The answer shows the whole contact, so it is recorded like a read.
    await audit(request, "contacts.update", target.email)
    return JSONResponse(contact_json(record))


async def erase_contact(request: Request) -> Response:
    """Erase at once (PD-3); the audit log keeps who did it, under the keyed hash."""
    gw = gateway(request)
    target = await _contact(request)
    await gw.erase_contact(target.email)
    await audit(request, "contacts.erase", target.email)
    return JSONResponse({"id": target.id, "erased": True})


async def export_contact(request: Request) -> Response:
    gw = gateway(request)
    target = await _contact(request)
    data = await gw.export_contact(target.email)
    await audit(request, "contacts.export", target.email)
    return JSONResponse(data)


async def import_contacts(request: Request) -> Response:
    gw = gateway(request)
    params = query(request, "subscribe")
    text = await csv_body(request)
    try:
        report = await gw.import_csv(
            text, subscribe=params.getlist("subscribe"), source="api", name="the CSV"
        )
    except csv.Error as exc:
        fail(422, f"the CSV cannot be read: {exc}")
    return JSONResponse(report.as_dict())


# -- subscriptions -------------------------------------------------------------------------------


async def subscription(request: Request) -> Response:
    """POST opts in (consent source api; pending for a double opt-in topic), DELETE opts out."""
    gw = gateway(request)
    target = await _contact(request)
    slug = request.path_params["slug"]
    topic = await gw.store.get_topic(slug) if SLUG.fullmatch(slug) else None
    if topic is None:
        fail(404, f"no topic {slug[:64]!r}")
    wanted, changed = await gw.contacts.subscription(
        target, topic, subscribe=request.method == "POST", source="api"
    )
    return JSONResponse(
        {"contact_id": target.id, "topic": topic.slug, "status": wanted, "changed": changed}
    )


# -- topics --------------------------------------------------------------------------------------


def topic_json(slug: str, name: str, double_opt_in: bool, subscribers: int) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": name,
        "double_opt_in": bool(double_opt_in),
        "subscribers": subscribers,
    }


async def topics(request: Request) -> Response:
    gw = gateway(request)
    if request.method == "GET":
        query(request)
        return JSONResponse(
            [topic_json(t.slug, t.name, t.double_opt_in, n) for t, n in await gw.topics()]
        )
    data = await json_body(request, TopicCreate)
    if await gw.store.get_topic(data["slug"]) is not None:
        fail(409, f"topic {data['slug']!r} already exists")
    try:
        topic = await gw.add_topic(
            data["slug"], data["name"], double_opt_in=data.get("double_opt_in", False)
        )
    except StoreError as exc:  # made by another request meanwhile
        fail(409, str(exc))
    return JSONResponse(topic_json(topic.slug, topic.name, topic.double_opt_in, 0), status_code=201)


# -- suppressions --------------------------------------------------------------------------------


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one starting with = + - @ (or a tab or CR) would
    run as a formula when the export is opened (OWASP: CSV injection), so it gets a '."""
    return "'" + value if value[:1] in FORMULA_START else value


def _reason(reason: str) -> str:
    if not REASON.fullmatch(reason):
        raise InvalidInput("the reason must be 1-32 lower-case letters, digits, - or _")
    if reason == "erased":
        raise InvalidInput(
            "reason erased is kept for erasures: erase the contact instead (DELETE /contacts/{id})"
        )
    return reason


async def suppressions(request: Request) -> Response:
    gw = gateway(request)
    if request.method == "GET":
        after, limit = paging(query(request, "after", "limit"))
        rows = await gw.suppressions(limit=limit + 1, after_id=after)
        await audit(request, "suppressions.list", None)
        return JSONResponse(
            {
                "items": rows[:limit],
                "next": rows[limit - 1]["id"] if len(rows) > limit else None,
            }
        )
    data = await json_body(request, SuppressionCreate)
    email = addresses.normalize(data["email"])
    added = await gw.suppress(
        email, reason=_reason(data.get("reason", "manual")), scope=data.get("scope"), source="api"
    )
    return JSONResponse({"email": email, "added": added}, status_code=201 if added else 200)


async def remove_suppression(request: Request) -> Response:
    gw = gateway(request)
    email = addresses.normalize(request.path_params["email"])
    try:
        removed = await gw.unsuppress(email)
    except NotFound as exc:
        fail(404, str(exc))
    except InvalidInput as exc:  # an erasure or the person's own refusal: only they lift it
        fail(409, str(exc))
    return JSONResponse({"email": email, "removed": removed})


async def export_suppressions(request: Request) -> Response:
    gw = gateway(request)
    query(request)
    await audit(request, "suppressions.export", None)

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(("email", "scope", "topic", "reason", "source", "created_at"))
        after = 0
        while page := await gw.suppressions(limit=1000, after_id=after):
            after = page[-1]["id"]
            for r in page:
                if r["email"] is None:
                    continue  # an erasure: only a keyed hash is left, nothing to export
                when = datetime.fromtimestamp(r["created_at"], UTC).isoformat(timespec="seconds")
                cells = (r["email"], r["scope"], r["topic"] or "", r["reason"], r["source"], when)
                writer.writerow([csv_cell(c) for c in cells])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


async def import_suppressions(request: Request) -> Response:
    """A CSV of email[,reason], with or without a header line; bad rows reported by line."""
    gw = gateway(request)
    query(request)
    text = await csv_body(request)
    try:
        done = await suppression_csv.import_suppressions(
            gw, text, source="api", check_reason=_reason, parts="send it in parts"
        )
    except TooLarge as exc:
        fail(413, str(exc))
    except InvalidInput as exc:
        fail(422, str(exc))
    added, already = done.added, done.already
    bad = [{"line": line, "reason": why} for line, why in done.bad]
    return JSONResponse({"added": added, "already": already, "bad_rows": bad})
