"""Queries about suppressions: who must not be mailed what (ST-1, BN-1, PD-3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select

from . import schema as t
from .base import StoreBase


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
            "INSERT INTO suppressions (email, email_hash, scope, topic_id, reason, source,"
            " created_at) SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM suppressions"
            " WHERE email_hash = ? AND scope = ?"
            " AND (topic_id = ? OR (topic_id IS NULL AND CAST(? AS INTEGER) IS NULL)))"
            " RETURNING id",
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
        return bool(rows)

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
