"""Who is using the console and what they may do: the session cookie, login and logout,
roles (`require`), the CSRF check of every change, and the audit log of what staff do.

`ConsoleMiddleware` wraps every route under /admin: it finds the session of the cookie,
refuses a state-changing request without the session's CSRF token (a form field
`csrf_token` or an `X-CSRF-Token` header) or from another site, and renders the console's
own error pages."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ... import staff as accounts
from ...core import Gateway
from ...errors import Conflict, InvalidInput, NotFound
from ...i18n import LANGUAGES, N_
from ...staff import ABSOLUTE, Session, Staff
from .. import pages
from . import views
from .views import SESSION_KEY, current, gateway, redirect

COOKIE = "gateway_staff"
COOKIE_PATH = "/admin"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Forms of the console (campaign HTML uploads included) are read whole before any route sees
# them, to find the CSRF token; nothing larger is read.
MAX_BODY = 4 * 1024 * 1024
LOGIN_PATH = "/admin/login"
MAX_LOGIN_BODY = 16 * 1024


def service(gw: Gateway) -> Staff:
    """The gateway's staff service, one per process (its login limits live in memory)."""
    return accounts.of(gw)


class NotLoggedIn(Exception):
    """No live session: answered with a redirect to the login page."""


class Forbidden(Exception):
    """The staff member's role may not do this: answered 403."""

    def __init__(self, needed: str) -> None:
        super().__init__(needed)
        self.needed = needed


async def require(request: Request, role: str) -> Session:
    """The live session of a staff member whose role is at least `role` (viewer < marketer <
    admin). Without one the page redirects to login; with a lesser role it answers 403."""
    session = current(request)
    if session is None:
        raise NotLoggedIn()
    if not session.may(role):
        raise Forbidden(role)
    return session


def subject_of(text: str | None, size: int = 64) -> str | None:
    """What fits the audit log's subject column (64 characters; the actor's holds 120)."""
    return text if text is None or len(text) <= size else text[: size - 1] + "…"


async def audit(request: Request, action: str, subject: str | None = None) -> None:
    """One audit row for what the staff member did: actor `staff:EMAIL`, `action` (e.g.
    `apikeys.create`), `subject` (a key name, a staff address, a campaign id; never a
    person's data: use `audit_read` for a person)."""
    session = current(request)
    actor = session.actor if session else "staff:?"
    await gateway(request).store.record_audit(
        subject_of(actor, 120) or actor, action, subject_of(subject), time.time()
    )


async def audit_read(request: Request, action: str, email: str | None) -> None:
    """Promise 9 for the console: a read of a person's data (or "list" for many, when `email`
    is None), named by a keyed hash of the address, as the API does."""
    session = current(request)
    actor = subject_of(session.actor if session else "staff:?", 120) or "staff:?"
    await gateway(request).audit_read(actor, action, email)


# -- the cookie ---------------------------------------------------------------------------------


def secure(request: Request) -> bool:
    return request.url.scheme == "https" or gateway(request).settings.base_url.startswith(
        "https://"
    )


def set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ABSOLUTE),
        path=COOKIE_PATH,
        secure=secure(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, secure=secure(request), httponly=True, samesite="strict"
    )


# -- login, logout, language ------------------------------------------------------------------


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


async def login(request: Request) -> Response:
    gw = gateway(request)
    next_url = views.own_path(str(request.query_params.get("next") or "/admin"))
    if request.method in SAFE_METHODS:
        if current(request) is not None:
            return redirect(next_url)
        return views.page(request, "login.html", N_("Sign in"), next_url=next_url)
    form = await views.text_form(request)
    email, password = str(form.get("email") or ""), str(form.get("password") or "")
    next_url = views.own_path(str(form.get("next") or next_url))
    outcome = await service(gw).login(email, password, client_of(request))
    if outcome.session is None or outcome.token is None:
        if outcome.refused == "limited":
            minutes = max(1, (outcome.retry_after + 59) // 60)
            error = views.words(
                request,
                "Too many failed sign-ins. Wait %(minutes)s minutes, then try again.",
                minutes=minutes,
            )
            status = 429
        else:
            error = views.words(request, "The email address or the password is wrong.")
            status = 400
        response = views.page(
            request,
            "login.html",
            N_("Sign in"),
            status=status,
            error=error,
            email=email[:320],
            next_url=next_url,
        )
        if status == 429:
            response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    request.scope[SESSION_KEY] = outcome.session
    await audit(request, "staff.login", None)
    done = redirect(next_url)
    set_cookie(done, request, outcome.token)
    return done


async def logout(request: Request) -> Response:
    session = current(request)
    response = redirect(LOGIN_PATH)
    if session is not None:
        await audit(request, "staff.logout", None)
        await service(gateway(request)).logout(session)
    clear_cookie(response, request)
    return response


async def language(request: Request) -> Response:
    session = await require(request, "viewer")
    form = await views.text_form(request)
    choice = form.get("language")
    if choice not in LANGUAGES:
        raise InvalidInput("language must be vi or en")
    await service(gateway(request)).set_language(session, str(choice))
    return redirect(views.own_path(str(form.get("next") or "/admin")))


routes: list[BaseRoute] = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/language", language, methods=["POST"]),
]


# -- the middleware: session, CSRF, the console's error pages ----------------------------------


