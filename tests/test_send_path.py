"""The send path end to end: accept -> outbox -> worker -> a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
import time

import pytest
from smtp_server import RecordingSMTPServer

from gateway import (
    Gateway,
    HeaderInjection,
    InvalidAddress,
    InvalidMessage,
    SendRequest,
    TemplateError,
    UnknownTopic,
)
from gateway.store import schema as t

HTML = "<h1>Xin chào {{ contact.name }}</h1><p>Ưu đãi tháng 12 tại <a href='https://first.vn/sale'>cửa hàng</a>.</p>"


async def subscribe(gw: Gateway, address: str = "an@example.vn", topic: str = "news", **kw: str):
    contact, _, _ = await gw.add_contact(
        address, name=kw.pop("name", "Nguyễn Văn An"), subscribe=[topic], **kw
    )
    return contact


async def count(gw: Gateway, table, **where: object) -> int:
    rows = await gw.store.db.fetch_all(table.select())
    return sum(all(r[k] == v for k, v in where.items()) for r in rows)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return text, html


async def test_delivered_marketing_message_meets_lu1_lu4_mf1_ad1_ad2(
    gw: Gateway, smtp: RecordingSMTPServer
):
    await subscribe(gw)
    result = await gw.send(
        "An@Example.vn",
        "Ưu đãi cho {{ contact.name }}",
        HTML,
        category="marketing",
        topic="news",
        headers={
            "List-Unsubscribe": "<https://evil.com/u>",
            "List-Id": "spoof <x.evil.com>",
            "X-Campaign": "dec",
        },
    )
    assert result.status == "queued", result.reason
    stats = await gw.deliver(until_idle=True)
    assert stats.sent == 1
    assert len(smtp.messages) == 1
    received = smtp.messages[0]
    assert received.rcpt_tos == ["an@example.vn"]  # MF-3: one recipient
    raw = received.data
    # MF-1: CRLF line ends only, no line over 998 characters
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = parse(raw)
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        assert len(msg.get_all(name, [])) == 1, name
    assert msg["Message-ID"] == result.message_id
    assert re.fullmatch(r"<[a-z2-7]{24}@first\.vn>", msg["Message-ID"])
    assert msg["From"].addresses[0].addr_spec == "news@first.vn"
    assert msg["From"].addresses[0].display_name == "Cửa hàng An"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    # AD-1: the advertising label starts the subject
    assert msg["Subject"] == "[QC] Ưu đãi cho Nguyễn Văn An"
    # LU-1: exactly one of ours; the caller's List-* headers are gone
    assert len(msg.get_all("List-Unsubscribe")) == 1
    assert len(msg.get_all("List-Unsubscribe-Post")) == 1
    assert len(msg.get_all("List-Id")) == 1
    assert "evil.com" not in raw.decode()
    assert msg["X-Campaign"] == "dec"
    # LU-2: https first, then mailto
    uris = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    assert len(uris) == 2
    assert uris[0].startswith("https://mail.first.vn/unsubscribe/")
    assert uris[1].startswith("mailto:unsubscribe@first.vn?")
    assert "example.vn" not in uris[0] and "an%40" not in uris[0]  # OC-4: no address in the link
    # LU-3
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # LU-4: List-Id under our own domain
    assert re.search(r"<news\.first\.vn>$", str(msg["List-Id"]))
    text, html = parts(msg)
    assert "Xin chào Nguyễn Văn An" in html and "Xin chào Nguyễn Văn An" in text
    # AD-2: sender identity, then immediately the opt-out section, at the end of both parts
    for body in (text, html):
        identity = [
            "Công ty TNHH An",
            "+84 28 1234 5678",
            "news@first.vn",
            "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
            "https://first.vn",
        ]
        optout = [
            "từ chối nhận mọi thư quảng cáo",
            uris[0],
            "https://mail.first.vn/preferences/",
            "unsubscribe@first.vn",
        ]
        positions = [body.index(s) for s in identity + optout]
        assert max(positions[: len(identity)]) < min(positions[len(identity) :]), body
        assert body.index("Ưu đãi tháng 12" if body is html else "Ưu đãi tháng 12") < positions[0]
    assert text.rstrip().endswith("hoặc gọi +84 28 1234 5678.")


async def test_message_queued_before_cli_suppress_add_is_never_delivered(
    gw: Gateway, smtp: RecordingSMTPServer, env: dict[str, str]
):
    """ST-1: the refusal lands after accept; the worker's recheck stops the queued message."""
    await subscribe(gw)
    await subscribe(gw, "binh@example.vn", name="Bình")
    queued = [
        await gw.send(addr, "Tin mới", HTML, category="marketing", topic="news")
        for addr in ("an@example.vn", "binh@example.vn")
    ]
    assert [r.status for r in queued] == ["queued", "queued"]
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "suppress", "add", "AN@example.vn", "--reason", "phone"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    stats = await gw.deliver(until_idle=True)
    assert stats.suppressed == 1
    marketing = [m.rcpt_tos for m in smtp.messages if parse(m.data)["Subject"].startswith("[QC]")]
    assert marketing == [["binh@example.vn"]]
    # the refusal by phone was confirmed to the person (ST-2, ST-3), as service mail
    assert [
        m.rcpt_tos for m in smtp.messages if not parse(m.data)["Subject"].startswith("[QC]")
    ] == [["an@example.vn"]]
    assert await count(gw, t.outbox, message_id=queued[0].message_id, state="suppressed") == 1
    assert await count(gw, t.message_log, message_id=queued[0].message_id, status="suppressed") == 1
    # and nothing new for that person is accepted either
    again = await gw.send("an@example.vn", "Tin mới", HTML, category="marketing", topic="news")
    assert again.status == "suppressed"
    assert "refused all promotional mail" in again.reason


