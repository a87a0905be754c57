"""The pages recipients reach from their mail: one-click unsubscribe, preferences, their data."""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from typing import Any
from urllib.parse import quote

import jinja2
from python_multipart.multipart import parse_options_header
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .. import addresses
from ..core import Gateway
from ..errors import InvalidAddress
from ..i18n import N_, gettext
from ..records import Contact
from ..resources import TEMPLATES
from .i18n import install_gettext, pick_language

MAX_FORM_BYTES = 16 * 1024
PURPOSES = ("export", "erase")
MANAGE_TITLE = N_("Get a link to your email preferences")
# What the confirm page of each purpose says: its title, what the button does, the button.
CONFIRM_WORDS = {
    "export": (
        N_("Download your data"),
        N_("Press the button to download everything we hold about you (JSON)."),
        N_("Download my data"),
    ),
    "erase": (
        N_("Delete your data"),
        N_(
            "Press the button to delete everything we hold about you, now. This cannot be"
            " undone; your address will never receive our email again unless you sign up"
            " yourself."
        ),
        N_("Delete my data"),
    ),
}

env = jinja2.Environment(
    auto_reload=False,
    loader=jinja2.FileSystemLoader(TEMPLATES / "web"),
    autoescape=True,
    trim_blocks=True,
)
install_gettext(env)


class BadRequest(Exception):
    """A malformed or oversized form: answered 400/413 with a page, nothing changes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def page(
    request: Request, template: str, lang: str, title: str, status: int = 200, **ctx: Any
) -> HTMLResponse:
    """The page `template` in `lang`, headed by the msgid `title` translated."""
    gw: Gateway = request.app.state.gateway
    other = "en" if lang == "vi" else "vi"
    html = env.get_template(template).render(
        lang=lang,
        title=gettext(lang, title),
        sender=gw.settings.sender_name,
        switch_url=f"{own_path(request.url.path)}?lang={other}",
        **ctx,
    )
    return HTMLResponse(html, status_code=status)


def own_path(path: str) -> str:
    """`path` as a link that stays on this site whatever was asked for: `//evil.com/x`
    would be another host's address, and so would `/\\evil.com` or `/<tab>/evil.com` once a
    browser drops the tab and reads the backslash as a slash."""
    return "/" + quote(path.lstrip("/"), safe="/-._~!$&'()*+,;=:@")


def lang_of(request: Request, contact: Contact | None = None) -> str:
    return pick_language(
        request.query_params.get("lang"),
        contact.language if contact else None,
        accept_language=request.headers.get("accept-language", ""),
    )


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SAFE_METHODS = ("GET", "HEAD")


async def read_form(request: Request) -> FormData:
    """The form, read with a size cap before parsing, so a huge body costs us nothing.
    Anything that is not a complete form is refused (BadRequest): a body the parser would
    quietly read as empty must not count as a form with every box unticked."""
    try:
        size = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise BadRequest(400, "the Content-Length header is not a number") from None
    if size > MAX_FORM_BYTES:
        raise BadRequest(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    raw_type, options = parse_options_header(request.headers.get("content-type", ""))
    content_type = raw_type.decode("latin-1").lower()
    if body and content_type not in FORM_TYPES:
        raise BadRequest(
            415, "send the form as application/x-www-form-urlencoded or multipart/form-data"
        )
    if content_type == "multipart/form-data":
        boundary = options.get(b"boundary", b"")
        if not boundary or not body.rstrip(b"\r\n").endswith(b"--" + boundary + b"--"):
            raise BadRequest(400, "the multipart form is incomplete")
    request._body = body  # starlette's form parser reads the cached body
    try:
        return await request.form(max_files=0, max_fields=200, max_part_size=4096)
    except (MultiPartException, HTTPException, ValueError, KeyError) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc
        raise BadRequest(400, f"the form could not be read: {detail}") from None


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


# -- one-click unsubscribe (RFC 8058) ---------------------------------------------------------


async def unsubscribe(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    token = request.path_params["token"]
    contact = await gw.preferences.contact("unsubscribe", token)
    lang = lang_of(request, contact)
    preferences_url = gw.preferences.link("preferences", contact)
    if request.method in SAFE_METHODS:
        # OC-3: mail scanners prefetch links; a GET (or HEAD) only shows the button.
        return page(
            request,
            "unsubscribe.html",
            lang,
            "Unsubscribe from promotional email",
            action=request.url.path,
            preferences_url=preferences_url,
        )
    form = await read_form(request)
    if form.get("List-Unsubscribe") != "One-Click":
        raise BadRequest(400, "expected List-Unsubscribe=One-Click in the form body")
    # OC-1, OC-5, ST-1: committed before we answer; 200, never a redirect, no cookie.
    changed = await gw.preferences.refuse(contact, source="link", ip=client_ip(request))
    return page(
        request,
        "unsubscribed.html",
        lang,
        "You are unsubscribed from promotional email",
        changed=changed,
        preferences_url=preferences_url,
    )


# -- the preference page ------------------------------------------------------------------------


async def preferences(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    token = request.path_params["token"]
    contact = await gw.preferences.contact("preferences", token)
    saved = False
    confirmation = None
    if request.method not in SAFE_METHODS:
        form = await read_form(request)
        if form.get("form") != "preferences":
            # Only the page's own form: an empty or foreign body is not "untick everything".
            raise BadRequest(400, "this is not the preference form")
        language = form.get("language")
        if language not in (None, "vi", "en"):
            raise BadRequest(400, "language must be vi or en")
        result = await gw.preferences.update(
            contact,
            topics={str(v) for v in form.getlist("topic")},
            stop_all=form.get("stop_all") == "1",
            language=language if isinstance(language, str) else None,
            ip=client_ip(request),
        )
        contact = result.contact
        saved = True
        if result.confirm:
            # Mail after a refusal starts again only from the mailbox (the link may have been
            # forwarded); a stranger holding it must not flood the inbox with these either.
            confirmation = "limited"
            if request.app.state.request_limit.allow(f"resubscribe:{contact.uid}"):
                await gw.signups.request_resubscription(
                    contact, result.topics, ip=client_ip(request)
                )
                confirmation = "sent"
    view = await gw.preferences.view(contact)
    lang = request.query_params.get("lang") if request.method in SAFE_METHODS else None
    return page(
        request,
        "preferences.html",
        lang_of(request, contact) if lang else contact.language,
        "Email preferences",
        view=view,
        saved=saved,
        confirmation=confirmation,
        action=request.url.path,
    )


async def request_data(request: Request) -> Response:
    """POST /preferences/{token}/export|erase: mail a short-lived confirmation link."""
    gw: Gateway = request.app.state.gateway
    purpose = request.path_params["purpose"]
    if purpose not in PURPOSES:
        raise HTTPException(404, "no such page")
    contact = await gw.preferences.contact("preferences", request.path_params["token"])
    await read_form(request)
    lang = lang_of(request, contact)
    # A forwarded newsletter must not become a way to flood someone's inbox.
    if not request.app.state.request_limit.allow(f"{purpose}:{contact.uid}"):
        return too_many(request, lang)
    await gw.preferences.request(contact, purpose)
    return page(
        request,
        "message.html",
        lang,
        "Check your inbox",
        paragraphs=[
            gettext(
                lang, "We sent a confirmation link to your email address. It works for one hour."
            )
        ],
    )


async def confirm_data(request: Request) -> Response:
    """GET shows a button; POST exports (JSON) or erases (PD-2, PD-3)."""
    gw: Gateway = request.app.state.gateway
    purpose = request.path_params["purpose"]
    if purpose not in PURPOSES:
        raise HTTPException(404, "no such page")
    contact = await gw.preferences.contact(purpose, request.path_params["token"])
    lang = lang_of(request, contact)
    title, body, button = CONFIRM_WORDS[purpose]
    if request.method in SAFE_METHODS:
        return page(
            request,
            "confirm.html",
            lang,
            title,
            body=gettext(lang, body),
            button=gettext(lang, button),
            action=request.url.path,
            danger=purpose == "erase",
        )
    await read_form(request)
    if purpose == "export":
        data = await gw.preferences.export(contact)
        return Response(
            json.dumps(data, ensure_ascii=False, indent=2),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="my-data.json"'},
        )
    await gw.preferences.erase(contact)
    paragraphs = [
        gettext(
            lang,
            "We deleted your profile and data. We keep only a hash of your email address so"
            " that we never email you again.",
        )
    ]
    return page(request, "message.html", lang, "Your data is deleted", paragraphs=paragraphs)


# -- /manage: a fresh link by email ----------------------------------------------------------


class RateLimit:
    """At most `limit` hits per key in `window` seconds (in memory, per process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.hits: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        hits = self.hits[key]
        while hits and hits[0] < now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self.hits) > 100_000:  # forget idle keys rather than grow without bound
            self.hits = defaultdict(deque, {k: v for k, v in self.hits.items() if v})
        return True


