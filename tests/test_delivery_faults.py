"""Delivery against a misbehaving SMTP server and a crashing worker, with real parts: a real
aiosmtpd server (tests/smtp_server.py) injecting 451s, connections dropped mid-DATA, slow
replies, timeouts and 5xx per recipient; a real SQLite file; a real `gateway worker` process.

Rules: BN-1 (5xx suppresses, hard_bounce), BN-2 (5.7.x alerts, no suppression), BN-3 (4xx,
timeouts and drops are retried until GATEWAY_RETRY_MAX_AGE; repeated soft bounces suppress).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from smtp_server import Received, RecordingSMTPServer

from gateway import Gateway, SendRequest

FAST_RETRIES = {"GATEWAY_RETRY_SCHEDULE": "0.05,0.1,0.2", "GATEWAY_RETRY_MAX_AGE": "1h"}


# --------------------------------------------------------------------------- helpers


async def drain(gw: Gateway, timeout: float = 30, **options: object):
    """Run the worker until no message is queued or leased any more (retries included),
    and fail if that takes longer than `timeout`: a stalled pool would hang here."""
    stop = asyncio.Event()
    task = asyncio.create_task(gw.deliver(stop=stop, poll_seconds=0.05, **options))
    try:
        async with asyncio.timeout(timeout):
            while not task.done():
                await asyncio.sleep(0.05)
                if not await pending(gw):
                    break
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 10)
    assert not await pending(gw)
    return stats


async def pending(gw: Gateway) -> int:
    return await gw.store.db.fetch_val(
        "SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')"
    )


async def last_log(gw: Gateway, message_id: str) -> dict:
    """The last event of a message's story: its log entries and its sending (the outbox
    row's sent_at)."""
    story = await gw.store.message_story(message_id)
    assert story, f"no message_log entry for {message_id}"
    return story[-1]


async def suppressed(gw: Gateway) -> dict[str, set[str]]:
    """Suppressed address -> reasons, through the public Gateway API."""
    out: dict[str, set[str]] = defaultdict(set)
    for row in await gw.suppressions():
        out[row["email"]].add(row["reason"])
    return out


def by_message_id(messages: list[Received]) -> Counter[str | None]:
    return Counter(m.message_id for m in messages)


def text(i: int) -> SendRequest:
    return SendRequest(f"p{i:03d}@example.vn", f"Mã xác nhận {i}", text=f"Mã của bạn: {i}")


# --------------------------------------------------------------------------- the fault server


async def test_the_fault_server_injects_what_it_is_told_and_records_only_250s():
    """The test server itself: faults happen at the configured rates, repeatably for a seed,
    and only a DATA answered 250 is recorded."""
    import aiosmtplib

    async def run(seed: int) -> tuple[RecordingSMTPServer, list[str]]:
        fates: list[str] = []
        async with RecordingSMTPServer(fail_rate=0.3, drop_data_rate=0.1, seed=seed) as srv:
            for i in range(60):
                msg = f"Message-ID: <m{i}@first.vn>\r\nSubject: x\r\n\r\nhi\r\n".encode()
                client = aiosmtplib.SMTP(hostname=srv.host, port=srv.port, timeout=5)
                await client.connect()
                try:
                    await client.sendmail("a@first.vn", [f"r{i}@example.vn"], msg)
                    fates.append("ok")
                except aiosmtplib.SMTPDataError as exc:
                    assert (exc.code, exc.message) == (451, "4.3.0 try again")
                    fates.append("fail")
                except aiosmtplib.SMTPServerDisconnected:
                    fates.append("drop_data")
                finally:
                    client.close()
        return srv, fates

    srv, fates = await run(seed=1)
    counts = Counter(fates)
    assert counts["fail"] == srv.faults["fail"] >= 8
    assert counts["drop_data"] == srv.faults["drop_data"] >= 1
    assert srv.received == len(srv.messages) == counts["ok"]
    assert {m.message_id for m in srv.messages} == {
        f"<m{i}@first.vn>" for i, fate in enumerate(fates) if fate == "ok"
    }
    assert (await run(seed=1))[1] == fates  # same seed, same fates
    assert (await run(seed=2))[1] != fates


