"""A whole campaign run from the staff console in a real browser, then axe on every console page.

`gateway serve` (test_browser's `server` fixture: a subprocess with its worker, delivering to the
RecordingSMTPServer in this test's loop) is driven by Debian's headless Chromium with cookies on
and every host but the loopback address sent nowhere (console_helpers.start_console_browser).
A marketer signs in, creates a campaign from an uploaded HTML file, previews it, changes it to a
version with a remote image (shown blocked, with no send button, and the image never requested
from the local server it points at), fixes it, sends a test copy to their own address (it
arrives), sends the campaign and reloads its page until it is done. Then every GET page of the
console (the app's own routes, path parameters filled with real ids) is checked with axe-core
(no serious or critical violation) and, for the main pages, at 375 px wide with no horizontal
scrolling. With GATEWAY_SCREENSHOTS=1 it saves docs/screenshots/{dashboard,campaign,contact}.png.

Needs /usr/bin/chromium, /usr/bin/chromedriver and axe-core (scripts/test.sh installs them).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_browser
from console_helpers import browser_login
from pg import sqlite_only
from smtp_server import RecordingSMTPServer
from starlette.routing import Mount, Route
from test_browser import (  # noqa: F401 (server is a fixture)
    ROOT,
    Browser,
    Server,
    server,
)

from gateway import Gateway
from gateway.web.app import create_app

STAFF = "marketing@first.vn"
PEOPLE = ("an@example.vn", "binh@example.vn", "chi@example.vn")
NAMES = ("An", "Bình", "Chi")
SHOTS = ROOT / "docs" / "screenshots"
# The pages also checked at 375 px wide (phones): (name, path, or None for one found later).
NARROW = ("/admin", "/admin/campaigns", "/admin/campaigns/new", "/admin/contacts")
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class Hits(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a 1x1 PNG and records its path: a stand-in for a tracker."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PIXEL)))
        self.end_headers()
        self.wfile.write(PIXEL)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[http.server.ThreadingHTTPServer]:
    # 127.0.0.2: on the loopback (nothing leaves the machine) but not the gateway's own host
    # (127.0.0.1, its base URL), so the scan finds an image there third-party.
    srv = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Hits)
    srv.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


# -- what the browser does (synchronous: called through asyncio.to_thread) --------------------


def start_browser(profile: Path, origin: str) -> Browser:
    """console_helpers.start_console_browser's Chromium (cookies on, no host but the loopback
    resolves, any other request goes to a dead proxy), with the tracker's address reachable
    too: so that only the console's protections can keep its image from loading."""
    return test_browser.start_browser(
        profile, origin, cookies=True, only_hosts=("127.0.0.1", "127.0.0.2")
    )


def by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def look(b: Browser, name: str, problems: list[str]) -> None:
    """Only our own origin answered, a heading, and axe-core's verdict (kept in `problems`)."""
    d = b.driver
    assert d.current_url.startswith(b.origin + "/admin"), (name, d.current_url)
    for entry in d.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.responseReceived":
            url = event["params"]["response"]["url"]
            if url.startswith(("http:", "https:", "ws:", "wss:")):  # not the browser's own
                assert url.startswith(b.origin + "/"), f"{name}: answered from {url}"
    assert d.find_element(by("TAG_NAME"), "h1").text.strip(), name
    try:
        b.axe(name)
    except AssertionError as exc:
        problems.append(str(exc))


def narrow(b: Browser, name: str, problems: list[str]) -> None:
    """The page as a 375 px wide phone shows it: axe again, and no sideways scrolling."""
    d = b.driver
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        d.refresh()
        width = d.execute_script("return document.documentElement.scrollWidth")
        if width > 375:
            problems.append(f"{name} at 375 px: the page is {width} px wide (scrolls sideways)")
        look(b, f"{name} (375 px)", problems)
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def state_of(b: Browser) -> str:
    return b.driver.find_element(by("CSS_SELECTOR"), ".campaign-state .state").get_attribute(
        "class"
    )


