"""Create or bring the schema up to date with alembic (gateway/store/migrations), on SQLite and
PostgreSQL; and the database's address-hashing key."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from databases import Database
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..tokens import address_digest
from .schema import SCHEMA_VERSION, meta

# A revision's id is the schema version it brings, in four digits; head is today's.
HEAD = f"{SCHEMA_VERSION:04d}"
# The first revision. A database the migrator before alembic left at an older version runs
# the legacy branch from the revision equal to it, then counts as this one.
FIRST = 4
LEGACY = {1: "base", 2: "legacy_2", 3: "legacy_3"}

# From this version deletes are zeroed in the file and erasures scrub the files after them.
SCRUBBING_VERSION = 4
ADDRESS_KEY = "address_key"
LEGACY_ADDRESS_KEYS = "legacy_address_keys"

# Any constant: the key of the PostgreSQL advisory lock that makes migrations take turns.
MIGRATION_LOCK = 0x6761_7465_7761_79  # "gateway"


async def current_version(db: Database) -> int | None:
    try:
        row = await db.fetch_one(meta.select().where(meta.c.key == "schema_version"))
    except Exception:  # no meta table yet: a new database
        return None
    return int(row["value"]) if row else None


async def _revision(db: Database) -> str | None:
    try:
        return await db.fetch_val("SELECT version_num FROM alembic_version")
    except Exception:  # no alembic_version table: new, or from before alembic
        return None


def _is_current(found: int, revision: str | None) -> bool:
    # A newer release's database is left as it is, as the migrator before alembic left it.
    return found > SCHEMA_VERSION or (found, revision) == (SCHEMA_VERSION, HEAD)


async def migrate(
    db: Database, legacy_address_keys: Sequence[bytes] = ()
) -> tuple[int | None, int]:
    """Return (version found, version now). A database already at head is left alone (read,
    never written): DDL, even `CREATE INDEX IF NOT EXISTS`, locks its table, and every
    process opening the database (several workers on PostgreSQL) would contend with running
    writers. `legacy_address_keys`: the keys an older database's addresses were
    hashed under."""
    found = await current_version(db)
    if found is not None and _is_current(found, await _revision(db)):
        return found, found
    sqlite = db.url.scheme.startswith("sqlite")
    if sqlite:
        await _write_ahead_log(db)
    engine = _engine(str(db.url), sqlite)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_upgrade, tuple(legacy_address_keys))
    finally:
        await engine.dispose()


async def _write_ahead_log(db: Database) -> None:
    """WAL lets readers (the web pages) run beside the writer (the worker); it is kept in the
    file, so setting it once is enough. Switching needs the file to itself, and SQLite answers
    "locked" at once, without waiting, while another process migrates it: try again."""
    for _ in range(300):
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            await asyncio.sleep(0.1)
    await db.execute("PRAGMA journal_mode=WAL")


def _engine(url: str, sqlite: bool) -> AsyncEngine:
    """A connection of alembic's own (it works through SQLAlchemy, not `databases`), on the
    same drivers."""
    parsed = sa.make_url(url)
    if sqlite:
        engine = create_async_engine(
            parsed.set(drivername="sqlite+aiosqlite"),
            poolclass=NullPool,
            connect_args={"timeout": 30},  # another process's writer: wait, as the store does
        )
        # The driver's own transactions skip DDL; take the database's write lock up front
        # instead, so the whole upgrade is one transaction and migrators take turns.
        sa.event.listen(engine.sync_engine, "connect", _autocommit)
        sa.event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    # `min_size`/`max_size` size the `databases` pool; asyncpg's connect knows no such option.
    parsed = parsed.set(drivername="postgresql+asyncpg")
    return create_async_engine(
        parsed.difference_update_query(["min_size", "max_size"]), poolclass=NullPool
    )


def _autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade(
    connection: sa.Connection, legacy_address_keys: tuple[bytes, ...]
) -> tuple[int | None, int]:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    if connection.dialect.name == "postgresql":
        # Processes starting together migrate one at a time; the later ones find the work
        # done. (SQLite's writers already take turns: BEGIN IMMEDIATE.)
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    found = _version(connection)
    revision = MigrationContext.configure(connection).get_current_revision()
    if found is not None and _is_current(found, revision):
        return found, found
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes.update(connection=connection, legacy_address_keys=legacy_address_keys)
    if found is not None and found < FIRST:
        # What the migrator before alembic would have done from there, then the revision
        # that database now equals. (Below version 4 only meta's version counts: no release
        # that wrote one stamped alembic.)
        command.stamp(config, LEGACY[found], purge=True)
        command.upgrade(config, "legacy@head")
        command.stamp(config, f"{FIRST:04d}", purge=True)
    elif found is not None and revision is None:  # left at a version alembic has a revision for
        command.stamp(config, f"{found:04d}")
    command.upgrade(config, HEAD)
    _set_version(connection, found)
    return found, SCHEMA_VERSION


def _version(connection: sa.Connection) -> int | None:
    if not sa.inspect(connection).has_table("meta"):
        return None
    value = connection.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version"))
    found = value.scalar()
    return int(found) if found is not None else None


def _set_version(connection: sa.Connection, found: int | None) -> None:
    """The version stays in meta too: what /healthz reports, and what releases before
    alembic read."""
    if found is None:
        connection.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    elif found != SCHEMA_VERSION:
        connection.execute(
            meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
        )


# -- the address-hashing key -------------------------------------------------------------------

_INSERT_META = "INSERT INTO meta (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING"
_KNOWN_ADDRESSES = "SELECT id, email, email_hash FROM suppressions WHERE email IS NOT NULL"
_REHASH = "UPDATE suppressions SET email_hash = :email_hash WHERE id = :id"


def _new_keys(legacy: Sequence[bytes]) -> list[dict[str, str]]:
    return [
        {"key": ADDRESS_KEY, "value": secrets.token_bytes(32).hex()},
        {"key": LEGACY_ADDRESS_KEYS, "value": ",".join(k.hex() for k in legacy)},
    ]


def _parse_keys(current: str | None, legacy: str | None) -> tuple[bytes, list[bytes]] | None:
    if current is None:
        return None
    return bytes.fromhex(current), [bytes.fromhex(k) for k in (legacy or "").split(",") if k]


def _rehashed(key: bytes, rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows whose address is still known, hashed again under `key` where that changes them."""
    return [
        {"id": r["id"], "email_hash": h}
        for r in rows
        if (h := address_digest(key, r["email"])) != r["email_hash"]
    ]


