"""Consent at sign-up (AD-4, PD-1): the embeddable form, double opt-in, the confirmation link.

In-process HTTP through httpx.ASGITransport against a real SQLite file and a real SMTP server:
what a test asserts is what the database holds and what the SMTP server received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from smtp_server import RecordingSMTPServer
from test_web import (
    BASE,
    CSP,
    ONE_CLICK,
    POLICY,
    Page,
    client_for,
    deliver,
    first_link,
    link,
    marketing,
    person,
    rows,
    snapshot,
    text_of,
    to,
)

from gateway import Gateway
from gateway.errors import InvalidInput
from gateway.store import schema as t
from gateway.web.app import create_app

IP = "203.0.113.7"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def gw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_POLICY_VERSION"] = POLICY
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        await gateway.add_topic("events", "Sự kiện", double_opt_in=True)
        yield gateway


@pytest.fixture
def app(gw: Gateway) -> Any:
    return create_app(gw, worker=False)


@pytest.fixture
async def web(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, ip=IP) as client:
        yield client


async def sign_up(
    web: httpx.AsyncClient,
    email: str = "an@example.vn",
    *topics: str,
    name: str = "Nguyễn Văn An",
    language: str = "vi",
    **headers: str,
) -> httpx.Response:
    body: list[tuple[str, str]] = [("email", email), ("name", name), ("language", language)]
    body += [("topic", topic) for topic in topics or ("news",)]
    return await web.post("/subscribe", content=urlencode(body), headers={**FORM, **headers})


async def subscription(gw: Gateway, address: str, slug: str) -> str | None:
    contact = await gw.store.get_contact(address)
    if contact is None:
        return None
    topic = await gw.accepter.topic(slug)
    return (await gw.store.subscriptions_of(contact.id)).get(topic.id)


async def ledger(gw: Gateway) -> list[tuple[Any, ...]]:
    topics = {topic.id: topic.slug for topic in await gw.store.all_topics()}
    return [
        (topics.get(r["topic_id"]), r["action"], r["source"], r["policy_version"], r["ip"])
        for r in await rows(gw, t.consent_ledger)
    ]


async def confirmation_path(gw: Gateway, smtp: RecordingSMTPServer, address: str) -> str:
    [mail] = to(await deliver(gw, smtp), address)
    assert mail["Subject"] in ("Xác nhận đăng ký nhận thư", "Please confirm your subscription")
    assert "[QC]" not in mail["Subject"] and mail["List-Unsubscribe"] is None  # AD-5
    return first_link(mail, "/confirm/subscribe/")


# -- the form ----------------------------------------------------------------------------------


async def test_ad4_the_form_never_pre_ticks_a_topic_and_is_accessible(
    gw: Gateway, web: httpx.AsyncClient
):
    for path in ("/subscribe", "/subscribe?lang=en"):
        response = await web.get(path)
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == CSP
        assert "set-cookie" not in response.headers
        page = Page(response.text)
        assert page.checkboxes("topic") == {"news": False, "events": False}
        assert "script" not in page.tags and "style" not in page.tags
        assert not [a for a in page.attributes if a.startswith("on") or a == "style"]
        form = page.form("/subscribe" if path == "/subscribe" else "/subscribe?lang=en")
        assert form["method"] == "post"
        names = {f.get("name") for f in form["fields"]}
        assert {"email", "name", "topic", "language"} <= names
        # every input has a label
        for field in form["fields"]:
            if field.get("type") != "option":
                assert f'<label for="{field["id"]}">' in response.text, field
    assert '<html lang="en">' in response.text and "Sign up" in response.text
    vi = await web.get("/subscribe")
    assert '<html lang="vi">' in vi.text and "Sự kiện (cần xác nhận qua email)" in vi.text
    # a rejected form comes back with the reason and still nothing ticked
    again = await sign_up(web, "not-an-address", "news", "events")
    assert again.status_code == 400
    assert Page(again.text).checkboxes("topic") == {"news": False, "events": False}


async def test_ad4_single_opt_in_topic_starts_at_once(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    response = await sign_up(web, "An@Example.vn", "news")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert "Cảm ơn bạn đã đăng ký" in response.text
    contact = await gw.store.get_contact("an@example.vn")
    assert contact is not None
    assert (contact.name, contact.language) == ("Nguyễn Văn An", "vi")
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    assert (await marketing(gw)).status == "queued"
    # no confirmation for a topic that does not ask for one: only the marketing message
    messages = await deliver(gw, smtp)
    assert [m["Subject"] for m in messages] == ["[QC] Tin mới"]


async def test_ad4_double_opt_in_stays_pending_until_the_link_is_posted(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    response = await sign_up(web, "an@example.vn", "events", language="en")
    assert response.status_code == 200
    assert '<html lang="en">' in response.text
    assert await subscription(gw, "an@example.vn", "events") == "pending"
    assert (await marketing(gw, topic="events")).status == "suppressed"
    path = await confirmation_path(gw, smtp, "an@example.vn")
    assert "an@example.vn" not in path and "an%40" not in path  # promise 2
    # GET (a mail scanner's prefetch) changes nothing: it only shows the button
    before = await snapshot(gw)
    page = await web.get(path)
    assert page.status_code == 200
    assert "Sự kiện" in page.text and "Confirm my subscription" in page.text
    form = Page(page.text).form()
    assert (form["method"], form["action"]) == ("post", path)
    assert await snapshot(gw) == before
    assert await subscription(gw, "an@example.vn", "events") == "pending"
    # POST confirms
    answer = await web.post(path, content=b"", headers=FORM)
    assert answer.status_code == 200
    assert "Your subscription is confirmed" in answer.text
    assert await subscription(gw, "an@example.vn", "events") == "subscribed"
    assert (await marketing(gw, topic="events")).status == "queued"
    assert await ledger(gw) == [
        ("events", "opt_in", "form", POLICY, IP),
        ("events", "confirm", "link", POLICY, IP),
    ]
    # a second POST answers 200 and changes nothing more
    after = await snapshot(gw)
    second = await web.post(path, content=b"", headers=FORM)
    assert second.status_code == 200 and "already confirmed" in second.text
    assert await snapshot(gw) == after


async def test_ad4_single_and_double_opt_in_in_one_form(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await sign_up(web, "an@example.vn", "news", "events")
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    assert await subscription(gw, "an@example.vn", "events") == "pending"
    [mail] = to(await deliver(gw, smtp), "an@example.vn")
    assert "về: Sự kiện." in text_of(mail)  # only the topic that asks for confirmation
    path = first_link(mail, "/confirm/subscribe/")
    await web.post(path, content=b"", headers=FORM)
    assert await subscription(gw, "an@example.vn", "events") == "subscribed"
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"


async def test_ad4_the_confirmation_mail_names_the_topics_in_the_persons_language(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await sign_up(web, "an@example.vn", "events", language="en", name="An")
    [mail] = to(await deliver(gw, smtp), "an@example.vn")
    assert mail["Subject"] == "Please confirm your subscription"
    body = text_of(mail)
    assert body.startswith("Hello An,")
    assert "about: Sự kiện." in body and "within 7 days" in body


async def test_ad4_a_tampered_confirmation_link_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await sign_up(web, "an@example.vn", "events")
    path = await confirmation_path(gw, smtp, "an@example.vn")
    before = await snapshot(gw)
    last = path[-1]
    forged = path[:-1] + ("A" if last != "A" else "B")
    for method in ("GET", "POST"):
        response = await web.request(method, forged)
        assert 400 <= response.status_code < 500
        assert "Liên kết không hợp lệ" in response.text
    # another purpose's token is no confirmation link
    contact = await gw.store.get_contact("an@example.vn")
    assert contact is not None
    preferences_path = await link(gw, "preferences", contact)
    token = preferences_path.rsplit("/", 1)[1]
    response = await web.post(f"/confirm/subscribe/{token}", content=b"", headers=FORM)
    assert 400 <= response.status_code < 500
    assert await snapshot(gw) == before


# -- PD-1: the consent ledger ------------------------------------------------------------------


async def test_pd1_sign_up_records_source_form_policy_version_and_ip(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await sign_up(web, "an@example.vn", "news", "events")
    assert await ledger(gw) == [
        ("news", "opt_in", "form", POLICY, IP),
        ("events", "opt_in", "form", POLICY, IP),
    ]
    # once a version is published, consent is recorded under it
    await gw.policies.publish("2025.09", "Chính sách mới.")
    async with client_for(create_app(gw, worker=False), ip="198.51.100.9") as other:
        await sign_up(other, "binh@example.vn", "news")
    assert (await ledger(gw))[-1] == ("news", "opt_in", "form", "2025.09", "198.51.100.9")
    # shown to the person and included in the export
    data = await gw.export_contact("an@example.vn")
    assert [
        (c["topic"], c["action"], c["source"], c["policy_version"]) for c in data["consent"]
    ] == [
        ("news", "opt_in", "form", POLICY),
        ("events", "opt_in", "form", POLICY),
    ]


# -- bad input: 4xx, nothing written -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-address", "topic": "news"},
        {"email": "", "topic": "news"},
        {"email": "an@example.vn\r\nBcc: x@evil.com", "topic": "news"},
        {"email": "an@example.vn", "topic": "nope"},
        {"email": "an@example.vn", "topic": ["news", "nope"]},
        {"email": "an@example.vn"},
        {"email": "an@example.vn", "topic": "news", "language": "fr"},
        {"email": "an@example.vn", "topic": "news", "name": "An\x00"},
        {"email": "an@example.vn", "topic": "news", "name": "A" * 201},
    ],
)
async def test_ad4_bad_input_is_a_4xx_page_and_writes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, body: dict[str, Any]
):
    before = await snapshot(gw)
    response = await web.post("/subscribe", content=urlencode(body, doseq=True), headers=FORM)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "không có gì thay đổi" in response.text
    assert await snapshot(gw) == before
    assert await deliver(gw, smtp) == []


async def test_ad4_a_body_that_is_not_a_form_is_refused(gw: Gateway, web: httpx.AsyncClient):
    before = await snapshot(gw)
    for content, kind in ((b'{"email": "an@example.vn"}', "application/json"),):
        response = await web.post("/subscribe", content=content, headers={"content-type": kind})
        assert response.status_code == 415
    big = urlencode({"email": "an@example.vn", "topic": "news", "name": "x" * 20000})
    assert (await web.post("/subscribe", content=big, headers=FORM)).status_code == 413
    assert await snapshot(gw) == before


# -- a form anyone can post: same answer, and no standing objection lifted without the mailbox --


async def test_ad4_the_answer_is_the_same_whether_or_not_the_address_is_known(
    gw: Gateway, web: httpx.AsyncClient
):
    await person(gw, "known@example.vn", topics=("news",))
    known = await sign_up(web, "known@example.vn", "news", "events")
    unknown = await sign_up(web, "stranger@example.vn", "news", "events")
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text)
    single_known = await sign_up(web, "known@example.vn", "news")
    single_unknown = await sign_up(web, "new@example.vn", "news")
    assert single_known.text == single_unknown.text


async def test_ad4_the_form_never_changes_a_known_contacts_profile(
    gw: Gateway, web: httpx.AsyncClient
):
    await person(gw, "an@example.vn", name="Nguyễn Văn An", language="vi")
    await sign_up(web, "an@example.vn", "news", name="Kẻ mạo danh", language="en")
    contact = await gw.store.get_contact("an@example.vn")
    assert contact is not None
    assert (contact.name, contact.language) == ("Nguyễn Văn An", "vi")


async def test_st1_a_refusal_is_lifted_only_when_the_person_confirms_from_their_mailbox(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, "an@example.vn", topics=())
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    await deliver(gw, smtp)  # the refusal confirmation (ST-2)
    smtp.messages.clear()
    # anyone may post the form: a single opt-in topic does not undo the person's refusal
    await sign_up(web, "an@example.vn", "news")
    assert await subscription(gw, "an@example.vn", "news") == "pending"
    assert (await marketing(gw)).status == "suppressed"
    assert await rows(gw, t.suppressions, scope="marketing", reason="unsubscribe")
    path = await confirmation_path(gw, smtp, "an@example.vn")
    await web.post(path, content=b"", headers=FORM)
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    assert await rows(gw, t.suppressions) == []
    assert (await marketing(gw)).status == "queued"
    assert [e[:3] for e in await ledger(gw)] == [
        (None, "opt_out", "link"),
        ("news", "opt_in", "form"),
        ("news", "confirm", "link"),
        (None, "confirm", "link"),
    ]


async def test_ad4_a_topic_the_person_left_stays_left_until_they_confirm(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, "an@example.vn", topics=("news",))
    await gw.preferences.update(contact, topics=set(), stop_all=False, language=None)
    assert await subscription(gw, "an@example.vn", "news") == "unsubscribed"
    await sign_up(web, "an@example.vn", "news")
    assert await subscription(gw, "an@example.vn", "news") == "unsubscribed"
    path = await confirmation_path(gw, smtp, "an@example.vn")
    await web.post(path, content=b"", headers=FORM)
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"


# -- PD-3: an erased address comes back only through this flow ---------------------------------


async def test_pd3_an_erased_address_comes_back_only_through_the_sign_up_flow(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await person(gw, "an@example.vn", topics=("news",))
    await gw.erase_contact("an@example.vn")
    # an admin cannot bring it back
    with pytest.raises(InvalidInput, match="erased"):
        await gw.add_contact("an@example.vn", subscribe=["news"])
    assert (await marketing(gw)).status == "suppressed"
    # the person signs up: the confirmation reaches them, nothing promotional does yet
    response = await sign_up(web, "an@example.vn", "news")
    assert response.status_code == 200
    assert await subscription(gw, "an@example.vn", "news") == "pending"
    assert not await rows(gw, t.suppressions, reason="erased")
    [hold] = await rows(gw, t.suppressions)
    assert (hold["scope"], hold["reason"]) == ("marketing", "unconfirmed")
    assert (await marketing(gw)).status == "suppressed"
    path = await confirmation_path(gw, smtp, "an@example.vn")
    answer = await web.post(path, content=b"", headers=FORM)
    assert answer.status_code == 200
    assert await rows(gw, t.suppressions) == []
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    assert (await marketing(gw)).status == "queued"


async def test_pd3_a_confirmation_link_dies_with_an_erasure(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await sign_up(web, "an@example.vn", "events")
    path = await confirmation_path(gw, smtp, "an@example.vn")
    await gw.erase_contact("an@example.vn")
    before = await snapshot(gw)
    response = await web.post(path, content=b"", headers=FORM)
    assert response.status_code == 404
    assert await snapshot(gw) == before


# -- rate limits --------------------------------------------------------------------------------


async def test_ad4_sign_ups_are_rate_limited_per_address_and_per_client(
    gw: Gateway, app: Any, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    for _ in range(3):
        assert (await sign_up(web, "an@example.vn", "events")).status_code == 200
    before = await snapshot(gw)
    limited = await sign_up(web, "An@example.vn", "events")
    assert limited.status_code == 429
    assert await snapshot(gw) == before
    assert len(to(await deliver(gw, smtp), "an@example.vn")) == 3
    # one client cannot post the form for many addresses either
    async with client_for(app, ip="198.51.100.20") as other:
        codes = [(await sign_up(other, f"p{i}@example.vn")).status_code for i in range(31)]
    assert codes[:30] == [200] * 30 and codes[30] == 429


async def test_ad4_the_form_can_be_embedded_on_the_business_site(
    gw: Gateway, web: httpx.AsyncClient
):
    response = await sign_up(
        web, "an@example.vn", "news", origin="https://first.vn", referer="https://first.vn/"
    )
    assert response.status_code == 200
    assert not response.is_redirect and "set-cookie" not in response.headers
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    multipart = await web.post(
        "/subscribe", files={"email": (None, "binh@example.vn"), "topic": (None, "news")}
    )
    assert multipart.status_code == 200
    assert await subscription(gw, "binh@example.vn", "news") == "subscribed"
    assert BASE.startswith("https://")
