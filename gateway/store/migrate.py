"""Create or bring the schema up to date, idempotently, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from databases import Database
from sqlalchemy.schema import CreateIndex, CreateTable

from ..tokens import address_digest
from .schema import SCHEMA_VERSION, meta, metadata

# Steps from one version to the next, as (version reached, statements). Version 1 is the
# tables as declared; later versions append ALTERs here, never edit earlier steps.
STEPS: list[tuple[int, list[str]]] = [
    (
        2,
        [
            "ALTER TABLE outbox ADD COLUMN campaign_id INTEGER REFERENCES campaigns (id)",
            "ALTER TABLE message_log ADD COLUMN campaign_id INTEGER REFERENCES campaigns (id)",
            "ALTER TABLE outbox ADD COLUMN template VARCHAR(32)",
            "ALTER TABLE outbox ADD COLUMN context TEXT",
        ],
    ),
    # 3: the bounces table (new tables are created above, from their declaration)
    (3, []),
    # 4: the address-hashing key of the database itself (see `adopt_address_key`)
    (4, []),
]

# From this version deletes are zeroed in the file and erasures scrub the files after them.
SCRUBBING_VERSION = 4
ADDRESS_KEY = "address_key"
LEGACY_ADDRESS_KEYS = "legacy_address_keys"


async def current_version(db: Database) -> int | None:
    try:
        row = await db.fetch_one(meta.select().where(meta.c.key == "schema_version"))
    except Exception:  # no meta table yet: a new database
        return None
    return int(row["value"]) if row else None


# Any constant: the key of the PostgreSQL advisory lock that makes migrations take turns.
MIGRATION_LOCK = 0x6761_7465_7761_79  # "gateway"


async def migrate(
    db: Database, legacy_address_keys: Sequence[bytes] = ()
) -> tuple[int | None, int]:
    """Return (version found, version now). A database already at this version is left
    alone: even `CREATE INDEX IF NOT EXISTS` locks its table, and every process opening
    the database (several workers on PostgreSQL) would contend with running writers.
    `legacy_address_keys`: the keys an older database's addresses were hashed under."""
    dialect = db._backend._dialect  # type: ignore[attr-defined]
    found = await current_version(db)
    if found == SCHEMA_VERSION:
        return found, found
    sqlite = db.url.scheme.startswith("sqlite")
    if sqlite:
        # WAL lets readers (the web pages) run beside the writer (the worker); it is kept
        # in the file, so setting it once here is enough.
        await db.execute("PRAGMA journal_mode=WAL")
    async with db.transaction():
        if not sqlite:
            # Processes starting together migrate one at a time; the later ones find the
            # work done. (SQLite's writers already take turns.)
            await db.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            exists = await db.fetch_val("SELECT to_regclass('meta') IS NOT NULL")
            found = await current_version(db) if exists else None
            if found == SCHEMA_VERSION:
                return found, found
        # New tables first, then the steps that change existing ones, then the indexes
        # (an index may name a column a step has just added).
        for table in metadata.sorted_tables:
            await db.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        # A new database gets the tables as declared, which already include every step.
        version = SCHEMA_VERSION if found is None else found
        for target, statements in STEPS:
            if version < target:
                for statement in statements:
                    await db.execute(statement)
                version = target
        for table in metadata.sorted_tables:
            for index in table.indexes:
                await db.execute(
                    str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
                )
        if found is None:
            await db.execute(meta.insert().values(key="schema_version", value=str(version)))
        elif found != version:
            await db.execute(
                meta.update().where(meta.c.key == "schema_version").values(value=str(version))
            )
        # A new database has no hashed rows yet; an older one keeps its rows findable.
        await adopt_address_key(db, legacy_address_keys if found is not None else ())
    return found, version


async def _meta(db: Database, key: str) -> str | None:
    row = await db.fetch_one(meta.select().where(meta.c.key == key))
    return str(row["value"]) if row else None


async def address_keys(db: Database) -> tuple[bytes, list[bytes]] | None:
    """The key addresses are hashed under and the legacy keys older rows were hashed under;
    None when the database has none yet."""
    current = await _meta(db, ADDRESS_KEY)
    if current is None:
        return None
    legacy = await _meta(db, LEGACY_ADDRESS_KEYS) or ""
    return bytes.fromhex(current), [bytes.fromhex(k) for k in legacy.split(",") if k]


async def adopt_address_key(db: Database, legacy: Sequence[bytes]) -> None:
    """Give the database its own address-hashing key, once. Suppressions, refusals and
    erasures are keyed hashes of the address; hashed under the link-signing keys, they were
    lost when a signing key was dropped. This key never rotates, and lives in the database
    so every process shares it. Rows hashed before it stay findable: their keys are kept as
    legacy keys, and rows whose address is still known are hashed again under the new key.
    Call inside a transaction; a second call (another process) changes nothing."""
    insert = "INSERT INTO meta (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING"
    await db.execute(insert, {"key": ADDRESS_KEY, "value": secrets.token_bytes(32).hex()})
    await db.execute(
        insert, {"key": LEGACY_ADDRESS_KEYS, "value": ",".join(k.hex() for k in legacy)}
    )
    keys = await address_keys(db)
    assert keys is not None
    key = keys[0]
    rows = await db.fetch_all(
        "SELECT id, email, email_hash FROM suppressions WHERE email IS NOT NULL"
    )
    changed = [
        {"id": r["id"], "email_hash": h}
        for r in rows
        if (h := address_digest(key, r["email"])) != r["email_hash"]
    ]
    if changed:
        await db.execute_many(
            "UPDATE suppressions SET email_hash = :email_hash WHERE id = :id", changed
        )
