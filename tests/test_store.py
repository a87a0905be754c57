"""The store on a real SQLite file (or PostgreSQL database): durable settings, idempotent
migrations, contacts, import."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from pg import postgres_only, sqlite_only

from gateway import Gateway, InvalidInput, UnknownTopic
from gateway.store import schema as t


@pytest.mark.empty_database
async def test_init_is_idempotent_and_records_the_schema_version(env):
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (None, t.SCHEMA_VERSION)
        await gw.add_topic("news", "News")
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (t.SCHEMA_VERSION, t.SCHEMA_VERSION)
        assert [topic.slug for topic, _ in await gw.topics()] == ["news"]


async def test_opening_a_current_database_waits_for_no_running_writer(env):
    """Every worker opens the database when it starts. At the current schema version that
    must take no lock a writer holds: running index DDL there deadlocked a starting worker
    against a running one on PostgreSQL."""
    async with Gateway.from_env(env) as running:
        async with running.store.transaction():
            result = await running.send("an@example.vn", "Hi", text="x")  # writes held open
            assert result.status == "queued"
            async with asyncio.timeout(5):
                async with Gateway.from_env(env) as starting:
                    assert starting.migrated == (t.SCHEMA_VERSION, t.SCHEMA_VERSION)


def test_database_urls_in_either_spelling_mean_asyncpg():
    from gateway.store.base import normalize_url

    for url in ("postgresql+asyncpg://u:p@db:5432/gw", "postgres://u:p@db:5432/gw"):
        assert normalize_url(url) == "postgresql://u:p@db:5432/gw"
    assert normalize_url("sqlite:///./gateway.db") == "sqlite:///./gateway.db"


@postgres_only("the SQLAlchemy spelling of a PostgreSQL URL")
async def test_a_postgresql_asyncpg_url_opens_the_same_database(env):
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
    env["GATEWAY_DATABASE_URL"] = env["GATEWAY_DATABASE_URL"].replace(
        "postgresql://", "postgresql+asyncpg://", 1
    )
    async with Gateway.from_env(env) as gw:
        assert [topic.slug for topic, _ in await gw.topics()] == ["news"]


@sqlite_only("WAL, synchronous=FULL and the file's mode are SQLite file settings")
async def test_sqlite_runs_in_wal_mode_with_durable_commits_and_a_private_file(env, tmp_path):
    async with Gateway.from_env(env) as gw:
        async with gw.store.connection():
            assert (await gw.store.db.fetch_val("PRAGMA journal_mode")) == "wal"
            # FULL (2): a commit is on disk before accept returns
            assert (await gw.store.db.fetch_val("PRAGMA synchronous")) == 2
    mode = stat.S_IMODE(os.stat(tmp_path / "gateway.db").st_mode)
    assert mode & 0o077 == 0, oct(mode)


async def test_contact_fields_attributes_and_consent_are_recorded(env):
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
        contact, created, started = await gw.add_contact(
            "An@Example.VN",
            name="An",
            phone="+84 90 000 0000",
            address="1 Lê Lợi",
            language="en",
            attributes={"city": "Huế"},
            subscribe=["news"],
            source="form",
        )
        assert (created, started) == (True, 1)
        assert contact.email == "an@example.vn" and contact.language == "en"
        assert "@" not in contact.uid and len(contact.uid) >= 16
        assert await gw.store.contact_attributes(contact.id) == {"city": "Huế"}
        rows = await gw.store.db.fetch_all(t.contact_attributes.select())
        assert [r["source"] for r in rows] == ["form"]
        ledger = await gw.store.db.fetch_all(t.consent_ledger.select())
        assert [(r["action"], r["source"], r["policy_version"]) for r in ledger] == [
            ("opt_in", "form", "1")
        ]
        assert "an@example.vn" not in str([dict(r._mapping) for r in ledger])
        # the same opt-in again changes nothing and records nothing
        _, created, started = await gw.add_contact("an@example.vn", subscribe=["news"])
        assert (created, started) == (False, 0)
        assert len(await gw.store.db.fetch_all(t.consent_ledger.select())) == 1


async def test_double_opt_in_topics_start_pending(env):
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("vip", "VIP", double_opt_in=True)
        await gw.add_contact("an@example.vn", subscribe=["vip"])
        result = await gw.send("an@example.vn", "x", text="x", category="marketing", topic="vip")
        assert result.status == "suppressed" and "pending" in result.reason


async def test_csv_import_takes_good_rows_and_reports_bad_ones_by_line(env, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(
        "email,name,phone,address,language,topics\n"
        "an@example.vn,An,,,vi,news\n"
        "not-an-address,Bad,,,,\n"
        "binh@example.vn,Bình,,,fr,\n"
        "chi@example.vn,Chi,,,en,news;nope\n"
        "dung@example.vn,Dũng,,,,\n",
        encoding="utf-8",
    )
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
        seen = []
        report = await gw.import_contacts(
            path, progress=lambda done, total: seen.append((done, total))
        )
        assert (report.created, report.subscribed) == (2, 1)
        assert [line for line, _ in report.bad_rows] == [3, 4, 5]
        assert "not a valid email address" in report.bad_rows[0][1]
        assert "language must be vi or en" in report.bad_rows[1][1]
        assert "unknown topic 'nope'" in report.bad_rows[2][1]
        assert seen[-1] == (5, 5)
        assert await gw.store.get_contact("chi@example.vn") is None  # a bad row writes nothing


async def test_import_refuses_an_unknown_default_topic_before_writing(env, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("email\nan@example.vn\n")
    async with Gateway.from_env(env) as gw:
        with pytest.raises(UnknownTopic):
            await gw.import_contacts(path, subscribe=["nope"])
        assert await gw.store.get_contact("an@example.vn") is None


async def test_import_rejects_a_file_without_an_email_column(env, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name\nAn\n")
    async with Gateway.from_env(env) as gw:
        with pytest.raises(InvalidInput, match="'email' column"):
            await gw.import_contacts(path)


async def test_suppression_lookup_is_by_keyed_hash_under_every_key(env):
    """A suppression written under an older key is still found after the keys rotate."""
    env["GATEWAY_SECRET_KEYS"] = "old-key-3e9a1c7f5b2d8e4a6c0f9b1d"
    async with Gateway.from_env(env) as gw:
        await gw.suppress("an@example.vn")
    env["GATEWAY_SECRET_KEYS"] = "new-key-8d2f6b0e4a9c1e7b3f5a2c6d,old-key-3e9a1c7f5b2d8e4a6c0f9b1d"
    async with Gateway.from_env(env) as gw:
        result = await gw.send("an@example.vn", "x", text="x")
        assert result.status == "suppressed"
        assert await gw.unsuppress("an@example.vn") == 1
        assert (await gw.send("an@example.vn", "x", text="x")).status == "queued"


@pytest.mark.empty_database
async def test_a_version_1_database_is_migrated_in_place_keeping_its_rows(env, tmp_path):
    from sqlalchemy import MetaData, Table, insert
    from sqlalchemy.schema import CreateTable

    from gateway.store import Store

    # Build the database version 1 wrote: the same tables without campaigns and their columns.
    v1 = MetaData()
    added_in_2 = {"outbox": {"campaign_id", "template", "context"}, "message_log": {"campaign_id"}}
    new_in_2 = {"campaigns", "api_keys", "audit_log", "policies", "policy_notices"}
    new_in_2 |= {"staff", "staff_sessions", "daily_counts"}  # (and those new in 5)
    for table in t.metadata.sorted_tables:
        if table.name in new_in_2:
            continue
        skip = added_in_2.get(table.name, set())
        columns = [c._copy() for c in table.columns if c.name not in skip]
        Table(table.name, v1, *columns)
    store = Store(env["GATEWAY_DATABASE_URL"])  # SQLite or PostgreSQL, whichever is tested
    await store.connect()
    try:
        for table in v1.sorted_tables:
            await store.db.execute(CreateTable(table))
        await store.db.execute(insert(v1.tables["meta"]).values(key="schema_version", value="1"))
        await store.db.execute(
            insert(v1.tables["topics"]).values(
                slug="news", name="News", double_opt_in=False, created_at=0
            )
        )
    finally:
        await store.disconnect()
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (1, t.SCHEMA_VERSION)
        assert [topic.slug for topic, _ in await gw.topics()] == ["news"]
        result = await gw.send("an@example.vn", "Hi", text="x")
        rows = await gw.store.db.fetch_all(t.outbox.select())
        assert [(r["message_id"], r["campaign_id"]) for r in rows] == [(result.message_id, None)]
    async with Gateway.from_env(env) as gw:
        assert gw.migrated == (t.SCHEMA_VERSION, t.SCHEMA_VERSION)
