"""Queries of the outbox and the message log."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from ..errors import NotFound
from ..records import OutboxItem
from . import schema as t
from .base import StoreBase

OUTBOX_COLUMNS = (
    "message_id", "contact_id", "email", "category", "topic_id", "sender", "raw", "state",
    "attempts", "next_attempt_at", "idempotency_key", "created_at", "updated_at", "campaign_id",
    "template", "context",
)  # fmt: skip
# A claimed row's rendered bytes (a row written before schema 5 may still hold them itself).
BODY = "COALESCE((SELECT b.raw FROM outbox_bodies b WHERE b.outbox_id = outbox.id), outbox.raw)"
LOG_COLUMNS = (
    "message_id", "contact_id", "email", "category", "topic_id", "subject", "status", "reason",
    "created_at", "campaign_id", "source",
)  # fmt: skip


def withheld_context(address_hash: str) -> str:
    """What a final row recorded without its address keeps in `context` (a template's
    context is needed no more): the keyed hash of the address, nothing that spells it."""
    return json.dumps({"address_hash": address_hash})


def withheld_hash(context: str | None) -> str | None:
    """The keyed hash `withheld_context` kept, or None for any other context."""
    try:
        found = json.loads(context) if context else None
    except ValueError:
        return None
    value = found.get("address_hash") if isinstance(found, dict) and len(found) == 1 else None
    return value if isinstance(value, str) else None


class OutboxQueries(StoreBase):
    # -- outbox and message log ------------------------------------------------------------

    async def enqueue(
        self, rows: Sequence[Mapping[str, Any]], logs: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write accepted messages and their log entries. Call inside a transaction. The
        rendered bytes go to outbox_bodies (see schema.py), beside the row."""
        await self.run_many(
            f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES ({self.marks(len(OUTBOX_COLUMNS))})",
            [tuple(None if c == "raw" else row.get(c) for c in OUTBOX_COLUMNS) for row in rows],
        )
        bodies = [(row["raw"], row["message_id"]) for row in rows if row.get("raw") is not None]
        if bodies:
            await self.run_many(
                "INSERT INTO outbox_bodies (outbox_id, raw) SELECT id, ? FROM outbox"
                " WHERE message_id = ?",
                bodies,
            )
        await self.log(logs)

    async def log(self, logs: Sequence[Mapping[str, Any]]) -> None:
        await self.run_many(
            f"INSERT INTO message_log ({', '.join(LOG_COLUMNS)}) VALUES ({self.marks(len(LOG_COLUMNS))})",
            [tuple(entry.get(c) for c in LOG_COLUMNS) for entry in logs],
        )
        await self.tally((entry["created_at"], entry["status"]) for entry in logs)

    async def find_idempotent(self, keys: Sequence[str]) -> dict[str, str]:
        """Message-IDs already accepted under these idempotency keys."""
        if not keys:
            return {}
        rows = await self.rows(
            "SELECT idempotency_key, message_id FROM outbox"
            f" WHERE idempotency_key IN ({self.marks(len(keys))})",
            list(keys),
        )
        return dict(rows)  # type: ignore[arg-type]

    async def claim(
        self, limit: int, lease_seconds: float, now: float, held: Collection[int] = ()
    ) -> list[OutboxItem]:
        """Lease up to `limit` due messages: queued and due, or leased by a worker whose
        lease ran out (it crashed). One statement, so two workers never claim one row.
        `held`: rows the caller still has on the wire, never taken back from it."""
        held = list(held)
        mine = f" AND id NOT IN ({self.marks(len(held))})" if held else ""
        # Each claim its own lease value, which tells this process's rows in flight from
        # other workers' (the jitter keeps other processes' values apart from ours).
        lease = now + lease_seconds + random.uniform(0, 0.001)
        while lease in self.own_leases:
            lease = math.nextafter(lease, math.inf)
        if not self.is_sqlite:
            return await self._claim_locked(limit, lease, now, held, mine)
        async with self.transaction():
            rows = await self.rows(
                "UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE id IN (SELECT id FROM outbox WHERE"
                " (state = 'queued' AND next_attempt_at <= ?)"
                f" OR (state = 'sending' AND lease_until < ?{mine})"
                " ORDER BY next_attempt_at, id LIMIT ?)"
                f" RETURNING id, message_id, email, contact_id, category, topic_id, sender, {BODY},"
                " attempts, created_at, campaign_id, template, context",
                (lease, now, now, now, *held, limit),
            )
        if rows:
            self.own_leases.append(lease)
        items = [OutboxItem(*row) for row in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def _claim_locked(
        self, limit: int, lease: float, now: float, held: list[int], mine: str
    ) -> list[OutboxItem]:
        """PostgreSQL, where workers on several machines claim at once: each locks the rows
        it picks and skips rows another has locked (FOR UPDATE SKIP LOCKED), so no row is
        claimed twice and nobody waits. Two index range scans on (state, next_attempt_at):
        leases that ran out first, then the queued rows that are due, oldest first."""
        rows = await self.rows(
            "WITH expired AS (SELECT id FROM outbox WHERE state = 'sending' AND lease_until < ?"
            f"{mine} ORDER BY lease_until LIMIT ? FOR UPDATE SKIP LOCKED),"
            " due AS (SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED)"
            " UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1,"
            " updated_at = ? WHERE id IN (SELECT id FROM (SELECT id FROM expired UNION ALL"
            " SELECT id FROM due) AS picked LIMIT ?)"
            f" RETURNING id, message_id, email, contact_id, category, topic_id, sender, {BODY},"
            " attempts, created_at, campaign_id, template, context",
            (now, *held, limit, now, limit, lease, now, limit),
        )
        if rows:
            self.own_leases.append(lease)
        items = [OutboxItem(*row) for row in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def finish(
        self,
        *,
        sent: Iterable[int] = (),
        retry: Iterable[tuple[int, float, str]] = (),
        failed: Iterable[tuple[int, str]] = (),
        bounced: Iterable[tuple[int, str]] = (),
        suppressed: Iterable[tuple[int, str]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        forget: Mapping[int, str] | None = None,
        now: float,
    ) -> None:
        """Record the outcome of a batch in one transaction (or in the caller's). Sent,
        failed, bounced and suppressed messages drop their body: the record keeps what
        happened, not the content. A sent message's record is its row (`sent_at`); the other
        outcomes are also written to the log (`logs`).
        The rows in `forget` (outbox id: the address's keyed hash; final rows recorded
        without their address, see `withhold.withheld`) also drop the address and what
        can spell it (a template's context holds a link that carries it), and so do the log
        entries written when they were accepted; the row keeps the keyed hash alone, so a
        later bounce report or an erasure still finds it (`withheld_context`). On SQLite
        the write-ahead log is emptied after the commit, as an erasure does; PostgreSQL
        keeps old row versions until autovacuum reuses their space (a VACUUM FULL per batch
        would lock the outbox against every worker)."""
        sent = list(sent)
        failed, bounced, suppressed = list(failed), list(bounced), list(suppressed)
        forget = forget or {}
        async with self.transaction():
            ids = sorted(forget)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                await self.run(
                    "UPDATE message_log SET email = NULL, contact_id = NULL, subject = NULL"
                    " WHERE message_id IN (SELECT message_id FROM outbox"
                    f" WHERE id IN ({self.marks(len(chunk))}))",
                    chunk,
                )
            await self.run_many(
                "UPDATE outbox SET email = NULL, contact_id = NULL, raw = NULL, context = ?,"
                " idempotency_key = NULL WHERE id = ?",
                [(withheld_context(forget[i]), i) for i in ids],
            )
            if forget and self.is_sqlite:
                await self.scrub_after_commit(("outbox", "outbox_bodies", "message_log"))
            final = [*sent, *ids, *(i for i, _ in [*failed, *bounced, *suppressed])]
            await self.drop_bodies(final)
            for start in range(0, len(sent), 500):
                chunk = sent[start : start + 500]
                await self.run(
                    "UPDATE outbox SET state = 'sent', raw = NULL, lease_until = NULL,"
                    f" updated_at = ?, sent_at = ? WHERE id IN ({self.marks(len(chunk))})",
                    [now, now, *chunk],
                )
            # Sent is the outbox row's `sent_at`, not a log entry: counted for the day here.
            await self.tally((now, "sent") for _ in sent)
            await self.run_many(
                "UPDATE outbox SET state = ?, raw = NULL, lease_until = NULL, last_error = ?,"
                " updated_at = ? WHERE id = ?",
                [("failed", reason, now, i) for i, reason in failed]
                + [("bounced", reason, now, i) for i, reason in bounced]
                + [("suppressed", reason, now, i) for i, reason in suppressed],
            )
            await self.run_many(
                "UPDATE outbox SET state = 'queued', next_attempt_at = ?, lease_until = NULL,"
                " last_error = ?, updated_at = ? WHERE id = ?",
                [(when, reason, now, i) for i, when, reason in retry],
            )
            await self.log(logs)

    async def drop_bodies(self, ids: Sequence[int]) -> None:
        """Delete the rendered bytes of these outbox rows (they reached a final state, or
        were erased). Call inside a transaction."""
        ids = sorted(set(ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            await self.run(
                f"DELETE FROM outbox_bodies WHERE outbox_id IN ({self.marks(len(chunk))})", chunk
            )

    async def erasures_among(
        self, ids: Sequence[int], hashes: Mapping[str, Sequence[str]]
    ) -> tuple[set[int], set[str]]:
        """For a batch whose outcome is about to be recorded: which of its outbox rows an
        erasure scrubbed or removed since they were claimed, and which addresses (the keys of
        `hashes`, with their keyed hashes under every key) are under an erasure tombstone.
        Takes each address's lock first (PostgreSQL; the one an erasure and a suppression
        take), in one order so that two workers never wait for each other: an erasure running
        now either committed before (and is seen here) or waits until the caller's
        transaction ends. Call inside that transaction."""
        if not self.is_sqlite and hashes:
            await self.run(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM"
                " (SELECT DISTINCT k FROM unnest(?::text[]) AS u(k) ORDER BY k) AS s",
                ([f"suppression:{hs[0]}" for hs in hashes.values()],),
            )
        kept: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = await self.rows(
                f"SELECT id FROM outbox WHERE id IN ({self.marks(len(chunk))})"
                " AND email IS NOT NULL",
                chunk,
            )
            kept.update(r[0] for r in rows)
        owner = {h: email for email, hs in hashes.items() for h in hs}
        erased: set[str] = set()
        keys = list(owner)
        for start in range(0, len(keys), 500):
            hashed = keys[start : start + 500]
            rows = await self.rows(
                "SELECT email_hash FROM suppressions WHERE reason = 'erased'"
                f" AND email_hash IN ({self.marks(len(hashed))})",
                hashed,
            )
            erased.update(owner[r[0]] for r in rows)
        return set(ids) - kept, erased

    async def withheld_messages(self, hashes: Sequence[str]) -> int:
        """How many messages were recorded without this address, by its keyed hash alone
        (`hashes`: under every key). Reads the whole outbox: for the rare erasure of an
        address that is held nowhere else."""
        rows = await self.rows(
            f"SELECT COUNT(*) FROM outbox WHERE email IS NULL AND context IN ({self.marks(len(hashes))})",
            [withheld_context(h) for h in hashes],
        )
        return int(rows[0][0])

    async def contact_addresses(self, emails: Sequence[str]) -> set[str]:
        """Which of these addresses a contact holds."""
        found: set[str] = set()
        for start in range(0, len(emails), 500):
            chunk = list(emails[start : start + 500])
            rows = await self.rows(
                f"SELECT email FROM contacts WHERE email IN ({self.marks(len(chunk))})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    async def next_due(self) -> float | None:
        """When the next queued message becomes due, or a lease runs out (None when nothing
        waits). Two minimums, each read from the end of an index (ix_outbox_due)."""
        rows = await self.rows(
            "SELECT (SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued'),"
            " (SELECT MIN(lease_until) FROM outbox WHERE state = 'sending')"
        )
        times = [t for t in rows[0] if t is not None]
        return min(times) if times else None

    async def message_status(self, message_id: str) -> dict[str, Any]:
        row = await self.db.fetch_one(
            select(t.outbox.c.state, t.outbox.c.attempts, t.outbox.c.last_error).where(
                t.outbox.c.message_id == message_id
            )
        )
        if row is None:
            raise NotFound(f"no message {message_id!r}")
        source = await self.db.fetch_val(
            select(t.message_log.c.source)
            .where(t.message_log.c.message_id == message_id)
            .order_by(t.message_log.c.id)
            .limit(1)
        )
        return {**dict(row._mapping), "source": source}