# --------------------------------------------------------------------------- BN-1, BN-3 under faults


# With the fates drawn per recipient, a seed fixes the faults of the first attempts whatever
# the timing: seed 3 gives 3 dropped DATA transfers and 35 451s among the 285 deliverable
# recipients' first attempts (retries draw more).
SEED = 3


async def test_bn1_bn3_faulty_server_every_deliverable_message_arrives_and_hard_bounces_are_suppressed(
    env: dict[str, str],
):
    """~300 transactional messages into a server answering 10% of DATA with 451, dropping 1%
    of connections after the data, answering some slowly, timing out a few, and refusing 5%
    of recipients with 550 5.1.1:
    - every deliverable message arrives (by Message-ID); a message is delivered twice only
      if one of its transfers was dropped after the data or abandoned by a timeout, and then
      at most once more per such fault (this server records neither, so in fact never);
    - BN-1: every 5.1.1 recipient got nothing, is suppressed (hard_bounce) and its message
      bounced at the first attempt;
    - BN-3: 451s, drops and timeouts were retried (GATEWAY_RETRY_SCHEDULE) to delivery;
    - the pool never stalls: the whole run ends within a timeout, and connections are only
      replaced when one died."""
    n = 300
    bad = {f"p{i:03d}@example.vn" for i in range(n) if i % 20 == 7}  # 15 (5%)
    slow = {f"p{i:03d}@example.vn" for i in range(n) if i % 10 == 3}  # 30: 0.1 s replies
    timeouts = {"p011@example.vn", "p111@example.vn", "p211@example.vn"}  # first DATA: 1.5 s
    first_seen: set[str] = set()

    def delay(rcpt: str) -> float:
        if rcpt in timeouts and rcpt not in first_seen:
            first_seen.add(rcpt)
            return 1.5  # longer than the client's timeout (1 s in the URL)
        return 0.1 if rcpt in slow else 0.0

    def reject(rcpt: str) -> tuple[int, str] | None:
        return (550, "5.1.1 user unknown") if rcpt in bad else None

    concurrency = 4
    async with RecordingSMTPServer(
        fail_rate=0.1, drop_data_rate=0.01, slow=delay, reject=reject, seed=SEED
    ) as srv:
        env.update(FAST_RETRIES, GATEWAY_SMTP_URL=f"{srv.url}?timeout=1")
        async with Gateway.from_env(env, concurrency=concurrency) as gw:
            results = await gw.send_many([text(i) for i in range(n)])
            assert {r.status for r in results} == {"queued"}
            started = time.monotonic()
            stats = await drain(gw, timeout=30)
            elapsed = time.monotonic() - started

            # faults really happened
            assert srv.faults["fail"] >= 15, srv.faults
            assert srv.faults["drop_data"] >= 2, srv.faults
            assert srv.faults["slow"] >= len(slow), srv.faults
            assert srv.faults["abandoned"] >= len(timeouts), srv.faults  # client timeouts
            assert srv.faults["reject"] == len(bad), srv.faults  # no retry after a 5xx
            assert stats.retried >= srv.faults["fail"] + srv.faults["drop_data"]

            # every deliverable message arrived; the undeliverable ones not at all
            ids = {r.message_id: f"p{i:03d}@example.vn" for i, r in enumerate(results)}
            deliverable = {mid for mid, rcpt in ids.items() if rcpt not in bad}
            got = by_message_id(srv.messages)
            assert set(got) == deliverable
            for m in srv.messages:
                assert m.rcpt_tos == [ids[m.message_id]]
            # duplicates: only after a dropped or abandoned transfer of that very message
            for mid, copies in got.items():
                assert copies - 1 <= srv.dropped[mid] + srv.abandoned[mid], mid
            for mid in deliverable:
                assert (await gw.message_status(mid))["state"] == "sent"
                assert (await last_log(gw, mid))["status"] == "sent"

            # BN-1: hard bounces failed at once, logged "bounced", suppressed as hard_bounce
            reasons = await suppressed(gw)
            for mid, rcpt in ids.items():
                if rcpt in bad:
                    status = await gw.message_status(mid)
                    assert status["attempts"] == 1 and status["state"] in ("failed", "bounced")
                    assert "5.1.1" in (status["last_error"] or "")
                    assert (await last_log(gw, mid))["status"] == "bounced"
                    assert "hard_bounce" in reasons[rcpt], rcpt
            assert set(reasons) == bad  # faults that were retried suppress nobody

    # a dead connection is replaced, a live one reused: new connections only after a fault
    assert srv.connections <= concurrency + srv.faults["drop_data"] + srv.faults["abandoned"]
    assert elapsed < 30
    print(f"fault run: {elapsed:.2f} s, faults {srv.faults}, worker {stats.as_dict()}")


