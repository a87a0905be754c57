"""The Starlette application: resources opened in the lifespan, routes, error pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core import Gateway
from ..errors import Conflict, InvalidInput
from ..i18n import N_, gettext
from ..resources import TEMPLATES
from ..tokens import InvalidToken
from . import admin, api, openapi, pages, subscribe

log = logging.getLogger("gateway.web")

# Promise 3: nothing from another origin, no scripts at all; links carry tokens, so no Referer.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]
# The staff console (/admin): the same, with its own policy (see gateway/web/admin).
CONSOLE_HEADERS = [
    (b"content-security-policy", admin.CONSOLE_CSP.encode()),
    *SECURITY_HEADERS[1:],
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only the staff console may set a cookie (its session); recipient pages never do.
        console = admin.is_console(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if console or k != b"set-cookie"
                ]
                extra = CONSOLE_HEADERS if console else SECURITY_HEADERS
                if console and any(k == b"content-security-policy" for k, _ in headers):
                    extra = extra[1:]  # a console page with a preview sends its own policy
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def healthz(request: Request) -> JSONResponse:
    gw: Gateway = request.app.state.gateway
    version = await gw.store.schema_version()
    # BN-2: refusals for sender-side reasons (5.7.x) need someone to look; show them here.
    alerts = await gw.alerts(time.time() - 86400)
    return JSONResponse(
        {
            "status": "ok" if not alerts else "alert",
            "schema_version": version,
            "alerts_24h": alerts,
            "inbound_smtp": getattr(request.app.state, "inbound", None),
            "submission_smtp": getattr(request.app.state, "submission", None),
        }
    )


async def invalid_token(request: Request, exc: Exception) -> Response:
    # Nothing changes for anyone; the person is offered a way to get a fresh link.
    lang = pages.lang_of(request)
    return pages.page(
        request,
        "message.html",
        lang,
        "This link is not valid",
        status=404 if "unknown" in str(exc) else 400,
        paragraphs=[gettext(lang, "This link is not valid or has expired. Nothing was changed.")],
        link={"href": f"/manage?lang={lang}", "text": gettext(lang, "Get a new link")},
    )


async def bad_request(request: Request, exc: Exception) -> Response:
    lang = pages.lang_of(request)
    status = getattr(exc, "status", 400)
    # The person's language first; the detail (for whoever debugs a mail client) after it.
    paragraphs = [
        gettext(lang, "The form that was sent could not be used. Nothing was changed."),
        str(exc),
    ]
    return pages.page(
        request, "message.html", lang, "Bad request", status=status, paragraphs=paragraphs
    )


async def conflict(request: Request, exc: Exception) -> Response:
    # Understood, but it clashes with what is already there: 409, not a malformed request.
    response = await bad_request(request, exc)
    response.status_code = 409
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    lang = pages.lang_of(request)
    title = N_("Page not found") if exc.status_code == 404 else N_("Bad request")
    return pages.page(
        request, "message.html", lang, title, status=exc.status_code, paragraphs=[str(exc.detail)]
    )


def create_app(
    gw: Gateway | None = None, *, worker: bool = True, own: bool | None = None
) -> Starlette:
    """The web app. Its lifespan opens the gateway (made from the environment when none is
    given) and closes it, and runs the delivery worker beside the pages unless `worker` is
    False. A gateway the caller opened itself (`own=False`, the default when one is given)
    is left open. `uvicorn --factory gateway.web.app:create_app` works too."""
    gateway = gw if gw is not None else Gateway.from_env()
    own = gw is None if own is None else own

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if own:
            await gateway.open()
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.deliver(stop=stop)) if worker else None
        try:
            async with gateway.listening() as inbound, gateway.submitting() as submission:
                app.state.inbound = inbound
                app.state.submission = submission
                if inbound:
                    log.warning("receiving bounces and refusals by SMTP on %s", inbound)
                if submission:
                    log.warning("taking mail from applications by SMTP on %s", submission)
                yield
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, timeout=30)
            if own:
                await gateway.close()

    routes = [
        Route("/healthz", healthz),
        Route("/openapi.json", openapi.serve),
        api.mount(gateway),
        Route("/unsubscribe/{token}", pages.unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", pages.preferences, methods=["GET", "POST"]),
        Route("/preferences/{token}/{purpose:str}", pages.request_data, methods=["POST"]),
        # Before /confirm/{purpose}: sign-up (AD-4) and the policy page (promise 10).
        Route("/subscribe", subscribe.subscribe, methods=["GET", "POST"]),
        Route(
            "/confirm/subscribe/{token}", subscribe.confirm_subscription, methods=["GET", "POST"]
        ),
        Route("/policy", subscribe.policy),
        Route("/confirm/{purpose:str}/{token}", pages.confirm_data, methods=["GET", "POST"]),
        Route("/manage", pages.manage, methods=["GET", "POST"]),
        admin.mount(gateway),
        Mount("/static", StaticFiles(directory=TEMPLATES / "web" / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            InvalidToken: invalid_token,
            pages.BadRequest: bad_request,
            InvalidInput: bad_request,
            Conflict: conflict,
            HTTPException: http_error,
        },
    )
    app.state.gateway = gateway
    app.state.manage_limits = {
        "address": pages.RateLimit(limit=3, window=3600),
        "client": pages.RateLimit(limit=30, window=3600),
    }
    # Confirmation links for export and erasure, per person and purpose.
    app.state.request_limit = pages.RateLimit(limit=5, window=3600)
    return app
