"""Helpers for tests of the staff console (/admin): a staff member, a logged-in HTTP client
with its CSRF token, and a real Chromium (cookies on, everything off the machine blocked)
that signs in through the login form.

Over HTTP:

    from console_helpers import console_client

    async def test_something(gw):
        async with console_client(gw, "marketer") as client:
            page = await client.get("/admin/campaigns")
            done = await client.post_form("/admin/topics/new", {"slug": "x"})  # adds csrf_token

In a browser (see tests/test_browser.py for the `server` fixture and `Browser`):

    srv = ...  # test_browser.Server
    staff = await srv.cli("staff", "add", "boss@first.vn", "--role", "admin")  # JSON: password
    b = await asyncio.to_thread(start_console_browser, tmp_path / "profile", srv.origin)
    await asyncio.to_thread(browser_login, b, "boss@first.vn", staff["password"])
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from gateway import Gateway, staff
from gateway.web.admin import auth
from gateway.web.app import create_app

PASSWORD = "correct horse battery staple"
BASE_URL = "https://mail.first.vn"  # the `env` fixture's GATEWAY_BASE_URL


@pytest.fixture
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the least work, for tests that log in many times (each real check costs
    64 MiB and a good part of a second on a busy test machine). The production parameters
    are checked by tests/test_console_auth.py."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(staff, "_hasher", cheap)
    dummy = cheap.hash("not a password of anyone")
    monkeypatch.setattr(staff, "_dummy", lambda: dummy)


async def make_staff(
    gw: Gateway, role: str, email: str | None = None, password: str = PASSWORD
) -> str:
    """A staff member of `role` (a fresh address unless given); their address."""
    email = email or f"{role}-{secrets.token_hex(3)}@first.vn"
    await auth.service(gw).add(email, role, password)
    return email


class ConsoleClient(httpx.AsyncClient):
    """An httpx client signed in to the console; `csrf_token` is its session's token."""

    email: str
    csrf_token: str

    async def post_form(
        self, url: str, data: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """POST a form with the session's csrf_token added (as the console's forms do)."""
        return await self.post(url, data={"csrf_token": self.csrf_token, **(data or {})}, **kwargs)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/admin/login", data={"email": email, "password": password})


async def csrf_of(gw: Gateway, client: httpx.AsyncClient) -> str:
    session = await auth.service(gw).session(client.cookies.get(auth.COOKIE))
    assert session is not None, "the client has no live console session"
    return session.csrf_token


@asynccontextmanager
async def console_client(
    gw: Gateway,
    role: str = "admin",
    email: str | None = None,
    *,
    app: Any = None,
    base_url: str = BASE_URL,
) -> AsyncIterator[ConsoleClient]:
    """A client of `create_app(gw, worker=False)` (or `app`) signed in as a new staff member
    of `role` (or as `email`, made with PASSWORD when it does not exist yet)."""
    app = app if app is not None else create_app(gw, worker=False)
    if email is None or await gw.store.staff_member(email) is None:
        email = await make_staff(gw, role, email)
    client = ConsoleClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
    async with client:
        answer = await login(client, email)
        assert answer.status_code == 303, answer.text
        client.email = email
        client.csrf_token = await csrf_of(gw, client)
        yield client


# -- a real browser (synchronous: call through asyncio.to_thread) ------------------------------


def start_console_browser(profile: Path, origin: str) -> Any:
    """test_browser's Chromium, but with cookies on (the console's session is one), and any
    request that is not to 127.0.0.1 sent to a dead proxy: nothing leaves the machine."""
    from test_browser import start_browser

    return start_browser(profile, origin, cookies=True, only_hosts=("127.0.0.1",))


def browser_login(b: Any, email: str, password: str = PASSWORD) -> None:
    """Sign in through the login form as a person would; afterwards the browser is on the
    dashboard (or wherever the login page was asked to go next)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = b.driver
    d.get(f"{b.origin}/admin/login")
    d.find_element(By.ID, "email").send_keys(email)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "form[action='/admin/login'] button[type=submit]").click()
    try:
        WebDriverWait(d, 10).until(lambda _: "/admin/login" not in d.current_url)
    except Exception:
        raise AssertionError(f"still on the login page: {d.page_source[-1500:]}") from None
    names = [c["name"] for c in d.get_cookies()]
    assert auth.COOKIE in names, f"no session cookie after login: {names}"
