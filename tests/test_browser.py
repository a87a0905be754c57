"""A real browser on the real server: Debian's Chromium, driven by selenium, with cookies blocked.

`gateway serve` runs in a subprocess on a fresh SQLite file and delivers to a RecordingSMTPServer
living in this test's event loop; every blocking selenium call goes through asyncio.to_thread so
that server keeps answering. The person takes the links from the delivered mail, unticks a
topic on the preference page and unsubscribes with the one-click page's button. Every page is
checked for cookies (none may even be offered), for requests to another origin (none) and with
axe-core (no serious or critical violation).

Needs /usr/bin/chromium, /usr/bin/chromedriver and axe-core from npm (scripts/test.sh installs
all three). Without them the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg import sqlite_only
from smtp_server import RecordingSMTPServer

from gateway.i18n import LANGUAGES, gettext

# The page words this test looks for, by a name of its own, in each language (from the catalogs).
WORDS = {
    "preferences_title": "Email preferences",
    "saved": "Your choices are saved.",
    "unsubscribe_title": "Unsubscribe from promotional email",
    "unsubscribe_button": "Stop all promotional email",
    "unsubscribed_title": "You are unsubscribed from promotional email",
    "unsubscribed_body": "From now on %(sender)s sends you no promotional email, including"
    " messages that were already queued.",
    "manage_title": "Get a link to your email preferences",
    "invalid_title": "This link is not valid",
}
CATALOG = {lang: {key: gettext(lang, msgid) for key, msgid in WORDS.items()} for lang in LANGUAGES}

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# scripts/test.sh installs the npm package here (.venv is git-ignored and project-local).
AXE_JS = ROOT / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOT = ROOT / "bench" / "out" / "preferences.png"
ADDRESS = "an@example.vn"


def require_browser() -> None:
    """Skip on a developer's machine without the browser; under CI a missing piece fails."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER, AXE_JS) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return
    message = f"browser test needs {', '.join(missing)}: run scripts/test.sh (it installs them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    origin: str
    env: dict[str, str]
    cwd: Path

    async def cli(self, *args: str, exit_codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
        """Run `gateway ARGS --json` beside the served process; its JSON answer."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *args,
            "--json",
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode in exit_codes, f"gateway {' '.join(args)}: {err.decode()}"
        return json.loads(out)

    async def send(self, topic: str, body: Path) -> dict[str, Any]:
        """`gateway send`: exit 0 when queued, 3 when not (suppressed or blocked)."""
        result = await self.cli(
            "send",
            "--to",
            ADDRESS,
            "--subject",
            f"{topic} for {{{{ contact.name }}}}",
            "--html",
            str(body),
            "--category",
            "marketing",
            "--topic",
            topic,
            exit_codes=(0, 3),
        )
        return result


@pytest.fixture
async def server(tmp_path: Path, smtp: RecordingSMTPServer) -> AsyncIterator[Server]:
    require_browser()
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_SMTP_URL": smtp.url,
        "GATEWAY_SECRET_KEYS": "browser-test-key-5c1e9a3f7b2d6e0a8c4f",
        "GATEWAY_BASE_URL": origin,
        "GATEWAY_FROM": "Shop <news@first.vn>",
        "GATEWAY_FIRST_PARTY_DOMAINS": "first.vn,127.0.0.1",
    }
    srv = Server(origin, env, tmp_path)
    await srv.cli("init")
    log = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--port",
        str(port),
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 20
            while True:
                assert proc.returncode is None, (tmp_path / "serve.log").read_text()
                try:
                    if (await client.get(f"{origin}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "gateway serve did not answer /healthz"
                await asyncio.sleep(0.1)
        yield srv
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
        print(f"\n--- gateway serve log ---\n{(tmp_path / 'serve.log').read_text()}", end="")


# -- the browser (synchronous: call through asyncio.to_thread) ----------------------------------


@dataclass
class Browser:
    driver: Any
    origin: str
    pages: list[str] = field(default_factory=list)
    all_requests: list[str] = field(default_factory=list)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def check(self, name: str) -> None:
        """No cookie, nothing from another origin, no serious axe-core violation."""
        from selenium.webdriver.common.by import By

        d = self.driver
        assert d.current_url.startswith(self.origin + "/"), d.current_url
        assert d.get_cookies() == [], f"{name}: cookies {d.get_cookies()}"
        assert d.execute_script("return document.cookie") == ""
        # The browser really refuses cookies, so the page is shown working without any.
        assert d.execute_script("document.cookie = 'probe=1; path=/'; return document.cookie") == ""
        # What the page loaded, as the page itself saw it ...
        loaded = d.execute_script(
            "return performance.getEntries()"
            ".filter(e => e.entryType === 'navigation' || e.entryType === 'resource')"
            ".map(e => e.name)"
        )
        assert any(u.endswith("/static/style.css") for u in loaded), (name, loaded)
        foreign = [u for u in loaded if not u.startswith(self.origin + "/")]
        assert not foreign, f"{name}: loaded from another origin: {foreign}"
        # ... and as the network saw it (also requests that failed or were blocked), including
        # every response header: no Set-Cookie, even one the browser would have refused.
        # (The browser's own pages, such as the new tab page it starts with, are not ours.)
        ours: set[str] = set()
        events = [json.loads(e["message"])["message"] for e in d.get_log("performance")]
        for event in events:
            params = event.get("params", {})
            if event["method"] == "Network.requestWillBeSent":
                if not params.get("documentURL", "").startswith(self.origin + "/"):
                    continue
                url = params["request"]["url"]
                ours.add(params["requestId"])
                self.all_requests.append(url)
                assert url.startswith(self.origin + "/"), f"{name}: request to {url}"
        for event in events:
            params = event.get("params", {})
            if params.get("requestId") in ours and event["method"] in (
                "Network.responseReceived",
                "Network.responseReceivedExtraInfo",
            ):
                headers = params.get("headers") or params.get("response", {}).get("headers", {})
                assert "set-cookie" not in {h.lower() for h in headers}, (name, headers)
        assert d.find_element(By.TAG_NAME, "h1").text.strip()
        self.axe(name)
        self.pages.append(name)

    def axe(self, name: str) -> None:
        d = self.driver
        # WebDriver scripts run outside the page's Content-Security-Policy.
        d.execute_script(AXE_JS.read_text(encoding="utf-8"))
        results = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r), e => done({error: String(e)}))"
        )
        assert "error" not in results, results
        violations = results["violations"]
        print(
            f"axe-core {results['testEngine']['version']} on {name}: "
            f"{len(violations)} violations, {len(results['passes'])} rules passed"
        )
        for v in violations:
            targets = [" ".join(map(str, n["target"])) for n in v["nodes"]]
            print(f"axe {name}: [{v['impact']}] {v['id']}: {v['help']} at {targets}")
        bad = [v["id"] for v in violations if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: serious or critical accessibility violations: {bad}"

    def lang(self) -> str:
        return self.driver.find_element("tag name", "html").get_attribute("lang")

    def heading(self) -> str:
        return self.driver.find_element("tag name", "h1").text


def start_browser(
    profile: Path, origin: str, *, cookies: bool = False, only_hosts: tuple[str, ...] = ()
) -> Browser:
    """Debian's Chromium, headless, through a fixed chromedriver. Cookies are blocked unless
    `cookies` (the console's session is one); with `only_hosts`, no other host resolves and
    any other request goes to a dead proxy: nothing leaves the machine."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1024,1400",
        f"--user-data-dir={profile}",
    ]
    if only_hosts:
        args += [
            "--proxy-server=http://127.0.0.1:9",
            f"--proxy-bypass-list={';'.join(only_hosts)}",
            "--host-resolver-rules=MAP * ~NOTFOUND , "
            + " , ".join(f"EXCLUDE {host}" for host in only_hosts),
        ]
    for arg in args:
        options.add_argument(arg)
    if not cookies:
        options.add_experimental_option(
            "prefs",
            {
                "profile.default_content_setting_values.cookies": 2,
                "profile.block_third_party_cookies": True,
            },
        )
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # A fixed driver path: selenium-manager never looks for (or downloads) anything.
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    driver.get_log("performance")  # forget the browser's own start page
    return Browser(driver, origin)


@pytest.fixture
async def browser(tmp_path: Path, server: Server) -> AsyncIterator[Browser]:
    b = await asyncio.to_thread(start_browser, tmp_path / "chromium-profile", server.origin)
    try:
        yield b
    finally:
        await asyncio.to_thread(b.driver.quit)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


# -- the pages, as a person uses them --------------------------------------------------------


def untick_news_and_save(b: Browser, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d = b.driver
    b.open(url)
    assert b.heading() == CATALOG[b.lang()]["preferences_title"]
    b.check("preferences")
    news = d.find_element(By.ID, "topic-news")
    deals = d.find_element(By.ID, "topic-deals")
    assert news.is_selected() and deals.is_selected()
    # Use the label, as a person would (it is tied to the box by for=).
    d.find_element(By.CSS_SELECTOR, "label[for='topic-news']").click()
    assert not news.is_selected()
    form = news.find_element(By.XPATH, "ancestor::form")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    notice = WebDriverWait(d, 10).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".notice[role=status]"))
    )
    assert notice.text == CATALOG[b.lang()]["saved"]
    assert not d.find_element(By.ID, "topic-news").is_selected()
    assert d.find_element(By.ID, "topic-deals").is_selected()
    b.check("preferences (saved)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SCREENSHOT))
    print(f"\nscreenshot of the preference page: {SCREENSHOT}")


def unsubscribe_with_button(b: Browser, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = b.driver
    b.open(url)
    t = CATALOG[b.lang()]
    assert b.heading() == t["unsubscribe_title"]
    b.check("unsubscribe")
    d.find_element(By.XPATH, f"//button[normalize-space()='{t['unsubscribe_button']}']").click()
    WebDriverWait(d, 10).until(lambda _: b.heading() == t["unsubscribed_title"])
    status = d.find_element(By.CSS_SELECTOR, "[role=status]").text
    assert status.startswith(t["unsubscribed_body"].split("%(sender)s")[0])
    assert d.current_url == url  # answered in place: 200, never a redirect (OC-1)
    b.check("unsubscribed")


def manage_and_invalid_link(b: Browser) -> None:
    b.open(f"{b.origin}/manage")
    assert b.heading() == CATALOG[b.lang()]["manage_title"]
    b.check("manage")
    b.open(f"{b.origin}/preferences/not-a-valid-token")
    assert b.heading() == CATALOG[b.lang()]["invalid_title"]
    b.check("invalid link")


def links(raw: bytes) -> tuple[str, str]:
    """The preference link from the HTML part and the https/http URI of List-Unsubscribe."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)]
    preferences = [h for h in hrefs if "/preferences/" in h]
    assert len(set(preferences)) == 1, hrefs
    unsubscribe = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))[0]
    return preferences[0], unsubscribe


def subjects(smtp: RecordingSMTPServer) -> Iterator[str]:
    for m in smtp.messages:
        yield str(email.message_from_bytes(m.data, policy=email.policy.default)["Subject"])


@sqlite_only("the browser checks the pages, not the database; it runs once, in the SQLite run")
async def test_preference_page_and_unsubscribe_in_a_real_browser_without_cookies(
    tmp_path: Path, smtp: RecordingSMTPServer, server: Server, browser: Browser
):
    started = time.monotonic()
    await server.cli("topics", "add", "news", "--name", "News")
    await server.cli("topics", "add", "deals", "--name", "Deals")
    await server.cli(
        "contacts", "add", ADDRESS, "--name", "An", "--subscribe", "news", "--subscribe", "deals"
    )
    body = tmp_path / "body.html"
    body.write_text(
        "<p>Hello {{ contact.name }}, see <a href='https://first.vn/sale'>the sale</a>.</p>"
    )
    for topic in ("news", "deals"):
        assert (await server.send(topic, body))["status"] == "queued"
    await smtp.wait_for(2, timeout=15)  # delivered by the served worker
    assert sorted(subjects(smtp)) == ["[QC] deals for An", "[QC] news for An"]
    news_mail = next(m for m, s in zip(smtp.messages, subjects(smtp), strict=True) if "news" in s)
    assert news_mail.rcpt_tos == [ADDRESS]
    preferences_url, unsubscribe_url = links(news_mail.data)
    for url in (preferences_url, unsubscribe_url):
        assert url.startswith(server.origin + "/"), url

    await asyncio.to_thread(untick_news_and_save, browser, preferences_url)
    assert (await server.send("news", body))["status"] == "suppressed"
    assert (await server.send("deals", body))["status"] == "queued"
    await smtp.wait_for(3, timeout=15)
    assert list(subjects(smtp))[2] == "[QC] deals for An"

    await asyncio.to_thread(unsubscribe_with_button, browser, unsubscribe_url)
    # OC-5: one click stops all promotional mail, deals too.
    assert (await server.send("deals", body))["status"] == "suppressed"

    await asyncio.to_thread(manage_and_invalid_link, browser)
    assert browser.pages == [
        "preferences",
        "preferences (saved)",
        "unsubscribe",
        "unsubscribed",
        "manage",
        "invalid link",
    ]
    assert browser.all_requests, "the network log recorded nothing"
    assert await asyncio.to_thread(browser.driver.get_cookies) == []
    print(f"browser test took {time.monotonic() - started:.1f} s after the server was up")
