"""Queries of the staff console: staff accounts, their sessions, the audit log in pages."""

from __future__ import annotations

from typing import Any

from ..errors import Conflict
from .base import StoreBase

STAFF_COLUMNS = ("id", "email", "role", "password_hash", "language", "created_at")
SESSION_COLUMNS = (
    "session_id", "csrf_token", "created_at", "expires_at", "last_seen_at",
    "staff_id", "email", "role", "language",
)  # fmt: skip
AUDIT_COLUMNS = ("id", "actor", "action", "subject", "created_at")


class StaffQueries(StoreBase):
    # -- accounts --------------------------------------------------------------------------

    async def add_staff(self, email: str, role: str, password_hash: str, now: float) -> int:
        async with self.transaction():
            if await self.rows("SELECT 1 FROM staff WHERE email = ?", (email,)):
                raise Conflict(f"a staff member {email} already exists")
            rows = await self.rows(
                "INSERT INTO staff (email, role, password_hash, created_at, password_changed_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (email, role, password_hash, now, now),
            )
        return int(rows[0][0])

    async def list_staff(self) -> list[dict[str, Any]]:
        rows = await self.rows(
            "SELECT s.id, s.email, s.role, s.language, s.created_at, s.password_changed_at,"
            " (SELECT MAX(last_seen_at) FROM staff_sessions x WHERE x.staff_id = s.id)"
            " FROM staff s ORDER BY s.email"
        )
        keys = ("id", "email", "role", "language", "created_at", "password_changed_at", "seen_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def staff_member(self, email: str) -> dict[str, Any] | None:
        rows = await self.rows(
            f"SELECT {', '.join(STAFF_COLUMNS)} FROM staff WHERE email = ?", (email,)
        )
        return dict(zip(STAFF_COLUMNS, rows[0], strict=True)) if rows else None

    async def count_admins(self) -> int:
        rows = await self.rows("SELECT COUNT(*) FROM staff WHERE role = 'admin'")
        return int(rows[0][0])

    async def remove_staff(self, email: str) -> bool:
        """Remove the member and end every session of theirs, in one transaction."""
        async with self.transaction():
            rows = await self.rows("SELECT id FROM staff WHERE email = ?", (email,))
            if not rows:
                return False
            await self.run("DELETE FROM staff_sessions WHERE staff_id = ?", (rows[0][0],))
            await self.run("DELETE FROM staff WHERE id = ?", (rows[0][0],))
        return True

    async def set_staff_password(
        self, staff_id: int, password_hash: str, now: float, keep_session: int | None = None
    ) -> None:
        """A new password; every session but `keep_session` (the one that changed it) ends."""
        async with self.transaction():
            await self.run(
                "UPDATE staff SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                (password_hash, now, staff_id),
            )
            await self.run(
                "DELETE FROM staff_sessions WHERE staff_id = ? AND id <> ?",
                (staff_id, keep_session if keep_session is not None else -1),
            )

    async def rehash_staff_password(self, staff_id: int, old: str, new: str) -> None:
        """The same password under stronger parameters (only if it was not changed since)."""
        async with self.transaction():
            await self.run(
                "UPDATE staff SET password_hash = ? WHERE id = ? AND password_hash = ?",
                (new, staff_id, old),
            )

    async def set_staff_language(self, staff_id: int, language: str) -> None:
        async with self.transaction():
            await self.run("UPDATE staff SET language = ? WHERE id = ?", (language, staff_id))

    # -- sessions: only a hash of the cookie's token is kept --------------------------------

    async def create_staff_session(
        self, token_hash: str, staff_id: int, csrf_token: str, now: float, expires_at: float
    ) -> None:
        async with self.transaction():
            # Sessions that ended long ago go when a new one starts: the table stays small.
            await self.run("DELETE FROM staff_sessions WHERE expires_at < ?", (now,))
            await self.run(
                "INSERT INTO staff_sessions"
                " (token_hash, staff_id, csrf_token, created_at, expires_at, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, staff_id, csrf_token, now, expires_at, now),
            )

    async def staff_session(self, token_hash: str) -> dict[str, Any] | None:
        """The session with this token hash and its staff member (None when unknown)."""
        rows = await self.rows(
            "SELECT x.id, x.csrf_token, x.created_at, x.expires_at, x.last_seen_at,"
            " s.id, s.email, s.role, s.language"
            " FROM staff_sessions x JOIN staff s ON s.id = x.staff_id WHERE x.token_hash = ?",
            (token_hash,),
        )
        return dict(zip(SESSION_COLUMNS, rows[0], strict=True)) if rows else None

    async def touch_staff_session(self, session_id: int, now: float) -> None:
        async with self.transaction():
            await self.run(
                "UPDATE staff_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id)
            )

    async def end_staff_session(self, session_id: int) -> None:
        async with self.transaction():
            await self.run("DELETE FROM staff_sessions WHERE id = ?", (session_id,))

    # -- the audit log, newest first, in pages ----------------------------------------------

    async def audit_page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Rows matching every filter given (actor and action: exact or a `prefix*`), newest
        first, older than `before_id` when given."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("actor", actor), ("action", action)):
            if value and value.endswith("*"):
                where.append(f"{column} LIKE ? ESCAPE '!'")
                escaped = value[:-1].replace("!", "!!").replace("%", "!%").replace("_", "!_")
                params.append(escaped + "%")
            elif value:
                where.append(f"{column} = ?")
                params.append(value)
        for clause, moment in (("created_at >= ?", since), ("created_at < ?", until)):
            if moment is not None:
                where.append(clause)
                params.append(moment)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.rows(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [dict(zip(AUDIT_COLUMNS, row, strict=True)) for row in rows]
