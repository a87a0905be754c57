"""Group commit (gateway/store/batch.py): refusals arriving together share one transaction
and one fsync on SQLite, each is answered only once committed, and one failing write loses
nobody else's."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter

import pg
import pytest

from gateway import Gateway
from gateway.records import Contact
from gateway.store.tally import utc_day


async def people(gw: Gateway, n: int) -> list[Contact]:
    found = []
    for i in range(n):
        contact, _, _ = await gw.add_contact(f"p{i}@example.vn", subscribe=["news"])
        found.append(contact)
    return found


async def stored(gw: Gateway) -> dict[str, int]:
    async def one(sql: str) -> int:
        return int((await gw.store.rows(sql))[0][0])

    return {
        "suppressions": await one("SELECT count(*) FROM suppressions WHERE scope = 'marketing'"),
        "opt_outs": await one("SELECT count(*) FROM consent_ledger WHERE action = 'opt_out'"),
        "confirmations": await one("SELECT count(*) FROM outbox WHERE template = 'refusal'"),
    }


async def test_st1_concurrent_refusals_are_each_stored_once_with_their_confirmation(gw: Gateway):
    """ST-1, ST-2: twenty people refusing at once (two of them twice) each get one
    suppression, one opt-out entry and one confirmation; the repeat says it changed nothing."""
    crowd = await people(gw, 20)
    refusals = [gw.consent.refuse(c, source="link", ip="192.0.2.1") for c in crowd]
    refusals += [gw.consent.refuse(c, source="link") for c in crowd[:2]]
    changed = await asyncio.gather(*refusals)
    assert changed.count(True) == 20 and changed.count(False) == 2
    assert await stored(gw) == {"suppressions": 20, "opt_outs": 20, "confirmations": 20}
    for contact in crowd:
        decision = await gw.send(
            contact.email, "Ưu đãi", text="x", category="marketing", topic="news"
        )
        assert decision.status == "suppressed"
    today = utc_day(time.time())
    counts = await gw.store.daily_counts(today, today, ("refused", "accepted"))
    assert counts[(today, "refused")] == 20
    assert counts[(today, "accepted")] == 20  # the confirmations


async def test_st1_refusal_records_the_policy_version_in_force(gw: Gateway):
    """PD-1: the opt-out entry names the privacy policy published last, read at the refusal."""
    (contact,) = await people(gw, 1)
    await gw.publish_policy("2026-12", "Chính sách mới")
    assert await gw.consent.refuse(contact, source="link")
    history = await gw.store.consent_history(contact.id)
    assert [e["policy_version"] for e in history if e["action"] == "opt_out"] == ["2026-12"]


@pg.sqlite_only("group commit is SQLite's; PostgreSQL commits concurrent transactions itself")
async def test_oc1_refusals_at_once_share_transactions_and_are_on_disk_when_answered(
    gw: Gateway, env: dict[str, str]
):
    """OC-1: a refusal is answered only after its COMMIT: another connection to the file
    sees it the moment the call returns, and many at once take far fewer transactions."""
    crowd = await people(gw, 30)
    path = env["GATEWAY_DATABASE_URL"].removeprefix("sqlite:///")
    before = gw.store.committer.transactions

    async def refuse_and_look(contact: Contact) -> int:
        assert await gw.consent.refuse(contact, source="link")
        with sqlite3.connect(path) as other:
            (seen,) = other.execute(
                "SELECT count(*) FROM suppressions WHERE email = ?", (contact.email,)
            ).fetchone()
        other.close()
        return int(seen)

    assert await asyncio.gather(*(refuse_and_look(c) for c in crowd)) == [1] * 30
    assert gw.store.committer.transactions - before < 30


async def test_one_failing_write_loses_none_of_the_others(gw: Gateway):
    """A write that raises is answered with its error; the writes beside it (in its shared
    transaction on SQLite) are committed all the same."""
    crowd = await people(gw, 6)
    broken = crowd[2]

    def breaking(contact: Contact):  # an in-thread write that fails half-way
        good = gw.store.refusal_in_thread(
            email=contact.email,
            email_hash=gw.signer.address_hash(contact.email),
            reason="unsubscribe",
            source="link",
            now=time.time(),
            contact_id=contact.id,
            ip=None,
            default_version="v1",
            rows=[],
            logs=[],
        )

        def write(conn: sqlite3.Connection):
            good(conn)  # its suppression is written, then rolled back
            raise ValueError("disk says no")

        return write

    async def failing_async() -> bool:
        await gw.store.run(
            "INSERT INTO topics (slug, name, double_opt_in, created_at) VALUES (?, ?, ?, ?)",
            ("ghost", "Ghost", False, time.time()),
        )
        raise ValueError("changed my mind")

    calls = [gw.consent.refuse(c, source="link") for c in crowd if c is not broken]
    calls.append(gw.store.grouped(failing_async, breaking(broken) if gw.store.is_sqlite else None))
    calls.append(gw.store.grouped(failing_async))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[:5] == [True] * 5
    assert [type(r) for r in results[5:]] == [ValueError, ValueError]
    assert await stored(gw) == {"suppressions": 5, "opt_outs": 5, "confirmations": 5}
    assert not await gw.store.rows("SELECT 1 FROM topics WHERE slug = 'ghost'")
    assert not await gw.store.rows("SELECT 1 FROM suppressions WHERE email = ?", (broken.email,))


async def test_a_refusal_inside_a_transaction_joins_it(gw: Gateway):
    """Called inside a transaction (staff tools do), the refusal is part of it: rolled back
    with it, and it does not wait for itself."""
    (contact,) = await people(gw, 1)

    async def refuse_then_undo() -> None:
        async with gw.store.transaction():
            assert await gw.consent.refuse(contact, source="admin")
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await asyncio.wait_for(refuse_then_undo(), 10)  # a deadlock fails, never hangs
    assert await stored(gw) == {"suppressions": 0, "opt_outs": 0, "confirmations": 0}
    assert await gw.consent.refuse(contact, source="admin")
    assert Counter((await stored(gw)).values()) == Counter({1: 3})
