"""TP-4: the scan against a real browser. Every request headless Chromium attempts when it opens
a message must go to a host the scan found (or a first-party one): browser ⊆ scan.

Each case is served from a local HTTP server on 127.0.0.1, which is also the browser's proxy:
it answers every proxied request (GET to an absolute URL, CONNECT for https) with an error and
records the host asked for. Chromium maps every host name to 127.0.0.1 as well, so nothing
leaves the machine. The second oracle is Chromium's own network log (DevTools
Network.requestWillBeSent), which also sees requests that never reach a proxy (an IP literal
on the loopback address). JavaScript is off, as in every mail client.

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/test.sh installs them) and the
selenium package. Without them the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pg import sqlite_only
from test_content import EVIL, PLACES, TEMPLATE, TRICKS

from gateway.content import is_first_party, scan

# The scan reads no database: once, in the SQLite run, is enough.
pytestmark = sqlite_only("the scan reads no database; the browser runs once, in the SQLite run")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FP = ("first.vn", "mail.first.vn")
SAMPLES = Path(__file__).parent / "samples"
TEMPLATES = Path(__file__).parent / "corpus" / "templates"

# -- the corpus: hostile markup from the review, every place test_content checks, the host
# tricks as image sources, the realistic template, and what a mail client loads by itself.
HOSTILE = {
    "empty-comment-then-img": "<!--><img src=https://evil.com/a.png><!-- -->",
    "short-comment-then-img": "<!---><img src=https://evil.com/b.png><!-- -->",
    "self-closed-style": '<style/>@import "//evil.com/x.css";</style><p>x</p>',
    "svg-style-img-breakout": "<svg><style><img src=https://evil.com/s.png></style></svg>",
    "math-style-img-breakout": "<math><style><img src=https://evil.com/m.png>",
    "svg-style-css": "<svg><style>p { background: url(https://evil.com/sc.png) }</style></svg>"
    "<p>x</p>",
    "iframe-srcdoc": '<iframe srcdoc="&lt;img src=https://evil.com/f.png&gt;"></iframe>',
    "iframe-srcdoc-nested": "<iframe srcdoc=\"<iframe srcdoc='<img src=https://evil.com/ff.png>'>"
    '</iframe>"></iframe>',
    "iframe-srcdoc-style": "<iframe srcdoc=\"<style>@import 'https://evil.com/fi.css';</style>\">"
    "</iframe>",
    "svg-fill-url": '<svg width="50" height="50"><rect width="50" height="50"'
    ' fill="url(https://evil.com/p.svg#g)"/></svg>',
    "svg-filter-url": '<svg width="50" height="50"><rect width="50" height="50"'
    ' filter="url(https://evil.com/f.svg#f)"/></svg>',
    "svg-clip-mask-marker": '<svg width="50" height="50"><path d="M0 0L50 50"'
    ' clip-path="url(https://clip.evil.com/c.svg#c)" mask="url(https://mask.evil.com/m.svg#m)"'
    ' marker-start="url(https://mark.evil.com/k.svg#k)" stroke="black"/></svg>',
    "svg-stroke-cursor": '<svg width="50" height="50"><rect width="50" height="50"'
    ' stroke="url(https://stroke.evil.com/s.svg#s)"'
    ' cursor="url(https://cursor.evil.com/c.png), auto"/></svg>',
    "svg-use-href": '<svg><use href="https://evil.com/u.svg#i"/></svg>',
    "svg-image-href": '<svg width="9" height="9"><image href="https://evil.com/i.png"'
    ' width="9" height="9"/></svg>',
    "svg-feimage": '<svg width="9" height="9"><filter id="f"><feImage'
    ' href="https://evil.com/fe.png"/></filter><rect width="9" height="9" filter="url(#f)"/></svg>',
    "applet-archive": '<applet code="A.class" archive="https://evil.com/a.jar,https://evil2.com/b.jar"'
    ' width="9" height="9"></applet>',
    "param-value": '<object width="9" height="9"><param name="movie"'
    ' value="https://evil.com/x.swf"><param name="src" value="//plug.evil.com/y"></object>',
    "object-data": '<object data="https://evil.com/o.svg" type="image/svg+xml"></object>',
    "embed-src": '<embed src="https://evil.com/e.svg" type="image/svg+xml">',
    "input-image": '<input type="image" src="https://evil.com/in.png" alt="x">',
    "video-audio-track": '<video src="https://evil.com/v.mp4" poster="https://evil.com/po.png">'
    '<track src="https://evil.com/t.vtt"></video><audio src="https://evil.com/a.mp3"></audio>',
    "body-background": '<body background="https://evil.com/bg.png"><p>x</p></body>',
    "preload-imagesrcset": '<link rel="preload" as="image" href="https://evil.com/pl.png"'
    ' imagesrcset="https://evil.com/pl2.png 2x">',
    "base-relative": '<base href="https://evil.com/"><img src="a.png">',
    "base-protocol-relative": '<base href="//evil.com/"><link rel="stylesheet" href="s.css">',
    "font-face-used": "<style>@font-face { font-family: X; src: url(https://evil.com/f.woff2) }"
    " p { font-family: X }</style><p>x</p>",
    "cursor-css": '<div style="cursor: url(https://evil.com/c.cur), auto; height: 9px">x</div>',
    "image-set-css": '<div style="height:9px;background-image:'
    ' image-set(&quot;https://evil.com/is.png&quot; 1x)">x</div>',
    "noscript-img": "<noscript><img src=https://evil.com/ns.png></noscript>",
    "meta-refresh-now": '<meta http-equiv="refresh" content="0;url=https://evil.com/go">',
    "textarea-then-img": "<textarea></textarea><img src=https://evil.com/ta.png>",
    "title-rcdata": "<title><img src=https://evil.com/no.png></title><img src=//evil.com/t.png>",
    "unquoted-entity-host": "<img src=https://&#x65;vil.com/ent.png>",
    "tabbed-scheme": '<img src="ht&#9;tps://tab.evil.com/x.png">',
    "uppercase-tags": '<IMG SRC="HTTPS://UPPER.EVIL.COM/X.PNG">',
    "duplicate-attribute": '<img src="https://first.vn/a.png" src="https://evil.com/dup.png">',
    "table-foster-img": "<table><img src=https://evil.com/fo.png><tr><td>x</td></tr></table>",
    "select-img": "<select><img src=https://evil.com/sel.png></select>",
    "many-a-attributes": "<a " * 7000 + '><img src="https://evil.com/many.png">',
    "ip-decimal": '<img src="http://2130706433/ip.png">',
    "first-party-only": '<img src="https://mail.first.vn/a.png">'
    '<link rel="stylesheet" href="https://first.vn/s.css">',
}
CORPUS: dict[str, str] = dict(HOSTILE)
CORPUS |= {f"place-{name}": html.format(u=EVIL) for name, (html, _) in PLACES.items()}
CORPUS |= {f"trick-{name}": f'<img src="{url}">' for name, (url, _) in TRICKS.items()}
CORPUS["template"] = TEMPLATE
CORPUS["template-third-party-image"] = TEMPLATE.replace(
    "https://mail.first.vn/img/product.jpg", "https://images.partner-cdn.com/img/product.jpg"
)
# Published templates (tests/corpus) and any HTML sample: whatever they load must be found.
for _path in sorted([*SAMPLES.glob("*.html"), *TEMPLATES.glob("*.html")]):
    CORPUS[f"file-{_path.name}"] = _path.read_text(encoding="utf-8")


def require_browser() -> None:
    """Skip on a developer's machine without the browser; under CI a missing piece fails."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
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


