"""The pages recipients reach: one-click (OC-*), refusal (ST-*), preferences and their data (PD-*).

In-process HTTP through httpx.ASGITransport against a real SQLite file and a real SMTP server:
what a test asserts is what the database holds and what the SMTP server received.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from itsdangerous.timed import TimestampSigner
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.catalog import local_time
from gateway.errors import InvalidInput
from gateway.store import Contact
from gateway.store import schema as t
from gateway.tokens import MAX_AGE
from gateway.web.app import create_app

BASE = "https://mail.first.vn"
POLICY = "2025.07-b"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
HTML = "<p>Ưu đãi tháng 12 cho {{ contact.name }} tại <a href='https://first.vn/sale'>cửa hàng</a>.</p>"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
FORM_TYPE = {"content-type": "application/x-www-form-urlencoded"}


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
async def gw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_POLICY_VERSION"] = POLICY
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        await gateway.add_topic("deals", "Khuyến mãi")
        yield gateway


def client_for(app: Any, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE, follow_redirects=False)


@pytest.fixture
def app(gw: Gateway) -> Any:
    return create_app(gw, worker=False)


@pytest.fixture
async def web(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


async def person(
    gw: Gateway,
    addr: str = "an@example.vn",
    *,
    name: str = "Nguyễn Văn An",
    topics: tuple[str, ...] = ("news",),
    language: str = "vi",
    **kw: Any,
) -> Contact:
    contact, _, _ = await gw.add_contact(
        addr, name=name, subscribe=list(topics), language=language, **kw
    )
    return contact


async def link(gw: Gateway, kind: str, contact: Contact, topic: str = "news") -> str:
    """The path of a link exactly as the mail carries it (base URL removed)."""
    if kind in ("unsubscribe", "preferences"):
        url = gw.renderer.links(contact, await gw.accepter.topic(topic))[f"{kind}_url"]
    else:
        url = gw.preferences.link(kind, contact)
    assert url.startswith(BASE + "/")
    return url[len(BASE) :]


async def rows(gw: Gateway, table: Any, **where: Any) -> list[dict[str, Any]]:
    found = await gw.store.db.fetch_all(table.select().order_by(*table.primary_key.columns))
    return [dict(r._mapping) for r in found if all(r._mapping[k] == v for k, v in where.items())]


async def snapshot(gw: Gateway) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: equal snapshots mean nothing changed for anyone."""
    return {
        table.name: [tuple(r.values()) for r in await rows(gw, table)]
        for table in t.metadata.sorted_tables
    }


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def text_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def deliver(gw: Gateway, smtp: RecordingSMTPServer) -> list[email.message.EmailMessage]:
    """Run the worker until idle; every message the SMTP server has received so far."""
    await gw.deliver(until_idle=True)
    return [parse(m.data) for m in smtp.messages]


def to(
    messages: list[email.message.EmailMessage], address: str
) -> list[email.message.EmailMessage]:
    return [m for m in messages if m["To"].addresses[0].addr_spec == address]


def first_link(msg: email.message.EmailMessage, path: str) -> str:
    match = re.search(re.escape(BASE) + re.escape(path) + r"[A-Za-z0-9_.\-/]+", text_of(msg))
    assert match, text_of(msg)
    return match.group(0)[len(BASE) :]


async def marketing(gw: Gateway, address: str = "an@example.vn", topic: str = "news"):
    return await gw.send(address, "Tin mới", HTML, category="marketing", topic=topic)


class Page(HTMLParser):
    """What a browser without JavaScript sees: forms and their fields, every URL attribute."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self._select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.attributes.update(a)
        self.urls += [a[k] for k in ("href", "src", "action", "srcset", "poster") if k in a]
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get")})
            self.forms[-1]["fields"] = []
        elif not self.forms:
            return
        elif tag == "input":
            self.forms[-1]["fields"].append(a)
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select:
            self.forms[-1]["fields"].append(
                {"type": "option", "name": self._select, "value": a["value"], **a}
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None

    def form(self, action_suffix: str = "") -> dict[str, Any]:
        found = [f for f in self.forms if f["action"].endswith(action_suffix)]
        assert found, self.forms
        return found[0]

    def checkboxes(self, name: str) -> dict[str, bool]:
        return {
            f["value"]: "checked" in f
            for form in self.forms
            for f in form["fields"]
            if f.get("type") == "checkbox" and f.get("name") == name
        }


def fill(
    form: dict[str, Any],
    *,
    check: set[str] = frozenset(),  # type: ignore[assignment]
    uncheck: set[str] = frozenset(),  # type: ignore[assignment]
    select: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The body a browser submits: hidden and text inputs, ticked boxes, selected options.
    `check`/`uncheck` hold checkbox values (or names for boxes without a topic value)."""
    data: list[tuple[str, str]] = []
    for f in form["fields"]:
        kind, name, value = f.get("type", "text"), f.get("name"), f.get("value", "")
        if not name:
            continue
        if kind == "checkbox":
            key = value if name == "topic" else name
            ticked = ("checked" in f or key in check) and key not in uncheck
            if ticked:
                data.append((name, value or "on"))
        elif kind == "option":
            chosen = (select or {}).get(name)
            if (chosen == value) or (chosen is None and "selected" in f):
                data.append((name, value))
        else:
            data.append((name, value))
    return data


