"""Several `gateway worker` processes over one PostgreSQL database (issue 6): a campaign of
10,000 contacts drained by 2 and by 4 workers reaches every recipient exactly once, and a
worker SIGKILLed mid-run loses nothing (its leased rows come back when the lease ends).

Real parts throughout: the throwaway PostgreSQL cluster of tests/pg.py, worker subprocesses
(`python -m gateway worker --until-idle`), the recording SMTP server of tests/smtp_server.py.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from conftest import SENDER
from pg import Databases, postgres_only
from smtp_server import RecordingSMTPServer, message_id_of

from gateway import Gateway, campaigns
from gateway.store import schema as t

# SQLite takes one writer at a time: several worker processes is what PostgreSQL is for.
pytestmark = postgres_only("several worker processes on one database")

CONTACTS = 10_000
LEASE = 4.0  # GATEWAY_LEASE_SECONDS of every worker here: a killed worker's rows return soon


@pytest.fixture(scope="module")
def scale(postgres: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One database with 10,000 subscribers of `news`, shared by the tests of this module
    (each sends its own campaign to them)."""
    root = tmp_path_factory.mktemp("scale")
    name = postgres.create()
    env = {
        **SENDER,
        "GATEWAY_DATABASE_URL": postgres.cluster.url(name),
        "GATEWAY_SECRET_KEYS": "scale-key-7a3e1c9f5b0d2e8a4c6f1b9d",
        "GATEWAY_LEASE_SECONDS": str(LEASE),
        # three campaigns to the same people in one day: the cap is not what is tested here
        "GATEWAY_MARKETING_DAILY_CAP": "10",
    }
    emails = [f"p{i:05d}@example.vn" for i in range(CONTACTS)]
    csv = root / "audience.csv"
    csv.write_text("email,name\n" + "".join(f"{e},Người {i}\n" for i, e in enumerate(emails)))

    async def setup() -> None:
        async with Gateway.from_env(env) as gw:
            await gw.add_topic("news", "Tin tức")
            report = await gw.import_contacts(csv, subscribe=["news"])
            assert report.created == CONTACTS

    asyncio.run(setup())
    try:
        yield {"env": env, "emails": emails, "root": root}
    finally:
        postgres.drop(name)


async def start_campaign(env: dict[str, str], label: str, *, enqueue: bool = False) -> int:
    """Create and start a campaign; the workers enqueue its audience as they go, or with
    `enqueue` this process enqueues all of it first."""
    async with Gateway.from_env(env) as gw:
        cid = await gw.campaigns.create(
            name=label,
            topic="news",
            subject=f"{label} cho {{{{ contact.name }}}}",
            html="<p>Xin chào {{ contact.name }}! <a href='https://first.vn/sale'>Xem</a></p>",
        )
        assert await gw.campaigns.start(cid) == "sending"
        if enqueue:
            window, campaigns.WINDOW = campaigns.WINDOW, CONTACTS + 1
            try:
                await gw.campaigns.tick(cid)
            finally:
                campaigns.WINDOW = window
            assert (await gw.campaigns.get(cid))["enqueued_all"]
        return cid


def spawn(env: dict[str, str], root: Path, smtp: RecordingSMTPServer):
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    run_env |= env | {"GATEWAY_SMTP_URL": smtp.url}
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "worker",
        "--until-idle",
        "--json",
        env=run_env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> dict[str, int]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def of_campaign(smtp: RecordingSMTPServer, label: str) -> list[tuple[str, str | None]]:
    """(recipient, Message-ID) of every message of this campaign the server accepted."""
    parser = BytesHeaderParser(policy=email.policy.default)
    found = []
    for m in smtp.messages:
        if str(parser.parsebytes(m.data)["Subject"]).startswith(f"[QC] {label} "):
            found.append((m.rcpt_tos[0], message_id_of(m.data)))
    return found


async def campaign_state(env: dict[str, str], cid: int) -> tuple[str, dict[str, int]]:
    async with Gateway.from_env(env) as gw:
        status = await gw.campaigns.status(cid)
        return status.state, status.counts