async def _meta(db: Database, key: str) -> str | None:
    row = await db.fetch_one(meta.select().where(meta.c.key == key))
    return str(row["value"]) if row else None


async def address_keys(db: Database) -> tuple[bytes, list[bytes]] | None:
    """The key addresses are hashed under and the legacy keys older rows were hashed under;
    None when the database has none yet."""
    return _parse_keys(await _meta(db, ADDRESS_KEY), await _meta(db, LEGACY_ADDRESS_KEYS))


async def adopt_address_key(db: Database, legacy: Sequence[bytes]) -> None:
    """Give the database its own address-hashing key, once. Suppressions, refusals and
    erasures are keyed hashes of the address; hashed under the link-signing keys, they were
    lost when a signing key was dropped. This key never rotates, and lives in the database
    so every process shares it. Rows hashed before it stay findable: their keys are kept as
    legacy keys, and rows whose address is still known are hashed again under the new key.
    Call inside a transaction; a second call (another process) changes nothing."""
    await db.execute_many(_INSERT_META, _new_keys(legacy))
    keys = await address_keys(db)
    assert keys is not None
    changed = _rehashed(keys[0], await db.fetch_all(_KNOWN_ADDRESSES))
    if changed:
        await db.execute_many(_REHASH, changed)


def give_address_key(connection: sa.Connection, legacy: Sequence[bytes]) -> None:
    """`adopt_address_key` on a migration's connection (the revisions that make a database
    version 4 run it)."""
    connection.execute(sa.text(_INSERT_META), _new_keys(legacy))
    values = {k: v for k, v in connection.execute(sa.select(meta.c.key, meta.c.value))}
    keys = _parse_keys(values.get(ADDRESS_KEY), values.get(LEGACY_ADDRESS_KEYS))
    assert keys is not None
    changed = _rehashed(keys[0], connection.execute(sa.text(_KNOWN_ADDRESSES)).mappings())
    if changed:
        connection.execute(sa.text(_REHASH), changed)
