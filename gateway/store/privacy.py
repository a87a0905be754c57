"""Privacy policy versions and who was told of an adverse one (promise 10, PD-5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..records import Contact
from .base import StoreBase

POLICY_COLUMNS = "id, version, text, adverse, published_at"


def _policy(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "version": row[1],
        "text": row[2],
        "adverse": bool(row[3]),
        "published_at": row[4],
    }


class PrivacyQueries(StoreBase):
    async def current_policy(self) -> dict[str, Any] | None:
        """The version published last, or None when none has been published."""
        found = await self.rows(f"SELECT {POLICY_COLUMNS} FROM policies ORDER BY id DESC LIMIT 1")
        return _policy(found[0]) if found else None

    async def current_policy_version(self, default: str) -> str:
        """What the consent ledger records now: the version published last, else `default`
        (GATEWAY_POLICY_VERSION). Read on every consent, so a version published by another
        process (the CLI beside `gateway serve`) counts at once."""
        found = await self.rows("SELECT version FROM policies ORDER BY id DESC LIMIT 1")
        return str(found[0][0]) if found else default

    async def get_policy(self, version: str) -> dict[str, Any] | None:
        found = await self.rows(
            f"SELECT {POLICY_COLUMNS} FROM policies WHERE version = ?", (version,)
        )
        return _policy(found[0]) if found else None

    async def add_policy(self, version: str, text: str, adverse: bool, now: float) -> int:
        """Call inside a transaction, after checking the version is new."""
        found = await self.rows(
            "INSERT INTO policies (version, text, adverse, published_at) VALUES (?, ?, ?, ?)"
            " RETURNING id",
            (version, text, adverse, now),
        )
        return int(found[0][0])

    async def list_policies(self) -> list[dict[str, Any]]:
        """Every version, oldest first, with how many notices were queued or suppressed."""
        found = await self.rows(
            "SELECT p.version, p.adverse, p.published_at,"
            " (SELECT COUNT(*) FROM policy_notices n WHERE n.policy_id = p.id"
            "  AND n.status = 'queued'),"
            " (SELECT COUNT(*) FROM policy_notices n WHERE n.policy_id = p.id"
            "  AND n.status <> 'queued')"
            " FROM policies p ORDER BY p.id"
        )
        return [
            {
                "version": r[0],
                "adverse": bool(r[1]),
                "published_at": r[2],
                "notices": {"queued": int(r[3]), "suppressed": int(r[4])},
            }
            for r in found
        ]

    # -- notices: the audience is streamed by contact id, never loaded at once -----------------

    async def notice_cursor(self, policy_id: int) -> int:
        """The last contact id already told of this version (0: none): notices are written
        in contact id order, page by page, so an interrupted run resumes after it."""
        found = await self.rows(
            "SELECT MAX(contact_id) FROM policy_notices WHERE policy_id = ?", (policy_id,)
        )
        return int(found[0][0] or 0) if found else 0

    async def count_policy_audience(self, after_id: int, created_before: float) -> int:
        found = await self.rows(
            "SELECT COUNT(*) FROM contacts WHERE id > ? AND created_at <= ?",
            (after_id, created_before),
        )
        return int(found[0][0])

    async def policy_audience(
        self, after_id: int, created_before: float, limit: int
    ) -> list[Contact]:
        """The next page of contacts with data stored (erased people have no contact row)
        who were already contacts when the version was published."""
        found = await self.rows(
            "SELECT id, uid, email, name, language, status FROM contacts"
            " WHERE id > ? AND created_at <= ? ORDER BY id LIMIT ?",
            (after_id, created_before, limit),
        )
        return [Contact(*row) for row in found]

    async def add_policy_notices(self, notices: Sequence[Mapping[str, Any]]) -> None:
        """Record who was told (or why not). Call inside the transaction that queues the
        notices, so a crash never leaves a notice queued but unrecorded."""
        await self.run_many(
            "INSERT INTO policy_notices (policy_id, contact_id, subject, message_id, status,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (
                    n["policy_id"],
                    n["contact_id"],
                    n["subject"],
                    n["message_id"],
                    n["status"],
                    n["created_at"],
                )
                for n in notices
            ],
        )

    async def policy_notices(self, policy_id: int) -> list[dict[str, Any]]:
        found = await self.rows(
            "SELECT contact_id, subject, message_id, status, created_at FROM policy_notices"
            " WHERE policy_id = ? ORDER BY id",
            (policy_id,),
        )
        keys = ("contact_id", "subject", "message_id", "status", "created_at")
        return [dict(zip(keys, row, strict=True)) for row in found]