# --------------------------------------------------------------------------- BN-2


async def test_bn2_a_5_7_1_reply_fails_the_message_alerts_and_does_not_suppress(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
):
    def reject(rcpt: str) -> tuple[int, str] | None:
        return (550, "5.7.1 sender not authorized (SPF)") if rcpt == "an@example.vn" else None

    async with RecordingSMTPServer(reject=reject) as srv:
        env.update(FAST_RETRIES, GATEWAY_SMTP_URL=srv.url)
        async with Gateway.from_env(env) as gw:
            refused = await gw.send("an@example.vn", "Hóa đơn", text="x")
            fine = await gw.send("binh@example.vn", "Hóa đơn", text="x")
            with caplog.at_level(logging.WARNING, logger="gateway.feedback"):
                stats = await drain(gw)
            status = await gw.message_status(refused.message_id)
            assert status["state"] == "failed" and status["attempts"] == 1
            assert "5.7.1" in status["last_error"]
            assert (await last_log(gw, refused.message_id))["status"] == "failed"
            assert (await gw.message_status(fine.message_id))["state"] == "sent"
            # alerted: logged and counted
            alerts = [
                r
                for r in caplog.records
                if r.name == "gateway.feedback" and r.levelno >= logging.WARNING
            ]
            assert any("5.7" in r.getMessage() for r in alerts), [r.getMessage() for r in alerts]
            assert stats.as_dict()["alerts"] == 1
            # not suppressed: the sender's problem, not the recipient's
            assert "an@example.vn" not in await suppressed(gw)
            again = await gw.send("an@example.vn", "Hóa đơn", text="x")
            assert again.status == "queued"
    assert [m.rcpt_tos for m in srv.messages] == [["binh@example.vn"]]


# --------------------------------------------------------------------------- BN-3


async def test_bn3_retries_give_up_at_max_age_and_the_third_soft_bounce_suppresses(
    env: dict[str, str],
):
    """A recipient that always answers 451: each message is retried on the schedule, gives
    up at GATEWAY_RETRY_MAX_AGE and counts one soft bounce; the address is suppressed
    (soft_bounce) at the third one (GATEWAY_SOFT_BOUNCE_LIMIT, default 3), not before."""

    def reject(rcpt: str) -> tuple[int, str] | None:
        return (451, "4.2.2 mailbox full") if rcpt == "full@example.vn" else None

    async with RecordingSMTPServer(reject=reject) as srv:
        env.update(
            GATEWAY_SMTP_URL=srv.url,
            GATEWAY_RETRY_SCHEDULE="0.05,0.1",
            GATEWAY_RETRY_MAX_AGE="0.6",
        )
        async with Gateway.from_env(env) as gw:
            for k in range(1, 4):
                result = await gw.send("full@example.vn", f"Đơn hàng {k}", text="x")
                assert result.status == "queued", (k, result)
                ok = await gw.send("ok@example.vn", f"Đơn hàng {k}", text="x")
                started = time.monotonic()
                await drain(gw, timeout=15)
                assert time.monotonic() - started < 10
                status = await gw.message_status(result.message_id)
                assert status["state"] == "failed", status
                assert status["attempts"] >= 3  # retried before giving up
                assert status["last_error"].startswith("gave up"), status
                assert "451" in status["last_error"]
                entry = await last_log(gw, result.message_id)
                assert entry["status"] == "failed" and entry["reason"].startswith("gave up")
                assert (await gw.message_status(ok.message_id))["state"] == "sent"
                reasons = await suppressed(gw)
                if k < 3:
                    assert "full@example.vn" not in reasons, (k, reasons)
                else:
                    assert reasons == {"full@example.vn": {"soft_bounce"}}
            later = await gw.send("full@example.vn", "Đơn hàng 4", text="x")
            assert later.status == "suppressed"
    assert srv.faults["reject"] >= 9
    assert all(m.rcpt_tos == ["ok@example.vn"] for m in srv.messages)


