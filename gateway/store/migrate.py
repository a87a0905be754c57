"""Create or bring the schema up to date, idempotently, on SQLite and PostgreSQL."""

from __future__ import annotations

from databases import Database
from sqlalchemy.schema import CreateIndex, CreateTable

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
]


async def current_version(db: Database) -> int | None:
    try:
        row = await db.fetch_one(meta.select().where(meta.c.key == "schema_version"))
    except Exception:  # no meta table yet: a new database
        return None
    return int(row["value"]) if row else None


# Any constant: the key of the PostgreSQL advisory lock that makes migrations take turns.
MIGRATION_LOCK = 0x6761_7465_7761_79  # "gateway"


async def migrate(db: Database) -> tuple[int | None, int]:
    """Return (version found, version now). A database already at this version is left
    alone: even `CREATE INDEX IF NOT EXISTS` locks its table, and every process opening
    the database (several workers on PostgreSQL) would contend with running writers."""
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
    return found, version
