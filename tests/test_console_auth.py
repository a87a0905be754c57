"""The staff console's doors over HTTP: login (Argon2, rate limits per account and client),
the session cookie's flags, expiry and logout, CSRF on every change, and role refusals on
every state-changing route under /admin (found by walking the app, so routes added later
are covered too)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher, Type
from console_helpers import (
    BASE_URL,
    PASSWORD,
    browser_login,
    cheap_hashing,  # noqa: F401  (a fixture)
    console_client,
    csrf_of,
    login,
    make_staff,
    start_console_browser,
)
from pg import sqlite_only
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from starlette.routing import BaseRoute, Mount, Route
from test_browser import server  # noqa: F401  (the `gateway serve` fixture)

from gateway import Gateway
from gateway import staff as gateway_staff
from gateway.staff import ABSOLUTE, IDLE, Staff
from gateway.web.admin import auth, i18n
from gateway.web.app import SecurityHeaders, create_app

# Many logins each: Argon2 at its least work (the real parameters: see the test just below).
pytestmark = pytest.mark.usefixtures("cheap_hashing")


# gateway.staff's own hasher, taken before any test swaps it.
PRODUCTION_HASHER = gateway_staff._hasher


def test_production_passwords_use_argon2id_with_at_least_the_recommended_work():
    assert PRODUCTION_HASHER.type is Type.ID
    assert PRODUCTION_HASHER.time_cost >= 3 and PRODUCTION_HASHER.memory_cost >= 64 * 1024
    assert PRODUCTION_HASHER.hash(PASSWORD).startswith("$argon2id$")


class Clock:
    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(gw: Gateway) -> Clock:
    """The staff service's clock, moved by hand."""
    fake = Clock()
    auth.service(gw).clock = fake
    return fake


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gw, worker=False))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        yield c


def said(gw: Gateway, msgid: str) -> str:
    """A console word as the pages show it (GATEWAY_DEFAULT_LANGUAGE, Vietnamese here)."""
    return i18n.gettext(gw.settings.default_language, msgid)


def cookie_header(response: httpx.Response) -> str:
    found = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    assert len(found) == 1, found
    return found[0]


EXPIRED = (
    "This form has expired or did not come from this console. Nothing was changed: reload the"
    " page and send the form again."
)
FORBIDDEN = "Your role may not do this: it needs the role %(role)s. Nothing was changed."


# -- login ------------------------------------------------------------------------------------


async def test_get_admin_without_a_session_redirects_to_the_login_form(client):
    for path in ("/admin", "/admin/", "/admin/keys"):
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/admin/login"), path
        assert "set-cookie" not in answer.headers
    page = await client.get("/admin/login")
    assert page.status_code == 200
    assert 'name="email"' in page.text and 'name="password"' in page.text
    assert "set-cookie" not in page.headers


async def test_login_sets_an_httponly_strict_secure_cookie_and_stores_only_its_hash(gw, client):
    email = await make_staff(gw, "viewer")
    answer = await login(client, email)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    header = cookie_header(answer)
    flags = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= flags
    assert "samesite=strict" in header.lower() and "path=/admin" in header.lower()
    token = client.cookies.get(auth.COOKIE)
    assert token and len(token) >= 40
    # The database holds a hash of the token, never the token.
    rows = await gw.store.rows("SELECT token_hash FROM staff_sessions")
    assert len(rows) == 1 and rows[0][0] != token and token not in rows[0][0]
    assert await auth.service(gw).session(token) is not None


