"""Rotating GATEWAY_SECRET_KEYS (OLD, then NEW,OLD, then NEW) lifts no suppression, refusal,
hard bounce or erasure (ST-1, BN-1, PD-3): addresses are hashed under the database's own key,
which never rotates; rows an older release hashed under keys derived from the signing keys
stay findable after the migration."""

from __future__ import annotations

import hashlib
import hmac
from email import message_from_bytes

import httpx
from smtp_server import RecordingSMTPServer
from test_feedback import dsn

from gateway import Gateway
from gateway.errors import InvalidInput
from gateway.store import schema as t
from gateway.web.app import create_app

OLD = "old-signing-key-4hT9qWv2Lz7Xc1Bn8Mk3"
NEW = "new-signing-key-Rf6Yp0Js5Ud2Ga9Ke7Wo"
BASE = "https://mail.first.vn"

MANUAL = "manual@example.vn"  # suppressed by staff (all mail)
REFUSED = "refused@example.vn"  # one-click refusal of promotional mail
BOUNCED = "bounced@example.vn"  # hard bounce reported by DSN (BN-1)
ERASED = "erased@example.vn"  # erased at the person's request (PD-3)


def with_keys(env: dict[str, str], keys: str) -> dict[str, str]:
    return {**env, "GATEWAY_SECRET_KEYS": keys}


async def assert_all_still_suppressed(gw: Gateway) -> None:
    """send() refuses each of them (the refusal: promotional mail), and an erased person is
    never brought back by an admin import."""
    for address in (MANUAL, BOUNCED, ERASED):
        result = await gw.send(address, "Đơn hàng", text="Xin chào")
        assert result.status == "suppressed", (address, result)
    result = await gw.send(REFUSED, "Tin mới", text="Ưu đãi", category="marketing", topic="news")
    assert result.status == "suppressed", result
    try:
        await gw.add_contact(ERASED, name="Someone else")
    except InvalidInput:
        pass
    else:
        raise AssertionError("an admin import brought an erased person back")


