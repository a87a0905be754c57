"""API keys in the console (admin only): the list, a new key with its scope shown once,
revoking one. The same keys as `gateway apikey`."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...apikeys import SCOPES
from ...errors import InvalidInput, StoreError
from ...i18n import N_
from .auth import audit, require
from .views import gateway, page, redirect, text_form, words

TITLE = N_("API keys")


async def listing(request: Request, status: int = 200, **context: object) -> Response:
    gw = gateway(request)
    keys = await gw.api_keys()
    keys.sort(key=lambda k: (k["revoked_at"] is not None, -k["created_at"]))
    done = request.query_params.get("revoked")
    if not any(k["name"] == done and k["revoked_at"] for k in keys):
        done = None  # the link's words are shown only when they say what happened
    notice = words(request, "The key %(name)s is revoked.", name=done) if done else None
    return page(
        request,
        "keys.html",
        TITLE,
        status=status,
        keys=keys,
        scopes=SCOPES,
        notice=notice,
        **context,
    )


async def keys(request: Request) -> Response:
    await require(request, "admin")
    return await listing(request)


async def create(request: Request) -> Response:
    await require(request, "admin")
    form = await text_form(request)
    name, scope = str(form.get("name") or "").strip(), str(form.get("scope") or "")
    try:
        key = await gateway(request).create_api_key(name, scope)
    except InvalidInput as exc:  # a bad name or scope
        return await listing(request, status=400, error=str(exc), name=name, scope=scope)
    except StoreError as exc:  # a live key of that name
        return await listing(request, status=409, error=str(exc), name=name, scope=scope)
    await audit(request, "apikeys.create", name)
    # Shown on this answer only (never in a URL, never again): only its hash is stored.
    return await listing(request, created={"name": name, "scope": scope, "key": key})


async def revoke(request: Request) -> Response:
    await require(request, "admin")
    form = await text_form(request)
    name = str(form.get("name") or "")
    await gateway(request).revoke_api_key(name)  # NotFound: a 404 page
    await audit(request, "apikeys.revoke", name)
    return redirect("/admin/keys?" + urlencode({"revoked": name}))


routes: list[BaseRoute] = [
    Route("/keys", keys, methods=["GET"]),
    Route("/keys/new", create, methods=["POST"]),
    Route("/keys/revoke", revoke, methods=["POST"]),
]