async def reclaimed_rows(env: dict[str, str], cid: int) -> int:
    """Rows of the campaign claimed more than once (a lease that ran out)."""
    async with Gateway.from_env(env) as gw:
        rows = await gw.store.db.fetch_all(
            t.outbox.select().where(t.outbox.c.campaign_id == cid).where(t.outbox.c.attempts > 1)
        )
        return len(rows)


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_drain_one_campaign_of_10000_each_recipient_exactly_once(scale, workers):
    env, emails, root = scale["env"], scale["emails"], scale["root"]
    label = f"Scale{workers}"

    async def scenario() -> None:
        async with RecordingSMTPServer() as smtp:
            cid = await start_campaign(env, label)
            procs = [await spawn(env, root, smtp) for _ in range(workers)]
            stats = await asyncio.gather(*(finish(p) for p in procs))
            got = of_campaign(smtp, label)
            per_recipient = Counter(rcpt for rcpt, _ in got)
            assert set(per_recipient) == set(emails)
            assert max(per_recipient.values()) == 1, per_recipient.most_common(3)
            assert sum(s["sent"] for s in stats) == CONTACTS
            # they shared the work: every worker delivered part of it
            assert all(s["sent"] > 0 for s in stats), stats
            state, counts = await campaign_state(env, cid)
            assert state == "done" and counts["sent"] == CONTACTS and counts["queued"] == 0

    asyncio.run(scenario())


def test_a_worker_killed_mid_run_loses_nothing(scale):
    """Three workers; one is SIGKILLed with messages on the wire. The others finish; the
    killed worker's rows come back when its lease ends (GATEWAY_LEASE_SECONDS) and a worker
    run afterwards sends them. Only messages in flight at the kill may arrive twice, with
    the same Message-ID. The audience is enqueued beforehand: what is tested is the
    outbox's leases (a killed enqueuer holds its campaign for a fixed 30 s instead)."""
    env, emails, root = scale["env"], scale["emails"], scale["root"]
    label = "ScaleKill"

    async def scenario() -> None:
        async with RecordingSMTPServer() as smtp:
            cid = await start_campaign(env, label, enqueue=True)
            victim, *others = [await spawn(env, root, smtp) for _ in range(3)]
            while len(smtp.messages) < 2500:
                await asyncio.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            await victim.wait()
            assert len(of_campaign(smtp, label)) < CONTACTS, "the kill came too late"
            for proc in others:
                await finish(proc)
            # What the killed worker held stays leased until the lease ends, then one more
            # worker delivers it.
            await asyncio.sleep(max(0.0, killed_at + LEASE + 0.2 - time.time()))
            recovered = await finish(await spawn(env, root, smtp))
            got = of_campaign(smtp, label)
            per_recipient = Counter(rcpt for rcpt, _ in got)
            assert set(per_recipient) == set(emails), "a recipient was lost"
            twice = {rcpt for rcpt, n in per_recipient.items() if n > 1}
            assert max(per_recipient.values()) <= 2
            # duplicates: only what the killed worker had claimed (one batch or two), and
            # each is the same message again
            assert len(twice) <= 1000, len(twice)
            ids = {rcpt: set() for rcpt in twice}
            for rcpt, message_id in got:
                if rcpt in twice:
                    ids[rcpt].add(message_id)
            assert all(len(found) == 1 for found in ids.values())
            # every row the killed worker held was claimed again after its lease ended (by
            # a survivor still running then, or by the last worker)
            state, counts = await campaign_state(env, cid)
            assert state == "done" and counts["sent"] == CONTACTS
            reclaimed = await reclaimed_rows(env, cid)
            assert reclaimed >= len(twice) and reclaimed > 0
            print(
                f"kill: {len(twice)} sent twice, {reclaimed} rows reclaimed after the lease,"
                f" {recovered['sent']} sent by the last worker"
            )

    asyncio.run(scenario())