async def submit(
    web: httpx.AsyncClient, path: str, **changes: Any
) -> tuple[httpx.Response, httpx.Response]:
    """GET a page, fill its first matching form as a person would, POST it."""
    page = await web.get(path)
    assert page.status_code == 200, page.text
    form = Page(page.text).form(changes.pop("action_suffix", ""))
    assert form["method"] == "post"
    answer = await web.post(
        form["action"],
        content=urlencode(fill(form, **changes)),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    return page, answer


def assert_invalid_link_page(response: httpx.Response, language: str = "vi") -> None:
    assert 400 <= response.status_code < 500, response.status_code
    assert response.headers["content-type"].startswith("text/html")
    title = {"vi": "Liên kết không hợp lệ", "en": "This link is not valid"}[language]
    assert f"<h1>{title}</h1>" in response.text
    assert f'lang="{language}"' in response.text
    assert any(u.startswith("/manage") for u in Page(response.text).urls), response.text


# -- OC-1: one-click unsubscribe, both encodings and the confirm form -------------------------


async def test_oc1_one_click_urlencoded_unsubscribes(gw: Gateway, web: httpx.AsyncClient):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    response = await web.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert "Bạn đã từ chối nhận thư quảng cáo" in response.text
    [row] = await rows(gw, t.suppressions)
    assert (row["email"], row["scope"], row["reason"]) == (
        "an@example.vn",
        "marketing",
        "unsubscribe",
    )
    assert (await marketing(gw)).status == "suppressed"


async def test_oc1_one_click_multipart_unsubscribes(gw: Gateway, web: httpx.AsyncClient):
    contact = await person(gw)
    response = await web.post(
        await link(gw, "unsubscribe", contact), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert response.status_code == 200
    assert len(await rows(gw, t.suppressions, scope="marketing", reason="unsubscribe")) == 1


async def test_oc1_one_click_needs_no_cookie_login_or_origin_and_never_redirects(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    response = await web.post(
        await link(gw, "unsubscribe", contact),
        data=ONE_CLICK,
        headers={"origin": "https://mail.google.com", "user-agent": "GoogleOneClick/1.0"},
    )
    assert response.status_code == 200  # not 3xx: follow_redirects is off
    assert not response.is_redirect and "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert await rows(gw, t.suppressions, reason="unsubscribe")


async def test_oc1_the_confirm_page_button_unsubscribes_without_javascript(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    page, answer = await submit(web, path)
    form = Page(page.text).form()
    assert form["action"] == path
    assert {"type": "hidden", "name": "List-Unsubscribe", "value": "One-Click"} in form["fields"]
    assert "<script" not in page.text
    assert answer.status_code == 200
    assert len(await rows(gw, t.suppressions, reason="unsubscribe")) == 1


async def test_oc1_a_post_without_the_one_click_field_is_400_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    before = await snapshot(gw)
    for body in ({}, {"List-Unsubscribe": "yes"}, {"list-unsubscribe": "One-Click"}):
        response = await web.post(path, data=body)
        assert response.status_code == 400, body
        assert "set-cookie" not in response.headers
    assert await snapshot(gw) == before


# -- OC-2: idempotent -------------------------------------------------------------------------


async def test_oc2_second_one_click_answers_200_and_changes_nothing_more(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    first = await web.post(path, data=ONE_CLICK)
    after_first = await snapshot(gw)
    second = await web.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert (first.status_code, second.status_code) == (200, 200)
    assert await snapshot(gw) == after_first
    assert "Yêu cầu này đã được ghi nhận từ trước" in second.text
    assert "Yêu cầu này đã được ghi nhận từ trước" not in first.text
    assert len(await rows(gw, t.suppressions)) == 1
    assert len(await rows(gw, t.consent_ledger, action="opt_out")) == 1
    assert len(to(await deliver(gw, smtp), "an@example.vn")) == 1  # ST-2: one confirmation


async def test_oc2_simultaneous_one_clicks_record_one_refusal_and_one_confirmation(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Mail providers retry: the same POST may arrive twice at once."""
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    answers = await asyncio.gather(*(web.post(path, data=ONE_CLICK) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert len(await rows(gw, t.suppressions)) == 1
    assert len(await deliver(gw, smtp)) == 1


# -- OC-3: GET changes nothing -----------------------------------------------------------------


async def test_oc3_get_shows_a_button_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    before = await snapshot(gw)
    for _ in range(3):  # a link scanner, a preview, a person looking
        page = await web.get(path)
        assert page.status_code == 200
        assert "<button" in page.text and "Ngừng nhận mọi thư quảng cáo" in page.text
        head = await web.head(path)
        assert head.status_code == 200
    assert await snapshot(gw) == before
    assert await rows(gw, t.suppressions) == []
    assert await deliver(gw, smtp) == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_oc3_a_prefetch_of_any_link_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, method: str
):
    """Scanners fetch every link in a mail, some with HEAD: not one of them may act."""
    contact = await person(gw, topics=("news", "deals"))
    paths = await token_paths(gw, contact)
    before = await snapshot(gw)
    for name, path in paths.items():
        response = await web.request(method, path)
        expected = 405 if name.endswith("request") else 200
        assert response.status_code == expected, (name, response.status_code)
    assert await snapshot(gw) == before
    assert await deliver(gw, smtp) == []
    assert await gw.store.get_contact("an@example.vn") is not None


async def test_oc4_pages_never_reveal_the_address(gw: Gateway, web: httpx.AsyncClient):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    assert "an@example.vn" not in path and "example" not in path
    for response in (
        await web.get(path),
        await web.post(path, data=ONE_CLICK),
        await web.get(await link(gw, "preferences", contact)),
    ):
        assert "an@example.vn" not in response.text


async def test_oc4_unsubscribe_links_keep_working_for_years(
    gw: Gateway, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    later = int(time.time()) + 10 * 365 * 86400
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    assert (await web.post(path, data=ONE_CLICK)).status_code == 200
    assert len(await rows(gw, t.suppressions)) == 1


async def test_oc4_every_single_changed_character_is_refused_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    token = path.rsplit("/", 1)[1]
    before = await snapshot(gw)
    for i, char in enumerate(token):
        for other in {"A", "b", "-", "_", "0"} - {char}:
            forged = token[:i] + other + token[i + 1 :]
            response = await web.post(f"/unsubscribe/{forged}", data=ONE_CLICK)
            assert 400 <= response.status_code < 500, (i, other)
    assert await snapshot(gw) == before


# -- OC-5, ST-1: one click stops all promotional mail, including mail already queued -----------


async def test_oc5_one_click_from_one_topic_stops_every_topic_but_not_service_mail(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw, topics=("news", "deals"))
    await web.post(await link(gw, "unsubscribe", contact, topic="news"), data=ONE_CLICK)
    assert (await marketing(gw, topic="news")).status == "suppressed"
    assert (await marketing(gw, topic="deals")).status == "suppressed"
    receipt = await gw.send("an@example.vn", "Hóa đơn #42", text="Cảm ơn bạn.")
    assert receipt.status == "queued"


async def test_st1_marketing_queued_before_one_click_is_never_delivered(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """THE promise: once the one-click POST has returned, no promotional message reaches the
    person, including those accepted earlier and still in the outbox; the ST-2 confirmation
    does arrive."""
    await person(gw, topics=("news", "deals"))
    await person(gw, "binh@example.vn", name="Bình", topics=("news",))
    assert (await marketing(gw)).queued
    delivered = await deliver(gw, smtp)
    assert len(delivered) == 1
    # the link a real mail client would POST to, straight from the List-Unsubscribe header
    header = str(delivered[0]["List-Unsubscribe"])
    url = re.findall(r"<([^>]+)>", header)[0]
    queued = [await marketing(gw, topic="news"), await marketing(gw, topic="deals")]
    other = await marketing(gw, "binh@example.vn")
    assert all(r.queued for r in queued) and other.queued

    response = await web.post(url[len(BASE) :], data=ONE_CLICK)
    assert response.status_code == 200

    messages = (await deliver(gw, smtp))[1:]
    mine = to(messages, "an@example.vn")
    assert [m["Subject"] for m in mine] == ["Xác nhận: bạn đã từ chối nhận thư quảng cáo"], (
        "only the ST-2 confirmation may reach the person after the refusal"
    )
    assert mine[0]["List-Unsubscribe"] is None
    assert [m["Message-ID"] for m in to(messages, "binh@example.vn")] == [other.message_id]
    for result in queued:
        status = await gw.message_status(result.message_id)  # type: ignore[arg-type]
        assert status["state"] == "suppressed"


@pytest.mark.parametrize("language", ["vi", "en"])
async def test_st2_one_confirmation_says_when_the_refusal_was_received(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, language: str
):
    contact = await person(gw, name="Trần Thị Lan", language=language)
    started = time.time()
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    [refusal] = await rows(gw, t.suppressions, reason="unsubscribe")
    assert started <= refusal["created_at"] <= time.time()
    [msg] = await deliver(gw, smtp)
    assert msg["To"].addresses[0].addr_spec == "an@example.vn"
    subject = {
        "vi": "Xác nhận: bạn đã từ chối nhận thư quảng cáo",
        "en": "Confirmation: you will receive no more promotional email",
    }[language]
    assert msg["Subject"] == subject
    assert "[QC]" not in msg["Subject"]  # AD-5
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert msg[name] is None, name
    [row] = await rows(gw, t.outbox, message_id=msg["Message-ID"])
    assert row["category"] == "transactional"
    text = text_of(msg)
    assert local_time(refusal["created_at"], language) in text  # when it was received
    stopped = {
        "vi": "đã ngừng gửi mọi thư quảng cáo",
        "en": "stopped sending any promotional email",
    }[language]
    assert stopped in text
    assert "Trần Thị Lan" in text
    assert "Công ty TNHH An" in text
    # a second refusal by another way (the preference page) sends nothing more
    await submit(web, await link(gw, "preferences", contact), check={"stop_all"})
    assert len(await deliver(gw, smtp)) == 1


# -- bad tokens: tampered, wrong purpose, expired, unknown -----------------------------------

ROUTES = [
    ("GET", "/unsubscribe/{}", "unsubscribe"),
    ("POST", "/unsubscribe/{}", "unsubscribe"),
    ("GET", "/preferences/{}", "preferences"),
    ("POST", "/preferences/{}", "preferences"),
    ("POST", "/preferences/{}/export", "preferences"),
    ("POST", "/preferences/{}/erase", "preferences"),
    ("GET", "/confirm/export/{}", "export"),
    ("POST", "/confirm/export/{}", "export"),
    ("GET", "/confirm/erase/{}", "erase"),
    ("POST", "/confirm/erase/{}", "erase"),
]
BODY = {
    "unsubscribe": ONE_CLICK,
    "preferences": {"form": "preferences", "stop_all": "1", "language": "en"},
}


def payload(purpose: str, uid: str) -> Any:
    return [uid, "news"] if purpose == "unsubscribe" else uid


async def call(web: httpx.AsyncClient, method: str, path: str, purpose: str, **kw: Any):
    if method == "GET":
        return await web.get(path, **kw)
    return await web.post(path, data=BODY.get(purpose, {}), **kw)


@pytest.fixture
async def bystander(gw: Gateway) -> Contact:
    """Someone else whose data must not change whatever a bad link does."""
    return await person(gw, "binh@example.vn", name="Bình", topics=("news", "deals"))


@pytest.mark.parametrize(("method", "route", "purpose"), ROUTES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
async def test_oc4_a_tampered_token_is_a_4xx_page_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, bystander: Contact, method, route, purpose, where
):
    contact = await person(gw)
    token = gw.signer.sign(purpose, payload(purpose, contact.uid))
    i = {"first": 0, "middle": len(token) // 2, "last": len(token) - 1}[where]
    if token[i] == ".":
        i += 1
    forged = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    before = await snapshot(gw)
    response = await call(web, method, route.format(forged), purpose)
    assert_invalid_link_page(response)
    assert await snapshot(gw) == before


@pytest.mark.parametrize(("method", "route", "purpose"), ROUTES)
async def test_oc4_a_token_of_another_purpose_is_refused_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, bystander: Contact, method, route, purpose
):
    contact = await person(gw)
    before = await snapshot(gw)
    for other in set(MAX_AGE) - {purpose}:
        token = gw.signer.sign(other, payload(purpose, contact.uid))
        assert_invalid_link_page(await call(web, method, route.format(token), purpose))
        token = gw.signer.sign(other, payload(other, contact.uid))
        assert_invalid_link_page(await call(web, method, route.format(token), purpose))
    assert await snapshot(gw) == before


@pytest.mark.parametrize(
    ("method", "route", "purpose"), [r for r in ROUTES if MAX_AGE[r[2]] is not None]
)
async def test_an_expired_token_is_refused_and_changes_nothing(
    gw: Gateway,
    web: httpx.AsyncClient,
    bystander: Contact,
    monkeypatch: pytest.MonkeyPatch,
    method,
    route,
    purpose,
):
    contact = await person(gw)
    path = route.format(gw.signer.sign(purpose, payload(purpose, contact.uid)))
    max_age = MAX_AGE[purpose]
    assert max_age is not None
    before = await snapshot(gw)
    now = int(time.time())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now + max_age + 5)
    response = await call(web, method, path, purpose, headers={"accept-language": "en-GB,en"})
    assert_invalid_link_page(response, "en")
    assert "not valid or has expired" in response.text
    assert await snapshot(gw) == before


async def test_export_and_erase_links_work_within_their_hour(
    gw: Gateway, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    contact = await person(gw)
    path = await link(gw, "export", contact)
    now = int(time.time())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now + 3600 - 60)
    assert (await web.get(path)).status_code == 200
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now + 3600 + 60)
    assert_invalid_link_page(await web.get(path))


@pytest.mark.parametrize(("method", "route", "purpose"), ROUTES)
async def test_a_token_naming_nobody_or_an_erased_person_is_a_4xx_page(
    gw: Gateway, web: httpx.AsyncClient, bystander: Contact, method, route, purpose
):
    ghost = gw.signer.sign(purpose, payload(purpose, "no-such-uid"))
    wrong_type = gw.signer.sign(purpose, {"uid": bystander.uid})
    contact = await person(gw)
    erased = gw.signer.sign(purpose, payload(purpose, contact.uid))
    await gw.erase_contact("an@example.vn")
    before = await snapshot(gw)
    for token in (ghost, wrong_type, erased, "x", "x.y.z", "%00", "é"):
        response = await call(web, method, route.format(token), purpose)
        assert_invalid_link_page(response)
    assert await snapshot(gw) == before


async def test_the_invalid_link_page_speaks_the_persons_language(
    gw: Gateway, web: httpx.AsyncClient
):
    assert_invalid_link_page(await web.get("/preferences/bad"), "vi")
    assert_invalid_link_page(
        await web.get("/preferences/bad", headers={"accept-language": "en-US,en;q=0.9"}), "en"
    )
    response = await web.get("/unsubscribe/bad?lang=en")
    assert_invalid_link_page(response, "en")
    assert "/manage?lang=en" in Page(response.text).urls


async def test_confirm_links_only_exist_for_export_and_erase(gw: Gateway, web: httpx.AsyncClient):
    contact = await person(gw)
    before = await snapshot(gw)
    for purpose in ("unsubscribe", "preferences"):
        token = gw.signer.sign(purpose, payload(purpose, contact.uid))
        assert (await web.post(f"/confirm/{purpose}/{token}", data=ONE_CLICK)).status_code == 404
        assert (await web.post(f"/preferences/{token}/{purpose}")).status_code in (404, 400)
    assert await snapshot(gw) == before


# -- oversized and malformed bodies ---------------------------------------------------------


async def token_paths(gw: Gateway, contact: Contact) -> dict[str, str]:
    return {
        "unsubscribe": await link(gw, "unsubscribe", contact),
        "preferences": await link(gw, "preferences", contact),
        "export request": await link(gw, "preferences", contact) + "/export",
        "erase request": await link(gw, "preferences", contact) + "/erase",
        "export": await link(gw, "export", contact),
        "erase": await link(gw, "erase", contact),
        "manage": "/manage",
    }


def purpose_of(name: str) -> str:
    return {"unsubscribe": "unsubscribe", "preferences": "preferences"}.get(name, "")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_form_is_413_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, chunked: bool
):
    contact = await person(gw)
    before = await snapshot(gw)
    for name, path in (await token_paths(gw, contact)).items():
        fields = {**BODY.get(purpose_of(name), {}), "email": "an@example.vn"}
        body = str(httpx.QueryParams({**fields, "pad": "x" * (17 * 1024)})).encode()
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if chunked:

            async def stream(data: bytes = body) -> AsyncIterator[bytes]:
                for i in range(0, len(data), 1024):
                    yield data[i : i + 1024]

            response = await web.post(path, content=stream(), headers=headers)
            assert "content-length" not in response.request.headers
        else:
            response = await web.post(path, content=body, headers=headers)
        assert response.status_code == 413, (name, response.text)
        assert "16384" in response.text
        assert "Không có gì thay đổi." in response.text
    assert await snapshot(gw) == before


MALFORMED = {
    "multipart without a boundary": (b"List-Unsubscribe=One-Click", "multipart/form-data"),
    "multipart garbage": (b"garbage\r\n", "multipart/form-data; boundary=abc"),
    "multipart cut short": (
        b'--abc\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click',
        "multipart/form-data; boundary=abc",
    ),
    "multipart part without a name": (
        b"--abc\r\nX-Nothing: y\r\n\r\nOne-Click\r\n--abc--\r\n",
        "multipart/form-data; boundary=abc",
    ),
    "multipart with a file": (
        b'--abc\r\nContent-Disposition: form-data; name="List-Unsubscribe"; filename="a.txt"\r\n\r\n'
        b"One-Click\r\n--abc--\r\n",
        "multipart/form-data; boundary=abc",
    ),
    "too many fields": (b"&".join([b"topic=news"] * 500), "application/x-www-form-urlencoded"),
    "json instead of a form": (b'{"List-Unsubscribe": "One-Click"}', "application/json"),
    "plain text": (b"List-Unsubscribe=One-Click", "text/plain"),
}


@pytest.mark.parametrize("kind", MALFORMED)
async def test_a_malformed_form_is_4xx_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, kind: str
):
    contact = await person(gw, topics=("news", "deals"))
    body, content_type = MALFORMED[kind]
    before = await snapshot(gw)
    for name, path in (await token_paths(gw, contact)).items():
        if name in ("export", "erase", "export request", "erase request") and not body:
            continue
        response = await web.post(path, content=body, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert "Traceback" not in response.text
    assert await snapshot(gw) == before
    assert await deliver(gw, smtp) == []


async def test_a_bad_content_length_is_400(gw: Gateway, web: httpx.AsyncClient):
    contact = await person(gw)
    path = await link(gw, "unsubscribe", contact)
    before = await snapshot(gw)
    request = web.build_request(
        "POST",
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    request.headers["content-length"] = "many"
    response = await web.send(request)
    assert response.status_code == 400
    assert await snapshot(gw) == before


# -- isolation: a token for A never reads or changes B ---------------------------------------


async def test_a_token_for_a_never_reads_or_changes_b(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    a = await person(gw, topics=("news",))
    b = await person(
        gw, "binh@example.vn", name="Lê Bình", topics=("news", "deals"), attributes={"city": "Huế"}
    )
    assert (await marketing(gw, "binh@example.vn")).queued
    await deliver(gw, smtp)

    async def b_state() -> dict[str, list[dict[str, Any]]]:
        return {
            table.name: [
                r
                for r in await rows(gw, table)
                if r.get("contact_id") == b.id
                or r.get("email") == "binh@example.vn"
                or (table is t.contacts and r["id"] == b.id)
            ]
            for table in t.metadata.sorted_tables
        }

    b_before = await b_state()
    prefs = await link(gw, "preferences", a)
    page = await web.get(prefs)
    assert "Lê Bình" not in page.text and "binh@" not in page.text
    # a hand-made form naming B changes A only
    await web.post(
        prefs,
        data={
            "form": "preferences",
            "email": "binh@example.vn",
            "uid": b.uid,
            "topic": "deals",
            "stop_all": "1",
            "language": "en",
        },
    )
    await web.post(await link(gw, "unsubscribe", a), data={**ONE_CLICK, "email": "binh@example.vn"})
    await web.post(prefs + "/export")
    export = await web.post(await link(gw, "export", a))
    assert export.status_code == 200
    assert "binh" not in export.text and "Lê Bình" not in export.text and "Huế" not in export.text
    assert await b_state() == b_before
    assert (await marketing(gw, "binh@example.vn", topic="deals")).queued

    await web.post(await link(gw, "erase", a), data={"email": "binh@example.vn"})
    assert await gw.store.get_contact("an@example.vn") is None
    assert await gw.store.get_contact("binh@example.vn") is not None
    assert len(await rows(gw, t.message_log, email="binh@example.vn")) >= 2
    assert (await web.get(await link(gw, "preferences", b))).status_code == 200


# -- every page: no cookie, strict CSP, own origin only, plain forms -------------------------


async def test_every_page_has_a_strict_csp_sets_no_cookie_and_loads_nothing_from_elsewhere(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    paths = await token_paths(gw, contact)
    requests = [
        ("GET", "/healthz", None),
        ("GET", "/manage", None),
        ("GET", "/manage?lang=en", None),
        ("POST", "/manage", {"email": "an@example.vn"}),
        ("POST", "/manage", {"email": "not an address"}),
        ("GET", paths["unsubscribe"], None),
        ("GET", paths["preferences"], None),
        ("GET", paths["preferences"] + "?lang=en", None),
        ("POST", paths["preferences"], {"form": "preferences", "topic": "news", "language": "vi"}),
        ("POST", paths["export request"], {}),
        ("POST", paths["erase request"], {}),
        ("GET", paths["export"], None),
        ("POST", paths["export"], {}),
        ("GET", paths["erase"], None),
        ("GET", "/static/style.css", None),
        ("GET", "/no/such/page", None),
        ("DELETE", paths["preferences"], None),
        ("GET", "/unsubscribe/not-a-token", None),
        ("POST", paths["unsubscribe"], {"List-Unsubscribe": "wrong"}),
        ("POST", paths["unsubscribe"], ONE_CLICK),
        ("POST", paths["erase"], {}),
    ]
    for method, path, data in requests:
        response = await web.request(method, path, data=data)
        what = (method, path, response.status_code)
        assert response.status_code < 500, what
        assert not response.is_redirect, what
        assert "set-cookie" not in response.headers, what
        assert response.headers["content-security-policy"] == CSP, what
        assert response.headers["referrer-policy"] == "no-referrer", what
        assert response.headers["x-content-type-options"] == "nosniff", what
        if response.headers["content-type"].startswith("text/html"):
            page = Page(response.text)
            assert "script" not in page.tags and "iframe" not in page.tags, what
            assert not [a for a in page.attributes if a.startswith("on")], what
            for url in page.urls:
                assert (
                    url.startswith("/") and not url.startswith("//") or url.startswith(BASE + "/")
                ), (what, url)
            for form in page.forms:
                assert form["method"] == "post", what


async def test_names_are_escaped_on_every_page(env: dict[str, str], smtp: RecordingSMTPServer):
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_SENDER_NAME"] = 'An & <b onmouseover="x()">Co</b>'
    async with Gateway.from_env(env) as gw, client_for(create_app(gw, worker=False)) as web:
        await gw.add_topic("news", "Tin tức")
        await gw.add_topic("evil", '<img src="https://evil.com/x.png">Tin "hot"')
        contact = await person(gw, name="<script>alert(1)</script>", topics=("evil",))
        paths = await token_paths(gw, contact)
        pages = [
            await web.get(paths["unsubscribe"]),
            await web.get(paths["preferences"]),
            await web.get(paths["export"]),
            await web.get("/manage"),
            await web.post(paths["unsubscribe"], data=ONE_CLICK),
            await web.post("/manage", data={"email": "<b>@x"}),
        ]
        for response in pages:
            assert "<b>" not in response.text and "<b " not in response.text, response.text
            assert "<img" not in response.text
            assert "<script>" not in response.text
            assert "evil.com" not in Page(response.text).urls
        assert "&lt;img src=&#34;https://evil.com/x.png&#34;&gt;Tin &#34;hot&#34;" in pages[1].text
        assert "An &amp; &lt;b onmouseover=&#34;x()&#34;&gt;Co&lt;/b&gt;" in pages[0].text


async def test_healthz_answers_json(gw: Gateway, web: httpx.AsyncClient):
    response = await web.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


# -- the preference page ---------------------------------------------------------------------


async def test_pd1_preference_page_shows_topics_as_checkboxes_language_and_history(
    gw: Gateway, web: httpx.AsyncClient
):
    await gw.add_topic("events", "Sự kiện", double_opt_in=True)
    contact = await person(gw, topics=("news", "events"), source="form")
    path = await link(gw, "preferences", contact)
    response = await web.get(path)
    assert response.status_code == 200
    page = Page(response.text)
    assert page.checkboxes("topic") == {"news": True, "deals": False, "events": False}
    assert page.checkboxes("stop_all") == {"1": False}
    assert "Sự kiện (đang chờ xác nhận)" in response.text
    language = [f for f in page.form()["fields"] if f.get("name") == "language"]
    assert [(o["value"], "selected" in o) for o in language] == [("vi", True), ("en", False)]
    # PD-1: the consent history, with its source and the policy version
    history = response.text[response.text.index("Lịch sử đồng ý của bạn") :]
    rows_ = re.findall(
        r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", history
    )
    assert [(r[1], r[2], r[3], r[4]) for r in rows_] == [
        ("Tin tức", "đồng ý nhận", "biểu mẫu đăng ký", POLICY),
        ("Sự kiện", "đồng ý nhận", "biểu mẫu đăng ký", POLICY),
    ]
    assert "giờ Việt Nam" in rows_[0][0]
    assert f"Phiên bản chính sách bảo mật hiện hành: {POLICY}" in response.text
    # links to export and erase: forms that POST to the page's own sub-paths
    actions = [f["action"] for f in page.forms]
    assert path + "/export" in actions and path + "/erase" in actions


async def test_pd1_ticking_a_topic_records_an_opt_in_with_source_and_policy_version(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    before = time.time()
    _, answer = await submit(web, await link(gw, "preferences", contact), check={"deals"})
    assert answer.status_code == 200
    assert "Đã lưu lựa chọn của bạn." in answer.text
    assert Page(answer.text).checkboxes("topic") == {"news": True, "deals": True}
    deals = await gw.accepter.topic("deals")
    [entry] = await rows(gw, t.consent_ledger, topic_id=deals.id)
    assert (entry["action"], entry["source"], entry["policy_version"]) == (
        "opt_in",
        "preferences",
        POLICY,
    )
    assert entry["created_at"] >= before
    assert entry["subject"] == gw.signer.address_hash("an@example.vn")
    assert entry["ip"] == "127.0.0.1"
    assert (await marketing(gw, topic="deals")).queued
    # the history on the answer shows it
    assert "preferences" in answer.text and answer.text.count(POLICY) >= 2


async def test_unticking_a_topic_stops_it_at_accept_and_at_dispatch(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, topics=("news", "deals"))
    queued_news = await marketing(gw, topic="news")
    queued_deals = await marketing(gw, topic="deals")
    _, answer = await submit(web, await link(gw, "preferences", contact), uncheck={"news"})
    assert answer.status_code == 200
    assert Page(answer.text).checkboxes("topic") == {"news": False, "deals": True}
    news = await gw.accepter.topic("news")
    [entry] = await rows(gw, t.consent_ledger, topic_id=news.id, action="opt_out")
    assert (entry["source"], entry["policy_version"]) == ("preferences", POLICY)
    later = await marketing(gw, topic="news")
    assert later.status == "suppressed"  # at accept
    delivered = await deliver(gw, smtp)
    assert [m["Message-ID"] for m in delivered] == [queued_deals.message_id]
    assert (await gw.message_status(queued_news.message_id))["state"] == "suppressed"  # type: ignore[arg-type]
    assert await rows(gw, t.suppressions) == []  # a topic choice, not a refusal of everything


async def test_stop_all_on_the_preference_page_is_a_refusal_with_one_confirmation(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, topics=("news", "deals"))
    queued = await marketing(gw, topic="deals")
    path = await link(gw, "preferences", contact)
    _, answer = await submit(web, path, check={"stop_all"})
    assert answer.status_code == 200
    assert Page(answer.text).checkboxes("stop_all") == {"1": True}
    [row] = await rows(gw, t.suppressions)
    assert (row["scope"], row["source"]) == ("marketing", "preferences")
    await submit(web, path)  # saving again with the box still ticked changes nothing
    assert len(await rows(gw, t.suppressions)) == 1
    messages = await deliver(gw, smtp)
    assert [m["Subject"] for m in messages] == ["Xác nhận: bạn đã từ chối nhận thư quảng cáo"]
    assert (await gw.message_status(queued.message_id))["state"] == "suppressed"  # type: ignore[arg-type]


async def test_unticking_stop_all_is_the_persons_own_fresh_opt_in_once_their_mailbox_confirms(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 9: the preference link may have been forwarded, so unticking the
    refusal only records the wish; the link mailed to the person lifts it."""
    contact = await person(gw)
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    await deliver(gw, smtp)  # the refusal's confirmation (ST-2)
    smtp.messages.clear()
    assert (await marketing(gw)).status == "suppressed"
    _, answer = await submit(web, await link(gw, "preferences", contact), uncheck={"stop_all"})
    assert answer.status_code == 200
    assert "chúng tôi vừa gửi một liên kết xác nhận" in answer.text
    assert [r["scope"] for r in await rows(gw, t.suppressions)] == ["marketing"]
    assert (await marketing(gw)).status == "suppressed"
    [mail] = await deliver(gw, smtp)
    assert mail["Subject"] == "Xác nhận nhận lại thư của chúng tôi"
    assert "[QC]" not in mail["Subject"] and mail["List-Unsubscribe"] is None
    path = first_link(mail, "/confirm/subscribe/")
    assert (await web.post(path, content=b"", headers=FORM_TYPE)).status_code == 200
    assert await rows(gw, t.suppressions) == []
    entries = await rows(gw, t.consent_ledger, topic_id=None)
    assert [(e["action"], e["source"], e["policy_version"]) for e in entries] == [
        ("opt_out", "link", POLICY),
        ("opt_in", "preferences", POLICY),
        ("confirm", "link", POLICY),
    ]
    assert (await marketing(gw)).queued


async def test_ticking_a_topic_after_a_refusal_waits_for_the_mailed_confirmation_in_english(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 9: a stranger holding a forwarded preference link cannot start
    promotional mail again; the page tells the person a confirmation was mailed."""
    contact = await person(gw, language="en")
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    await deliver(gw, smtp)
    smtp.messages.clear()
    path = await link(gw, "preferences", contact)
    _, answer = await submit(web, path, check={"deals"}, uncheck={"stop_all"})
    assert answer.status_code == 200
    assert "we have emailed you a confirmation link" in answer.text
    assert "Khuyến mãi (waiting for confirmation)" in answer.text
    deals = await gw.accepter.topic("deals")
    subscriptions = await gw.store.subscriptions_of(contact.id)
    assert subscriptions[deals.id] == "pending"
    assert (await marketing(gw, topic="deals")).status == "suppressed"
    [mail] = await deliver(gw, smtp)
    assert mail["Subject"] == "Please confirm you want our email again"
    assert "again, about: Khuyến mãi, Tin tức." in text_of(mail)
    confirm = first_link(mail, "/confirm/subscribe/")
    smtp.messages.clear()
    before = await snapshot(gw)
    page = await web.get(confirm)  # a prefetch changes nothing
    assert "Confirm my subscription" in page.text and await snapshot(gw) == before
    assert (await web.post(confirm, content=b"", headers=FORM_TYPE)).status_code == 200
    assert (await marketing(gw, topic="deals")).queued
    assert (await marketing(gw, topic="news")).queued
    # saving again asks for nothing more: the refusal is lifted
    _, again = await submit(web, path)
    assert "You had refused promotional email" not in again.text
    assert len(await deliver(gw, smtp)) == 2  # the two marketing messages, no confirmation


async def test_opting_out_applies_at_once_while_a_resubscription_in_the_same_save_waits(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 9: opting out never needs a confirmation, even in the save that asks
    for promotional mail again."""
    contact = await person(gw, topics=("news", "deals"))
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    await deliver(gw, smtp)
    smtp.messages.clear()
    path = await link(gw, "preferences", contact)
    _, answer = await submit(web, path, uncheck={"news", "stop_all"})
    assert answer.status_code == 200
    assert "Trước đây bạn đã từ chối nhận thư quảng cáo" in answer.text
    news = await gw.accepter.topic("news")
    assert (await gw.store.subscriptions_of(contact.id))[news.id] == "unsubscribed"
    assert (await marketing(gw, topic="deals")).status == "suppressed"
    [mail] = await deliver(gw, smtp)
    assert "về: Khuyến mãi." in text_of(mail)  # only what the person still wants
    await web.post(first_link(mail, "/confirm/subscribe/"), content=b"", headers=FORM_TYPE)
    assert (await marketing(gw, topic="deals")).queued
    assert (await marketing(gw, topic="news")).status == "suppressed"
    # and an opt-out alone mails nothing
    smtp.messages.clear()
    _, answer = await submit(web, path, uncheck={"deals"})
    assert "Trước đây bạn đã từ chối nhận thư quảng cáo" not in answer.text
    assert await deliver(gw, smtp) == []  # no confirmation (the queued offer stopped too)


async def test_a_new_refusal_withdraws_an_earlier_resubscription_link(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw)
    unsubscribe = await link(gw, "unsubscribe", contact)
    await web.post(unsubscribe, data=ONE_CLICK)
    await deliver(gw, smtp)
    smtp.messages.clear()
    preferences = await link(gw, "preferences", contact)
    await submit(web, preferences, uncheck={"stop_all"})
    await submit(web, preferences, uncheck={"stop_all"})
    first, second = [first_link(m, "/confirm/subscribe/") for m in await deliver(gw, smtp)]
    await web.post(second, content=b"", headers=FORM_TYPE)
    assert (await marketing(gw)).queued
    # the person refuses again: the older link must not undo that
    await web.post(unsubscribe, data=ONE_CLICK)
    before = await snapshot(gw)
    response = await web.post(first, content=b"", headers=FORM_TYPE)
    assert 400 <= response.status_code < 500
    assert await snapshot(gw) == before
    assert (await marketing(gw)).status == "suppressed"


async def test_resubscription_mails_from_the_page_are_rate_limited_per_person(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw)
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    await deliver(gw, smtp)
    smtp.messages.clear()
    path = await link(gw, "preferences", contact)
    answers = [(await submit(web, path, uncheck={"stop_all"}))[1] for _ in range(6)]
    assert all(a.status_code == 200 for a in answers)
    assert "đã gửi nhiều thư xác nhận" in answers[-1].text
    assert len(await deliver(gw, smtp)) == 5


async def test_language_switch_changes_the_page_and_the_mail(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, language="vi")
    path = await link(gw, "preferences", contact)
    # ?lang= only shows the page in the other language; nothing is stored
    english = await web.get(path + "?lang=en")
    assert "<h1>Email preferences</h1>" in english.text and 'lang="en"' in english.text
    assert (await gw.store.get_contact("an@example.vn")).language == "vi"  # type: ignore[union-attr]
    _, answer = await submit(web, path, select={"language": "en"})
    assert "<h1>Email preferences</h1>" in answer.text
    assert "Your choices are saved." in answer.text
    assert (await gw.store.get_contact("an@example.vn")).language == "en"  # type: ignore[union-attr]
    assert "<h1>Email preferences</h1>" in (await web.get(path)).text
    unsubscribe = await web.get(await link(gw, "unsubscribe", contact))
    assert "Stop all promotional email" in unsubscribe.text
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    [msg] = await deliver(gw, smtp)
    assert msg["Subject"] == "Confirmation: you will receive no more promotional email"
    # and back again
    _, answer = await submit(web, path, select={"language": "vi"})
    assert "<h1>Tùy chọn nhận thư</h1>" in answer.text


async def test_a_preference_post_missing_the_page_fields_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient
):
    """An empty or foreign form must not read as 'untick everything'."""
    contact = await person(gw, topics=("news", "deals"))
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    path = await link(gw, "preferences", contact)
    before = await snapshot(gw)
    for data in ({}, {"List-Unsubscribe": "One-Click"}, {"language": "vi"}):
        response = await web.post(path, data=data)
        assert response.status_code == 400, data
    response = await web.post(path, data={"form": "preferences", "language": "fr"})
    assert response.status_code == 400
    assert await snapshot(gw) == before


# -- export and erase (PD-2, PD-3) ----------------------------------------------------------


async def test_pd2_export_request_mails_a_short_lived_link_and_shows_no_data(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, phone="0901234567")
    response = await web.post(await link(gw, "preferences", contact) + "/export")
    assert response.status_code == 200
    assert "Hãy kiểm tra hộp thư" in response.text
    assert "901234567" not in response.text  # the number in any spelling
    [msg] = await deliver(gw, smtp)
    assert msg["Subject"] == "Xác nhận tải dữ liệu của bạn"
    assert msg["List-Unsubscribe"] is None and "[QC]" not in msg["Subject"]
    path = first_link(msg, "/confirm/export/")
    assert gw.signer.verify("export", path.rsplit("/", 1)[1]) == contact.uid
    # GET (a scanner, a preview) shows a button and changes nothing
    before = await snapshot(gw)
    page = await web.get(path)
    assert page.status_code == 200 and "<button" in page.text
    assert Page(page.text).form()["action"] == path
    assert await snapshot(gw) == before


async def test_pd2_export_returns_everything_held_as_json(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await gw.add_contact(
        "an@example.vn",
        name="Nguyễn Văn An",
        phone="0901234567",
        address="1 Lê Lợi, Huế",
        language="vi",
        attributes={"city": "Huế", "size": "M"},
        subscribe=["news"],
        source="form",
    )
    contact = await gw.store.get_contact("an@example.vn")
    assert contact is not None
    sent = await marketing(gw)
    await deliver(gw, smtp)
    await web.post(await link(gw, "preferences", contact) + "/export")
    [request_mail] = (await deliver(gw, smtp))[1:]
    path = first_link(request_mail, "/confirm/export/")
    _, response = await submit(web, path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    data = response.json()
    assert set(data) >= {"profile", "attributes", "subscriptions", "consent", "messages"}
    profile = data["profile"]
    assert (profile["email"], profile["name"], profile["phone"], profile["postal_address"]) == (
        "an@example.vn",
        "Nguyễn Văn An",
        "+84901234567",  # stored in E.164, however it was typed
        "1 Lê Lợi, Huế",
    )
    assert profile["language"] == "vi"
    attributes = {(a["key"], a["value"], a["source"]) for a in data["attributes"]}
    assert attributes == {("city", "Huế", "form"), ("size", "M", "form")}
    assert [(s["slug"], s["status"]) for s in data["subscriptions"]] == [("news", "subscribed")]
    assert [
        (c["topic"], c["action"], c["source"], c["policy_version"]) for c in data["consent"]
    ] == [("news", "opt_in", "form", POLICY)]
    subjects = {(m["subject"], m["category"]) for m in data["messages"]}
    assert ("[QC] Tin mới", "marketing") in subjects
    assert ("Xác nhận tải dữ liệu của bạn", "transactional") in subjects
    assert all(isinstance(m["created_at"], float) for m in data["messages"])
    assert sent.message_id
    # exporting changes nothing: a second POST gives the same data
    again = await web.post(path)
    assert again.json() == data


async def test_pd3_erase_removes_the_person_at_once_and_keeps_only_a_tombstone(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, tmp_path
):
    contact = await person(
        gw,
        phone="0901234567",
        address="1 Lê Lợi, Huế",
        attributes={"city": "Huế"},
        topics=("news", "deals"),
    )
    bystander = await person(gw, "binh@example.vn", name="Bình")
    await marketing(gw)
    await deliver(gw, smtp)
    prefs = await link(gw, "preferences", contact)
    old_unsubscribe = await link(gw, "unsubscribe", contact)
    response = await web.post(prefs + "/erase")
    assert response.status_code == 200
    assert await gw.store.get_contact("an@example.vn") is not None  # only a link was mailed
    [erase_mail] = (await deliver(gw, smtp))[1:]
    assert erase_mail["Subject"] == "Xác nhận xóa dữ liệu của bạn"
    path = first_link(erase_mail, "/confirm/erase/")
    page = await web.get(path)
    assert page.status_code == 200 and 'class="danger"' in page.text
    assert await gw.store.get_contact("an@example.vn") is not None  # GET changes nothing
    queued = await marketing(gw, topic="deals")  # still waiting in the outbox
    assert queued.queued

    _, answer = await submit(web, path)
    assert answer.status_code == 200
    assert "<h1>Dữ liệu của bạn đã bị xóa</h1>" in answer.text

    assert await gw.store.get_contact("an@example.vn") is None
    assert await rows(gw, t.contact_attributes, contact_id=contact.id) == []
    assert await rows(gw, t.subscriptions, contact_id=contact.id) == []
    assert await rows(gw, t.consent_ledger, contact_id=contact.id) == []
    for table in (t.message_log, t.outbox):
        assert await rows(gw, table, contact_id=contact.id) == []
        assert await rows(gw, table, email="an@example.vn") == []
    assert all(r["raw"] is None for r in await rows(gw, t.outbox) if r["email"] is None)
    assert await rows(gw, t.outbox_bodies) == []
    [tomb] = await rows(gw, t.suppressions, reason="erased")
    assert tomb["email"] is None and tomb["scope"] == "all"
    assert tomb["email_hash"] == gw.signer.address_hash("an@example.vn")
    # no trace of the person anywhere in the database
    dump = repr(await snapshot(gw))
    for trace in ("an@example.vn", "Nguyễn Văn An", "901234567", "Lê Lợi", "Huế", contact.uid):
        assert trace not in dump, trace
    assert "binh@example.vn" in dump and bystander.uid in dump
    # consent records stay for the retention of proof, tied only to the keyed hash
    assert len(await rows(gw, t.consent_ledger, subject=tomb["email_hash"])) == 2

    # the queued message never goes, nothing new is accepted, an admin cannot bring them back
    assert to(await deliver(gw, smtp), "an@example.vn")[2:] == []
    assert (await gw.message_status(queued.message_id))["state"] == "suppressed"  # type: ignore[arg-type]
    for category in ("transactional", "policy"):
        result = await gw.send("an@example.vn", "Hi", text="x", category=category)
        assert result.status == "suppressed" and "erased" in result.reason
    with pytest.raises(InvalidInput, match="erased"):
        await gw.add_contact("An@Example.vn", name="An", subscribe=["news"])
    (tmp_path / "c.csv").write_text("email,name,topics\nan@example.vn,An,news\n", encoding="utf-8")
    report = await gw.import_contacts(tmp_path / "c.csv")
    assert report.created == 0 and "erased" in report.bad_rows[0][1]
    assert await gw.store.get_contact("an@example.vn") is None
    # every old link now says it is not valid, and changes nothing
    before = await snapshot(gw)
    for old in (prefs, old_unsubscribe, path):
        assert_invalid_link_page(await web.get(old))
        assert_invalid_link_page(await web.post(old, data=ONE_CLICK))
    assert await snapshot(gw) == before


async def test_pd3_a_later_send_to_an_erased_address_does_not_write_it_down_again(gw: Gateway):
    await person(gw)
    await gw.erase_contact("an@example.vn")
    assert (await marketing(gw)).status == "suppressed"
    assert "an@example.vn" not in repr(await snapshot(gw))


async def test_pd3_an_erase_link_cannot_be_used_as_an_export_link(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw)
    erase_token = (await link(gw, "erase", contact)).rsplit("/", 1)[1]
    export_token = (await link(gw, "export", contact)).rsplit("/", 1)[1]
    before = await snapshot(gw)
    assert_invalid_link_page(await web.post(f"/confirm/export/{erase_token}"))
    assert_invalid_link_page(await web.post(f"/confirm/erase/{export_token}"))
    assert await snapshot(gw) == before


async def test_export_and_erase_requests_are_rate_limited_per_person(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """A forwarded newsletter must not become a way to flood someone's inbox."""
    a = await person(gw)
    b = await person(gw, "binh@example.vn", name="Bình")
    path = await link(gw, "preferences", a)
    answers = [(await web.post(path + "/export")).status_code for _ in range(6)]
    assert answers == [200] * 5 + [429]
    assert (await web.post(path + "/erase")).status_code == 200
    assert (await web.post(await link(gw, "preferences", b) + "/export")).status_code == 200
    messages = await deliver(gw, smtp)
    assert len(to(messages, "an@example.vn")) == 6 and len(to(messages, "binh@example.vn")) == 1


async def test_st1_the_refusal_stands_even_if_its_confirmation_cannot_be_rendered(
    gw: Gateway, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog
):
    """The confirmation is rendered by the worker at dispatch; if that fails, the refusal
    (committed with the request) stands and the failure is recorded on the message."""
    contact = await person(gw)

    async def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("template store unavailable")

    monkeypatch.setattr(gw.accepter, "render_queued", broken)
    response = await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    assert response.status_code == 200
    assert len(await rows(gw, t.suppressions, reason="unsubscribe")) == 1
    stats = await gw.deliver(until_idle=True)
    assert stats.failed == 1
    failed = await rows(gw, t.outbox, state="failed")
    assert len(failed) == 1 and "template store unavailable" in failed[0]["last_error"]
    assert (await marketing(gw)).status == "suppressed"
    assert "could not be rendered" in caplog.text


async def test_pd2_export_includes_refusals_held_under_the_address(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw, source="form")
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    data = await gw.export_contact("an@example.vn")
    assert data["profile"]["source"] == "form"
    assert [(s["scope"], s["reason"], s["source"]) for s in data["suppressions"]] == [
        ("marketing", "unsubscribe", "link")
    ]


# -- /manage: a fresh link by email ----------------------------------------------------------


async def test_manage_get_shows_a_plain_form(gw: Gateway, web: httpx.AsyncClient):
    response = await web.get("/manage")
    assert response.status_code == 200
    form = Page(response.text).form()
    assert form["action"].startswith("/manage") and form["method"] == "post"
    assert [f["name"] for f in form["fields"]] == ["email"]
    english = await web.get("/manage?lang=en")
    assert "Get a link to your email preferences" in english.text


async def test_manage_gives_the_same_answer_for_known_and_unknown_and_mails_only_the_known(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw)
    known = await web.post("/manage", data={"email": " An@Example.VN "})
    unknown = await web.post("/manage", data={"email": "nobody@example.vn"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    assert dict(known.headers) == dict(unknown.headers)
    [msg] = await deliver(gw, smtp)
    assert msg["To"].addresses[0].addr_spec == "an@example.vn"
    assert msg["Subject"] == "Liên kết quản lý tùy chọn nhận thư"
    assert msg["List-Unsubscribe"] is None
    path = first_link(msg, "/preferences/")
    assert gw.signer.verify("preferences", path.rsplit("/", 1)[1]) == contact.uid
    assert (await web.get(path)).status_code == 200
    assert await rows(gw, t.contacts, email="nobody@example.vn") == []
    assert await rows(gw, t.message_log, email="nobody@example.vn") == []


async def test_manage_rejects_an_invalid_address_with_400(gw: Gateway, web: httpx.AsyncClient):
    before = await snapshot(gw)
    for value in ("", "not an address", "a@b@c", "x@example.vn\r\nBcc: y@example.vn"):
        response = await web.post("/manage", data={"email": value})
        assert response.status_code == 400, value
        assert 'aria-invalid="true"' in response.text
        assert "Địa chỉ email này không hợp lệ." in response.text
    assert await snapshot(gw) == before


async def test_manage_is_rate_limited_per_address_with_429(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await person(gw)
    answers = [
        (await web.post("/manage", data={"email": spelling})).status_code
        for spelling in ("an@example.vn", "AN@example.vn", " an@EXAMPLE.vn", "an@example.vn")
    ]
    assert answers == [200, 200, 200, 429]
    assert (await web.post("/manage", data={"email": "nobody@example.vn"})).status_code == 200
    for _ in range(3):
        await web.post("/manage", data={"email": "ghost@example.vn"})
    # unknown addresses are limited exactly like known ones: the 429 tells nothing
    assert (await web.post("/manage", data={"email": "ghost@example.vn"})).status_code == 429
    assert len(await deliver(gw, smtp)) == 3


async def test_manage_is_rate_limited_per_client_with_429(
    gw: Gateway, app: Any, web: httpx.AsyncClient
):
    answers = [
        (await web.post("/manage", data={"email": f"p{i}@example.vn"})).status_code
        for i in range(31)
    ]
    assert answers == [200] * 30 + [429]
    limited = await web.post("/manage", data={"email": "q@example.vn"})
    assert limited.status_code == 429 and "Quá nhiều yêu cầu" in limited.text
    async with client_for(app, ip="10.0.0.2") as other:
        assert (await other.post("/manage", data={"email": "q@example.vn"})).status_code == 200
