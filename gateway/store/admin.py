"""Queries of the admin API: its keys, the audit log of reads, contacts by id and in pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import StoreError
from ..records import Contact
from .base import StoreBase

CONTACT_COLUMNS = (
    "id", "uid", "email", "name", "phone", "postal_address", "language", "status", "source",
    "created_at", "updated_at",
)  # fmt: skip
EDITABLE = frozenset({"name", "phone", "postal_address", "language"})
# When a key was last used is worth one write a minute, not one a request.
TOUCH_EVERY = 60.0


class AdminQueries(StoreBase):
    # -- API keys --------------------------------------------------------------------------

    async def create_api_key(
        self, name: str, prefix: str, key_hash: str, now: float, scope: str = "admin"
    ) -> None:
        async with self.transaction():
            if await self.rows(
                "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)
            ):
                raise StoreError(
                    f"an API key named {name!r} already exists: revoke it first or pick another name"
                )
            await self.run(
                "INSERT INTO api_keys (name, prefix, key_hash, created_at, scope)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, prefix, key_hash, now, scope),
            )

    async def list_api_keys(self) -> list[dict[str, Any]]:
        rows = await self.rows(
            "SELECT name, prefix, scope, created_at, revoked_at, last_used_at FROM api_keys"
            " ORDER BY id"
        )
        keys = ("name", "prefix", "scope", "created_at", "revoked_at", "last_used_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def revoke_api_key(self, name: str, now: float) -> int:
        async with self.transaction():
            rows = await self.rows(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL"
                " RETURNING id",
                (now, name),
            )
        return len(rows)

    async def find_api_key(self, key_hash: str, now: float) -> tuple[str, str] | None:
        """The name and scope of the live key with this hash (None when unknown or revoked)."""
        rows = await self.rows(
            "SELECT id, name, scope, last_used_at FROM api_keys"
            " WHERE key_hash = ? AND revoked_at IS NULL",
            (key_hash,),
        )
        if not rows:
            return None
        key_id, name, scope, last_used = rows[0]
        if last_used is None or last_used < now - TOUCH_EVERY:
            async with self.transaction():
                await self.run("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))
        return str(name), str(scope)

    # -- promise 9: who read whose data, never the data ------------------------------------

    async def record_audit(self, actor: str, action: str, subject: str | None, now: float) -> None:
        async with self.transaction():
            await self.run(
                "INSERT INTO audit_log (actor, action, subject, created_at) VALUES (?, ?, ?, ?)",
                (actor, action, subject, now),
            )

    async def audit_entries(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self.rows(
            "SELECT id, actor, action, subject, created_at FROM audit_log WHERE id > ?"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        keys = ("id", "actor", "action", "subject", "created_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- contacts by id --------------------------------------------------------------------

    async def contact_by_id(self, contact_id: int) -> Contact | None:
        rows = await self.rows(
            "SELECT id, uid, email, name, language, status FROM contacts WHERE id = ?",
            (contact_id,),
        )
        return Contact(*rows[0]) if rows else None

    async def contact_ids(self, after_id: int, limit: int) -> list[int]:
        rows = await self.rows(
            "SELECT id FROM contacts WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [int(r[0]) for r in rows]

    async def contact_records(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Profiles with their attributes and subscriptions, in the order of `ids`: three
        statements for a page, whatever its size."""
        if not ids:
            return []
        marks = self.marks(len(ids))
        found: dict[int, dict[str, Any]] = {}
        for row in await self.rows(
            f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts WHERE id IN ({marks})", list(ids)
        ):
            record = dict(zip(CONTACT_COLUMNS, row, strict=True))
            record.update(attributes={}, subscriptions={})
            found[record["id"]] = record
        for cid, key, value in await self.rows(
            f"SELECT contact_id, key, value FROM contact_attributes WHERE contact_id IN ({marks})"
            " ORDER BY key",
            list(ids),
        ):
            found[cid]["attributes"][key] = value
        for cid, slug, status in await self.rows(
            "SELECT s.contact_id, t.slug, s.status FROM subscriptions s JOIN topics t"
            f" ON t.id = s.topic_id WHERE s.contact_id IN ({marks}) ORDER BY t.slug",
            list(ids),
        ):
            found[cid]["subscriptions"][slug] = status
        return [found[i] for i in ids if i in found]

    async def update_contact(
        self,
        contact_id: int,
        fields: Mapping[str, Any],
        attributes: Mapping[str, str | None],
        *,
        source: str,
        now: float,
    ) -> None:
        """Set profile fields (None clears one) and attributes (None removes one). Call
        inside a transaction."""
        if fields:
            names = list(fields)
            assert set(names) <= EDITABLE, "not an editable contact field"
            await self.run(
                f"UPDATE contacts SET {', '.join(f'{n} = ?' for n in names)}, updated_at = ?"
                " WHERE id = ?",
                (*(fields[n] for n in names), now, contact_id),
            )
        for key, value in attributes.items():
            await self.run(
                "DELETE FROM contact_attributes WHERE contact_id = ? AND key = ?",
                (contact_id, key),
            )
            if value is not None:
                await self.run(
                    "INSERT INTO contact_attributes (contact_id, key, value, source, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (contact_id, key, value, source, now),
                )
        if attributes and not fields:
            await self.run("UPDATE contacts SET updated_at = ? WHERE id = ?", (now, contact_id))