async def test_transactional_mail_reaches_a_person_who_refused_marketing(
    gw: Gateway, smtp: RecordingSMTPServer
):
    """Promise 6 and AD-5: service mail still goes, without the advertising label or List-*."""
    await subscribe(gw)
    await gw.suppress("an@example.vn", reason="unsubscribe")
    result = await gw.send("an@example.vn", "Hóa đơn #42", text="Cảm ơn bạn đã mua hàng.")
    assert result.status == "queued"
    await gw.deliver(until_idle=True)
    [msg] = [parse(m.data) for m in smtp.messages if parse(m.data)["Subject"] == "Hóa đơn #42"]
    assert msg["List-Unsubscribe"] is None
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "Cảm ơn bạn đã mua hàng."


async def test_transactional_mail_cannot_carry_the_advertising_label(gw: Gateway):
    with pytest.raises(InvalidMessage, match="only marketing mail carries the"):
        await gw.send("an@example.vn", "[QC] Giảm giá", text="x")


async def test_marketing_without_a_recorded_opt_in_is_suppressed(gw: Gateway):
    """AD-4: no opt-in to this topic, no marketing mail."""
    await subscribe(gw, topic="deals")
    result = await gw.send("an@example.vn", "Tin", HTML, category="marketing", topic="news")
    assert result.status == "suppressed"
    assert "needs the person's opt-in" in result.reason
    stranger = await gw.send("x@example.vn", "Tin", HTML, category="marketing", topic="news")
    assert stranger.status == "suppressed"
    assert await count(gw, t.outbox) == 0
    assert await count(gw, t.message_log, status="suppressed") == 2


async def test_third_party_content_blocks_the_message_naming_each_url(gw: Gateway):
    """TP-1: a third-party image and link block the message; nothing reaches the outbox."""
    await subscribe(gw)
    html = (
        '<p><img src="https://tracker.evil.com/p.gif"><a href="https://ads.example.com/x">x</a></p>'
    )
    result = await gw.send("an@example.vn", "Tin", html, category="marketing", topic="news")
    assert result.status == "blocked"
    assert set(result.blocked_urls) == {
        "https://tracker.evil.com/p.gif",
        "https://ads.example.com/x",
    }
    assert "GATEWAY_FIRST_PARTY_DOMAINS" in result.reason
    assert await count(gw, t.outbox) == 0
    assert await count(gw, t.message_log, status="blocked") == 1