async def test_the_cookie_is_not_secure_on_a_plain_http_base_url(env, smtp):
    env["GATEWAY_BASE_URL"] = "http://127.0.0.1:8000"
    async with Gateway.from_env(env) as gw:
        email = await make_staff(gw, "viewer")
        transport = httpx.ASGITransport(app=create_app(gw, worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            header = cookie_header(await login(c, email))
    assert "httponly" in header.lower() and "samesite=strict" in header.lower()
    assert "secure" not in header.lower()


async def test_a_wrong_password_or_unknown_address_is_refused_in_the_same_words(gw, client):
    email = await make_staff(gw, "admin")
    wrong = await login(client, email, "not the password at all")
    unknown = await login(client, "nobody@first.vn", PASSWORD)
    for answer in (wrong, unknown):
        assert answer.status_code == 400
        assert "set-cookie" not in answer.headers
        assert said(gw, "The email address or the password is wrong.") in answer.text
    assert await gw.store.rows("SELECT 1 FROM staff_sessions") == []


async def test_login_rate_limit_per_account_answers_429_then_lets_in_after_the_window(
    gw, client, clock
):
    email = await make_staff(gw, "admin")
    for _ in range(5):
        assert (await login(client, email, "wrong password here")).status_code == 400
    # Now even the right password is not checked: 429, with how long to wait.
    limited = await login(client, email)
    assert limited.status_code == 429
    assert (
        said(gw, "Too many failed sign-ins. Wait %(minutes)s minutes, then try again.")
        % {"minutes": 15}
        in limited.text
    )
    assert int(limited.headers["retry-after"]) > 0
    assert "set-cookie" not in limited.headers
    clock.now += 10 * 60
    assert (await login(client, email)).status_code == 429  # the window is 15 minutes
    clock.now += 5 * 60 + 1
    assert (await login(client, email)).status_code == 303  # never for good


async def test_login_rate_limit_per_client_covers_every_account_it_tries(gw, client, clock):
    email = await make_staff(gw, "admin")
    for n in range(20):
        assert (await login(client, f"guess{n}@first.vn", "wrong password here")).status_code == 400
    assert (await login(client, email)).status_code == 429
    clock.now += 15 * 60 + 1
    assert (await login(client, email)).status_code == 303


async def test_a_success_forgets_the_accounts_earlier_failures(gw, client, clock):
    email = await make_staff(gw, "admin")
    for _ in range(4):
        await login(client, email, "wrong password here")
    assert (await login(client, email)).status_code == 303
    for _ in range(4):
        assert (await login(client, email, "wrong password here")).status_code == 400
    assert (await login(client, email)).status_code == 303


async def test_login_goes_on_to_the_page_asked_for_but_never_off_the_console(gw, client):
    email = await make_staff(gw, "admin")
    first = await client.get("/admin/audit?actor=x")
    assert first.headers["location"] == "/admin/login?next=%2Fadmin%2Faudit%3Factor%3Dx"
    answer = await client.post(
        "/admin/login", data={"email": email, "password": PASSWORD, "next": "/admin/audit?actor=x"}
    )
    assert answer.headers["location"] == "/admin/audit?actor=x"
    for evil in ("//evil.example/admin", "https://evil.example/", "/\\evil.example", "/adminx"):
        client.cookies.clear()
        answer = await client.post(
            "/admin/login", data={"email": email, "password": PASSWORD, "next": evil}
        )
        assert answer.headers["location"] == "/admin", evil


async def test_staff_passwords_are_argon2_hashes_rehashed_when_parameters_change(gw, client):
    email = await make_staff(gw, "viewer")
    stored = (await gw.store.staff_member(email))["password_hash"]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    # A hash made with weaker parameters is replaced at the next login.
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024).hash(PASSWORD)
    await gw.store.rehash_staff_password((await gw.store.staff_member(email))["id"], stored, weak)
    assert (await login(client, email)).status_code == 303
    renewed = (await gw.store.staff_member(email))["password_hash"]
    assert renewed != weak and renewed.startswith("$argon2id$")


# -- sessions ---------------------------------------------------------------------------------


async def test_a_session_ends_after_two_idle_hours(gw, clock):
    async with console_client(gw, "viewer") as c:
        clock.now += IDLE - 60
        assert (await c.get("/admin/login")).headers["location"] == "/admin"  # still in
        clock.now += IDLE - 60
        assert (await c.get("/admin/login")).status_code == 303  # used in time: still in
        clock.now += IDLE + 1
        gone = await c.get("/admin/keys")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/admin/login")
    assert await gw.store.rows("SELECT 1 FROM staff_sessions") == []


async def test_a_session_ends_twelve_hours_after_login_however_busy(gw, clock):
    async with console_client(gw, "viewer") as c:
        token = c.cookies.get(auth.COOKIE)
        while clock.now + 3600 < 1_900_000_000.0 + ABSOLUTE:
            clock.now += 3600
            assert await auth.service(gw).session(token) is not None
        clock.now = 1_900_000_000.0 + ABSOLUTE
        assert await auth.service(gw).session(token) is None


async def test_logout_ends_the_session_and_its_cookie_is_worth_nothing_after(gw):
    async with console_client(gw, "viewer") as c:
        token = c.cookies.get(auth.COOKIE)
        out = await c.post_form("/admin/logout")
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert "max-age=0" in cookie_header(out).lower()
        c.cookies.set(auth.COOKIE, token, domain="mail.first.vn", path="/admin")
        again = await c.get("/admin/login")
        assert again.status_code == 200  # the login form: no session any more
    assert await auth.service(gw).session(token) is None


async def test_a_removed_staff_member_loses_their_session_at_once(gw):
    async with console_client(gw, "marketer") as c:
        await auth.service(gw).remove(c.email)
        gone = await c.get("/admin/")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/admin/login")
        assert (await c.post_form("/admin/language", {"language": "en"})).status_code == 403


async def test_a_new_password_ends_the_members_other_sessions(gw):
    async with (
        console_client(gw, "admin") as first,
        console_client(gw, "admin", first.email) as second,
    ):
        # The first resets its own password in the console: it stays in, the other is out.
        done = await first.post_form("/admin/staff/password", {"email": first.email})
        assert done.status_code == 200
        new = re.search(r'id="new-password">([^<]+)<', done.text)[1]
        assert (await first.get("/admin/staff")).status_code == 200
        assert (await second.get("/admin/staff")).status_code == 303
        second.cookies.clear()
        assert (await login(second, first.email)).status_code == 400
        assert (await login(second, first.email, new)).status_code == 303


# -- CSRF -------------------------------------------------------------------------------------


async def test_a_change_without_the_csrf_token_is_refused_with_403(gw):
    async with console_client(gw, "admin") as c:
        answer = await c.post("/admin/keys/new", data={"name": "crm", "scope": "send"})
        assert answer.status_code == 403
        assert said(gw, "This form has expired") in answer.text
        assert said(gw, EXPIRED) in answer.text
        wrong = await c.post(
            "/admin/keys/new", data={"name": "crm", "scope": "send", "csrf_token": "x" * 43}
        )
        assert wrong.status_code == 403
        assert await gw.api_keys() == []
        # The session's own token works, as a form field or as a header.
        assert (
            await c.post_form("/admin/keys/new", {"name": "crm", "scope": "send"})
        ).status_code == 200
        by_header = await c.post(
            "/admin/keys/new",
            data={"name": "shop", "scope": "send"},
            headers={"X-CSRF-Token": c.csrf_token},
        )
        assert by_header.status_code == 200
        assert [k["name"] for k in await gw.api_keys()] == ["crm", "shop"]


async def test_a_csrf_token_of_another_session_is_refused(gw):
    async with console_client(gw, "admin") as mine, console_client(gw, "admin") as theirs:
        assert mine.csrf_token != theirs.csrf_token
        answer = await mine.post(
            "/admin/keys/new",
            data={"name": "crm", "scope": "send", "csrf_token": theirs.csrf_token},
        )
        assert answer.status_code == 403
    assert await gw.api_keys() == []


async def test_a_change_a_browser_marks_as_from_another_site_is_refused(gw, client):
    email = await make_staff(gw, "admin")
    login_csrf = await client.post(
        "/admin/login",
        data={"email": email, "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert login_csrf.status_code == 403 and "set-cookie" not in login_csrf.headers
    evil_origin = await client.post(
        "/admin/login",
        data={"email": email, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert evil_origin.status_code == 403
    async with console_client(gw, "admin") as c:
        answer = await c.post_form(
            "/admin/keys/new",
            {"name": "crm", "scope": "send"},
            headers={"Sec-Fetch-Site": "same-site"},
        )
        assert answer.status_code == 403
        same = await c.post_form(
            "/admin/keys/new",
            {"name": "crm", "scope": "send"},
            headers={"Sec-Fetch-Site": "same-origin", "Origin": "null"},
        )
        assert same.status_code == 200


# -- roles ------------------------------------------------------------------------------------


def console_post_routes(app: Any) -> list[str]:
    """Every path under /admin that accepts a POST, with sample path parameters."""
    found: list[str] = []

    def walk(routes: list[BaseRoute], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route) and "POST" in (route.methods or ()):
                path = re.sub(r"\{(\w+):int\}", "1", prefix + route.path)
                found.append(re.sub(r"\{(\w+)(:\w+)?\}", "x", path))

    walk(app.routes, "")
    return sorted(p for p in found if p.startswith("/admin/"))


# Open to every signed-in member, whatever their role.
EVERYONE = {"/admin/login", "/admin/logout", "/admin/language"}


async def test_a_viewer_gets_403_on_every_change_under_admin(gw):
    """Every POST route under /admin (also those added later) refuses a viewer, with a valid
    CSRF token: the role, not the token, is what stops it; nothing changes."""
    app = create_app(gw, worker=False)
    routes = [p for p in console_post_routes(app) if p not in EVERYONE]
    assert {"/admin/keys/new", "/admin/keys/revoke", "/admin/staff/new"} <= set(routes)
    async with console_client(gw, "viewer", app=app) as c:
        for path in routes:
            answer = await c.post_form(path, {"name": "x", "email": "x@first.vn"})
            assert answer.status_code == 403, (path, answer.status_code, answer.text[:300])
            assert said(gw, FORBIDDEN).split("%")[0] in answer.text, path
        before = await gw.store.rows("SELECT COUNT(*) FROM audit_log")
    assert await gw.api_keys() == []
    assert await gw.store.rows("SELECT COUNT(*) FROM audit_log") == before


async def test_a_marketer_gets_403_on_the_admin_pages_and_their_changes(gw):
    async with console_client(gw, "marketer") as c:
        for path in ("/admin/keys", "/admin/staff", "/admin/audit"):
            assert (await c.get(path)).status_code == 403, path
        for path in ("/admin/keys/new", "/admin/staff/new", "/admin/staff/remove"):
            assert (
                await c.post_form(path, {"name": "x", "email": "x@first.vn"})
            ).status_code == 403
        nav = (await c.get("/admin/nothing-here")).text
        assert 'href="/admin/campaigns"' in nav and 'href="/admin/keys"' not in nav
        assert 'href="/admin/staff"' not in nav and 'href="/admin/audit"' not in nav


# -- cookies only for the console ----------------------------------------------------------------


async def test_recipient_pages_never_pass_a_cookie_only_the_console_does():
    async def sets_a_cookie(scope, receive, send):
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"set-cookie", b"a=1")]}
        )
        await send({"type": "http.response.body", "body": b""})

    app = SecurityHeaders(sets_a_cookie)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        for path in ("/manage", "/preferences/x", "/adminx", "/api/v1/topics", "/"):
            answer = await c.get(path)
            assert "set-cookie" not in answer.headers, path
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        for path in ("/admin", "/admin/login"):
            answer = await c.get(path)
            assert answer.headers["set-cookie"] == "a=1", path


async def test_a_signed_in_member_on_recipient_pages_gets_no_cookie(gw):
    async with console_client(gw, "admin") as c:
        for path in ("/manage", "/healthz", "/subscribe", "/static/console.css"):
            assert "set-cookie" not in (await c.get(path)).headers, path


async def test_console_pages_send_a_strict_csp_that_allows_nothing_from_elsewhere(gw, client):
    policy = (await client.get("/admin/login")).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "script-src" not in directives  # no script at all
    for value in directives.values():
        assert "http" not in value and "*" not in value and "unsafe" not in value


async def test_a_staff_member_who_is_removed_by_another_process_cannot_use_a_stale_service(gw):
    """Sessions are read from the database on every request: a removal made through another
    Staff service (the CLI's) ends the session too."""
    async with console_client(gw, "viewer") as c:
        await Staff(gw.store).remove(c.email)
        assert (await c.get("/admin/")).status_code == 303
        assert await csrf_of_or_none(gw, c) is None


async def csrf_of_or_none(gw: Gateway, c: httpx.AsyncClient) -> str | None:
    try:
        return await csrf_of(gw, c)
    except AssertionError:
        return None


async def test_a_stranger_cannot_make_the_console_read_a_large_body(gw, client):
    big = {"email": "x@first.vn", "password": "p" * (20 * 1024)}
    assert (await client.post("/admin/login", data=big)).status_code == 413
    assert (await client.post("/admin/keys/new", data=big)).status_code == 403
    async with console_client(gw, "admin") as c:
        # A signed-in member may send more (a campaign's HTML file), up to a limit.
        upload = {"html": ("page.html", b"<p>x</p>" * (300 * 1024), "text/html")}
        answer = await c.post("/admin/keys/new", data={"csrf_token": c.csrf_token}, files=upload)
        assert answer.status_code == 400  # read and refused for what it is: no key name
        huge = {"html": ("page.html", b"x" * (auth.MAX_BODY + 1), "text/html")}
        answer = await c.post("/admin/keys/new", data={"csrf_token": c.csrf_token}, files=huge)
        assert answer.status_code == 413


# -- in a real browser ------------------------------------------------------------------------


@sqlite_only("the browser checks the pages, not the database; it runs once, in the SQLite run")
async def test_login_in_chromium_keeps_the_cookie_strict_and_the_admin_pages_pass_axe(
    tmp_path,
    server,  # noqa: F811  (test_browser's fixture)
):
    """Login through the form in headless Chromium (cookies on, nothing off the machine),
    the cookie as the browser keeps it, the core's pages with axe at 1024 and 375 px wide
    (no serious or critical violation, no sideways scrolling), nothing loaded from
    elsewhere, and logout."""
    made = await server.cli("staff", "add", "boss@first.vn", "--role", "admin")
    b = await asyncio.to_thread(start_console_browser, tmp_path / "profile", server.origin)
    try:
        await asyncio.to_thread(walk_the_admin_pages, b, made["password"])
    finally:
        await asyncio.to_thread(b.driver.quit)


def walk_the_admin_pages(b: Any, password: str) -> None:
    d = b.driver
    d.get(f"{b.origin}/admin/login")
    b.axe("login")
    browser_login(b, "boss@first.vn", password)
    (cookie,) = d.get_cookies()
    assert cookie["name"] == auth.COOKIE and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert d.execute_script("return document.cookie") == ""  # HttpOnly: no script sees it
    d.get_log("performance")
    for width in (1024, 375):
        d.set_window_size(width, 900)
        for path in ("/admin/keys", "/admin/staff", "/admin/audit"):
            d.get(b.origin + path)
            assert d.find_element(By.TAG_NAME, "h1").text.strip()
            b.axe(f"{path} at {width} px")
            sideways = d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            wide = d.execute_script(
                "return [...document.querySelectorAll('body *')]"
                ".filter(e => e.getBoundingClientRect().right > innerWidth + 1)"
                ".map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 5)"
            )
            assert sideways <= 0, (path, width, sideways, wide)
    events = [json.loads(e["message"])["message"] for e in d.get_log("performance")]
    urls = [
        e["params"]["request"]["url"]
        for e in events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"].get("documentURL", "").startswith(b.origin)
    ]
    # (data: URLs are the browser's own, e.g. the date field's calendar icon: no network)
    foreign = [u for u in urls if not u.startswith((b.origin + "/", "data:"))]
    assert urls and not foreign, foreign
    d.find_element(By.XPATH, "//form[@action='/admin/logout']//button").click()
    WebDriverWait(d, 10).until(lambda _: d.current_url.endswith("/admin/login"))
    assert d.get_cookies() == []


def test_no_command_pays_for_argon2_until_someone_logs_in():
    """Argon2 takes 64 MiB: importing the CLI (every command, an import of a million
    contacts, a worker) must not hash anything."""
    import subprocess
    import sys

    code = (
        "import gateway.cli, gateway.staff, gateway.web.app;"
        "print(gateway.staff._dummy.cache_info().currsize)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "0"