# -- the recording server: serves the cases, and as a proxy records every host asked for -------
@dataclass
class Recorder:
    cases: dict[str, bytes] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> list[str]:
        with self.lock:
            hosts, self.hosts[:] = list(self.hosts), []
        return hosts


class Handler(socketserver.StreamRequestHandler):
    server: Any

    def handle(self) -> None:
        recorder: Recorder = self.server.recorder
        line = self.rfile.readline(65536).decode("latin-1")
        headers = {}
        while True:
            header = self.rfile.readline(65536).decode("latin-1")
            if header in ("\r\n", "\n", ""):
                break
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0]
        if method == "CONNECT" or "://" in target:  # a proxied request: record, refuse
            host = headers.get("host") or target
            with recorder.lock:
                recorder.hosts.append(host)
            self.answer(403 if method == "CONNECT" else 404, b"")
        elif target.startswith("/case/") and target[6:] in recorder.cases:
            self.answer(200, recorder.cases[target[6:]])
        else:
            self.answer(404, b"")

    def answer(self, status: int, body: bytes) -> None:
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        self.wfile.write(head.encode() + body)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    server = Server(("127.0.0.1", 0), Handler)
    server.recorder = rec  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def chromium(recorder: tuple[Recorder, str]) -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="scan-browser-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
        "--host-resolver-rules=MAP * 127.0.0.1",
        f"--proxy-server=http://{recorder[1]}",
        "--window-size=800,1200",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    # No mail client runs scripts; with JavaScript off, <noscript> is markup as in the scan.
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))  # selenium-manager never downloads
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def host_of(url: str) -> str | None:
    """The host of a URL as Chromium logged it (None for data:, about:, blob:, ...)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return None
    host = parts.hostname.lower().removesuffix(".")  # "evil.com." is evil.com
    return f"[{host}]" if ":" in host else host


def browser_own(host: str) -> bool:
    """Chromium's own calls home, which reach the proxy whatever page is shown."""
    return host.endswith((".google.com", ".googleapis.com", ".gstatic.com"))


