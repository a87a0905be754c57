"""PD-3 in the delivery worker: what it records after a message is final never names an
address nobody confirmed, nor a person erased while their message was on the wire.

Real parts only: the web form through httpx.ASGITransport, the real aiosmtpd server of
tests/smtp_server.py (refusing with 5xx, or holding a message at DATA), `gateway contact
erase` as a separate process, and the database itself: every text and bytes cell of every
table, and on SQLite the bytes of the file, its -wal and -shm as in tests/test_erase_bytes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pg
import pytest
from smtp_server import RecordingSMTPServer, _Handler
from test_cli import run
from test_feedback import dsn
from test_subscribe import FORM, IP, sign_up
from test_web import client_for, first_link, parse, rows

from gateway import Gateway
from gateway.store import schema as t
from gateway.web.app import create_app

# Distinctive enough that a match in the file can only be ours (and the local part alone:
# a server's reply may quote it as "<zq.stranger41>").
STRANGER = "zq.stranger41@example.vn"
PERSON = "zq.inflight58@example.vn"
NAME = "Zyxwvut Inflight"


# -- where an address could be -----------------------------------------------------------------


async def cells_holding(gw: Gateway, needles: list[str]) -> list[str]:
    """`table.column` of every cell of every table whose text (or bytes) holds a needle."""
    found = []
    for table in t.metadata.sorted_tables:
        for row in await gw.store.db.fetch_all(table.select()):
            for column, cell in dict(row._mapping).items():
                if isinstance(cell, bytes):
                    cell = cell.decode("utf-8", "replace")
                if isinstance(cell, str) and any(n.lower() in cell.lower() for n in needles):
                    found.append(f"{table.name}.{column}")
    return found


def sqlite_files(env: dict[str, str]) -> list[Path]:
    database = Path(env["GATEWAY_DATABASE_URL"].removeprefix("sqlite:///"))
    return [database, Path(f"{database}-wal"), Path(f"{database}-shm")]


async def assert_nowhere(gw: Gateway, env: dict[str, str], *needles: str) -> None:
    assert await cells_holding(gw, list(needles)) == []
    if not pg.ON_POSTGRES:
        for path in sqlite_files(env):
            if path.exists():
                data = path.read_bytes()
                assert [n for n in needles if n.encode() in data] == [], path.name


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTPServer]:
    """Refuses the stranger's address at RCPT with a reply quoting it (BN-1) when
    `smtp.refuse` is set; takes everything else."""
    server = RecordingSMTPServer(
        reject=lambda rcpt: (
            (550, f"5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
            if getattr(server, "refuse", False)
            else None
        )
    )
    async with server:
        yield server


@pytest.fixture
async def gw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        yield gateway


@pytest.fixture
async def web(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(gw, worker=False), ip=IP) as client:
        yield client


async def confirmation_sent(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
) -> list[str]:
    """A stranger types STRANGER into the form; the worker delivers (or tries to deliver)
    the confirmation. Returns what could spell the address: it, its local part, and the
    token of the link (the pending sign-up travels inside it)."""
    assert (await sign_up(web, STRANGER, "news")).status_code == 200
    [row] = await rows(gw, t.outbox, template="confirm")
    token = json.loads(row["context"])["link"].rpartition("/")[2]
    # the premise: until it is delivered, the outbox and the log hold the address
    assert {"outbox.email", "message_log.email"} <= set(await cells_holding(gw, [STRANGER, token]))
    await gw.deliver(until_idle=True)
    return [STRANGER, STRANGER.partition("@")[0], token]


# -- (a) a confirmation delivered, never confirmed -----------------------------------------------


async def test_pd3_an_unconfirmed_sign_up_leaves_no_trace_of_the_address_once_delivered(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, env: dict[str, str]
):
    """A guest's receipt in the same batch (no contact, not a sign-up confirmation) keeps
    its address in the log: BN-5 matches unsigned bounces and BN-3 counts soft ones by it."""
    receipt = await gw.send("guest@example.vn", "Receipt", text="Thanks")
    needles = await confirmation_sent(gw, web, smtp)
    [mail] = [m for m in smtp.messages if m.rcpt_tos == [STRANGER]]
    await assert_nowhere(gw, env, *needles)
    [kept] = await rows(gw, t.outbox, message_id=receipt.message_id)
    assert (kept["email"], kept["state"]) == ("guest@example.vn", "sent") and kept["sent_at"]
    mailed = await gw.store.mailed_since(["guest@example.vn", STRANGER], time.time() - 60)
    assert mailed == {"guest@example.vn"}
    # what happened is still on record, tied to the keyed hash of the address alone
    [row] = await rows(gw, t.outbox, message_id=parse(mail.data)["Message-ID"])
    assert (row["state"], row["email"], row["contact_id"], row["raw"]) == ("sent", None, None, None)
    assert json.loads(row["context"]) == {"address_hash": gw.signer.address_hash(STRANGER)}
    log = await rows(gw, t.message_log, message_id=row["message_id"])
    assert [(r["status"], r["email"]) for r in log] == [("accepted", None)]
    assert row["sent_at"] is not None  # its sending, on the row
    story = await gw.store.message_story(row["message_id"])
    assert [e["status"] for e in story] == ["accepted", "sent"]
    # the mailbox still confirms: the request travels in the link, not in the database
    path = first_link(parse(mail.data), "/confirm/subscribe/")
    assert (await web.post(path, content=b"", headers=FORM)).status_code == 200
    contact = await gw.store.get_contact(STRANGER)
    assert contact is not None
    topic = await gw.accepter.topic("news")
    assert (await gw.store.subscriptions_of(contact.id)) == {topic.id: "subscribed"}


# -- (b) the confirmation refused with a 5xx ------------------------------------------------------


async def test_pd3_bn1_a_refused_confirmation_suppresses_the_hash_alone(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, env: dict[str, str]
):
    smtp.refuse = True  # type: ignore[attr-defined]
    needles = await confirmation_sent(gw, web, smtp)
    assert smtp.faults["reject"] == 1 and smtp.messages == []
    await assert_nowhere(gw, env, *needles)
    [suppression] = await rows(gw, t.suppressions)
    assert (suppression["email"], suppression["email_hash"]) == (
        None,
        gw.signer.address_hash(STRANGER),
    )
    assert (suppression["scope"], suppression["reason"]) == ("all", "hard_bounce")
    [bounce] = await rows(gw, t.bounces)
    assert (bounce["email"], bounce["kind"], bounce["status"]) == (None, "hard", "5.1.1")
    [row] = await rows(gw, t.outbox)
    assert (row["state"], row["email"]) == ("bounced", None)
    assert row["last_error"].startswith("550 5.1.1 (")
    # the hash is enough to act on: the form mails that address no more ...
    assert (await sign_up(web, STRANGER, "news")).status_code == 200
    await gw.deliver(until_idle=True)
    assert smtp.faults["reject"] == 1
    # ... and staff can still lift the bounce by the address (the mailbox may work again)
    assert await gw.unsuppress(STRANGER) == 1


async def test_pd3_bn1_a_later_bounce_report_about_it_suppresses_the_hash_alone(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer, env: dict[str, str]
):
    """The receiving server took the confirmation, then bounced it (a DSN to its signed
    return path): matched by the keyed hash the outbox row kept."""
    needles = await confirmation_sent(gw, web, smtp)
    [mail] = smtp.messages
    report = dsn(STRANGER, "5.1.1", message_id=parse(mail.data)["Message-ID"])
    result = await gw.ingest(report, rcpt_tos=[mail.mail_from])
    assert result.actions and STRANGER not in " ".join(result.actions), result
    [suppression] = await rows(gw, t.suppressions)
    assert (suppression["email"], suppression["reason"]) == (None, "hard_bounce")
    assert suppression["email_hash"] == gw.signer.address_hash(STRANGER)
    [row] = await rows(gw, t.outbox)
    assert (row["state"], row["email"], row["last_error"]) == ("bounced", None, "5.1.1")
    await assert_nowhere(gw, env, *needles)


# -- (c) erased while the message was on the wire ----------------------------------------------------


class HeldAtData(_Handler):
    """Holds each DATA transfer until released, then answers `reply` (or takes it)."""

    def __init__(self, server: RecordingSMTPServer, reply: str | None) -> None:
        super().__init__(server)
        self.reply = reply
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.set()
        await self.release.wait()
        if self.reply is not None:
            return self.reply
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(
    ("reply", "state"),
    [
        (None, "sent"),
        (f"550 5.1.1 <{PERSON}>: Recipient address rejected", "bounced"),
        (f"451 4.2.0 <{PERSON}> greylisted, try again later", "suppressed"),
    ],
    ids=["delivered", "refused-5xx", "deferred-4xx"],
)
async def test_pd3_erasing_while_a_message_is_on_the_wire_leaves_no_byte_of_the_person(
    env: dict[str, str], reply: str | None, state: str
):
    async with RecordingSMTPServer() as smtp:
        held = HeldAtData(smtp, reply)
        smtp._handler = held  # every connection from now on
        env["GATEWAY_SMTP_URL"] = smtp.url
        async with Gateway.from_env(env) as gw:
            await gw.add_topic("news", "Tin tức")
            await gw.add_contact(PERSON, name=NAME, subscribe=["news"])
            receipt = await gw.send(PERSON, f"Receipt for {NAME}", text=f"Dear {NAME}")
            assert receipt.status == "queued", receipt
            stop = asyncio.Event()
            worker = asyncio.create_task(gw.deliver(stop=stop, poll_seconds=0.05))
            try:
                await asyncio.wait_for(held.arrived.wait(), 10)
                # `gateway contact erase` commits while the message is on the wire
                proc = await asyncio.to_thread(run, env, "contact", "erase", PERSON)
                assert proc.returncode == 0, proc.stderr
            finally:
                held.release.set()
                stop.set()  # the worker records the batch on the wire, then stops
                stats = await asyncio.wait_for(worker, 20)  # and it did not crash
            assert stats.claimed == 1
            assert (stats.sent, stats.bounced, stats.suppressed) == {
                "sent": (1, 0, 0),
                "bounced": (0, 1, 0),
                "suppressed": (0, 0, 1),
            }[state]
            [row] = await rows(gw, t.outbox)
            assert (row["state"], row["email"], row["contact_id"]) == (state, None, None)
            await assert_nowhere(gw, env, PERSON, PERSON.partition("@")[0], NAME)
            # only the erasure's tombstone stands, by the keyed hash
            [tombstone] = await rows(gw, t.suppressions)
            assert (tombstone["email"], tombstone["reason"]) == (None, "erased")
            assert all(b["email"] is None for b in await rows(gw, t.bounces))


async def waiting_for_locks(connection: asyncpg.Connection) -> int:
    """Backends of this database waiting for a lock (row or advisory)."""
    return await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )


@pg.postgres_only("the per-address lock is PostgreSQL's; SQLite's writers take turns whole")
async def test_pd3_an_erasure_running_while_the_outcome_is_recorded_leaves_no_address(
    env: dict[str, str],
):
    """The other order of the race: the erasure has begun (its scrub of the message log is
    done, its commit is not) when the worker records the batch. The worker waits for the
    erasure's lock, then sees the tombstone; it must not slip its log entry in between."""
    async with RecordingSMTPServer() as smtp:
        held = HeldAtData(smtp, None)
        smtp._handler = held
        env["GATEWAY_SMTP_URL"] = smtp.url
        async with Gateway.from_env(env) as gw:
            contact, _, _ = await gw.add_contact(PERSON, name=NAME)
            receipt = await gw.send(PERSON, f"Receipt for {NAME}", text=f"Dear {NAME}")
            assert receipt.status == "queued", receipt
            stop = asyncio.Event()
            worker = asyncio.create_task(gw.deliver(stop=stop, poll_seconds=0.05))
            blocker = await asyncpg.connect(env["GATEWAY_DATABASE_URL"])
            erase: asyncio.Task[None] | None = None
            try:
                await asyncio.wait_for(held.arrived.wait(), 10)
                # Hold the contact row so the erasure stops at its last step (deleting it);
                # NO KEY UPDATE leaves the worker's foreign-key checks free to go on.
                transaction = blocker.transaction()
                await transaction.start()
                await blocker.execute(
                    "SELECT 1 FROM contacts WHERE id = $1 FOR NO KEY UPDATE", contact.id
                )
                erase = asyncio.create_task(gw.erase_contact(PERSON))
                async with asyncio.timeout(10):
                    while await waiting_for_locks(blocker) < 1:
                        await asyncio.sleep(0.02)
                held.release.set()
                stop.set()
                # The worker now records; with the address's lock it waits for the erasure.
                # (Without it, it writes its entry before the erasure commits, or fails on
                # the contact the erasure deletes under it.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        while await waiting_for_locks(blocker) < 2 and not worker.done():
                            await asyncio.sleep(0.02)
                await transaction.rollback()
                await asyncio.wait_for(erase, 30)
            finally:
                held.release.set()
                stop.set()
                stats = await asyncio.wait_for(worker, 30)
                if erase is not None and not erase.done():
                    erase.cancel()
                await blocker.close()
            assert stats.sent == 1
            [row] = await rows(gw, t.outbox, message_id=receipt.message_id)
            assert (row["email"], row["contact_id"], row["state"]) == (None, None, "sent")
            assert row["sent_at"] is not None  # its sending is on record, without the address
            await assert_nowhere(gw, env, PERSON, PERSON.partition("@")[0], NAME)
