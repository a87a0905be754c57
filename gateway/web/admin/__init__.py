"""The staff web console under /admin: `mount(gateway)` is the route the main app adds.

Each page module named in PAGES exports `routes` (paths relative to /admin); a module that
does not exist (yet) is skipped. Every route runs behind `auth.ConsoleMiddleware`: the
session of the cookie, the CSRF check of every change, the console's error pages."""

from __future__ import annotations

import importlib
from typing import Any

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match, Mount, get_route_path
from starlette.types import Scope

from ...core import Gateway
from . import auth
from .views import PREFIX

PAGES = ("dashboard", "campaigns", "people", "keys", "staff_pages", "audit")

# Console pages answer with their own Content-Security-Policy (gateway/web/app.py sends it
# for every path under /admin). A campaign preview is an <iframe sandbox srcdoc>: Chromium
# shows a srcdoc frame under frame-src 'none' (default-src), and the frame inherits this
# policy, so the customer's markup loads nothing from anywhere (no remote image, no script,
# no style sheet, not even its inline styles). Nobody may frame the console itself.
CONSOLE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
    " base-uri 'none'; frame-ancestors 'none'"
)
# A page holding a preview lets the customer's inline styles apply, so the preview looks as
# the mail will; images, style sheets, fonts and scripts from anywhere else stay refused.
PREVIEW_CSP = CONSOLE_CSP.replace("style-src 'self';", "style-src 'self' 'unsafe-inline';")


def page_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = list(auth.routes)
    for name in PAGES:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the module exists but something it imports is missing
            continue
        routes.extend(module.routes)
    return routes


class ConsoleMount(Mount):
    """A Mount at /admin that also answers `/admin` itself (as `/admin/`), without the
    redirect a plain Mount would need."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and get_route_path(scope) == PREFIX:
            slashed = {**scope, "path": scope["path"] + "/"}
            match, child = super().matches(slashed)
            if match is Match.FULL:
                return match, {**child, "path": slashed["path"]}
        return super().matches(scope)


def mount(gateway: Gateway) -> BaseRoute:
    """The console's routes under /admin, each behind the console middleware."""
    del gateway  # the routes find it in request.app.state.gateway, as every page does
    return ConsoleMount(
        PREFIX, routes=page_routes(), middleware=[Middleware(auth.ConsoleMiddleware)]
    )


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


__all__: list[Any] = ["CONSOLE_CSP", "PREVIEW_CSP", "PAGES", "is_console", "mount"]