async def test_tp3_an_attribute_cannot_smuggle_a_link_in(gw: Gateway):
    """TP-3: interpolated attributes are escaped, and the scan runs on the final message."""
    await gw.add_contact(
        "an@example.vn",
        name='<img src="https://evil.com/x.png">',
        subscribe=["news"],
        attributes={"site": "https://evil.com/promo"},
    )
    html = "<p>{{ contact.name }}</p>"
    contact = await gw.store.get_contact("an@example.vn")
    draft = await gw.accepter.draft(
        SendRequest("an@example.vn", "x", html, category="marketing", topic="news")
    )
    rendered = gw.renderer.render(draft, contact, {})
    body = parse(rendered.raw).get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "&lt;img src=&#34;https://evil.com/x.png&#34;&gt;" in body
    assert "<img" not in body
    result = await gw.send(
        "an@example.vn",
        "x",
        "<p>Xem {{ contact.attributes.site }}</p>",
        category="marketing",
        topic="news",
    )
    assert result.status == "blocked"
    assert result.blocked_urls == ("https://evil.com/promo",)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"to": "not-an-address"}, InvalidAddress, "not a valid email address"),
        ({"to": "a@example.vn\r\nBcc: x@evil.com"}, InvalidAddress, "line break"),
        ({"category": "marketing"}, InvalidMessage, "needs a topic"),
        ({"category": "marketing", "topic": "nope"}, UnknownTopic, "unknown topic 'nope'"),
        ({"category": "newsletter"}, InvalidMessage, "category must be one of"),
        ({"html": "", "text": " "}, InvalidMessage, "no body"),
        ({"subject": "Hi\r\nBcc: x@evil.com"}, HeaderInjection, "line break"),
        ({"headers": {"X-Tag": "a\nBcc: x@evil.com"}}, HeaderInjection, "X-Tag"),
        ({"headers": {"From": "boss@first.vn"}}, InvalidMessage, "set by the gateway"),
        ({"html": "<p>{{ contact.name </p>"}, TemplateError, "html template, line 1"),
        ({"html": "<p>{{ coupon }}</p>"}, TemplateError, "'coupon' is undefined"),
        ({"subject": "{{ contact.attributes.missing.x }}"}, TemplateError, "subject template"),
    ],
)
async def test_bad_input_raises_a_clear_error_and_writes_nothing(gw: Gateway, kwargs, error, text):
    await subscribe(gw)
    request = {"to": "an@example.vn", "subject": "Tin", "html": HTML, **kwargs}
    with pytest.raises(error, match=re.escape(text)):
        await gw.send(**request)
    assert await count(gw, t.outbox) == 0
    assert await count(gw, t.message_log) == 0


async def test_a_batch_with_one_bad_request_writes_nothing(gw: Gateway):
    requests = [SendRequest(f"p{i}@example.vn", "Hi", text="x") for i in range(3)]
    requests.append(SendRequest("broken", "Hi", text="x"))
    with pytest.raises(InvalidAddress):
        await gw.send_many(requests)
    assert await count(gw, t.outbox) == 0


async def test_idempotency_key_accepts_a_message_once(gw: Gateway, smtp: RecordingSMTPServer):
    first = await gw.send("an@example.vn", "Receipt", text="x", idempotency_key="order-42")
    second = await gw.send("an@example.vn", "Receipt", text="x", idempotency_key="order-42")
    assert second.message_id == first.message_id
    await gw.deliver(until_idle=True)
    assert len(smtp.messages) == 1


