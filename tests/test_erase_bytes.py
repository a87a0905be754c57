"""PD-3: an erased person leaves no byte in the database's files: not in free pages, not in
the write-ahead log, not in the free text of the message log or the outbox (SQLite: the
file, -wal and -shm read raw; PostgreSQL: every relation file of the database)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pg
from smtp_server import RecordingSMTPServer
from test_cli import run

from gateway import Gateway
from gateway.store import schema as t

ADDRESS = "zq.probe7.erasure@example.vn"
NAME = "Zyxwvut Quasimodo"
PHONE = "0909 777 314"  # stored as +84909777314: its digits are searched for
POSTAL = "77 Quokkaville Street, Ward Zanzibar"
# What must not survive, as the bytes a database could hold them in (also the local part
# alone: a server's reply may quote it as "<zq.probe7.erasure>").
NEEDLES = [
    s.encode() for s in (ADDRESS, "zq.probe7.erasure", NAME, "909777314", POSTAL, "Quokkaville")
]


# Valid keys of this file's own (any will do: addresses are hashed under the database's key).
KEYS = "erase-bytes-key-9fQ2wLx7Rk4Tz1Vb6Nc3"


def found_in(data: bytes) -> list[bytes]:
    return [needle for needle in NEEDLES if needle in data]


async def mail_the_person(env: dict[str, str]) -> None:
    """A contact with every personal field, mail delivered to them (marketing and
    transactional, their name in the body), then a message the server refuses with a 5xx
    reply quoting their address: it lands in the outbox, the message log and the bounces."""
    env["GATEWAY_SECRET_KEYS"] = KEYS
    refuse = False

    def reject(rcpt: str) -> tuple[int, str] | None:
        return (550, f"5.1.1 <{rcpt}>: Recipient address rejected: unknown") if refuse else None

    async with RecordingSMTPServer(reject=reject) as server:
        env["GATEWAY_SMTP_URL"] = server.url
        async with Gateway.from_env(env) as gw:
            await gw.add_topic("news", "News")
            await gw.add_contact(
                ADDRESS,
                name=NAME,
                phone=PHONE,
                address=POSTAL,
                language="en",
                attributes={"street": POSTAL},
                subscribe=["news"],
            )
            body = "<p>Hello {{ contact.name }}, your card ends 31415.</p>"
            sent = await gw.send(ADDRESS, "For you", html=body, category="marketing", topic="news")
            assert sent.status == "queued", sent
            receipt = await gw.send(ADDRESS, f"Receipt for {NAME}", text=f"Deliver to {POSTAL}")
            assert receipt.status == "queued", receipt
            await gw.deliver(until_idle=True)
            assert len(server.messages) == 2
            refuse = True
            failing = await gw.send(ADDRESS, "Your order", text="Thanks")
            await gw.deliver(until_idle=True)
            status = await gw.message_status(failing.message_id)
            assert status["state"] in ("failed", "bounced"), status
            # The premise: before the erasure, the database does hold all of it.
            held = await gw.store.db.fetch_all(t.message_log.select())
            assert any(ADDRESS in (r["reason"] or "") for r in held)


@pg.sqlite_only("reads the database file, its -wal and -shm")
def test_pd3_erase_leaves_no_byte_of_the_person_in_the_sqlite_files(env, tmp_path: Path):
    asyncio.run(mail_the_person(env))
    database = tmp_path / "gateway.db"
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    before = b"".join(f.read_bytes() for f in files if f.exists())
    assert found_in(before) == NEEDLES  # the premise, in the files themselves

    async def erase_while_another_process_has_the_database_open() -> None:
        # A worker or the web app keeps the database open: SQLite keeps its -wal then.
        async with Gateway.from_env(env):
            proc = await asyncio.to_thread(run, env, "contact", "erase", ADDRESS)
            assert proc.returncode == 0, proc.stderr
            for path in files:
                if path.exists():
                    assert found_in(path.read_bytes()) == [], path.name

    asyncio.run(erase_while_another_process_has_the_database_open())
    for path in files:
        if path.exists():
            assert found_in(path.read_bytes()) == [], path.name
    # The erasure itself held: only the keyed hash is left, and the address stays suppressed.
    proc = run(env, "suppress", "list")
    assert proc.returncode == 0 and "(erased)" in proc.stdout, proc.stdout


@pg.postgres_only("reads the relation files of the cluster")
def test_pd3_erase_leaves_no_byte_of_the_person_in_the_postgresql_files(env):
    asyncio.run(mail_the_person(env))

    async def relation_bytes() -> bytes:
        """Every table, index and TOAST file of the test's database, as on disk."""
        connection = await asyncpg.connect(env["GATEWAY_DATABASE_URL"])
        try:
            await connection.execute("CHECKPOINT")  # what is in shared buffers, written out
            paths = await connection.fetch(
                "SELECT pg_relation_filepath(oid) AS path FROM pg_class"
                " WHERE relkind IN ('r', 'i', 't', 'm') AND pg_relation_filepath(oid) IS NOT NULL"
                " AND reltablespace = 0"
            )
            chunks = []
            for row in paths:
                chunks.append(
                    await connection.fetchval(
                        "SELECT pg_read_binary_file($1::text)",
                        row["path"],
                    )
                    or b""
                )
            return b"".join(chunks)
        finally:
            await connection.close()

    assert found_in(asyncio.run(relation_bytes())) == NEEDLES  # the premise
    proc = run(env, "contact", "erase", ADDRESS)
    assert proc.returncode == 0, proc.stderr
    assert found_in(asyncio.run(relation_bytes())) == []
    proc = run(env, "suppress", "list")
    assert proc.returncode == 0 and "(erased)" in proc.stdout, proc.stdout


@pg.sqlite_only("reads the database file")
def test_pd3_upgrading_scrubs_what_an_older_release_erased_from_the_sqlite_file(
    env, tmp_path: Path
):
    """Releases before this one deleted without zeroing: a person they erased could still be
    read in the file's free pages. The upgrade rewrites the file once."""
    env["GATEWAY_SECRET_KEYS"] = KEYS

    async def create() -> None:
        async with Gateway.from_env(env) as gw:
            await gw.add_contact(ADDRESS, name=NAME, phone=PHONE, address=POSTAL)

    asyncio.run(create())
    database = tmp_path / "gateway.db"
    # An erasure as an older release made it: the row deleted, its bytes left in place, and
    # a schema of that release's version.
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA secure_delete=OFF")
    connection.execute("DELETE FROM contacts")
    connection.execute("DELETE FROM meta WHERE key != 'schema_version'")
    connection.execute("UPDATE meta SET value = '3'")
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    assert found_in(database.read_bytes())  # the premise: still readable

    async def upgrade() -> None:
        async with Gateway.from_env(env) as gw:
            assert gw.migrated is not None and gw.migrated[0] == 3
            for path in (database, Path(f"{database}-wal")):
                if path.exists():
                    assert found_in(path.read_bytes()) == [], path.name

    asyncio.run(upgrade())
