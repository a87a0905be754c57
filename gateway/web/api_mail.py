"""Admin API handlers about mail: single messages and campaigns."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import addresses
from ..errors import InvalidInput
from .api_io import audit, fail, gateway, json_body, no_body, path_id, query
from .models import CampaignCreate, CampaignSend, MessageCreate, PolicyPublish

# -- messages ------------------------------------------------------------------------------------


async def send_message(request: Request) -> Response:
    """The same path as `Gateway.send`: 202 when queued, 200 when suppressed or blocked."""
    gw = gateway(request)
    data = await json_body(request, MessageCreate)
    result = await gw.send(
        data["to"],
        data["subject"],
        data.get("html"),
        data.get("text"),
        category=data.get("category", "transactional"),
        topic=data.get("topic"),
        headers=data.get("headers"),
        context=data.get("context"),
        idempotency_key=data.get("idempotency_key"),
        source=request.scope["gateway.actor"],
    )
    return JSONResponse(result.as_dict(), status_code=202 if result.queued else 200)


async def message(request: Request) -> Response:
    gw = gateway(request)
    query(request)
    message_id = request.path_params["message_id"]
    if not message_id.startswith("<"):
        message_id = f"<{message_id}>"  # the brackets are optional in the path
    if not message_id.isascii() or not message_id.isprintable() or len(message_id) > 255:
        fail(404, "no message with that Message-ID")  # none is ever issued like that
    status = await gw.message_status(message_id)
    return JSONResponse({"message_id": message_id, **status})


ACTIONS = ("pause", "resume", "cancel")

# -- campaigns -----------------------------------------------------------------------------------


async def _status(request: Request, campaign_id: int, code: int = 200) -> Response:
    status = await gateway(request).campaigns.status(campaign_id)
    return JSONResponse(status.as_dict(), status_code=code)


async def campaigns(request: Request) -> Response:
    gw = gateway(request)
    if request.method == "GET":
        query(request)
        return JSONResponse(await gw.store.list_campaigns())
    data = await json_body(request, CampaignCreate)
    campaign_id = await gw.campaigns.create(
        name=data["name"],
        topic=data["topic"],
        subject=data["subject"],
        html=data["html"],
        text=data.get("text"),
    )
    return await _status(request, campaign_id, 201)


async def campaign(request: Request) -> Response:
    query(request)
    return await _status(request, path_id(request, "campaign"))


def _moment(value: Any) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            fail(422, "'at' needs a time zone, e.g. 2025-12-01T08:00:00+07:00")
        return moment.timestamp()
    except (ValueError, OverflowError):
        fail(422, "'at' must be seconds since the epoch or an RFC 3339 date-time")


async def publish_policy(request: Request) -> Response:
    data = await json_body(request, PolicyPublish)
    report = await gateway(request).publish_policy(
        data["version"], data["text"], bool(data.get("adverse", False))
    )
    return JSONResponse(report.as_dict(), status_code=201)


async def send_campaign(request: Request) -> Response:
    gw = gateway(request)
    data = await json_body(request, CampaignSend, required=False)
    campaign_id = path_id(request, "campaign")
    at = _moment(data.get("at"))
    await gw.campaigns.get(campaign_id)  # NotFound first
    try:
        await gw.campaigns.start(campaign_id, rate=data.get("rate"), at=at)
    except InvalidInput as exc:  # its state does not allow it
        fail(409, str(exc))
    return await _status(request, campaign_id)


async def campaign_action(request: Request) -> Response:
    """POST /campaigns/{id}/pause, /resume or /cancel."""
    gw = gateway(request)
    await no_body(request)
    campaign_id = path_id(request, "campaign")
    name = request.url.path.rsplit("/", 1)[1]
    assert name in ACTIONS  # only those three routes lead here
    action = getattr(gw.campaigns, name)
    await gw.campaigns.get(campaign_id)  # NotFound first
    try:
        await action(campaign_id)
    except InvalidInput as exc:
        fail(409, str(exc))
    return await _status(request, campaign_id)


def _part(message: EmailMessage, kind: str) -> str | None:
    part = message.get_body((kind,))
    return str(part.get_content()) if part is not None else None


async def preview(request: Request) -> Response:
    """The message one contact would get, rendered now; audited like any read of them."""
    gw = gateway(request)
    params = query(request, "email")
    campaign_id = path_id(request, "campaign")
    if "email" not in params:
        fail(422, "'email' is required: whose message to preview")
    address = addresses.normalize(params["email"])
    rendered = await gw.campaigns.preview(campaign_id, address)
    parsed = email.message_from_bytes(rendered.raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    await audit(request, "campaigns.preview", address)
    return JSONResponse(
        {
            "subject": rendered.subject,
            "html": _part(parsed, "html"),
            "text": _part(parsed, "plain") or "",
            "blocked_urls": list(dict.fromkeys(f.url for f in rendered.findings)),
        }
    )
