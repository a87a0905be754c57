"""The Starlette application: resources opened in the lifespan, routes, error pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..core import Gateway

log = logging.getLogger("gateway.web")


async def healthz(request: Request) -> JSONResponse:
    gw: Gateway = request.app.state.gateway
    version = await gw.store.schema_version()
    return JSONResponse({"status": "ok", "schema_version": version})


def create_app(gw: Gateway, *, worker: bool = True) -> Starlette:
    """`gw` is opened by the caller; the lifespan runs the delivery worker beside the pages."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.gateway = gw
        stop = asyncio.Event()
        task = asyncio.create_task(gw.deliver(stop=stop)) if worker else None
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, timeout=30)

    return Starlette(routes=[Route("/healthz", healthz)], lifespan=lifespan)
