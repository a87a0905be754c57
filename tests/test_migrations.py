"""Migrations with alembic (gateway/store/migrations), on a real SQLite file or PostgreSQL
database: a new database, and databases the migrator before alembic left at versions 1 to 4,
all end at head with the tables schema.py declares, their rows kept, and stamped."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pg import sqlite_only
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import gateway.store.migrations
from gateway import Gateway
from gateway.store import Store
from gateway.store import schema as t

HEAD = t.SCHEMA_VERSION  # the version a database is brought to

OLD_SECRET = "old-key-3e9a1c7f5b2d8e4a6c0f9b1d"
KEPT = "an@example.vn"  # suppressed, the address still known
ERASED = "bich@example.vn"  # erased: only the hash is left

# What each release's tables lacked of today's: schema.py as it stood when SCHEMA_VERSION
# became 1 (0fb5f08), 2 (66a981b) and 3 (a03b476); the indexes of 3 came later without a new
# version number.
LATER_TABLES = {
    1: {"campaigns", "api_keys", "audit_log", "policies", "policy_notices", "bounces"},
    2: {"bounces"},
    3: set(),
}
LATER_COLUMNS = {
    1: {"outbox": {"campaign_id", "template", "context"}, "message_log": {"campaign_id"}},
    2: {},
    3: {},
}
LATER_INDEXES = {
    1: {
        "ix_subscriptions_audience",
        "ix_message_log_campaign",
        "ix_message_log_recent",
        "ix_outbox_campaign",
        "ix_outbox_contact",
        "ix_outbox_email",
    },
    2: {
        "ix_subscriptions_audience",
        "ix_outbox_contact",
        "ix_outbox_email",
        "ix_policy_notices_contact",
    },
    3: {
        "ix_subscriptions_audience",
        "ix_outbox_contact",
        "ix_outbox_email",
        "ix_policy_notices_contact",
    },
}


def old_hash(secret: str, address: str) -> str:
    """A suppression's hash as releases before the database's own key wrote it: under the key
    derived from one signing key."""
    key = hashlib.sha256(b"gateway.address:" + secret.encode()).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


def column_of(column: sa.Column[Any]) -> sa.Column[Any]:
    keys = [sa.ForeignKey(k.target_fullname, ondelete=k.ondelete) for k in column.foreign_keys]
    return sa.Column(
        column.name,
        column.type,
        *keys,
        primary_key=column.primary_key,
        nullable=column.nullable,
    )


# What version 5 added (scoped keys, a message's source, the console's tables): no release
# before it had them.
V5_TABLES = {"staff", "staff_sessions", "daily_counts", "outbox_bodies"}
V5_COLUMNS = {"api_keys": {"scope"}, "message_log": {"source"}}
# What version 6 added: a message's sending on its outbox row, the log's index by address.
V6_COLUMNS = {"outbox": {"sent_at"}}
V6_INDEXES = {"ix_message_log_email"}


def tables_of(version: int) -> sa.MetaData:
    """The tables the release at `version` created, with their constraints and indexes."""
    old = sa.MetaData()
    for table in t.metadata.sorted_tables:
        if table.name in LATER_TABLES[version] | V5_TABLES:
            continue
        skip = (
            LATER_COLUMNS[version].get(table.name, set())
            | V5_COLUMNS.get(table.name, set())
            | V6_COLUMNS.get(table.name, set())
        )
        uniques = [
            sa.UniqueConstraint(*[c.name for c in u.columns])
            for u in table.constraints
            if isinstance(u, sa.UniqueConstraint)
        ]
        copy = sa.Table(
            table.name,
            old,
            *[column_of(c) for c in table.columns if c.name not in skip],
            *uniques,
        )
        for index in table.indexes:
            if index.name not in LATER_INDEXES[version] | V6_INDEXES:
                sa.Index(index.name, *[copy.c[c.name] for c in index.columns])
    return old


async def make_old_database(url: str, version: int) -> None:
    """A database as the release at `version` left it, with a topic, a subscribed contact and
    two suppressions hashed under the key derived from OLD_SECRET."""
    old = tables_of(version)
    store = Store(url)
    await store.connect()
    try:
        for table in old.sorted_tables:
            await store.db.execute(sa.schema.CreateTable(table))
            for index in table.indexes:
                await store.db.execute(sa.schema.CreateIndex(index))
        tables = old.tables
        await store.db.execute(
            tables["meta"].insert().values(key="schema_version", value=str(version))
        )
        await store.db.execute(
            tables["topics"]
            .insert()
            .values(id=1, slug="news", name="Tin tức", double_opt_in=False, created_at=1.0)
        )
        await store.db.execute(
            tables["contacts"].insert().values(
                id=1, uid="c1", email="cuong@example.vn", language="vi", status="active",
                source="import", created_at=1.0, updated_at=1.0,
            )
        )  # fmt: skip
        await store.db.execute(
            tables["subscriptions"]
            .insert()
            .values(
                contact_id=1, topic_id=1, status="subscribed", created_at=1.0, subscribed_at=1.0
            )
        )
        for email, address in ((KEPT, KEPT), (None, ERASED)):
            await store.db.execute(
                tables["suppressions"]
                .insert()
                .values(
                    email=email,
                    email_hash=old_hash(OLD_SECRET, address),
                    scope="all",
                    reason="manual" if email else "erased",
                    source="admin",
                    created_at=1.0,
                )
            )
    finally:
        await store.disconnect()


async def inspect(url: str, read: Callable[[sa.Connection], Any]) -> Any:
    """`read` on a SQLAlchemy connection to the database (alembic's view of it)."""
    driver = "sqlite+aiosqlite" if url.startswith("sqlite") else "postgresql+asyncpg"
    engine = create_async_engine(driver + "://" + url.split("://", 1)[1], poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


def differences(connection: sa.Connection) -> list[Any]:
    """What alembic finds between the database and schema.py, column order included."""
    found = compare_metadata(MigrationContext.configure(connection), t.metadata)
    inspector = sa.inspect(connection)
    for table in t.metadata.sorted_tables:
        columns = [c["name"] for c in inspector.get_columns(table.name)]
        if columns != [c.name for c in table.columns]:
            found.append(("column order", table.name, columns))
    return found


def revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def meta_rows(connection: sa.Connection) -> dict[str, str]:
    return {k: v for k, v in connection.execute(sa.text("SELECT key, value FROM meta"))}


async def open_together(env: dict[str, str], count: int) -> Counter[tuple[int | None, int]]:
    """Open `count` gateways on the database at once, as workers starting together do."""
    gateways = [Gateway.from_env(env) for _ in range(count)]
    try:
        await asyncio.gather(*(g.open() for g in gateways))
        return Counter(g.migrated for g in gateways if g.migrated is not None)
    finally:
        for g in gateways:
            await g.close()


def test_head_is_the_revision_of_the_declared_schema_version():
    config = Config()
    config.set_main_option("script_location", str(Path(gateway.store.migrations.__file__).parent))
    script = ScriptDirectory.from_config(config)
    assert sorted(script.get_heads()) == [f"{t.SCHEMA_VERSION:04d}", "legacy_4"]
    assert script.get_revision("legacy@head").revision == "legacy_4"


@pytest.mark.empty_database
async def test_a_new_database_is_made_by_the_first_revision_with_the_declared_tables(env):
    url = env["GATEWAY_DATABASE_URL"]
    assert await open_together(env, 3) == Counter({(None, HEAD): 1, (HEAD, HEAD): 2})
    assert await inspect(url, differences) == []
    assert await inspect(url, revision) == f"{HEAD:04d}"
    keys = await inspect(url, meta_rows)
    assert keys["schema_version"] == str(HEAD) and len(keys["address_key"]) == 64
    assert keys["legacy_address_keys"] == ""


@pytest.mark.empty_database
@pytest.mark.parametrize("version", [1, 2, 3])
async def test_pd3_a_database_the_old_migrator_left_at_an_older_version_reaches_head_with_its_rows(
    env, version
):
    """Brought to head as the migrator before alembic did it, by one process of several
    starting at once, then stamped; suppressions hashed under a signing key's derived key
    still hold after that key is gone (PD-3: an erased address stays suppressed)."""
    url = env["GATEWAY_DATABASE_URL"]
    await make_old_database(url, version)
    env["GATEWAY_SECRET_KEYS"] = f"new-key-8d2f6b0e4a9c1e7b3f5a2c6d,{OLD_SECRET}"
    assert await open_together(env, 3) == Counter({(version, HEAD): 1, (HEAD, HEAD): 2})
    assert await inspect(url, differences) == []
    assert await inspect(url, revision) == f"{HEAD:04d}"

    env["GATEWAY_SECRET_KEYS"] = "new-key-8d2f6b0e4a9c1e7b3f5a2c6d"  # the old key dropped
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (HEAD, HEAD)
        assert [topic.slug for topic, _ in await gw.topics()] == ["news"]
        for address in (KEPT, ERASED):
            assert (await gw.send(address, "Hi", text="x")).status == "suppressed", address
        kept = await gw.store.db.fetch_one(
            t.suppressions.select().where(t.suppressions.c.email == KEPT)
        )
        assert kept is not None and kept["email_hash"] == gw.signer.address_hash(KEPT)
        sent = await gw.send(
            "cuong@example.vn", "Tin", text="x", category="marketing", topic="news"
        )
        assert sent.status == "queued"


async def _back_to_version_5(db: Any) -> None:
    """What a version-5 database lacks of version 6: sendings on the outbox row (they were
    `sent` entries of the log), and the log's index by address."""
    await db.execute(
        "INSERT INTO message_log (message_id, contact_id, email, category, topic_id, status,"
        " created_at, campaign_id) SELECT message_id, contact_id, email, category, topic_id,"
        " 'sent', sent_at, campaign_id FROM outbox WHERE sent_at IS NOT NULL"
    )
    await db.execute("ALTER TABLE outbox DROP COLUMN sent_at")
    await db.execute("DROP INDEX ix_message_log_email")
    await db.execute(
        "CREATE INDEX ix_message_log_recent ON message_log (email, status, created_at)"
    )
    await db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    await db.execute("UPDATE alembic_version SET version_num = '0005'")


async def _back_to_version_4(db: Any) -> None:
    """What a version-4 database lacks of version 5: scoped keys, the message's source,
    staff and their sessions, the per-day counts."""
    await _back_to_version_5(db)
    for table in ("staff_sessions", "staff", "daily_counts", "outbox_bodies"):
        await db.execute(f"DROP TABLE {table}")
    await db.execute("ALTER TABLE api_keys DROP COLUMN scope")
    await db.execute("ALTER TABLE message_log DROP COLUMN source")
    await db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")


@pytest.mark.empty_database
async def test_a_database_the_old_migrator_brought_to_version_4_is_stamped_then_upgraded(env):
    url = env["GATEWAY_DATABASE_URL"]
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
        await gw.create_api_key("shop")
        await _back_to_version_4(gw.store.db)
        await gw.store.db.execute("DROP TABLE alembic_version")  # as that migrator left it
    before = await inspect(url, meta_rows)
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (4, HEAD)
        assert [topic.slug for topic, _ in await gw.topics()] == ["news"]
        assert [k["scope"] for k in await gw.api_keys()] == ["admin"]  # existing keys: admin
    assert await inspect(url, differences) == []
    assert await inspect(url, revision) == f"{HEAD:04d}"
    after = await inspect(url, meta_rows)
    assert after == {**before, "schema_version": str(HEAD)}  # the same address key


@sqlite_only("reads the database file")
async def test_opening_a_database_at_head_writes_not_one_byte(env, tmp_path):
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
    files = sorted(tmp_path.glob("gateway.db*"))
    before = {path: path.read_bytes() for path in files}
    assert await inspect(env["GATEWAY_DATABASE_URL"], revision) == f"{HEAD:04d}"
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (HEAD, HEAD)
    assert {path: path.read_bytes() for path in files} == before


@pytest.mark.empty_database
async def test_ad3_bn5_a_version_5_database_keeps_each_sent_message_as_its_rows_sending(env):
    """Version 6 moves a sent message's `sent` log entry onto its outbox row: its story, the
    frequency cap's count (AD-3) and the bounce check's "mailed lately" (BN-5) read the same
    after the upgrade as before it, and the entries are gone."""
    url = env["GATEWAY_DATABASE_URL"]
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
        await gw.add_contact("an@example.vn", subscribe=["news"], source="test")
        sent = await gw.send("an@example.vn", "Tin", text="x", category="marketing", topic="news")
        assert (await gw.deliver(until_idle=True)).sent == 1
        story = await gw.store.message_story(sent.message_id)
        assert [e["status"] for e in story] == ["accepted", "sent"]
        await _back_to_version_5(gw.store.db)
        logged = await gw.store.db.fetch_val(
            "SELECT COUNT(*) FROM message_log WHERE status = 'sent'"
        )
        assert logged == 1
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (5, HEAD)
        assert await gw.store.message_story(sent.message_id) == story
        logged = await gw.store.db.fetch_val(
            "SELECT COUNT(*) FROM message_log WHERE status = 'sent'"
        )
        assert logged == 0
        recent = await gw.store.recent_marketing(["an@example.vn"], 0)
        assert recent == {"an@example.vn": [story[1]["at"]]}
        assert await gw.store.mailed_since(["an@example.vn"], 0) == {"an@example.vn"}
    assert await inspect(url, differences) == []
    assert await inspect(url, revision) == f"{HEAD:04d}"