def fill_form(b: Browser, *, name: str, subject: str, html: str | None, upload: Path | None):
    from selenium.webdriver.support.ui import Select

    d = b.driver
    field = d.find_element(by("ID"), "campaign-name")
    field.clear()
    field.send_keys(name)
    Select(d.find_element(by("ID"), "campaign-topic")).select_by_value("news")
    field = d.find_element(by("ID"), "campaign-subject")
    field.clear()
    field.send_keys(subject)
    if html is not None:
        field = d.find_element(by("ID"), "campaign-html")
        field.clear()
        field.send_keys(html)
    if upload is not None:
        d.find_element(by("ID"), "campaign-html-file").send_keys(str(upload))
    click_and_wait(b, d.find_element(by("CSS_SELECTOR"), ".campaign-form button[type=submit]"))


def click_and_wait(b: Browser, element: Any) -> None:
    """Click, then wait for the next page to replace this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def replaced(_driver: Any) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:
            # Stale, or (mid-navigation) chromedriver's "Node with given id does not belong
            # to the document": either way the old page is gone.
            return True
        return False

    element.click()
    WebDriverWait(b.driver, 10).until(replaced)


def press(b: Browser, action: str) -> None:
    click_and_wait(
        b, b.driver.find_element(by("CSS_SELECTOR"), f"form[action$='/{action}'] button")
    )


def create_and_preview(b: Browser, upload: Path, problems: list[str]) -> str:
    d = b.driver
    d.get(f"{b.origin}/admin/campaigns/new")
    look(b, "new campaign", problems)
    fill_form(b, name="Tháng 12", subject="Ưu đãi cho {{ contact.name }}", html=None, upload=upload)
    assert re.search(r"/admin/campaigns/\d+\?done=created$", d.current_url), d.current_url
    page = d.current_url.split("?")[0]
    assert "draft" in state_of(b)
    look(b, "campaign (draft)", problems)
    # The preview: a sandboxed frame whose document is the message, as a chosen contact gets it.
    d.find_element(by("ID"), "preview-email").send_keys(PEOPLE[1])
    click_and_wait(b, d.find_element(by("CSS_SELECTOR"), ".preview-form button"))
    frame = d.find_element(by("CSS_SELECTOR"), "iframe.preview")
    assert frame.get_attribute("sandbox") == ""
    d.switch_to.frame(frame)
    try:
        assert "Xin chào Bình" in d.find_element(by("TAG_NAME"), "body").text
    finally:
        d.switch_to.default_content()
    look(b, "campaign (preview as a contact)", problems)
    return page


def make_it_blocked(b: Browser, page: str, tracker_url: str, problems: list[str]) -> None:
    d = b.driver
    d.get(page + "/edit")
    look(b, "change the campaign", problems)
    html = f'<p>Xin chào {{{{ contact.name }}}}!</p><img src="{tracker_url}/open.png" alt="">'
    fill_form(b, name="Tháng 12", subject="Ưu đãi cho {{ contact.name }}", html=html, upload=None)
    assert d.current_url.endswith("?done=saved"), d.current_url
    findings = d.find_element(by("CSS_SELECTOR"), ".findings").text
    assert "This campaign cannot be sent" in findings and tracker_url in findings
    buttons = d.find_elements(by("CSS_SELECTOR"), "form[action$='/send'], form[action$='/test']")
    assert buttons == []
    frame = d.find_element(by("CSS_SELECTOR"), "iframe.preview")
    d.switch_to.frame(frame)
    try:  # the image is in the frame's document, and the browser did not fetch it
        src = d.find_element(by("TAG_NAME"), "img").get_attribute("src")
        assert src == f"{tracker_url}/open.png", src
        loaded = d.execute_script(
            "return document.images[0].complete && document.images[0].naturalWidth"
        )
        assert not loaded
    finally:
        d.switch_to.default_content()
    look(b, "campaign (blocked)", problems)


def fix_it(b: Browser, page: str) -> None:
    d = b.driver
    d.get(page + "/edit")
    html = "<p>Xin chào {{ contact.name }}! <a href='https://first.vn/sale'>Xem</a></p>"
    fill_form(b, name="Tháng 12", subject="Ưu đãi cho {{ contact.name }}", html=html, upload=None)
    assert "may be sent" in d.find_element(by("TAG_NAME"), "main").text


def send_and_watch(b: Browser, page: str, problems: list[str]) -> float:
    """Send now at one message a second, then only wait: the page reloads itself (its Refresh
    header, no JavaScript) until the campaign is done."""
    from selenium.webdriver.support.ui import WebDriverWait

    d = b.driver
    d.find_element(by("ID"), "when-now").click()
    d.find_element(by("ID"), "send-rate").send_keys("1")
    press(b, "send")
    started = time.monotonic()
    assert d.current_url.endswith("?done=sending"), d.current_url
    assert "state-sending" in state_of(b)  # three messages at one a second take 2 s or more
    assert [p.get_attribute("value") for p in d.find_elements(by("TAG_NAME"), "progress")]
    refresh = [
        headers
        for entry in d.get_log("performance")
        for event in [json.loads(entry["message"])["message"]]
        if event["method"] == "Network.responseReceived"
        and event["params"]["response"]["url"] == d.current_url
        for headers in [{k.lower(): v for k, v in event["params"]["response"]["headers"].items()}]
    ]
    assert refresh and refresh[-1].get("refresh") == f"5; url={page.removeprefix(b.origin)}"
    look(b, "campaign (sending)", problems)
    WebDriverWait(d, 30, poll_frequency=0.3).until(lambda _: "state-done" in state_or_none(b))
    assert d.current_url == page  # the page's own reload brought it here
    counts = dict(
        zip(
            [e.text for e in d.find_elements(by("CSS_SELECTOR"), ".counts dt")],
            [e.text for e in d.find_elements(by("CSS_SELECTOR"), ".counts dd")],
            strict=True,
        )
    )
    assert counts["Delivered"] == str(len(PEOPLE)), counts
    look(b, "campaign (done)", problems)
    return time.monotonic() - started


def state_or_none(b: Browser) -> str:
    from selenium.common.exceptions import WebDriverException

    try:
        return state_of(b)
    except WebDriverException:  # between two pages
        return ""


def sweep(b: Browser, paths: list[str], problems: list[str]) -> list[str]:
    """axe on each page; the ones that are not HTML (downloads) are left out, and named."""
    skipped = []
    for path in paths:
        b.driver.get(b.origin + path)
        if b.driver.execute_script("return document.contentType") != "text/html":
            skipped.append(path)
            b.driver.get_log("performance")
            continue
        look(b, path, problems)
    return skipped


def shoot(b: Browser, path: str, name: str) -> None:
    d = b.driver
    d.set_window_size(1100, 1300)
    d.get(b.origin + path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SHOTS / f"{name}.png"))
    d.get_log("performance")


def first_link(b: Browser, path: str, pattern: str) -> str:
    b.driver.get(b.origin + path)
    for a in b.driver.find_elements(by("TAG_NAME"), "a"):
        href = a.get_attribute("href") or ""
        if re.fullmatch(pattern, href.removeprefix(b.origin)):
            return href.removeprefix(b.origin)
    raise AssertionError(f"no link like {pattern} on {path}")


# -- the console's GET pages, from the app's own routes ----------------------------------------


def console_get_paths(env: dict[str, str], ids: dict[str, str]) -> list[str]:
    """Every GET route under /admin, its path parameters filled from `ids` (by the section
    after /admin, e.g. "campaigns", and the parameter's name)."""
    app = create_app(Gateway.from_env(env), worker=False)
    found: list[str] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route) and "GET" in (route.methods or ()):
                path = prefix + route.path
                if path.startswith("/admin") and path not in ("/admin/login",):
                    found.append(path)

    walk(app.routes, "")

    def fill(path: str) -> str:
        section = path.split("/")[2] if path.count("/") > 1 else ""

        def value(match: re.Match[str]) -> str:
            key = f"{section}.{match.group(1)}"
            assert key in ids, f"the page sweep has no value for {{{match.group(1)}}} in {path}"
            return ids[key]

        return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)

    return [fill(p).rstrip("/") or "/admin" for p in found]


