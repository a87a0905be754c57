"""What the console's people pages share: roles, the audit of reads, forms, pages, errors."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from ...core import Gateway
from ...errors import Conflict, InvalidInput, NotFound
from ...i18n import N_
from ...staff import role_at_least
from ..checks import text_problem
from . import auth, views

PAGE_SIZE = 50
MAX_FORM = 64 * 1024  # a form of a few fields
# A CSV or a policy text: the console reads no form larger than this (auth.MAX_BODY).
MAX_UPLOAD = auth.MAX_BODY

# What a finished action says on the page it leads to (?done=…): the msgid, never input.
DONE = {
    "erased": N_(
        "The contact was erased. Only a keyed hash of the address is kept, so it is never"
        " mailed again."
    ),
    "topic": N_("The topic was added."),
    "suppressed": N_("The address was added to the suppression list."),
    "already": N_("That suppression was already on the list: nothing changed."),
    "lifted": N_("The suppression was removed."),
    "published": N_("The policy version was published."),
    "notifying": N_(
        "The policy version was published. Its notices are being queued: the counts below"
        " grow until everyone is told."
    ),
}

Handler = Callable[[Request], Awaitable[Response]]


class Refused(Exception):
    """An answer other than success, with one sentence in words (shown on a page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def need(request: Request, role: str) -> Any:
    """The staff member, who must hold `role` or more (401 leads to the login page, 403)."""
    return await auth.require(request, role)


def may(staff: Any, role: str) -> bool:
    return role_at_least(staff.role, role)


async def audit_person(request: Request, action: str, email: str | None) -> None:
    """A read or change of a person's data: the audit row keeps the keyed hash of the
    address (or "list" for a page of many), never the data, as the admin API's do."""
    await auth.audit_read(request, action, email)


async def audit_change(request: Request, action: str, subject: str | None) -> None:
    """A change that names no person (a topic, a policy version, an import)."""
    await auth.audit(request, action, subject)


def render(
    request: Request, template: str, title: str, *, status: int = 200, **context: Any
) -> Response:
    return views.page(request, template, title, status=status, **context)


# Titles of the page a refusal is shown on, by status.
PROBLEM_TITLES = {
    404: N_("Not found"),
    409: N_("Not allowed for this address"),
    413: N_("Too large"),
}


def problem(request: Request, status: int, message: str) -> Response:
    """A page saying what was wrong; nothing was changed. `message` is the domain's own
    sentence (English, like the admin API's), after a lead in the staff member's words."""
    lead = views.words(request, "Nothing was changed.")
    title = PROBLEM_TITLES.get(status, N_("That could not be done"))
    return views.message(request, title, [lead, message], status)


def guarded(handler: Handler) -> Handler:
    """Refusals of the domain (a conflict, bad input, something not there) become a page
    saying what was wrong, with the status the admin API would answer."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            return problem(request, exc.status, str(exc))
        except NotFound as exc:
            return problem(request, 404, str(exc))
        except InvalidInput as exc:  # Conflict is one: the API answers it 409 too
            return problem(request, 409 if isinstance(exc, Conflict) else 422, str(exc))

    return run


# -- input -----------------------------------------------------------------------------------


def text_param(request: Request, name: str, limit: int) -> str:
    value = request.query_params.get(name, "")
    if len(value) > limit:
        raise Refused(422, f"'{name}' is longer than {limit} characters")
    if problem_text := text_problem(value, name):
        raise Refused(422, problem_text)
    return value


def after_param(request: Request) -> int:
    raw = request.query_params.get("after", "0") or "0"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise Refused(422, "'after' must be a whole number")
    return int(raw)


def done_message(request: Request) -> str | None:
    return DONE.get(request.query_params.get("done", ""))


async def form_fields(
    request: Request, *, limit: int = MAX_FORM, files: tuple[str, ...] = ()
) -> dict[str, str]:
    """The form's text fields, and the named file fields read as UTF-8 text (empty when no
    file was chosen); a body larger than `limit` is refused before it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the form is larger than {limit // 1024} KiB")
    # The console's middleware has read the form already, to check its CSRF token.
    form = request.scope.get("gateway.form") or await request.form()
    uploads: dict[str, bytes] = {}
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            # Read, then closed: nobody else closes the files of the form the middleware read.
            try:
                if key in files and key not in uploads:
                    uploads[key] = await value.read(limit + 1)
            finally:
                await value.close()
        elif key not in fields:
            fields[key] = value
    for key, data in uploads.items():
        if len(data) > limit:
            raise Refused(413, f"the file is larger than {limit // (1024 * 1024)} MiB")
        try:
            fields[key] = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Refused(422, "the file is not UTF-8 text") from None
        if "\x00" in fields[key]:
            raise Refused(422, "the file contains a NUL character")
    return fields


def moment(ts: float | None) -> str:
    """A time as staff in Vietnam read it (the console's own format)."""
    return views.when(ts)