async def test_worker_reuses_connections_across_messages(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(env, concurrency=2) as gw:
        results = await gw.send_many(
            [
                SendRequest(
                    f"p{i}@example.vn", "Mã xác nhận {{ n }}", text="Mã: {{ n }}", context={"n": i}
                )
                for i in range(60)
            ]
        )
        assert {r.status for r in results} == {"queued"}
        stats = await gw.deliver(until_idle=True, batch_size=20)
    assert stats.sent == 60
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == sorted(
        f"p{i}@example.vn" for i in range(60)
    )
    assert smtp.connections <= 2


async def test_a_crashed_workers_lease_runs_out_and_another_worker_delivers(
    gw: Gateway, smtp: RecordingSMTPServer
):
    result = await gw.send("an@example.vn", "Hi", text="x")
    # a worker claims the row and dies before recording anything
    claimed = await gw.store.claim(10, lease_seconds=0.3, now=time.time())
    assert [c.message_id for c in claimed] == [result.message_id]
    assert (await gw.deliver(until_idle=True)).sent == 0  # still leased: not due
    time.sleep(0.35)
    stats = await gw.deliver(until_idle=True)
    assert stats.sent == 1
    assert parse(smtp.messages[0].data)["Message-ID"] == result.message_id
    assert (await gw.message_status(result.message_id))["attempts"] == 2


async def test_temporary_failure_is_retried_later_and_permanent_failure_bounces(
    env: dict[str, str],
):
    """BN-1: a 5xx for a recipient fails the message at once and suppresses the address;
    BN-3: a 4xx is retried on the schedule."""

    def reject(rcpt: str):
        return {
            "later@example.vn": (451, "4.3.0 try again"),
            "gone@example.vn": (550, "5.1.1 no such user"),
        }.get(rcpt)

    async with RecordingSMTPServer(reject=reject) as smtp:
        env["GATEWAY_SMTP_URL"] = smtp.url
        async with Gateway.from_env(env) as gw:
            later = await gw.send("later@example.vn", "Hi", text="x")
            gone = await gw.send("gone@example.vn", "Hi", text="x")
            ok = await gw.send("ok@example.vn", "Hi", text="x")
            before = time.time()
            stats = await gw.deliver(until_idle=True)
            assert (stats.sent, stats.retried, stats.bounced, stats.failed) == (1, 1, 1, 0)
            status = await gw.message_status(later.message_id)
            assert status["state"] == "queued" and "451" in status["last_error"]
            row = await gw.store.db.fetch_one(
                t.outbox.select().where(t.outbox.c.message_id == later.message_id)
            )
            assert row["next_attempt_at"] >= before + 60 * 0.9  # first step of the retry schedule
            failed = await gw.message_status(gone.message_id)
            assert failed["state"] == "bounced" and "550" in failed["last_error"]
            assert (await gw.message_status(ok.message_id))["state"] == "sent"
            listed = {s["email"]: s["reason"] for s in await gw.suppressions()}
            assert listed == {"gone@example.vn": "hard_bounce"}
            again = await gw.send("gone@example.vn", "Hi again", text="x")
            assert again.status == "suppressed"
    assert [m.rcpt_tos for m in smtp.messages] == [["ok@example.vn"]]


async def test_sent_messages_keep_a_log_but_not_their_body(gw: Gateway):
    result = await gw.send("an@example.vn", "Hi", text="secret content")
    await gw.deliver(until_idle=True)
    row = await gw.store.db.fetch_one(
        t.outbox.select().where(t.outbox.c.message_id == result.message_id)
    )
    assert row["state"] == "sent" and row["raw"] is None
    assert await gw.store.db.fetch_all(t.outbox_bodies.select()) == []
    # The log holds its acceptance; its sending is the row's sent_at (no second entry).
    statuses = [r["status"] for r in await gw.store.db.fetch_all(t.message_log.select())]
    assert statuses == ["accepted"]
    assert row["sent_at"] is not None and row["sent_at"] == row["updated_at"]
    story = await gw.store.message_story(result.message_id)
    assert [e["status"] for e in story] == ["accepted", "sent"]
    assert story[1]["at"] == row["sent_at"]


async def test_maildir_transport_is_the_default_and_writes_real_messages(
    env: dict[str, str], tmp_path
):
    del env["GATEWAY_SMTP_URL"]
    async with Gateway.from_env(env) as gw:
        await gw.send("an@example.vn", "Xin chào", text="Nội dung")
        await gw.deliver(until_idle=True)
    files = list((tmp_path / "var" / "mail" / "new").iterdir())
    assert len(files) == 1
    assert parse(files[0].read_bytes())["Subject"] == "Xin chào"


async def test_tp1_the_footer_is_scanned_too(env: dict[str, str], smtp: RecordingSMTPServer):
    """A third-party website in the sender's identity blocks marketing mail, naming it."""
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_SENDER_WEBSITE"] = "https://facebook.com/cuahangan"
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin tức")
        await subscribe(gw)
        result = await gw.send("an@example.vn", "Tin", HTML, category="marketing", topic="news")
        assert result.status == "blocked"
        assert result.blocked_urls == ("https://facebook.com/cuahangan",)
        text_only = await gw.send(
            "an@example.vn", "Tin", text="x", category="marketing", topic="news"
        )
        assert text_only.status == "blocked"
        # service mail has no footer, so it is not affected
        assert (await gw.send("an@example.vn", "Hóa đơn", HTML)).status == "queued"


async def test_st3_a_refusal_by_phone_recorded_by_staff_acts_like_one_click(
    gw: Gateway, smtp: RecordingSMTPServer
):
    await subscribe(gw)
    assert await gw.suppress("an@example.vn", reason="phone") is True
    assert await gw.suppress("an@example.vn", reason="phone") is False  # once, like OC-2
    marketing = await gw.send("an@example.vn", "Tin", HTML, category="marketing", topic="news")
    assert marketing.status == "suppressed"
    await gw.deliver(until_idle=True)
    # ST-2: exactly one confirmation, as service mail
    assert [parse(m.data)["Subject"] for m in smtp.messages] == [
        "Xác nhận: bạn đã từ chối nhận thư quảng cáo"
    ]
    ledger = await gw.store.db.fetch_all(
        t.consent_ledger.select().where(t.consent_ledger.c.action == "opt_out")
    )
    assert [(r["source"], r["topic_id"]) for r in ledger] == [("admin", None)]