async def manage(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    lang = lang_of(request)
    if request.method in SAFE_METHODS:
        return page(request, "manage.html", lang, MANAGE_TITLE)
    form = await read_form(request)
    limits = request.app.state.manage_limits
    if not limits["client"].allow(client_ip(request) or "?"):
        return too_many(request, lang)
    try:
        email = addresses.normalize(str(form.get("email") or ""))
    except InvalidAddress as exc:
        error = f"{gettext(lang, 'This email address is not valid.')} ({exc})"
        return page(
            request,
            "manage.html",
            lang,
            MANAGE_TITLE,
            status=400,
            error=error,
        )
    # Known and unknown addresses count alike, so a 429 tells nothing either.
    if not limits["address"].allow(email):
        return too_many(request, lang)
    # The same answer whether or not the address is known, and at the same moment: the
    # lookup and the mail happen after the answer has gone.
    response = page(request, "manage.html", lang, MANAGE_TITLE, sent=True)
    response.background = BackgroundTask(gw.preferences.send_preferences_link, email)
    return response


def too_many(request: Request, lang: str) -> Response:
    return page(
        request,
        "message.html",
        lang,
        "Too many requests",
        status=429,
        paragraphs=[gettext(lang, "Please try again in a few minutes.")],
        link={
            "href": f"/manage?lang={lang}",
            "text": gettext(lang, MANAGE_TITLE),
        },
    )
