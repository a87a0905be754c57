"""The console's campaign pages: the list, the form (create, edit a draft), and a campaign's
page with its preview, the scan's findings, a test send, sending, progress and outcomes."""

from __future__ import annotations

import email
import email.policy
import math
import time
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ... import addresses
from ...catalog import TIMEZONE
from ...errors import InvalidInput, NotFound
from ...i18n import N_
from ...staff import Session
from . import PREVIEW_CSP
from .auth import audit, audit_read, require
from .views import gateway, lang_of, page, redirect, words

PER_PAGE = 50
REFRESH = 5  # seconds between reloads of a campaign's page while it sends (or waits to)
# What a campaign's state is called on the pages.
STATES = {
    "draft": N_("draft"),
    "scheduled": N_("scheduled"),
    "sending": N_("sending"),
    "paused": N_("paused"),
    "cancelled": N_("cancelled"),
    "done": N_("done"),
}
# The notice shown after an action (by a fixed key in the address: never text from it).
NOTICES = {
    "created": N_("The campaign is saved as a draft."),
    "saved": N_("Your changes are saved."),
    "test": N_("A test copy is on its way to your address."),
    "sending": N_("The campaign is being sent."),
    "scheduled": N_("The campaign is scheduled."),
    "paused": N_("The campaign is paused: nothing more is sent until you resume it."),
    "resumed": N_("The campaign is sending again."),
    "cancelled": N_("The campaign is cancelled: what was still waiting will not be sent."),
}
# The schedule form's time zones: the moment typed is read in the chosen one.
ZONES = {"vn": (N_("Vietnam time (UTC+7)"), TIMEZONE), "utc": (N_("UTC"), UTC)}


class Unusable(ValueError):
    """A value of the send form that cannot be used; its text is a msgid."""


async def campaign_of(request: Request) -> dict[str, Any]:
    """The campaign of the path (a NotFound is the console's 404 page)."""
    return await gateway(request).campaigns.get(int(request.path_params["id"]))


def back(campaign_id: int, notice: str) -> Response:
    return redirect(f"/admin/campaigns/{campaign_id}?done={notice}")


# -- the list --------------------------------------------------------------------------------


async def listing(request: Request) -> Response:
    session = await require(request, "viewer")
    before = request.query_params.get("before", "")
    before_id = int(before) if before.isdigit() else None
    rows = await gateway(request).store.campaign_page(PER_PAGE + 1, before_id)
    more = len(rows) > PER_PAGE
    rows = rows[:PER_PAGE]
    return page(
        request,
        "campaigns.html",
        N_("Campaigns"),
        campaigns=rows,
        states=STATES,
        may_change=session.may("marketer"),
        older=f"/admin/campaigns?before={rows[-1]['id']}" if more else None,
    )


# -- the form: a new campaign, or a draft changed -------------------------------------------


async def new(request: Request) -> Response:
    await require(request, "marketer")
    gw = gateway(request)
    if request.method == "GET":
        return await form_page(request, N_("New campaign"), "/admin/campaigns/new", {})
    values, error = await read_campaign_form(request)
    if error is None:
        try:
            campaign_id = await gw.campaigns.create(**values, keep_blocked=True)
        except InvalidInput as exc:
            error = str(exc)
        else:
            await audit(request, "campaigns.create", str(campaign_id))
            return back(campaign_id, "created")
    return await form_page(
        request, N_("New campaign"), "/admin/campaigns/new", values, error, status=400
    )


async def edit(request: Request) -> Response:
    await require(request, "marketer")
    gw = gateway(request)
    c = await campaign_of(request)
    action = f"/admin/campaigns/{c['id']}/edit"
    if c["state"] != "draft":
        return not_now(request, c, N_("Only a draft can be changed."), status=409)
    if request.method == "GET":
        return await form_page(request, N_("Change the campaign"), action, c)
    values, error = await read_campaign_form(request)
    if error is None:
        try:
            await gw.campaigns.edit(c["id"], **values, keep_blocked=True)
        except InvalidInput as exc:
            error = str(exc)
        else:
            await audit(request, "campaigns.edit", str(c["id"]))
            return back(c["id"], "saved")
    return await form_page(request, N_("Change the campaign"), action, values, error, status=400)


