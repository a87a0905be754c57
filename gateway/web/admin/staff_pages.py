"""Staff accounts in the console (admin only): the list, adding a member (their first
password is made and shown once), a new password for one (shown once; their sessions end),
removing one (their sessions end; never the last admin)."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ... import addresses
from ...errors import Conflict, InvalidInput
from ...i18n import N_
from ...staff import ROLES, generate_password
from .auth import audit, require, service
from .views import ROLE_NAMES, gateway, page, redirect, text_form, words

TITLE = N_("Staff")


def _address(value: str | None) -> str | None:
    try:
        return addresses.normalize(value) if value else None
    except InvalidInput:
        return None


async def listing(request: Request, status: int = 200, **context: object) -> Response:
    members = await service(gateway(request)).listing()
    removed = _address(request.query_params.get("removed"))
    if removed and any(m["email"] == removed for m in members):
        removed = None  # the link's words are shown only when they say what happened
    notice = words(request, "%(email)s is removed; their sessions have ended.", email=removed)
    return page(
        request,
        "staff.html",
        TITLE,
        status=status,
        members=members,
        roles=[(r, ROLE_NAMES[r]) for r in reversed(ROLES)],
        role_names=ROLE_NAMES,
        notice=notice if removed else None,
        **context,
    )


async def staff(request: Request) -> Response:
    await require(request, "admin")
    return await listing(request)


async def add(request: Request) -> Response:
    await require(request, "admin")
    form = await text_form(request)
    email, role = str(form.get("email") or "").strip(), str(form.get("role") or "")
    password = generate_password()
    try:
        member = await service(gateway(request)).add(email, role, password)
    except Conflict as exc:
        return await listing(request, status=409, error=str(exc), email=email, role=role)
    except InvalidInput as exc:
        return await listing(request, status=400, error=str(exc), email=email, role=role)
    await audit(request, "staff.add", f"{member['email']} ({role})")
    # Shown on this answer only: give it to them; they sign in with it.
    return await listing(request, shown={"email": member["email"], "password": password})


async def password(request: Request) -> Response:
    session = await require(request, "admin")
    form = await text_form(request)
    email = str(form.get("email") or "")
    new = generate_password()
    # A reset of one's own password keeps the session that did it; every other one ends.
    keep = session.id if email == session.email else None
    await service(gateway(request)).set_password(email, new, keep_session=keep)  # NotFound: 404
    await audit(request, "staff.password", email)
    return await listing(request, shown={"email": email, "password": new}, reset=True)


async def remove(request: Request) -> Response:
    await require(request, "admin")
    form = await text_form(request)
    email = str(form.get("email") or "")
    try:
        await service(gateway(request)).remove(email)  # NotFound: 404
    except Conflict as exc:  # the last admin
        return await listing(request, status=409, error=str(exc))
    await audit(request, "staff.remove", email)
    return redirect("/admin/staff?" + urlencode({"removed": email}))


routes: list[BaseRoute] = [
    Route("/staff", staff, methods=["GET"]),
    Route("/staff/new", add, methods=["POST"]),
    Route("/staff/password", password, methods=["POST"]),
    Route("/staff/remove", remove, methods=["POST"]),
]