def _same_site(scope: Scope, request: Request) -> bool:
    """False for a request a browser says came from another site (Sec-Fetch-Site, Origin)."""
    headers = Headers(scope=scope)
    site = headers.get("sec-fetch-site")
    if site is not None:  # every current browser says where a request came from
        return site in ("same-origin", "none")
    # Else the Origin, when there is one (pages sent with no-referrer make it "null").
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return True
    ours = {
        f"{request.url.scheme}://{request.url.netloc}",
        "{0.scheme}://{0.netloc}".format(urlsplit(gateway(request).settings.base_url)),
    }
    return origin in ours


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None past `limit` bytes."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return body


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def refusal(request: Request, status: int, title: str, text: str, **variables: Any) -> Response:
    response = views.message(request, title, [views.words(request, text, **variables)], status)
    return response


async def expired_form(request: Request) -> Response:
    return refusal(
        request,
        403,
        N_("This form has expired"),
        "This form has expired or did not come from this console. Nothing was changed:"
        " reload the page and send the form again.",
    )


async def not_logged_in(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = "" if target in ("/admin", "/admin/") else "?" + urlencode({"next": target})
    response = redirect(LOGIN_PATH + query)
    if request.cookies.get(COOKIE):
        clear_cookie(response, request)
    return response


async def forbidden(request: Request, exc: Exception) -> Response:
    needed = exc.needed if isinstance(exc, Forbidden) else "admin"
    role = views.i18n.gettext(views.lang_of(request), views.ROLE_NAMES[needed])
    return refusal(
        request,
        403,
        N_("Not allowed"),
        "Your role may not do this: it needs the role %(role)s. Nothing was changed.",
        role=role,
    )


async def bad_request(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status", 409 if isinstance(exc, Conflict) else 400)
    text = views.words(request, "What was sent could not be used. Nothing was changed.")
    return views.message(request, N_("Bad request"), [text, str(exc)], status)


async def not_found(request: Request, exc: Exception) -> Response:
    text = views.words(request, "There is nothing here. It may have been removed.")
    detail = [str(exc)] if isinstance(exc, NotFound) else []
    return views.message(request, N_("Not found"), [text, *detail], 404)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return await not_found(request, exc)
    return views.message(request, N_("Bad request"), [str(exc.detail)], exc.status_code)


HANDLERS: dict[Any, Any] = {
    NotLoggedIn: not_logged_in,
    Forbidden: forbidden,
    InvalidInput: bad_request,
    pages.BadRequest: bad_request,
    NotFound: not_found,
    HTTPException: http_error,
}


class ConsoleMiddleware:
    """Session, CSRF and error pages for every request under /admin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The routes' errors are rendered as console pages, not the recipients' pages.
        handlers, status_handlers = scope.get("starlette.exception_handlers", ({}, {}))
        scope["starlette.exception_handlers"] = ({**handlers, **HANDLERS}, status_handlers)
        request = Request(scope)
        staff = service(gateway(request))
        scope[SESSION_KEY] = await staff.session(request.cookies.get(COOKIE))
        path = scope["path"]
        if scope[SESSION_KEY] is None and path != LOGIN_PATH and scope["method"] in SAFE_METHODS:
            # Every console page but the login form is for staff only.
            await (await not_logged_in(request, NotLoggedIn()))(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS:
            response = await self.check(scope, receive, request, path)
            if response is not None:
                await response(scope, receive, send)
                return
            receive = _replay(scope.pop("gateway.body"))
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except (NotLoggedIn, Forbidden, NotFound, HTTPException) as exc:
            if started:
                raise
            handler = next(h for cls, h in HANDLERS.items() if isinstance(exc, cls))
            await (await handler(Request(scope), exc))(scope, receive, send)

    async def check(
        self, scope: Scope, receive: Receive, request: Request, path: str
    ) -> Response | None:
        """None when the change may go on (its body kept in the scope), else the answer."""
        if not _same_site(scope, request):
            return await expired_form(request)
        session = current(request)
        if session is None and path != LOGIN_PATH:
            return await expired_form(request)  # before reading anything a stranger sends
        # The login form has no session yet (the site check above guards it); it is small.
        limit = MAX_LOGIN_BODY if path == LOGIN_PATH else MAX_BODY
        body = await _read_body(receive, limit)
        if body is None:
            return refusal(
                request,
                413,
                N_("Bad request"),
                "What was sent is larger than %(size)s kB.",
                size=limit // 1024,
            )
        scope["gateway.body"] = body
        if session is None or path == LOGIN_PATH:
            return None
        given: object = request.headers.get("x-csrf-token")
        if given is None:
            form = await self.form(scope, body)
            if form is None:
                return refusal(request, 400, N_("Bad request"), "The form could not be read.")
            given = form.get("csrf_token")
            await form.close()
        if not isinstance(given, str) or not secrets.compare_digest(
            given.encode(), session.csrf_token.encode()
        ):
            return await expired_form(request)
        return None

    @staticmethod
    async def form(scope: Scope, body: bytes) -> FormData | None:
        """The body as a form (empty when it is not one); None when it cannot be parsed."""
        reader = Request(scope, _replay(body))
        content_type = reader.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in pages.FORM_TYPES:
            return FormData()
        try:
            return await reader.form(max_files=20, max_fields=1000, max_part_size=MAX_BODY)
        except Exception:
            return None
