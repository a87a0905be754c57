"""Campaigns against a real SMTP server: whole audiences, refusals mid-send, pause, restarts."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from smtp_server import RecordingSMTPServer

from gateway import Gateway, InvalidInput, TemplateError, UnknownTopic
from gateway.store import schema as t

HTML = "<p>Xin chào {{ contact.name }} ở {{ contact.attributes.city }}! <a href='https://first.vn/sale'>Xem</a></p>"


async def audience(gw: Gateway, tmp_path: Path, n: int, topic: str = "news") -> list[str]:
    path = tmp_path / f"{topic}-{n}.csv"
    emails = [f"{topic}{i:05d}@example.vn" for i in range(n)]
    path.write_text(
        "email,name\n" + "".join(f"{e},Người {i}\n" for i, e in enumerate(emails)), encoding="utf-8"
    )
    report = await gw.import_contacts(path, subscribe=[topic])
    assert report.created == n and not report.bad_rows
    return emails


async def campaign(gw: Gateway, **kw: str) -> int:
    values = {
        "name": "Tháng 12",
        "topic": "news",
        "subject": "Ưu đãi cho {{ contact.name }}",
        "html": HTML,
    }
    values.update(kw)
    return await gw.campaigns.create(**values)  # type: ignore[arg-type]


def subject(data: bytes) -> str:
    return str(BytesHeaderParser(policy=email.policy.default).parsebytes(data)["Subject"])


def recipients(smtp: RecordingSMTPServer) -> Counter[str]:
    """Who received campaign (marketing) mail, and how many times."""
    return Counter(m.rcpt_tos[0] for m in smtp.messages if subject(m.data).startswith("[QC]"))


async def test_a_campaign_of_5000_contacts_reaches_each_exactly_once(
    gw: Gateway, smtp: RecordingSMTPServer, tmp_path
):
    emails = await audience(gw, tmp_path, 5000)
    await audience(gw, tmp_path, 3, topic="deals")  # subscribers of another topic get nothing
    cid = await campaign(gw)
    assert await gw.campaigns.start(cid) == "sending"
    stats = await gw.deliver(until_idle=True)
    assert stats.sent == 5000
    assert recipients(smtp) == Counter(emails)
    status = await gw.campaigns.status(cid)
    assert status.state == "done"
    assert status.counts == {
        "queued": 0,
        "sent": 5000,
        "suppressed": 0,
        "blocked": 0,
        "failed": 0,
        "bounced": 0,
    }
    msg = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    assert str(msg["Subject"]).startswith("[QC] Ưu đãi cho Người ")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_create_refuses_undefined_fields_and_third_party_content_and_writes_nothing(
    gw: Gateway,
):
    with pytest.raises(TemplateError, match="'coupon' is undefined"):
        await campaign(gw, html="<p>{{ coupon }}</p>")
    with pytest.raises(TemplateError, match="html template"):
        await campaign(gw, html="<p>{{ contact.nickname }}</p>")
    with pytest.raises(InvalidInput, match="third-party content: https://cdn.evil.com/a.png"):
        await campaign(gw, html="<img src='https://cdn.evil.com/a.png'>")
    with pytest.raises(UnknownTopic):
        await campaign(gw, topic="nope")
    assert await gw.store.list_campaigns() == []


async def test_tp3_each_recipients_message_is_scanned_on_its_own(
    gw: Gateway, smtp: RecordingSMTPServer
):
    """An attribute holding a third-party URL blocks that one recipient's message only."""
    await gw.add_contact("ok@example.vn", name="An", subscribe=["news"], attributes={"city": "Huế"})
    await gw.add_contact(
        "bad@example.vn", name="Bình", subscribe=["news"], attributes={"city": "https://evil.com/x"}
    )
    cid = await campaign(gw)
    await gw.campaigns.start(cid)
    await gw.deliver(until_idle=True)
    assert recipients(smtp) == Counter(["ok@example.vn"])
    counts = (await gw.campaigns.status(cid)).counts
    assert (counts["sent"], counts["blocked"]) == (1, 1)


