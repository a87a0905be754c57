"""What every admin API handler needs: bodies read with a cap, checked input, the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..core import Gateway
from .checks import depth_problem, describe, scalar_problem, text_problem
from .models import MAX_INTEGER, MAX_PAGE, Body

# Room for html and text at their longest even when every character is sent as a \u escape.
MAX_JSON = 16 * 1024 * 1024
MAX_CSV = 16 * 1024 * 1024
DEFAULT_PAGE = 100


class ApiError(Exception):
    """An answer other than success, with one sentence saying what is wrong."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def fail(status: int, message: str) -> NoReturn:
    raise ApiError(status, message)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    # A message may quote the caller's input: it must still encode as UTF-8.
    safe = message.encode("utf-8", "replace").decode("utf-8")
    return JSONResponse({"error": safe}, status_code=status, headers=headers)


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def audit(request: Request, action: str, email: str | None) -> None:
    """Promise 9: who read whose data and when; the subject is a keyed hash of the address
    (or "list" for a page of many people), never the data itself."""
    gw = gateway(request)
    subject = gw.signer.address_hash(email) if email is not None else "list"
    await gw.store.record_audit(request.scope["gateway.actor"], action, subject, time.time())


# -- bodies ----------------------------------------------------------------------------------


async def read_body(request: Request, limit: int, media_type: str) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            fail(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            fail(413, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            fail(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and given != media_type:
        raise ApiError(415, f"send the body as {media_type}, not {given or 'no Content-Type'}")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def json_body(
    request: Request, model: type[Body], *, required: bool = True
) -> dict[str, Any]:
    """The fields of a JSON object body that `model` (its published schema) accepts, as
    sent: a field left out is not in the answer. Anything else is an ApiError."""
    raw = await read_body(request, MAX_JSON, "application/json")
    if not raw:
        if required:
            fail(400, "a JSON object is required as the body")
        raw = b"{}"
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        fail(400, "the body is not UTF-8")
    except (ValueError, RecursionError) as exc:
        fail(400, f"the body is not valid JSON: {exc}")
    if problem := depth_problem(data):
        fail(400, problem)
    if not isinstance(data, dict):
        fail(422, "the body must be a JSON object")
    if problem := scalar_problem(data):
        fail(422, problem)
    try:
        return model.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as exc:
        fail(422, describe(exc.errors(include_url=False), model))


async def no_body(request: Request) -> None:
    """Actions that take no input accept an empty body or `{}`, nothing else."""
    raw = await read_body(request, MAX_JSON, "application/json")
    if raw:
        try:
            data = json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            fail(400, f"the body is not valid JSON: {exc}")
        if data != {}:
            fail(422, "this action takes no fields: send no body or {}")


async def csv_body(request: Request) -> str:
    raw = await read_body(request, MAX_CSV, "text/csv")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        fail(400, "the CSV is not UTF-8")
    if "\x00" in text:
        fail(422, "the CSV contains a NUL character")
    if not text.strip():
        fail(422, "the CSV is empty")
    return text


# -- query and path ----------------------------------------------------------------------------


def query(request: Request, *allowed: str) -> QueryParams:
    params = request.query_params
    unknown = [k for k in params if k not in allowed]
    if unknown:
        names = ", ".join(repr(k[:60]) for k in unknown[:10])
        fail(422, f"unknown query parameter{'s' if len(unknown) > 1 else ''}: {names}")
    for key, value in params.multi_items():
        if problem := text_problem(value, key):
            fail(422, problem)
    return params


def integer(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
        fail(422, f"'{name}' must be a whole number from {low} to {high}")
    return int(raw)


def paging(params: QueryParams) -> tuple[int, int]:
    after = integer(params, "after", 0, 0, MAX_INTEGER)
    return after, integer(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE)


def path_id(request: Request, what: str) -> int:
    raw = request.path_params["id"]
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= MAX_INTEGER:
        return int(raw)
    fail(404, f"no {what} {raw[:60]!r}: ids are whole numbers from 1")