def open_case(driver: Any, rec: Recorder, origin: str, name: str) -> set[str]:
    """Every host Chromium tried to reach while it showed the case (its own page aside)."""
    driver.get(f"http://{origin}/case/{name}")
    quiet_since, seen, deadline = time.monotonic(), 0, time.monotonic() + 3
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:  # until nothing new happens for 0.12 s
        events += [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        now = len(events) + len(rec.hosts)
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > 0.12:
            break
        time.sleep(0.03)
    driver.get("about:blank")  # stop a late refresh from landing in the next case
    events += [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    hosts = set()
    for event in events:
        if event["method"] == "Network.requestWillBeSent":
            url = event["params"]["request"]["url"]
            if not url.startswith(f"http://{origin}/"):
                hosts.add(host_of(url))
    hosts |= {
        host_of(f"http://{h}") for h in rec.take() if not browser_own(host_of(f"http://{h}") or "")
    }
    hosts.discard(None)
    return hosts  # type: ignore[return-value]


def test_tp4_every_request_chromium_attempts_is_a_finding_of_the_scan(chromium, recorder):
    rec, origin = recorder
    rec.cases = {name: html.encode() for name, html in CORPUS.items()}
    open_case(chromium, rec, origin, "first-party-only")  # warm up; forget the browser's own
    assert len(CORPUS) >= 40
    misses, loaded = {}, 0
    started = time.monotonic()
    for name, html in CORPUS.items():
        requested = open_case(chromium, rec, origin, name)
        third_party = {h for h in requested if not is_first_party(h, FP)}
        found = {f.host for f in scan(html, None, FP)}
        loaded += bool(third_party)
        if third_party - found:
            misses[name] = sorted(third_party - found)
    print(
        f"\n{len(CORPUS)} cases in Chromium in {time.monotonic() - started:.1f} s;"
        f" {loaded} made third-party requests, every one found by the scan"
        if not misses
        else f"\n{len(CORPUS)} cases; requests the scan missed: {misses}"
    )
    assert misses == {}
    # The oracle is live: most hostile cases really make the browser reach out.
    assert loaded >= 30
