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
    # every topic from the form waits for the mailed confirmation, and the form says so once
    assert '<html lang="vi">' in vi.text and "Sự kiện</label>" in vi.text
    assert "chỉ bắt đầu khi bạn bấm nút trong thư đó" in vi.text
    # a rejected form comes back with the reason and still nothing ticked
    again = await sign_up(web, "not-an-address", "news", "events")
    assert again.status_code == 400
    assert Page(again.text).checkboxes("topic") == {"news": False, "events": False}


async def test_ad4_a_topic_without_double_opt_in_also_waits_for_the_mailed_confirmation(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 5: anyone can type any address into the form, so no topic starts from
    the form alone, whatever its own double opt-in flag."""
    response = await sign_up(web, "An@Example.vn", "news")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert "Cảm ơn bạn đã đăng ký" in response.text
    assert await gw.store.get_contact("an@example.vn") is None
    assert (await marketing(gw)).status == "suppressed"
    path = await confirmation_path(gw, smtp, "an@example.vn")
    await web.post(path, content=b"", headers=FORM)
    contact = await gw.store.get_contact("an@example.vn")
    assert contact is not None
    assert (contact.name, contact.language) == ("Nguyễn Văn An", "vi")
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    assert (await marketing(gw)).status == "queued"


async def test_ad4_double_opt_in_stays_pending_until_the_link_is_posted(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    response = await sign_up(web, "an@example.vn", "events", language="en")
    assert response.status_code == 200
    assert '<html lang="en">' in response.text
    # nothing is stored before the confirmation: the request travels in the link
    assert await gw.store.get_contact("an@example.vn") is None
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
    assert await gw.store.get_contact("an@example.vn") is None
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
    assert await subscription(gw, "an@example.vn", "news") is None
    assert await subscription(gw, "an@example.vn", "events") is None
    [mail] = to(await deliver(gw, smtp), "an@example.vn")
    assert "về: Tin tức, Sự kiện." in text_of(mail)  # every topic waits for the confirmation
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
    assert body.splitlines()[0] == "Hello,"  # the name typed into the form is not mailed
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
    assert await snapshot(gw) == before
    # another purpose's token is no confirmation link
    contact = await person(gw, "binh@example.vn")
    before = await snapshot(gw)
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
    # the form's request enters the ledger when the mailbox confirms it, as it was made
    assert await ledger(gw) == []
    await web.post(await confirmation_path(gw, smtp, "an@example.vn"), content=b"", headers=FORM)
    assert await ledger(gw) == [
        ("news", "opt_in", "form", POLICY, IP),
        ("events", "opt_in", "form", POLICY, IP),
        ("news", "confirm", "link", POLICY, IP),
        ("events", "confirm", "link", POLICY, IP),
    ]
    # once a version is published, consent is recorded under it
    await gw.policies.publish("2025.09", "Chính sách mới.")
    smtp.messages.clear()
    async with client_for(create_app(gw, worker=False), ip="198.51.100.9") as other:
        await sign_up(other, "binh@example.vn", "news")
        path = await confirmation_path(gw, smtp, "binh@example.vn")
        await other.post(path, content=b"", headers=FORM)
    assert (await ledger(gw))[-2] == ("news", "opt_in", "form", "2025.09", "198.51.100.9")
    # shown to the person and included in the export
    data = await gw.export_contact("an@example.vn")
    assert [
        (c["topic"], c["action"], c["source"], c["policy_version"]) for c in data["consent"]
    ] == [
        ("news", "opt_in", "form", POLICY),
        ("events", "opt_in", "form", POLICY),
        ("news", "confirm", "link", POLICY),
        ("events", "confirm", "link", POLICY),
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
    assert await subscription(gw, "an@example.vn", "news") is None
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
    # the person signs up: the confirmation reaches them, nothing promotional does yet, and
    # the tombstone stays until they confirm (issue 12 item 1)
    response = await sign_up(web, "an@example.vn", "news")
    assert response.status_code == 200
    assert await gw.store.get_contact("an@example.vn") is None
    [tombstone] = await rows(gw, t.suppressions)
    assert (tombstone["scope"], tombstone["reason"]) == ("all", "erased")
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
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    response = await sign_up(
        web, "an@example.vn", "news", origin="https://first.vn", referer="https://first.vn/"
    )
    assert response.status_code == 200
    assert not response.is_redirect and "set-cookie" not in response.headers
    multipart = await web.post(
        "/subscribe", files={"email": (None, "binh@example.vn"), "topic": (None, "news")}
    )
    assert multipart.status_code == 200
    for address in ("an@example.vn", "binh@example.vn"):
        await web.post(await confirmation_path(gw, smtp, address), content=b"", headers=FORM)
        assert await subscription(gw, address, "news") == "subscribed"
    assert BASE.startswith("https://")


# -- issue 12: what a stranger can do with the form ---------------------------------------------


def cells_naming(tables: dict[str, list[tuple[Any, ...]]], needle: str) -> list[str]:
    """Every table whose rows hold `needle` in any cell (text or bytes)."""
    found = []
    for name, table_rows in tables.items():
        for row in table_rows:
            for cell in row:
                text = cell.decode("utf-8", "replace") if isinstance(cell, bytes) else str(cell)
                if needle in text.lower():
                    found.append(name)
    return found


async def test_pd3_a_stranger_signing_up_an_erased_address_revives_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 1: the form must not lift an erasure, recreate the person under a
    stranger's name, or store the address; only the mailbox's own confirmation does."""
    await person(gw, "an@example.vn", topics=("news",), name="Nguyễn Văn An")
    await gw.erase_contact("an@example.vn")
    before = await snapshot(gw)
    response = await sign_up(web, "an@example.vn", "news", name="Kẻ Lạ")
    assert response.status_code == 200
    after = await snapshot(gw)
    # nothing changed but the queued confirmation (its outbox row, an anonymous log line,
    # and the day's count of accepted messages)
    queued = ("outbox", "message_log", "daily_counts")
    assert {k: v for k, v in after.items() if k not in queued} == {
        k: v for k, v in before.items() if k not in queued
    }
    assert cells_naming({k: v for k, v in after.items() if k != "outbox"}, "an@example.vn") == []
    assert cells_naming(after, "kẻ lạ") == []
    [tombstone] = await rows(gw, t.suppressions)
    assert (tombstone["scope"], tombstone["reason"]) == ("all", "erased")
    # service mail stays stopped: the erasure stands until the person confirms
    service = await gw.send("an@example.vn", "Đơn hàng", "<p>Đơn hàng</p>")
    assert service.status == "suppressed" and "erased" in service.reason
    # the confirmation itself reaches the mailbox; the person confirms and starts afresh
    path = await confirmation_path(gw, smtp, "an@example.vn")
    assert "Kẻ Lạ" not in text_of(to(await deliver(gw, smtp), "an@example.vn")[0])
    assert (await web.post(path, content=b"", headers=FORM)).status_code == 200
    assert await rows(gw, t.suppressions) == []
    contact = await gw.store.get_contact("an@example.vn")
    assert contact is not None
    assert await subscription(gw, "an@example.vn", "news") == "subscribed"
    history = await gw.store.consent_history(contact.id)
    assert [(h["action"], h["source"]) for h in history] == [
        ("opt_in", "form"),
        ("confirm", "link"),
    ]


async def test_ad4_an_unconfirmed_form_stores_nothing_about_known_or_unknown_addresses(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 1: no contact, no pending subscription, no consent entry before the
    mailbox confirms (the queued confirmation aside)."""
    await person(gw, "known@example.vn", topics=())
    before = await snapshot(gw)
    for address in ("known@example.vn", "stranger@example.vn"):
        assert (await sign_up(web, address, "news", "events")).status_code == 200
    after = await snapshot(gw)
    for table in after:
        # daily_counts holds numbers per day for the dashboard, nothing about anyone
        if table not in ("outbox", "message_log", "daily_counts"):
            assert after[table] == before[table], table
    assert len(after["outbox"]) == 2
    tables = {k: v for k, v in after.items() if k not in ("outbox", "message_log", "daily_counts")}
    assert cells_naming(tables, "stranger@example.vn") == []


async def test_ad4_a_hard_bounced_address_still_gets_no_confirmation(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """The stricter rule of the code before issue 12 stays: a block for all mail stops the
    confirmation too; an erasure does not (the form is how an erased person comes back)."""
    await gw.suppress("bounced@example.vn", reason="hard_bounce")
    await person(gw, "erased@example.vn")
    await gw.erase_contact("erased@example.vn")
    await sign_up(web, "bounced@example.vn", "news")
    await sign_up(web, "erased@example.vn", "news")
    delivered = await deliver(gw, smtp)
    assert [m["To"].addresses[0].addr_spec for m in delivered] == ["erased@example.vn"]
    assert [r["reason"] for r in await rows(gw, t.suppressions)] == ["hard_bounce", "erased"]


async def test_ad4_a_name_typed_into_the_form_never_reaches_the_mailbox(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    """Issue 12 item 5: the business's own address must not carry a stranger's text."""
    bait = "URGENT verify at secure-bank-login.ru"
    await sign_up(web, "an@example.vn", "news", name=bait, language="vi")
    await sign_up(web, "binh@example.vn", "events", name=bait, language="en")
    delivered = await deliver(gw, smtp)
    assert len(delivered) == 2
    for message in smtp.messages:
        assert b"secure-bank-login" not in message.data
        assert b"URGENT" not in message.data


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "https://first.vn.evil.example"},
        {"origin": "null"},
        {"referer": "https://evil.example/page?x=1"},
        {"origin": "https://evil.example", "referer": "https://first.vn/"},
    ],
)
async def test_ad4_a_cross_site_post_is_refused_with_403_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, headers: dict[str, str]
):
    """Issue 12 item 5: another site cannot post the form for its visitors."""
    before = await snapshot(gw)
    response = await sign_up(web, "an@example.vn", "news", **headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Không thể gửi biểu mẫu này từ trang web khác" in response.text
    assert "không có gì thay đổi" in response.text
    assert await snapshot(gw) == before
    assert await deliver(gw, smtp) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no Origin and no Referer: a client without a browser's help
        {"origin": "https://first.vn"},
        {"origin": "https://shop.first.vn:8443"},
        {"origin": "https://mail.first.vn"},  # the base URL's host: our own page
        {"referer": "https://mail.first.vn/subscribe?lang=en"},
    ],
)
async def test_ad4_a_first_party_or_headerless_post_is_accepted(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, headers: dict[str, str]
):
    response = await sign_up(web, "an@example.vn", "news", **headers)
    assert response.status_code == 200
    assert len(to(await deliver(gw, smtp), "an@example.vn")) == 1


async def answer_and_outbox(gw: Gateway, app: Any, email: str) -> tuple[int, bytes, int]:
    """POST the form straight to the ASGI app: the status and body of the answer, and how
    many outbox rows for that address existed at the moment its last byte was sent."""
    body = urlencode([("email", email), ("topic", "news"), ("topic", "events")]).encode()
    seen: dict[str, Any] = {"body": b""}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
        elif message["type"] == "http.response.body":
            seen["body"] += message.get("body", b"")
            if not message.get("more_body"):
                seen["outbox"] = len(await rows(gw, t.outbox, email=email))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/subscribe",
        "raw_path": b"/subscribe",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"mail.first.vn"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": (IP, 40000),
        "server": ("mail.first.vn", 443),
    }
    await app(scope, receive, send)
    return seen["status"], seen["body"], seen["outbox"]


async def test_ad4_the_form_answers_before_it_looks_up_a_known_or_unknown_address(
    gw: Gateway, app: Any
):
    """Issue 12 item 6: the answer's timing must not tell whether an address is a contact,
    so the lookup and the mail happen after the answer, as for /manage."""
    await person(gw, "known@example.vn", topics=())
    known = await answer_and_outbox(gw, app, "known@example.vn")
    unknown = await answer_and_outbox(gw, app, "stranger@example.vn")
    assert known[0] == unknown[0] == 200 and known[1] == unknown[1]
    assert known[2] == unknown[2] == 0  # nothing was queued when the answer had gone
    # and the work was done afterwards: one confirmation each
    assert {r["email"] for r in await rows(gw, t.outbox)} == {
        "known@example.vn",
        "stranger@example.vn",
    }


async def test_ad4_a_refusal_after_the_sign_up_withdraws_its_confirmation_link(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    contact = await person(gw, "an@example.vn", topics=())
    await sign_up(web, "an@example.vn", "news")
    path = await confirmation_path(gw, smtp, "an@example.vn")
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    before = await snapshot(gw)
    response = await web.post(path, content=b"", headers=FORM)
    assert 400 <= response.status_code < 500
    assert await snapshot(gw) == before