async def read_campaign_form(request: Request) -> tuple[dict[str, Any], str | None]:
    """The form's values, the uploaded HTML file (when one is given) in place of the pasted
    HTML, and what is wrong with them before the service looks (or None)."""
    limit = gateway(request).settings.max_body_bytes
    # (A part past the limit is answered 400 by Starlette with the reason.)
    async with request.form(max_files=1, max_fields=20, max_part_size=limit + 1024) as form:
        values: dict[str, Any] = {
            key: text_field(form, key) for key in ("name", "topic", "subject", "html", "text")
        }
        error = None
        upload = form.get("html_file")
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read(limit + 1)
            if len(data) > limit:
                error = words(request, "the HTML file is larger than %(size)s bytes", size=limit)
            else:
                try:
                    values["html"] = data.decode("utf-8-sig")
                except UnicodeDecodeError:
                    error = words(
                        request,
                        "the HTML file is not UTF-8 text: save it as UTF-8 and upload it again",
                    )
    for key in ("html", "text"):
        values[key] = values[key] if (values[key] or "").strip() else None
    if error is None and not values["name"].strip():
        error = words(request, "the campaign needs a name")
    return values, error


def text_field(form: FormData, key: str) -> str:
    value = form.get(key)
    # Browsers send a textarea's line ends as CRLF: kept as the LF that was typed.
    return value.replace("\r\n", "\n") if isinstance(value, str) else ""


async def form_page(
    request: Request,
    title: str,
    action: str,
    values: dict[str, Any],
    error: str | None = None,
    status: int = 200,
) -> Response:
    topics = await gateway(request).topics()
    return page(
        request,
        "campaign_form.html",
        title,
        action=action,
        values=values,
        topics=[topic for topic, _count in topics],
        error=error,
        status=status,
    )


# -- a campaign's page -----------------------------------------------------------------------