@sqlite_only("the console's pages in a browser: once, in the SQLite run")
async def test_a_whole_campaign_in_the_console_in_chromium_then_axe_on_every_console_page(
    tmp_path: Path,
    smtp: RecordingSMTPServer,
    server: Server,  # noqa: F811 (the fixture imported above)
    tracker: http.server.ThreadingHTTPServer,
):
    started = time.monotonic()
    await server.cli("topics", "add", "news", "--name", "Tin tức")
    people = tmp_path / "people.csv"
    people.write_text(
        "email,name\n" + "".join(f"{a},{n}\n" for a, n in zip(PEOPLE, NAMES, strict=True)),
        encoding="utf-8",
    )
    await server.cli("contacts", "import", str(people), "--subscribe", "news")
    staff = await server.cli("staff", "add", STAFF, "--role", "admin")
    upload = tmp_path / "thang-12.html"
    upload.write_text(
        "<!DOCTYPE html><html><body><p>Xin chào {{ contact.name }}!</p></body></html>",
        encoding="utf-8",
    )
    tracker_url = f"http://127.0.0.2:{tracker.server_address[1]}"
    problems: list[str] = []
    b = await asyncio.to_thread(start_browser, tmp_path / "profile", server.origin)
    try:
        await asyncio.to_thread(browser_login, b, STAFF, staff["password"])
        await asyncio.to_thread(english, b)
        page = await asyncio.to_thread(create_and_preview, b, upload, problems)
        campaign_id = page.rsplit("/", 1)[1]

        await asyncio.to_thread(make_it_blocked, b, page, tracker_url, problems)
        await asyncio.sleep(0.5)  # time for a late request to land
        assert tracker.hits == []  # type: ignore[attr-defined]
        # ... while the browser does reach that server when it is asked to: the check can fail.
        await asyncio.to_thread(b.driver.get, f"{tracker_url}/probe.png")
        assert tracker.hits[0] == "/probe.png"  # type: ignore[attr-defined]
        await asyncio.to_thread(b.driver.get_log, "performance")

        await asyncio.to_thread(fix_it, b, page)
        await asyncio.to_thread(press, b, "test")
        await smtp.wait_for(1, timeout=15)
        test = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
        assert smtp.messages[0].rcpt_tos == [STAFF]
        assert test["Subject"] == "[QC] [TEST] Ưu đãi cho Nguyễn Văn An"

        took = await asyncio.to_thread(send_and_watch, b, page, problems)
        await smtp.wait_for(1 + len(PEOPLE), timeout=15)
        assert sorted(m.rcpt_tos[0] for m in smtp.messages[1:]) == sorted(PEOPLE)
        print(f"the campaign went from send to done in {took:.1f} s")

        contact = await asyncio.to_thread(first_link, b, "/admin/contacts", r"/admin/contacts/\d+")
        ids = {"campaigns.id": campaign_id, "contacts.id": contact.rsplit("/", 1)[1]}
        paths = console_get_paths(server.env, ids)
        assert f"/admin/campaigns/{campaign_id}" in paths and "/admin" in paths
        skipped = await asyncio.to_thread(sweep, b, paths, problems)
        print(f"axe swept {len(paths) - len(skipped)} console pages; not HTML: {skipped}")
        for path in (*NARROW, f"/admin/campaigns/{campaign_id}", contact):
            await asyncio.to_thread(b.driver.get, server.origin + path)
            await asyncio.to_thread(narrow, b, path, problems)
        if os.environ.get("GATEWAY_SCREENSHOTS") == "1":
            for path, name in (
                ("/admin", "dashboard"),
                (f"/admin/campaigns/{campaign_id}", "campaign"),
                (contact, "contact"),
            ):
                await asyncio.to_thread(shoot, b, path, name)
            print(f"screenshots saved in {SHOTS}")
    finally:
        await asyncio.to_thread(b.driver.quit)
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    assert "/open.png" not in tracker.hits  # type: ignore[attr-defined]
    assert problems == [], "\n".join(problems)
    print(f"console browser test took {time.monotonic() - started:.1f} s")


def english(b: Browser) -> None:
    """The staff member switches the console to English with the header's button."""
    d = b.driver
    buttons = d.find_elements(by("CSS_SELECTOR"), "button[name=language][value=en]")
    if buttons:
        click_and_wait(b, buttons[0])
    assert d.find_element(by("TAG_NAME"), "html").get_attribute("lang") == "en"
