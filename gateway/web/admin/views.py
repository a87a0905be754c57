"""Rendering console pages: the base layout (nav, language switch, the staff member, the
CSRF token), the console's words, times, redirects."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from ...catalog import TIMEZONE
from ...core import Gateway
from ...i18n import LANGUAGES, N_
from ...resources import TEMPLATES
from ...staff import Session, role_at_least
from . import i18n

# The scope key under which the console middleware leaves the request's live session.
SESSION_KEY = "gateway.staff"
PREFIX = "/admin"

# The navigation: (path, msgid, the least role that may use it). Items above a staff
# member's role are not shown to them.
NAV = (
    ("/admin", N_("Dashboard"), "viewer"),
    ("/admin/campaigns", N_("Campaigns"), "viewer"),
    ("/admin/contacts", N_("Contacts"), "viewer"),
    ("/admin/topics", N_("Topics"), "viewer"),
    ("/admin/suppressions", N_("Suppressions"), "viewer"),
    ("/admin/policies", N_("Policies"), "admin"),
    ("/admin/keys", N_("API keys"), "admin"),
    ("/admin/staff", N_("Staff"), "admin"),
    ("/admin/audit", N_("Audit log"), "admin"),
)
ROLE_NAMES = {"admin": N_("admin"), "marketer": N_("marketer"), "viewer": N_("viewer")}


def current(request: Request) -> Session | None:
    """The staff member's live session (None on the login page or without one)."""
    session = request.scope.get(SESSION_KEY)
    return session if isinstance(session, Session) else None


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def lang_of(request: Request) -> str:
    """The staff member's language; before login `?lang=`; else GATEWAY_DEFAULT_LANGUAGE."""
    session = current(request)
    for lang in (
        session.language if session else None,
        None if session else request.query_params.get("lang"),
        gateway(request).settings.default_language,
    ):
        if lang in LANGUAGES:
            return str(lang)
    return "vi"


def when(ts: float | None, with_seconds: bool = False) -> str:
    """A moment in Vietnam's time, as staff read it in tables (YYYY-MM-DD HH:MM)."""
    if ts is None:
        return "–"
    moment = datetime.fromtimestamp(float(ts), TIMEZONE)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def own_path(path: str) -> str:
    """`path` when it is a path of the console, else the dashboard: a `next` taken from a
    form or query never leads off the site (`//evil.com`, `/\\evil.com`)."""
    if not path.startswith(PREFIX) or path[len(PREFIX) : len(PREFIX) + 1] not in ("", "/", "?"):
        return PREFIX
    return "/" + quote(path.lstrip("/"), safe="/-._~!$&'()*+,;=:@?%")


async def text_form(request: Request) -> FormData:
    """A form of text fields only (a file in it answers 400): nothing to spool or close."""
    return await request.form(max_files=0)


def redirect(url: str) -> RedirectResponse:
    """After a change: 303, so a reload repeats the GET, not the POST."""
    return RedirectResponse(url, status_code=303)


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str, **variables: Any) -> str:
    return i18n.gettext(context["lang"], message, **variables)


@jinja2.pass_context
def _ngettext(
    context: jinja2.runtime.Context, singular: str, plural: str, n: int, **variables: Any
) -> str:
    return i18n.ngettext(context["lang"], singular, plural, n, **variables)


env = jinja2.Environment(
    auto_reload=False,
    loader=jinja2.FileSystemLoader(TEMPLATES / "admin"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
)
env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
env.filters["when"] = when


def nav(session: Session | None, path: str) -> list[dict[str, Any]]:
    if session is None:
        return []
    items = []
    path = path.rstrip("/") or "/"
    for href, label, role in NAV:
        if role_at_least(session.role, role):
            here = path == href or (href != PREFIX and path.startswith(href + "/"))
            items.append({"href": href, "label": label, "current": here})
    return items


def render(request: Request, template: str, title: str, **context: Any) -> str:
    """The HTML of `template` in the console layout, headed by the msgid `title`."""
    session = current(request)
    lang = lang_of(request)
    return env.get_template(template).render(
        lang=lang,
        title=i18n.gettext(lang, title),
        staff=session,
        role_name=i18n.gettext(lang, ROLE_NAMES[session.role]) if session else "",
        csrf_token=session.csrf_token if session else "",
        nav=nav(session, request.url.path),
        here=own_path(request.url.path + (f"?{request.url.query}" if request.url.query else "")),
        sender=gateway(request).settings.sender_name,
        **context,
    )


def page(
    request: Request, template: str, title: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """The console page `template` (extending base.html), with the layout's variables:
    `lang`, `title` (translated), `staff` (the Session), `csrf_token`, `nav`, `_()`."""
    return HTMLResponse(render(request, template, title, **context), status_code=status)


def message(
    request: Request, title: str, paragraphs: list[str], status: int, **context: Any
) -> HTMLResponse:
    """A page that only says something (errors, refusals); paragraphs are already words."""
    return page(request, "message.html", title, status=status, paragraphs=paragraphs, **context)


def words(request: Request, msgid: str, **variables: object) -> str:
    """`msgid` in the staff member's language (for words made in code, not templates)."""
    return i18n.gettext(lang_of(request), msgid, **variables)