# --------------------------------------------------------------------------- BN-1 afterwards


async def test_bn1_a_hard_bounced_address_gets_neither_marketing_nor_transactional_mail(
    env: dict[str, str],
):
    def reject(rcpt: str) -> tuple[int, str] | None:
        return (550, "5.1.1 no such user") if rcpt == "gone@example.vn" else None

    async with RecordingSMTPServer(reject=reject) as srv:
        env.update(FAST_RETRIES, GATEWAY_SMTP_URL=srv.url)
        async with Gateway.from_env(env) as gw:
            await gw.add_topic("news", "Tin tức")
            await gw.add_contact("gone@example.vn", name="Vắng", subscribe=["news"])
            first = await gw.send("gone@example.vn", "Chào mừng", text="x")
            assert first.status == "queued"
            await drain(gw)
            assert (await last_log(gw, first.message_id))["status"] == "bounced"
            marketing = await gw.send(
                "gone@example.vn", "Tin", text="x", category="marketing", topic="news"
            )
            transactional = await gw.send("Gone@Example.vn", "Hóa đơn", text="x")
            assert marketing.status == "suppressed", marketing
            assert transactional.status == "suppressed", transactional
    assert srv.messages == []
    # the same through the CLI
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "suppress", "list", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["email"], r["reason"]) for r in rows] == [("gone@example.vn", "hard_bounce")]


# --------------------------------------------------------------------------- crash safety


async def _snapshot(env: dict[str, str]) -> dict[str, tuple[str, float | None]]:
    """message_id -> (state, lease_until), read through the store (SQLite or PostgreSQL)."""
    async with Gateway.from_env(env) as gw:
        rows = await gw.store.rows("SELECT message_id, state, lease_until FROM outbox")
    return {mid: (state, lease) for mid, state, lease in rows}