async def test_st1_pd3_suppressions_refusals_bounces_and_erasures_survive_key_rotation(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(with_keys(env, OLD)) as gw:
        await gw.add_topic("news", "Tin tức")
        for address in (MANUAL, REFUSED, BOUNCED, ERASED):
            await gw.add_contact(address, name="Người nhận", subscribe=["news"])
        # A message delivered to BOUNCED, whose server later reports it failed (a DSN).
        first = await gw.send(BOUNCED, "Đơn hàng", text="Xin chào")
        await gw.deliver(until_idle=True)
        [delivered] = smtp.messages
        assert message_from_bytes(delivered.data)["Message-ID"] == first.message_id
        # Mail queued before each suppression: the worker's recheck must stop it later.
        waiting = {
            MANUAL: await gw.send(MANUAL, "Đơn hàng", text="Xin chào"),
            BOUNCED: await gw.send(BOUNCED, "Đơn hàng", text="Xin chào"),
            REFUSED: await gw.send(
                REFUSED, "Tin mới", text="Ưu đãi", category="marketing", topic="news"
            ),
        }
        assert all(r.status == "queued" for r in waiting.values()), waiting
        assert await gw.suppress(MANUAL)
        report = dsn(BOUNCED, "5.1.1", message_id=None)
        ingested = await gw.ingest(report, rcpt_tos=[delivered.mail_from])
        assert ingested.actions, ingested
        refused = await gw.store.get_contact(REFUSED)
        assert refused is not None
        url = gw.renderer.links(refused, await gw.accepter.topic("news"))["unsubscribe_url"]
        transport = httpx.ASGITransport(app=create_app(gw, worker=False))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as web:
            answer = await web.post(
                url[len(BASE) :],
                content=b"List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        assert answer.status_code == 200
        await gw.erase_contact(ERASED)
        await assert_all_still_suppressed(gw)

    # The new key signs, the old one still verifies; then the old one is dropped.
    for keys in (f"{NEW},{OLD}", NEW):
        async with Gateway.from_env(with_keys(env, keys)) as gw:
            await assert_all_still_suppressed(gw)

    received = len(smtp.messages)
    async with Gateway.from_env(with_keys(env, NEW)) as gw:
        await gw.deliver(until_idle=True)
        for address, result in waiting.items():
            status = await gw.message_status(result.message_id)
            assert status["state"] == "suppressed", (address, status)
    # Only the refusal confirmation (transactional, ST-2) went out; nothing to the others.
    for message in smtp.messages[received:]:
        assert message.rcpt_tos == [REFUSED], message.rcpt_tos
        assert "Tin mới" not in message_from_bytes(message.data)["Subject"]


def old_hash(secret: str, address: str) -> str:
    """How releases before the database's own key hashed an address: under a key derived
    from one signing key."""
    key = hashlib.sha256(b"gateway.address:" + secret.encode()).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


async def test_pd3_a_database_from_before_the_address_key_keeps_its_rows_through_rotation(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(with_keys(env, OLD)) as gw:
        await gw.add_topic("news", "Tin tức")
        for address in (MANUAL, REFUSED, BOUNCED):
            await gw.add_contact(address, subscribe=["news"])
        # Mail queued before the suppressions below were written.
        waiting = [
            await gw.send(MANUAL, "Đơn hàng", text="Xin chào"),
            await gw.send(BOUNCED, "Đơn hàng", text="Xin chào"),
            await gw.send(ERASED, "Đơn hàng", text="Xin chào"),
            await gw.send(REFUSED, "Tin mới", text="Ưu đãi", category="marketing", topic="news"),
        ]
        assert all(r.status == "queued" for r in waiting), waiting
        # Make it a database as the release before wrote it: schema version 3, no key of
        # its own, every suppression hashed under the key derived from OLD.
        db = gw.store.db
        await db.execute(t.meta.delete().where(t.meta.c.key != "schema_version"))
        await db.execute(t.meta.update().values(value="3"))
        rows = [
            (MANUAL, MANUAL, "all", "manual", "admin"),
            (BOUNCED, BOUNCED, "all", "hard_bounce", "smtp"),
            (REFUSED, REFUSED, "marketing", "unsubscribe", "link"),
            (None, ERASED, "all", "erased", "person"),
        ]
        for email, address, scope, reason, source in rows:
            await db.execute(
                t.suppressions.insert().values(
                    email=email,
                    email_hash=old_hash(OLD, address),
                    scope=scope,
                    reason=reason,
                    source=source,
                    created_at=1.0,
                )
            )

    async with Gateway.from_env(with_keys(env, f"{NEW},{OLD}")) as gw:
        assert gw.migrated is not None and gw.migrated[0] == 3
        await assert_all_still_suppressed(gw)
        # Rows whose address is still known are hashed again under the database's key.
        for row in await gw.store.db.fetch_all(t.suppressions.select()):
            if row["email"] is not None:
                assert row["email_hash"] == gw.signer.address_hash(row["email"]), row["email"]
                assert row["email_hash"] != old_hash(OLD, row["email"])

    async with Gateway.from_env(with_keys(env, NEW)) as gw:
        await assert_all_still_suppressed(gw)
        await gw.deliver(until_idle=True)
        for result in waiting:
            assert (await gw.message_status(result.message_id))["state"] == "suppressed"
    assert smtp.messages == []


async def test_every_process_on_a_database_hashes_addresses_alike_whatever_its_keys(
    env: dict[str, str],
):
    """The hashing key lives in the database: replicas and workers agree, and it is not
    derived from (so not lost with) any signing key."""
    async with Gateway.from_env(with_keys(env, OLD)) as first:
        async with Gateway.from_env(with_keys(env, NEW)) as second:
            assert first.signer.address_hash(MANUAL) == second.signer.address_hash(MANUAL)
            assert first.signer.address_hash(MANUAL) not in (
                old_hash(OLD, MANUAL),
                old_hash(NEW, MANUAL),
            )
