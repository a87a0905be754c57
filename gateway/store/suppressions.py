"""Queries about suppressions: who must not be mailed what (ST-1, BN-1, PD-3)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select

from . import schema as t
from .base import StoreBase
from .batch import InThread
from .consent import CONSENT_INSERT
from .outbox import LOG_COLUMNS, OUTBOX_COLUMNS
from .tally import suppression_metric

# One statement: the suppression, unless the same one already stands (RETURNING says which).
SUPPRESSION_INSERT = (
    "INSERT INTO suppressions (email, email_hash, scope, topic_id, reason, source,"
    " created_at) SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM suppressions"
    " WHERE email_hash = ? AND scope = ?"
    " AND (topic_id = ? OR (topic_id IS NULL AND CAST(? AS INTEGER) IS NULL)))"
    " RETURNING id"
)

# What `enqueue` writes, for `refusal_in_thread`: an outbox row and a message log entry.
_ENQUEUE = (
    f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)})"
    f" VALUES ({StoreBase.marks(len(OUTBOX_COLUMNS))})",
    f"INSERT INTO message_log ({', '.join(LOG_COLUMNS)})"
    f" VALUES ({StoreBase.marks(len(LOG_COLUMNS))})",
)


class SuppressionQueries(StoreBase):
    async def add_suppression(
        self,
        *,
        email: str | None,
        email_hash: str,
        scope: str,
        reason: str,
        source: str,
        now: float,
        topic_id: int | None = None,
    ) -> bool:
        """Returns False when the same suppression already stands (one statement: a
        one-click refusal is on the hot path). Call inside a transaction."""
        await self.serialize(f"suppression:{email_hash}")  # two at once: one is added
        rows = await self.rows(
            SUPPRESSION_INSERT,
            (
                email,
                email_hash,
                scope,
                topic_id,
                reason,
                source,
                now,
                email_hash,
                scope,
                topic_id,
                topic_id,
            ),
        )
        metric = suppression_metric(scope, reason)
        if rows and metric is not None:
            await self.tally([(now, metric)])
        return bool(rows)

    def refusal_in_thread(
        self,
        *,
        email: str,
        email_hash: str,
        reason: str,
        source: str,
        now: float,
        contact_id: int,
        ip: str | None,
        default_version: str,
        rows: Sequence[Mapping[str, Any]],
        logs: Sequence[Mapping[str, Any]],
    ) -> InThread[bool]:
        """A person's refusal of all promotional mail as one step on the sqlite3 connection,
        for `grouped` (store/batch.py): the same statements as `add_suppression`, then, if
        the suppression is new, `record_consent` under the policy version in force
        (`current_policy_version`) and `enqueue` of the confirmation. True when new."""
        outbox, log = _ENQUEUE
        scope = "marketing"
        metric = suppression_metric(scope, reason)

        def write(conn: sqlite3.Connection) -> tuple[bool, list[tuple[float, str]]]:
            params = (email, email_hash, scope, None, reason, source, now)
            added = conn.execute(SUPPRESSION_INSERT, (*params, email_hash, scope, None, None))
            if not added.fetchall():
                return False, []
            found = conn.execute("SELECT version FROM policies ORDER BY id DESC LIMIT 1").fetchall()
            version = str(found[0][0]) if found else default_version
            conn.execute(
                CONSENT_INSERT,
                (contact_id, email_hash, None, "opt_out", source, version, ip, now),
            )
            conn.executemany(
                outbox,
                [tuple(None if c == "raw" else r.get(c) for c in OUTBOX_COLUMNS) for r in rows],
            )
            bodies = [(r["raw"], r["message_id"]) for r in rows if r.get("raw") is not None]
            if bodies:
                conn.executemany(
                    "INSERT INTO outbox_bodies (outbox_id, raw) SELECT id, ? FROM outbox"
                    " WHERE message_id = ?",
                    bodies,
                )
            conn.executemany(log, [tuple(e.get(c) for c in LOG_COLUMNS) for e in logs])
            events = [(now, metric)] if metric is not None else []
            return True, events + [(e["created_at"], e["status"]) for e in logs]

        return write

    async def suppressions_of(self, hashes: Sequence[str]) -> list[dict[str, Any]]:
        """Every suppression of one address (its keyed hashes under every key), oldest first."""
        rows = await self.db.fetch_all(
            select(
                t.suppressions.c.id,
                t.suppressions.c.scope,
                t.suppressions.c.reason,
                t.suppressions.c.source,
            )
            .where(t.suppressions.c.email_hash.in_(list(hashes)))
            .order_by(t.suppressions.c.id)
        )
        return [dict(r._mapping) for r in rows]

    async def list_suppressions(self, limit: int = 1000, after_id: int = 0) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            select(
                t.suppressions.c.id,
                t.suppressions.c.email,
                t.suppressions.c.scope,
                t.topics.c.slug.label("topic"),
                t.suppressions.c.reason,
                t.suppressions.c.source,
                t.suppressions.c.created_at,
            )
            .select_from(t.suppressions.outerjoin(t.topics))
            .where(t.suppressions.c.id > after_id)
            .order_by(t.suppressions.c.id)
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]

    async def remove_suppressions(self, hashes: Sequence[str], *, keep_erased: bool) -> int:
        where: list[ColumnElement[bool]] = [t.suppressions.c.email_hash.in_(hashes)]
        if keep_erased:
            where.append(t.suppressions.c.reason != "erased")
        async with self.transaction():
            count = await self.db.fetch_val(
                select(func.count()).select_from(t.suppressions).where(*where)
            )
            await self.db.execute(t.suppressions.delete().where(*where))
        return int(count or 0)

    async def delete_suppressions(self, ids: Sequence[int]) -> int:
        """Remove these suppressions; returns how many were still there."""
        async with self.transaction():
            rows = await self.rows(
                f"DELETE FROM suppressions WHERE id IN ({self.marks(len(ids))}) RETURNING id",
                list(ids),
            )
        return len(rows)

    async def lift_suppressions(self, hashes: Sequence[str], scope: str) -> int:
        """Remove the suppressions of one scope (a person's own fresh opt-in). Call inside a
        transaction."""
        where = (t.suppressions.c.email_hash.in_(list(hashes)), t.suppressions.c.scope == scope)
        count = await self.db.fetch_val(
            select(func.count()).select_from(t.suppressions).where(*where)
        )
        await self.db.execute(t.suppressions.delete().where(*where))
        return int(count or 0)