async def test_st1_a_refusal_in_the_middle_of_a_running_campaign_stops_that_persons_message(
    gw: Gateway, smtp: RecordingSMTPServer, tmp_path
):
    emails = await audience(gw, tmp_path, 300)
    cid = await campaign(gw)
    await gw.campaigns.start(cid, rate=200)  # spread over about 1.5 s
    late = emails[-1]
    stop = asyncio.Event()
    delivering = asyncio.create_task(gw.deliver(stop=stop, poll_seconds=0.05))
    while len(recipients(smtp)) < 50:
        await asyncio.sleep(0.02)
    contact = await gw.store.get_contact(late)
    assert contact is not None
    await gw.preferences.refuse(contact, source="link")
    while (await gw.campaigns.status(cid)).state != "done":
        await asyncio.sleep(0.05)
    stop.set()
    await delivering
    got = recipients(smtp)
    assert late not in got
    assert sum(got.values()) == 299 and max(got.values()) == 1
    # ST-2: exactly one confirmation of the refusal went out, as service mail
    confirmations = [subject(m.data) for m in smtp.messages if m.rcpt_tos == [late]]
    assert len(confirmations) == 1 and not confirmations[0].startswith("[QC]")
    assert (await gw.campaigns.status(cid)).counts["suppressed"] == 1


async def test_pause_holds_waiting_mail_resume_sends_it_and_cancel_drops_it(
    gw: Gateway, smtp: RecordingSMTPServer, tmp_path
):
    await audience(gw, tmp_path, 40)
    cid = await campaign(gw)
    await gw.campaigns.start(cid)
    await gw.campaigns.tick(cid)  # the audience is in the outbox
    await gw.campaigns.pause(cid)
    assert (await gw.deliver(until_idle=True)).sent == 0
    assert (await gw.campaigns.status(cid)).state == "paused"
    await gw.campaigns.resume(cid)
    await gw.deliver(until_idle=True)
    assert len(smtp.messages) == 40
    assert (await gw.campaigns.status(cid)).state == "done"

    other = await campaign(gw, name="second")
    await gw.campaigns.start(other)
    await gw.campaigns.tick(other)
    await gw.campaigns.cancel(other)
    assert (await gw.deliver(until_idle=True)).sent == 0
    status = await gw.campaigns.status(other)
    assert status.state == "cancelled" and status.counts["sent"] == 0
    rows = await gw.store.db.fetch_all(t.outbox.select().where(t.outbox.c.campaign_id == other))
    assert rows and all(r["state"] == "cancelled" and r["raw"] is None for r in rows)
    assert await gw.store.db.fetch_all(t.outbox_bodies.select()) == []
    with pytest.raises(InvalidInput, match="cannot be sent again"):
        await gw.campaigns.start(other)


async def test_a_restarted_campaign_never_enqueues_a_contact_twice(
    gw: Gateway, smtp: RecordingSMTPServer, tmp_path
):
    await audience(gw, tmp_path, 250)
    cid = await campaign(gw)
    await gw.campaigns.start(cid)
    await gw.campaigns.tick(cid)
    # A crash before the cursor moved: the same pages are offered again.
    await gw.store.update_campaign(cid, cursor=0, enqueued_all=False)
    await gw.campaigns.tick(cid)
    await gw.deliver(until_idle=True)
    got = recipients(smtp)
    assert len(got) == 250 and max(got.values()) == 1


async def test_ad3_a_fourth_marketing_message_within_24_hours_waits(
    gw: Gateway, smtp: RecordingSMTPServer
):
    await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
    for n in range(4):
        result = await gw.send(
            "an@example.vn", f"Tin {n}", text="x", category="marketing", topic="news"
        )
        assert result.status == "queued"
    stats = await gw.deliver(until_idle=True)
    assert (stats.sent, stats.deferred) == (3, 1)
    assert len(smtp.messages) == 3
    rows = await gw.store.db.fetch_all(t.outbox.select().where(t.outbox.c.state == "queued"))
    assert len(rows) == 1 and rows[0]["next_attempt_at"] > time.time() + 86000
    assert "held by the frequency cap" in rows[0]["last_error"]
    # service mail is not capped
    await gw.send("an@example.vn", "Hóa đơn", text="x")
    assert (await gw.deliver(until_idle=True)).sent == 1