async def show(request: Request) -> Response:
    session = await require(request, "viewer")
    gw = gateway(request)
    c = await campaign_of(request)
    status = await gw.campaigns.status(c["id"])
    problem = None
    try:
        findings = await gw.campaigns.findings(c["id"])
    except InvalidInput as exc:  # e.g. its topic's name no longer fits a header
        findings, problem = (), str(exc)
    if problem is None:
        preview, chosen, missing = await preview_of(request, c)
    else:
        preview, chosen, missing = (
            {"subject": "", "html": None, "plain": None, "findings": ()},
            None,
            None,
        )
    counts = status.counts
    done = sum(counts[k] for k in ("sent", "bounced", "failed", "suppressed", "blocked"))
    audience = await gw.campaigns.audience_size(c["id"])
    total = done + counts["queued"] if c["enqueued_all"] else max(audience, done + counts["queued"])
    feedback = None
    if c["state"] in ("paused", "cancelled", "done") and c["started_at"]:
        # What came back: after it was sent (not on every reload while it sends).
        feedback = await gw.store.campaign_feedback(c["id"], c["topic_id"], c["started_at"])
    notice = NOTICES.get(request.query_params.get("done", ""))
    blocked = bool(findings) or problem is not None
    moving = c["state"] in ("sending", "scheduled")
    watching = moving and request.query_params.get("reload") != "off"
    response = page(
        request,
        "campaign.html",
        c["name"],  # not a msgid: the campaign's own name heads its page
        campaign=c,
        state=STATES.get(c["state"], c["state"]),
        counts=counts,
        feedback=feedback,
        audience=audience,
        progress={"done": done, "total": total, "percent": done * 100 // total if total else 0},
        findings=findings,
        problem=problem,
        blocked=blocked,
        preview=preview,
        chosen=chosen,
        missing=missing,
        notice=notice,
        moving=moving,
        refresh=watching,
        period=REFRESH,
        may_change=session.may("marketer"),
        staff_email=session.email,
        zones=ZONES,
    )
    if preview is not None:
        response.headers["content-security-policy"] = PREVIEW_CSP
    if watching:
        # While it sends the page reloads itself, without JavaScript: the Refresh header
        # (what <meta http-equiv="refresh"> stands for), which the page offers to stop. A
        # refresh the person cannot turn off fails WCAG 2.2.1 (axe: meta-refresh).
        response.headers["Refresh"] = f"{REFRESH}; url=/admin/campaigns/{c['id']}"
    return response


async def preview_of(
    request: Request, c: dict[str, Any]
) -> tuple[dict[str, Any], str | None, str | None]:
    """The message as the contact asked for (`?email=`) gets it, or as a sample contact in
    the staff member's language; with the address shown and the one not found, if any."""
    gw = gateway(request)
    asked = (request.query_params.get("email") or "").strip()
    chosen = missing = None
    rendered = None
    if asked:
        try:
            address = addresses.normalize(asked)
            rendered = await gw.campaigns.preview(c["id"], address)
        except (InvalidInput, NotFound):
            missing = asked
        else:
            chosen = address
            # A person's data (their name, attributes, links) is read: promise 9.
            await audit_read(request, "campaigns.preview", address)
    if rendered is None:
        rendered = await gw.campaigns.sample(c["id"], lang_of(request))
    message = email.message_from_bytes(rendered.raw, policy=email.policy.default)
    # What the scan finds in this person's own message (their attributes: TP-3) is shown
    # with it: the worker would block just their copy.
    parts: dict[str, Any] = {"subject": str(message["Subject"] or ""), "findings": ()}
    if chosen:
        parts["findings"] = rendered.findings
    for kind in ("html", "plain"):
        body = message.get_body((kind,))
        parts[kind] = body.get_content() if body is not None else None  # type: ignore[attr-defined]
    return parts, chosen, missing


# -- the actions -----------------------------------------------------------------------------


async def test_send(request: Request) -> Response:
    session: Session = await require(request, "marketer")
    gw = gateway(request)
    c = await campaign_of(request)
    try:
        result = await gw.campaigns.test_send(c["id"], session.email)
    except InvalidInput as exc:
        return not_now(request, c, N_("The test copy could not be sent."), str(exc))
    if result.status != "queued":
        return not_now(request, c, N_("The test copy could not be sent."), result.reason or "")
    await audit(request, "campaigns.test", str(c["id"]))
    return back(c["id"], "test")


async def send(request: Request) -> Response:
    await require(request, "marketer")
    gw = gateway(request)
    c = await campaign_of(request)
    async with request.form() as form:
        fields = {k: str(form.get(k) or "") for k in ("when", "at", "timezone", "rate")}
    at = None
    try:
        rate = rate_of(fields["rate"])
        if fields["when"] == "later":
            at = moment(fields["at"], fields["timezone"] or "vn")
            if at <= time.time():
                raise Unusable(N_("That time has passed: choose a later one, or send now."))
        findings = await gw.campaigns.findings(c["id"])
        if findings:
            hosts = ", ".join(dict.fromkeys(f.host or f.url for f in findings))
            return not_now(
                request,
                c,
                N_("This campaign cannot be sent: it loads content from other sites."),
                hosts,
            )
        state = await gw.campaigns.start(c["id"], rate=rate, at=at)
    except Unusable as exc:
        return not_now(request, c, N_("The campaign could not be sent."), words(request, str(exc)))
    except InvalidInput as exc:
        return not_now(request, c, N_("The campaign could not be sent."), str(exc))
    await audit(
        request, f"campaigns.{'schedule' if state == 'scheduled' else 'send'}", str(c["id"])
    )
    return back(c["id"], state)


def rate_of(text: str) -> float | None:
    """The form's messages a second (None when left empty: as fast as the workers go)."""
    if not text.strip():
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise Unusable(N_("The rate must be a number of messages a second above 0, e.g. 10."))
    return rate


def moment(text: str, zone: str) -> float:
    """A `datetime-local` value (YYYY-MM-DDTHH:MM) read in the chosen time zone, as UTC
    seconds."""
    if zone not in ZONES:
        raise Unusable(N_("Choose one of the time zones offered."))
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Unusable(N_("Give the date and time to send at, e.g. 2026-12-24T09:00.")) from None
    if naive.tzinfo is not None:
        raise Unusable(N_("Give the date and time without a time zone, then choose the zone."))
    return naive.replace(tzinfo=ZONES[zone][1]).timestamp()


def mover(action: str, done: str) -> Any:
    """The handler of pause, resume or cancel."""

    async def handler(request: Request) -> Response:
        await require(request, "marketer")
        gw = gateway(request)
        c = await campaign_of(request)
        try:
            await getattr(gw.campaigns, action)(c["id"])
        except InvalidInput as exc:
            return not_now(request, c, N_("That cannot be done now."), str(exc))
        await audit(request, f"campaigns.{action}", str(c["id"]))
        return back(c["id"], done)

    handler.__name__ = action
    return handler


def not_now(
    request: Request, c: dict[str, Any], title: str, detail: str = "", status: int = 409
) -> Response:
    """The error page of an action that was refused: what, why, and the way back."""
    return page(request, "campaign_error.html", title, campaign=c, detail=detail, status=status)


routes: list[BaseRoute] = [
    Route("/campaigns", listing),
    Route("/campaigns/new", new, methods=["GET", "POST"]),
    Route("/campaigns/{id:int}", show),
    Route("/campaigns/{id:int}/edit", edit, methods=["GET", "POST"]),
    Route("/campaigns/{id:int}/test", test_send, methods=["POST"]),
    Route("/campaigns/{id:int}/send", send, methods=["POST"]),
    Route("/campaigns/{id:int}/pause", mover("pause", "paused"), methods=["POST"]),
    Route("/campaigns/{id:int}/resume", mover("resume", "resumed"), methods=["POST"]),
    Route("/campaigns/{id:int}/cancel", mover("cancel", "cancelled"), methods=["POST"]),
]
