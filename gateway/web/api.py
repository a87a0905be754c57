"""The admin API under /api/v1: bearer keys, JSON in and out, every read of a person audited.

A Starlette app of its own, mounted by the main one, so that its errors (404 and 405
included) are JSON while the pages keep theirs.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import apikeys
from ..core import Gateway
from ..errors import Conflict, InvalidInput, NotFound, StoreError
from . import api_mail as mail
from . import api_people as people
from .api_io import ApiError, error

log = logging.getLogger("gateway.api")

PREFIX = "/api/v1"
CHALLENGE = 'Bearer realm="gateway"'


class BearerAuth:
    """Every request carries `Authorization: Bearer <key>` of a live key, or is answered 401
    before any route sees it. The key's name becomes the actor of the audit log."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, key = header.strip().partition(" ")
        if not header:
            response = error(
                401,
                "an API key is required: send Authorization: Bearer <key>"
                " (make one with `gateway apikey create NAME`)",
                {"WWW-Authenticate": CHALLENGE},
            )
        elif scheme.lower() != "bearer" or not key.strip():
            response = error(
                401,
                "the Authorization header must be Bearer <key>",
                {"WWW-Authenticate": CHALLENGE},
            )
        else:
            found = await apikeys.authenticate(self.gateway.store, key.strip())
            if found is not None and not found.may("admin") and not _sends(scope):
                response = error(
                    403,
                    f"the API key {found.name!r} may only send mail (POST {PREFIX}/messages):"
                    " use a key made with --scope admin for this",
                )
            elif found is not None:
                scope["gateway.actor"] = f"apikey:{found.name}"
                await self.app(scope, receive, send)
                return
            else:
                response = error(
                    401,
                    "the API key is unknown or revoked",
                    {"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
                )
        await response(scope, receive, send)


def _sends(scope: Scope) -> bool:
    """What a send-scoped key may do: POST /messages, and nothing else."""
    return scope["method"] == "POST" and scope["path"].rstrip("/") == PREFIX + "/messages"


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error(exc.status, str(exc), exc.headers)


async def invalid_input(request: Request, exc: Exception) -> Response:
    return error(422, str(exc))


async def not_found(request: Request, exc: Exception) -> Response:
    return error(404, str(exc))


async def conflict(request: Request, exc: Exception) -> Response:
    return error(409, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {
        404: f"no such API path: {request.url.path[:200]}",
        405: f"{request.method} is not allowed on {request.url.path[:200]}",
    }
    return error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("admin API: %s %s failed", request.method, request.url.path)
    return error(500, "the gateway failed unexpectedly; the error is logged")


routes = [
    Route("/contacts", people.contacts, methods=["GET"]),
    Route("/contacts", people.create_contact, methods=["POST"]),
    Route("/contacts/import", people.import_contacts, methods=["POST"]),
    Route("/contacts/{id}", people.get_contact, methods=["GET"]),
    Route("/contacts/{id}", people.update_contact, methods=["PATCH"]),
    Route("/contacts/{id}", people.erase_contact, methods=["DELETE"]),
    Route("/contacts/{id}/export", people.export_contact, methods=["GET"]),
    Route("/contacts/{id}/subscriptions/{slug}", people.subscription, methods=["POST", "DELETE"]),
    Route("/topics", people.topics, methods=["GET", "POST"]),
    Route("/suppressions", people.suppressions, methods=["GET", "POST"]),
    Route("/suppressions.csv", people.export_suppressions, methods=["GET"]),
    Route("/suppressions/import", people.import_suppressions, methods=["POST"]),
    Route("/suppressions/{email}", people.remove_suppression, methods=["DELETE"]),
    Route("/messages", mail.send_message, methods=["POST"]),
    Route("/messages/{message_id}", mail.message, methods=["GET"]),
    Route("/policies", mail.publish_policy, methods=["POST"]),
    Route("/campaigns", mail.campaigns, methods=["GET", "POST"]),
    Route("/campaigns/{id}", mail.campaign, methods=["GET"]),
    Route("/campaigns/{id}/preview", mail.preview, methods=["GET"]),
    Route("/campaigns/{id}/send", mail.send_campaign, methods=["POST"]),
    *(
        Route(f"/campaigns/{{id}}/{a}", mail.campaign_action, methods=["POST"])
        for a in mail.ACTIONS
    ),
]


class ApiPath(Convertor[str]):
    """Starlette's `path` with line breaks too: a path holding one still belongs to the API
    and is answered in JSON, not by the HTML pages' 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("api_path", ApiPath())


class Prefixed:
    """The API app seen from under PREFIX, as a Mount places an app: its routes match the
    rest of the path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner: dict[str, Any] = {**scope, "root_path": scope.get("root_path", "") + PREFIX}
        inner["path_params"] = {k: v for k, v in scope["path_params"].items() if k != "rest"}
        await self.app(inner, receive, send)


def mount(gateway: Gateway) -> Route:
    """/api/v1 and everything under it, line breaks in the path included."""
    return Route(PREFIX + "/{rest:api_path}", Prefixed(create_api(gateway)))


def create_api(gateway: Gateway) -> Starlette:
    """The API app; the main app mounts it at /api/v1 and owns the gateway's lifecycle."""
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BearerAuth, gateway=gateway)],
        exception_handlers={
            ApiError: api_error,
            Conflict: conflict,
            InvalidInput: invalid_input,
            NotFound: not_found,
            StoreError: conflict,
            HTTPException: http_error,
            Exception: unexpected,
        },
    )
    app.router.redirect_slashes = False
    app.state.gateway = gateway
    return app