async def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_only_what_was_in_flight(
    env: dict[str, str], tmp_path: Path
):
    """SIGKILL a `gateway worker` process delivering 2,000 messages, let its lease run out
    (GATEWAY_LEASE_SECONDS=2), run `gateway worker --until-idle`: every message arrives.

    Duplicate bound: a message goes twice only if the server took it (250) while the killed
    worker had not yet recorded it as sent. The worker claims batches of
    max(100, 50 * concurrency) rows, has one batch on the wire while the previous one's
    outcome is being written, so with --concurrency 2 at most 2 * 100 = 200 messages can be
    on the wire or unrecorded at the kill. Checked per message: every duplicate was received
    before the kill while its row was still leased ('sending'), and has the Message-ID of
    its first copy."""
    n, concurrency = 2000, 2
    bound = 2 * max(100, 50 * concurrency)
    async with RecordingSMTPServer(slow=0.004) as srv:  # a slowish relay: ~250 msg/s/connection
        run_env = {
            **os.environ,
            **env,
            "GATEWAY_SMTP_URL": srv.url,
            "GATEWAY_LEASE_SECONDS": "2",
        }
        async with Gateway.from_env(run_env) as gw:
            requests = [
                SendRequest(f"c{i:04d}@example.vn", f"Đơn {i}", text=f"Đơn hàng {i}")
                for i in range(n)
            ]
            results = []
            for start in range(0, n, 500):
                results += await gw.send_many(requests[start : start + 500])
        assert {r.status for r in results} == {"queued"}
        owner = {r.message_id: req.to for r, req in zip(results, requests, strict=True)}

        async def worker(log: str, *args: str) -> asyncio.subprocess.Process:
            with open(tmp_path / log, "wb") as err:
                return await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "gateway",
                    "worker",
                    "--concurrency",
                    str(concurrency),
                    *args,
                    env=run_env,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )

        first = await worker("first.err")
        kill_at = 300 + (time.time_ns() // 1000) % 400  # somewhere between 300 and 700
        async with asyncio.timeout(30):
            while srv.received < kill_at:
                if first.returncode is not None:
                    pytest.fail((tmp_path / "first.err").read_text())
                await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await srv.drop_connections()  # the kernel closed them; let the server notice
        before = list(srv.messages)
        assert 0 < len(before) < n, len(before)
        at_kill = await _snapshot(run_env)
        sent_at_kill = {mid for mid, (state, _) in at_kill.items() if state == "sent"}
        leased = {mid: lease for mid, (state, lease) in at_kill.items() if state == "sending"}
        assert leased, "the killed worker held no lease"
        in_flight = {m.message_id for m in before} - sent_at_kill
        assert in_flight <= set(leased)  # taken by the server, not recorded: still leased
        assert len(in_flight) <= bound

        # A lease of GATEWAY_LEASE_SECONDS=2: the rows come back within about 2 s.
        wait = max(leased.values()) - time.time()
        assert wait < 5, f"lease runs {wait:.0f} s more: GATEWAY_LEASE_SECONDS=2 not honoured"
        await asyncio.sleep(max(wait, 0) + 0.1)

        second = await worker("second.err", "--until-idle", "--json")
        out, _ = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 0, (tmp_path / "second.err").read_text()
        assert json.loads(out.decode().strip().splitlines()[-1])["sent"] >= n - len(
            sent_at_kill
        ) - len(in_flight)

    # nothing lost
    assert all(state == "sent" for state, _ in (await _snapshot(run_env)).values())
    got = by_message_id(srv.messages)
    assert set(got) == set(owner)
    for m in srv.messages:
        assert m.rcpt_tos == [owner[m.message_id]]  # a copy carries its first Message-ID
    # duplicates only among what was in flight at the kill, each exactly twice
    twice = {mid for mid, copies in got.items() if copies > 1}
    assert twice <= in_flight
    assert all(got[mid] == 2 for mid in twice)
    assert len(twice) <= bound
    print(
        f"crash: killed after {len(before)} received, {len(sent_at_kill)} recorded sent,"
        f" {len(leased)} leased, {len(in_flight)} in flight, {len(twice)} duplicates"
        f" (bound {bound})"
    )


async def test_a_batch_slower_than_its_lease_is_not_claimed_again_by_its_own_worker(
    env: dict[str, str],
):
    """A batch on the wire longer than the lease comes back due; the same worker's next
    claim (made while that batch is on the wire) takes it again and must not send it twice."""
    async with RecordingSMTPServer(slow=0.03) as srv:  # 10 messages: about 0.3 s a batch
        env["GATEWAY_SMTP_URL"] = srv.url
        async with Gateway.from_env(env) as gw:
            results = await gw.send_many(
                [SendRequest(f"p{i:02d}@example.vn", "Đơn", text="x") for i in range(40)]
            )
            assert {r.status for r in results} == {"queued"}
            stats = await gw.deliver(until_idle=True, batch_size=10, lease_seconds=0.1)
        got = by_message_id(srv.messages)
        assert len(got) == 40 and max(got.values()) == 1, stats
