"""The send path against hostile input: runaway templates, huge bodies, line breaks in names
that reach headers, credentials over clear text, deep JSON, read-receipt trackers, links off
our site, guessable keys.

Real parts: a SQLite file (or the PostgreSQL cluster), the aiosmtpd server in
tests/smtp_server.py, the web app through httpx.ASGITransport.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from smtp_server import RecordingSMTPServer
from test_cli import assert_one_line_error, run
from test_transport import envelope, server_tls, smtp_transport  # noqa: F401 (a fixture)

from gateway import Gateway, apikeys
from gateway.config import Settings
from gateway.errors import ConfigError, InvalidInput, InvalidMessage, TemplateError
from gateway.mime import encode_text, format_address
from gateway.render import Draft, OutOfTime
from gateway.render_threads import RENDER_THREADS
from gateway.web.app import create_app

BASE = "https://mail.first.vn"
# 1e8 iterations: seconds of CPU, none of it a call, a lookup or output.
SLOW = "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    key = await apikeys.create(gw.store, "crm")
    transport = httpx.ASGITransport(app=create_app(gw, worker=False), client=("127.0.0.1", 4))
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE, headers={"Authorization": f"Bearer {key}"}
    ) as c:
        yield c


async def outbox_count(gw: Gateway) -> int:
    rows = await gw.store.db.fetch_all("SELECT COUNT(*) FROM outbox")
    return int(rows[0][0])


def headers_of(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


# -- item 4: runaway renders and huge bodies ----------------------------------------------------


@pytest.fixture
async def quick_gw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    env |= {"GATEWAY_SMTP_URL": smtp.url, "GATEWAY_RENDER_TIMEOUT": "1"}
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        yield gateway


async def test_a_runaway_template_leaves_the_pages_answering_and_is_refused_at_the_deadline(
    quick_gw,
):
    """While one request's template loops for seconds, GET /manage still answers at once;
    the looping request is refused with the reason after GATEWAY_RENDER_TIMEOUT and nothing
    is queued."""
    key = await apikeys.create(quick_gw.store, "crm")
    transport = httpx.ASGITransport(app=create_app(quick_gw, worker=False), client=("1.2.3.4", 5))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        body = {"to": "an@example.vn", "subject": "s", "html": SLOW}
        auth = {"Authorization": f"Bearer {key}"}
        start = time.monotonic()

        async def page_meanwhile() -> float:
            await asyncio.sleep(0.3)  # the render has started
            response = await c.get("/manage")
            assert response.status_code == 200
            return time.monotonic() - start - 0.3  # late by: a blocked loop shows here

        sent, late = await asyncio.gather(
            c.post("/api/v1/messages", json=body, headers=auth), page_meanwhile()
        )
    assert late < 1.0, f"GET /manage waited {late:.2f} s behind a render"
    assert sent.status_code == 422, sent.text
    assert "longer than 1 s" in sent.json()["error"]
    assert time.monotonic() - start < 3
    assert await outbox_count(quick_gw) == 0


async def test_hostile_requests_share_a_few_render_threads_and_free_them_at_the_deadline(
    quick_gw,
):
    """Eight runaway sends at once: each is refused after its second, no more than a few
    render threads ever run, and an ordinary message is accepted at once afterwards."""
    assert (await quick_gw.send("warm@example.vn", "s", "<p>Chào</p>")).queued
    start = time.monotonic()
    assert (await quick_gw.send("an0@example.vn", "s", "<p>Chào</p>")).queued
    ordinary = time.monotonic() - start  # on this machine, as busy as it is now
    start = time.monotonic()
    outcomes = await asyncio.gather(
        *(quick_gw.send(f"n{i}@example.vn", "s", SLOW) for i in range(8)), return_exceptions=True
    )
    assert all(isinstance(o, TemplateError) for o in outcomes), outcomes
    assert time.monotonic() - start < 2.5
    names = [t.name for t in threading.enumerate() if t.name.startswith("gateway-render")]
    assert 1 <= len(names) <= RENDER_THREADS
    start = time.monotonic()
    assert (await quick_gw.send("an@example.vn", "s", "<p>Chào</p>")).queued
    # A render thread still held by a runaway would add its whole second (the deadline).
    assert time.monotonic() - start < ordinary + 0.8
    assert await outbox_count(quick_gw) == 3


async def test_a_campaign_with_a_runaway_template_is_refused_at_creation(quick_gw):
    with pytest.raises(TemplateError, match="longer than 1 s"):
        await quick_gw.campaigns.create(name="x", topic="news", subject="s", html=SLOW)


@pytest.mark.parametrize(
    "html",
    [
        SLOW,
        # a list made once, then loops over it that call nothing and write nothing
        "{% set x = range(100000)|list %}{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ contact.name }}"
        "{% endfor %}{% endfor %}",
    ],
)
async def test_a_runaway_render_stops_at_its_deadline_instead_of_running_on(gw, html):
    """Stopping the render (not only the request) keeps a render thread free for others."""
    draft = Draft("an@example.vn", "s", html, None, "transactional")
    start = time.monotonic()
    with pytest.raises(OutOfTime):
        gw.accepter.renderer.render(draft, None, deadline=start + 0.3)
    # Without the deadline each of these runs for hours; the margin is for a test machine
    # busy with other test processes (the suite runs on several).
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    ("html", "words"),
    [("{{ ('x' * 20000000)[:1] }}", "items"), ("{{ (7 ** 3000000) % 10 }}", "exponent")],
)
async def test_a_value_too_large_to_compute_in_time_is_refused(gw, html, words):
    with pytest.raises(TemplateError, match=words):
        await gw.send("an@example.vn", "s", html)
    assert await outbox_count(gw) == 0


async def test_render_timeout_and_body_limit_are_settings(env):
    settings = Settings.from_env(env | {"GATEWAY_RENDER_TIMEOUT": "2.5"})
    assert (settings.render_timeout, settings.max_body_bytes) == (2.5, 2_000_000)
    with pytest.raises(ConfigError, match="GATEWAY_RENDER_TIMEOUT"):
        Settings.from_env(env | {"GATEWAY_RENDER_TIMEOUT": "0"})


async def test_a_body_over_the_limit_in_utf8_bytes_is_refused_and_nothing_is_written(env, smtp):
    env |= {"GATEWAY_SMTP_URL": smtp.url, "GATEWAY_MAX_BODY_BYTES": "1000"}
    async with Gateway.from_env(env) as gw:
        viet = "Chào bạn " * 100  # 900 characters, 1100 bytes
        for fields in ({"text": viet}, {"html": f"<p>{viet}</p>"}):
            with pytest.raises(InvalidMessage, match="larger than 1000 bytes"):
                await gw.send("an@example.vn", "s", **fields)
        assert (await gw.send("an@example.vn", "s", text="Chào bạn " * 50)).queued
        key = await apikeys.create(gw.store, "crm")
        transport = httpx.ASGITransport(app=create_app(gw, worker=False), client=("1.2.3.4", 5))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            response = await c.post(
                "/api/v1/messages",
                json={"to": "an@example.vn", "subject": "s", "text": viet},
                headers={"Authorization": f"Bearer {key}"},
            )
        assert response.status_code in (413, 422), response.text
        assert "larger than 1000 bytes" in response.json()["error"]
        assert await outbox_count(gw) == 1


async def test_the_default_body_limit_is_two_megabytes(gw):
    with pytest.raises(InvalidMessage, match="larger than 2000000 bytes"):
        await gw.send("an@example.vn", "s", text="x" * 2_000_001)
    assert (await gw.send("an@example.vn", "s", text="x" * 1_999_999)).queued


# -- item 7: no line break reaches a header through a name --------------------------------------


async def test_a_topic_name_with_a_line_break_is_refused_mf2(gw, client):
    with pytest.raises(InvalidInput, match="control characters"):
        await gw.add_topic("promo", "Promo\nX-Injected: yes")
    response = await client.post(
        "/api/v1/topics", json={"slug": "promo", "name": "Promo\r\nX-Injected: yes"}
    )
    assert response.status_code == 422, response.text
    assert "control characters" in response.json()["error"]
    assert await gw.store.get_topic("promo") is None


def test_gateway_topics_add_refuses_a_name_with_a_line_break(env):
    assert run(env, "init").returncode == 0
    proc = run(env, "topics", "add", "promo", "--name", "Promo\nX-Injected: yes")
    assert_one_line_error(proc, "control characters")


async def test_a_stored_topic_name_with_a_line_break_stays_inside_list_id_mf2(gw):
    """A name written before names were checked cannot add a header either."""
    await gw.store.add_topic("promo", "Promo\nX-Injected: yes", False, time.time())
    await gw.add_contact("an@example.vn", name="An", subscribe=["promo"])
    result = await gw.send("an@example.vn", "Tin", text="x", category="marketing", topic="promo")
    raw = await gw.store.db.fetch_val(
        "SELECT b.raw FROM outbox_bodies b JOIN outbox o ON o.id = b.outbox_id"
        " WHERE o.message_id = :m",
        {"m": result.message_id},
    )
    head = bytes(raw).split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^X-Injected", head, re.MULTILINE | re.IGNORECASE)
    assert headers_of(raw)["List-Id"].startswith("Promo\nX-Injected: yes <promo.")


@pytest.mark.parametrize("name", ["X-Tag\n", "X-Tag\r\n", "X-Tag\nBcc"])
async def test_a_header_name_ending_in_a_line_break_is_refused_mf2(gw, client, name):
    with pytest.raises(InvalidMessage, match="header name"):
        await gw.send("an@example.vn", "s", text="x", headers={name: "v"})
    response = await client.post(
        "/api/v1/messages",
        json={"to": "an@example.vn", "subject": "s", "text": "x", "headers": {name: "v"}},
    )
    assert response.status_code == 422, response.text
    assert await outbox_count(gw) == 0


@pytest.mark.parametrize("value", ["a\nX-Injected: yes", "a\rX-Injected: yes", "a\x0bb"])
def test_header_encoding_never_writes_a_control_character_as_is_mf2(value):
    for encoded in (encode_text(value), format_address(value, "an@example.vn")):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", encoded)
        assert "\n" not in encoded.replace("\r\n ", "")  # only folding


@pytest.mark.parametrize(
    "setting",
    ["GATEWAY_SENDER_NAME", "GATEWAY_FROM", "GATEWAY_SENDER_PHONE", "GATEWAY_REFUSAL_ADDRESS"],
)
def test_sender_settings_with_a_line_break_are_a_config_error(env, setting):
    value = {"GATEWAY_FROM": "Shop\nBcc: x@evil.com <news@first.vn>"}.get(setting, "a\nb")
    with pytest.raises(ConfigError, match=setting) as info:
        Settings.from_env(env | {setting: value})
    assert "\n" not in str(info.value)


# -- item 8: credentials only over TLS ----------------------------------------------------------


async def test_credentials_are_never_sent_to_a_relay_without_starttls(caplog):
    """The relay offers AUTH but no STARTTLS: nothing is sent, not even the password, and
    the log and the outcome say why; the failure is temporary, so the mail stays queued."""
    async with RecordingSMTPServer(credentials={"mailer": "pw"}) as srv:
        url = f"smtp://mailer:pw@127.0.0.1:{srv.port}"
        with caplog.at_level(logging.ERROR, logger="gateway.transport.smtp"):
            async with smtp_transport(url) as transport:
                [outcome] = await transport.deliver([envelope()])
    assert outcome.ok is False and outcome.permanent is False
    assert "STARTTLS" in outcome.message and "tls=none" in outcome.message
    assert srv.logins == [] and srv.messages == []
    assert any("STARTTLS" in r.getMessage() for r in caplog.records)


async def test_credentials_go_after_starttls_when_the_relay_offers_it(server_tls):  # noqa: F811
    async with RecordingSMTPServer(credentials={"mailer": "pw"}, starttls=server_tls) as srv:
        url = f"smtp://mailer:pw@127.0.0.1:{srv.port}?verify=0"
        async with smtp_transport(url, concurrency=1) as transport:
            outcomes = await transport.deliver([envelope(0), envelope(1)])
    assert all(o.ok for o in outcomes), outcomes
    assert srv.logins == ["mailer"] and len(srv.messages) == 2


async def test_a_message_stays_queued_while_the_relay_would_take_the_password_in_clear(env):
    async with RecordingSMTPServer(credentials={"mailer": "pw"}) as srv:
        env["GATEWAY_SMTP_URL"] = f"smtp://mailer:pw@127.0.0.1:{srv.port}"
        async with Gateway.from_env(env) as gw:
            result = await gw.send("an@example.vn", "s", text="x")
            await gw.deliver(until_idle=True)
            status = await gw.message_status(result.message_id)
    assert status["state"] == "queued", status
    assert "STARTTLS" in status["last_error"]
    assert srv.logins == [] and srv.messages == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("smtp://u:p@relay.example?tls=none", "this machine"),
        ("smtp://u:p@10.0.0.5:25?tls=none", "this machine"),
        ("smtps://u:p@127.0.0.1?tls=none", "contradicts"),
        ("smtp://u:p@127.0.0.1?tls=none&starttls=1", "contradicts"),
        ("smtp://u:p@relay.example?starttls=0", "unencrypted"),
        ("smtp://u:p@127.0.0.1?tls=required", "only 'none'"),
    ],
)
def test_clear_text_credentials_need_tls_none_and_a_loopback_relay(url, words):
    from gateway.transport import transport_from_url

    with pytest.raises(ConfigError, match=words) as info:
        transport_from_url(url)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_tls_none_is_accepted_for_a_loopback_relay(host):
    from gateway.transport import transport_from_url

    transport: Any = transport_from_url(f"smtp://u:p@{host}:2525?tls=none")
    assert transport.settings.plain and not transport.settings.requires_tls


# -- item 10: deep JSON, read receipts, links off our site, weak keys ---------------------------


async def test_json_nested_deeper_than_32_levels_answers_400_with_a_message(gw, client):
    deep = '{"a":' * 900 + "1" + "}" * 900
    body = '{"to":"an@example.vn","subject":"s","text":"x","context":{"x":DEEP}}'.replace(
        "DEEP", deep
    )
    response = await client.post(
        "/api/v1/messages", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "deeper than 32" in response.json()["error"]
    shallow = '{"a":' * 20 + "1" + "}" * 20
    response = await client.post(
        "/api/v1/messages",
        content=body.replace(deep, shallow),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 202, response.text


RECEIPTS = ("Disposition-Notification-To", "Return-Receipt-To", "X-Confirm-Reading-To")


async def test_read_receipt_requests_are_dropped_like_list_headers(gw, client):
    """A read receipt reports when the person opened the mail: a tracker, never sent."""
    asked = {name: "spy@evil.com" for name in RECEIPTS} | {"X-Campaign": "spring"}
    direct = await gw.send("an@example.vn", "s", text="x", headers=asked)
    response = await client.post(
        "/api/v1/messages",
        json={"to": "an@example.vn", "subject": "s", "text": "x", "headers": asked},
    )
    assert response.status_code == 202, response.text
    for message_id in (direct.message_id, response.json()["message_id"]):
        raw = await gw.store.db.fetch_val(
            "SELECT b.raw FROM outbox_bodies b JOIN outbox o ON o.id = b.outbox_id"
            " WHERE o.message_id = :m",
            {"m": message_id},
        )
        parsed = headers_of(raw)
        assert parsed["X-Campaign"] == "spring"
        assert not any(parsed[name] for name in RECEIPTS)
        assert b"spy@evil.com" not in bytes(raw)


@pytest.mark.parametrize("path", ["//evil.com/x", "/\\evil.com/x", "/%09/evil.com/x", "///x"])
async def test_the_language_link_of_an_error_page_stays_on_our_site(client, path):
    response = await client.get(httpx.URL(BASE + path), headers={"Accept-Language": "vi"})
    assert response.status_code == 404
    [href] = re.findall(r'<a class="lang" href="([^"]*)"', response.text)
    assert href.startswith("/") and not href.startswith("//"), href
    assert "\\" not in href and "\t" not in href
    assert httpx.URL(BASE).join(href.replace("&amp;", "&")).host == "mail.first.vn"


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ("k", "key 1 is 1 characters long"),
        ("short-key-newest", "at least 32"),
        ("a" * 40, "easy to guess"),
        ("abcabcabcabcabcabcabcabcabcabcabcabc", "easy to guess"),
        ("test-key-newest-6f1c2a9e4b7d3f8a5c0e,old", "key 2"),
    ],
)
def test_a_short_or_guessable_secret_key_is_a_config_error(env, keys, words):
    with pytest.raises(ConfigError, match=words) as info:
        Settings.from_env(env | {"GATEWAY_SECRET_KEYS": keys})
    message = str(info.value)
    assert "\n" not in message and "secrets.token_urlsafe(32)" in message


def test_a_generated_key_and_the_development_key_are_long_enough(env, tmp_path):
    import secrets

    Settings.from_env(env | {"GATEWAY_SECRET_KEYS": secrets.token_urlsafe(32)})
    Settings.from_env(env | {"GATEWAY_SECRET_KEYS": secrets.token_hex(16)})
    dev = Settings.from_env({k: v for k, v in env.items() if k != "GATEWAY_SECRET_KEYS"})
    assert len(dev.secret_keys[0]) >= 32