def test_a_campaign_killed_mid_send_resumes_with_no_duplicate_and_no_loss(env, tmp_path):
    """SIGKILL the `gateway campaign send` process in the middle, run it again: every
    subscriber gets exactly one message."""

    async def scenario() -> None:
        async with RecordingSMTPServer() as smtp:
            run_env = {**os.environ, **env, "GATEWAY_SMTP_URL": smtp.url}
            async with Gateway.from_env(run_env) as gw:
                await gw.add_topic("news", "Tin tức")
                emails = await audience(gw, tmp_path, 1500)
                cid = await campaign(gw)

            def cli(*args: str) -> asyncio.subprocess.Process:
                return asyncio.create_subprocess_exec(  # type: ignore[return-value]
                    sys.executable,
                    "-m",
                    "gateway",
                    *args,
                    env=run_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )

            first = await cli("campaign", "send", str(cid), "--rate", "600")
            while len(smtp.messages) < 300:
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            assert 300 <= len(smtp.messages) < 1500
            # The killed process's leases must run out first; make that immediate.
            async with Gateway.from_env(run_env) as gw:
                await gw.store.db.execute(
                    "UPDATE outbox SET lease_until = 0 WHERE state = 'sending'"
                )
                await gw.store.db.execute("UPDATE campaigns SET lease_until = NULL")
            second = await cli("campaign", "send", str(cid), "--json")
            out, err = await asyncio.wait_for(second.communicate(), timeout=120)
            assert second.returncode == 0, err.decode()
            status = json.loads(out.decode().strip().splitlines()[-1])
            assert status["state"] == "done"
            got = recipients(smtp)
            assert set(got) == set(emails)
            # Only messages on the wire at the kill may go twice (same Message-ID).
            twice = [e for e, n in got.items() if n > 1]
            assert len(twice) <= 200
            ids = Counter(
                email.message_from_bytes(m.data, policy=email.policy.default)["Message-ID"]
                for m in smtp.messages
                if m.rcpt_tos[0] in twice
            )
            assert all(n == 2 for n in ids.values()) and len(ids) == len(twice)

    asyncio.run(scenario())


async def test_ad3_the_cap_holds_across_batches_still_being_recorded(
    gw: Gateway, smtp: RecordingSMTPServer
):
    """With one message per batch, each batch's recheck runs while the previous one's
    outcome may still be being written: the cap must count it anyway."""
    await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
    for n in range(6):
        await gw.send("an@example.vn", f"Tin {n}", text="x", category="marketing", topic="news")
    stats = await gw.deliver(until_idle=True, batch_size=1)
    assert (stats.sent, stats.deferred) == (3, 3)
    assert len(smtp.messages) == 3


async def test_ad3_the_cap_counts_what_another_worker_has_on_the_wire(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    """Two workers with their own database connections, as two processes or machines: one
    has the address's third marketing message of the day on the wire (claimed, not yet
    recorded). The other, rechecking a fourth, counts it and defers instead of sending it."""
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(env) as a, Gateway.from_env(env) as b:
        await a.add_topic("news", "Tin tức")
        await a.add_contact("an@example.vn", name="An", subscribe=["news"])

        async def queue(n: int) -> None:
            for i in range(n):
                result = await a.send(
                    "an@example.vn", f"Tin {i}", text="x", category="marketing", topic="news"
                )
                assert result.status == "queued"

        await queue(2)
        assert (await a.deliver(until_idle=True)).sent == 2
        await queue(2)
        on_the_wire = await a.store.claim(1, lease_seconds=60, now=time.time())
        assert len(on_the_wire) == 1
        stats = await b.deliver(until_idle=True)
        assert (stats.sent, stats.deferred) == (0, 1)
        assert len(smtp.messages) == 2


async def test_a_test_send_goes_to_our_own_domain_only_marked_and_as_rendered(
    gw: Gateway, smtp: RecordingSMTPServer
):
    cid = await campaign(gw)
    result = await gw.campaigns.test_send(cid, "Marketing@First.vn")
    assert result.status == "queued"
    with pytest.raises(InvalidInput, match="only to an address of your own domains"):
        await gw.campaigns.test_send(cid, "customer@example.vn")  # AD-4: no opt-in, no ad
    await gw.deliver(until_idle=True)
    assert [m.rcpt_tos for m in smtp.messages] == [["marketing@first.vn"]]
    msg = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    assert msg["Subject"] == "[QC] [TEST] Ưu đãi cho Nguyễn Văn An"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    blocked = await campaign(gw, name="b", html="<p>{{ contact.attributes.site }}</p>")
    await gw.add_contact("boss@first.vn", name="Sếp", attributes={"site": "https://evil.com/x"})
    outcome = await gw.campaigns.test_send(blocked, "boss@first.vn")
    assert outcome.status == "blocked" and outcome.blocked_urls == ("https://evil.com/x",)
