"""The gateway's only door to the database: every `databases` call lives in this package."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from databases import Database
from databases.core import Connection as DatabasesConnection
from sqlalchemy import and_, func, or_, select

from ..errors import NotFound, StoreError
from . import schema as t
from .migrate import current_version, migrate


@dataclass(frozen=True, slots=True)
class Topic:
    id: int
    slug: str
    name: str
    double_opt_in: bool


@dataclass(frozen=True, slots=True)
class Contact:
    id: int
    uid: str
    email: str
    name: str | None
    language: str
    status: str


@dataclass(frozen=True, slots=True)
class Suppression:
    scope: str  # all | marketing | topic
    topic_id: int | None
    reason: str


@dataclass(slots=True)
class Standing:
    """What policy needs to know about one address: contact, suppressions, subscriptions."""

    contact: Contact | None = None
    suppressions: list[Suppression] = field(default_factory=list)
    subscriptions: dict[int, str] = field(default_factory=dict)  # topic_id -> status


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    message_id: str
    email: str
    contact_id: int | None
    category: str
    topic_id: int | None
    sender: str
    raw: bytes
    attempts: int
    created_at: float


def _contact(row: Any) -> Contact:
    return Contact(row["id"], row["uid"], row["email"], row["name"], row["language"], row["status"])


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # On SQLite a busy writer makes the others wait (up to 30 s) instead of failing at once.
        self.db = Database(url, **({"timeout": 30} if self.is_sqlite else {}))

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[Any] | None = None
        try:
            if self.is_sqlite and self.db.url.database not in ("", ":memory:"):
                # Open it once synchronously: an unopenable file is reported here, before
                # aiosqlite starts a thread that would outlive the failure.
                sqlite3.connect(self.db.url.database).close()
            await self.db.connect()
            if self.is_sqlite:
                await self._share_connection()
        except Exception as exc:
            raise StoreError(
                f"cannot open database {self.db.url.obscure_password}: {exc}"
            ) from None

    async def _share_connection(self) -> None:
        # `databases` opens a new SQLite connection (and thread) for every task and every
        # query outside a held connection: about 1.3 ms each instead of 0.3 ms. One shared
        # connection serves every task instead; `transaction()` serializes writers on it.
        # (databases 0.9.0 is its last release, so this use of its global-connection slot,
        # the one its force_rollback mode uses, will not move under us.)
        connection = DatabasesConnection(self.db, self.db._backend)
        await connection.__aenter__()
        self.db._global_connection = connection

    async def disconnect(self) -> None:
        connection = self.db._global_connection
        if self.is_sqlite and connection is not None:
            self.db._global_connection = None
            await connection.__aexit__()
        await self.db.disconnect()

    async def migrate(self) -> tuple[int | None, int]:
        found, version = await migrate(self.db)
        if self.is_sqlite:
            self._restrict_file()
        return found, version

    async def schema_version(self) -> int | None:
        return await current_version(self.db)

    def _restrict_file(self) -> None:
        # Promise 2: the database holds personal data, so it is not world-readable.
        path = self.db.url.database
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.chmod(path + suffix, 0o600)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        """Hold one connection for the current task: queries inside reuse it."""
        async with self.db.connection():
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """All or nothing; every write goes through here. On SQLite, tasks share one
        connection, so writers take turns (a task already inside joins its own transaction),
        and the database lock is taken up front (BEGIN IMMEDIATE) so another process's
        writer makes us wait on the busy timeout instead of failing mid-transaction."""
        if not self.is_sqlite:
            async with self.db.transaction():
                yield
            return
        task = asyncio.current_task()
        if self._writer is task:
            yield
            return
        async with self._write_lock:
            self._writer = task
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    await self.db.execute("ROLLBACK")
                    raise
                await self.db.execute("COMMIT")
            finally:
                self._writer = None

    # -- meta ------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        return await self.db.fetch_val(select(t.meta.c.value).where(t.meta.c.key == key))

    # -- topics ----------------------------------------------------------------------------

    async def add_topic(self, slug: str, name: str, double_opt_in: bool, now: float) -> Topic:
        async with self.transaction():
            if await self.get_topic(slug):
                raise StoreError(f"topic {slug!r} already exists")
            topic_id = await self.db.execute(
                t.topics.insert().values(
                    slug=slug, name=name, double_opt_in=double_opt_in, created_at=now
                )
            )
        return Topic(topic_id, slug, name, double_opt_in)

    async def get_topic(self, slug: str) -> Topic | None:
        row = await self.db.fetch_one(t.topics.select().where(t.topics.c.slug == slug))
        return Topic(row["id"], row["slug"], row["name"], row["double_opt_in"]) if row else None

    async def list_topics(self) -> list[tuple[Topic, int]]:
        """Each topic with its number of subscribed contacts."""
        subscribed = (
            select(func.count())
            .where(t.subscriptions.c.topic_id == t.topics.c.id)
            .where(t.subscriptions.c.status == "subscribed")
            .scalar_subquery()
        )
        rows = await self.db.fetch_all(
            select(t.topics, subscribed.label("subscribers")).order_by(t.topics.c.slug)
        )
        return [
            (Topic(r["id"], r["slug"], r["name"], r["double_opt_in"]), r["subscribers"])
            for r in rows
        ]

    # -- contacts --------------------------------------------------------------------------

    async def get_contact(self, email: str) -> Contact | None:
        row = await self.db.fetch_one(t.contacts.select().where(t.contacts.c.email == email))
        return _contact(row) if row else None

    async def upsert_contact(
        self,
        email: str,
        *,
        profile: Mapping[str, str | None],
        attributes: Mapping[str, str],
        source: str,
        now: float,
    ) -> tuple[Contact, bool]:
        """Create the contact or update the fields given (None leaves a field alone).
        Returns (contact, created). Call inside a transaction."""
        given = {k: v for k, v in profile.items() if v is not None}
        existing = await self.get_contact(email)
        if existing is None:
            values = dict(
                uid=secrets.token_urlsafe(12),
                email=email,
                status="active",
                source=source,
                created_at=now,
                updated_at=now,
                **given,
            )
            contact_id = await self.db.execute(t.contacts.insert().values(**values))
            created = True
        else:
            contact_id = existing.id
            created = False
            if given:
                await self.db.execute(
                    t.contacts.update()
                    .where(t.contacts.c.id == contact_id)
                    .values(updated_at=now, **given)
                )
        for key, value in attributes.items():
            updated = await self.db.execute(
                t.contact_attributes.update()
                .where(t.contact_attributes.c.contact_id == contact_id)
                .where(t.contact_attributes.c.key == key)
                .values(value=value, source=source, updated_at=now)
            )
            if not created and updated:
                continue
            row = await self.db.fetch_one(
                select(t.contact_attributes.c.id)
                .where(t.contact_attributes.c.contact_id == contact_id)
                .where(t.contact_attributes.c.key == key)
            )
            if row is None:
                await self.db.execute(
                    t.contact_attributes.insert().values(
                        contact_id=contact_id, key=key, value=value, source=source, updated_at=now
                    )
                )
        contact = await self.get_contact(email)
        assert contact is not None
        return contact, created

    async def contact_attributes(self, contact_id: int) -> dict[str, str]:
        rows = await self.db.fetch_all(
            select(t.contact_attributes.c.key, t.contact_attributes.c.value).where(
                t.contact_attributes.c.contact_id == contact_id
            )
        )
        return {r["key"]: r["value"] for r in rows}

    async def set_subscription(
        self,
        contact: Contact,
        topic: Topic,
        status: str,
        *,
        subject: str,
        source: str,
        policy_version: str,
        now: float,
        ip: str | None = None,
    ) -> bool:
        """Record a subscription change and its consent entry. Returns False when the
        status was already that (nothing written). Call inside a transaction."""
        row = await self.db.fetch_one(
            t.subscriptions.select()
            .where(t.subscriptions.c.contact_id == contact.id)
            .where(t.subscriptions.c.topic_id == topic.id)
        )
        if row is not None and row["status"] == status:
            return False
        stamps: dict[str, Any] = {"status": status}
        if status == "subscribed":
            stamps["subscribed_at"] = now
        elif status == "unsubscribed":
            stamps["unsubscribed_at"] = now
        if row is None:
            await self.db.execute(
                t.subscriptions.insert().values(
                    contact_id=contact.id, topic_id=topic.id, created_at=now, **stamps
                )
            )
        else:
            await self.db.execute(
                t.subscriptions.update().where(t.subscriptions.c.id == row["id"]).values(**stamps)
            )
        action = {"subscribed": "opt_in", "unsubscribed": "opt_out", "pending": "opt_in"}[status]
        await self.db.execute(
            t.consent_ledger.insert().values(
                contact_id=contact.id,
                subject=subject,
                topic_id=topic.id,
                action=action,
                source=source,
                policy_version=policy_version,
                ip=ip,
                created_at=now,
            )
        )
        return True

    # -- suppressions ----------------------------------------------------------------------

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
        """Returns False when the same suppression already stands. Call inside a transaction."""
        where = [t.suppressions.c.scope == scope, t.suppressions.c.email_hash == email_hash]
        where.append(
            t.suppressions.c.topic_id == topic_id
            if topic_id is not None
            else t.suppressions.c.topic_id.is_(None)
        )
        if await self.db.fetch_one(select(t.suppressions.c.id).where(*where)):
            return False
        await self.db.execute(
            t.suppressions.insert().values(
                email=email,
                email_hash=email_hash,
                scope=scope,
                topic_id=topic_id,
                reason=reason,
                source=source,
                created_at=now,
            )
        )
        return True

    async def remove_suppressions(self, hashes: Sequence[str], *, keep_erased: bool) -> int:
        query = t.suppressions.delete().where(t.suppressions.c.email_hash.in_(hashes))
        if keep_erased:
            query = query.where(t.suppressions.c.reason != "erased")
        async with self.transaction():
            count = await self.db.fetch_val(
                select(func.count()).select_from(t.suppressions).where(query.whereclause)
            )
            await self.db.execute(query)
        return int(count or 0)

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

    # -- standing: what policy decides on, in three queries for a whole batch ---------------

    async def standings(self, hashes: Mapping[str, Sequence[str]]) -> dict[str, Standing]:
        """For each normalized address (keys of `hashes`, values its keyed hashes under every
        key in use), its contact, suppressions and subscriptions."""
        result = {email: Standing() for email in hashes}
        if not result:
            return result
        owner = {h: email for email, hs in hashes.items() for h in hs}
        rows = await self.db.fetch_all(
            select(
                t.suppressions.c.email_hash,
                t.suppressions.c.scope,
                t.suppressions.c.topic_id,
                t.suppressions.c.reason,
            ).where(t.suppressions.c.email_hash.in_(list(owner)))
        )
        for r in rows:
            result[owner[r["email_hash"]]].suppressions.append(
                Suppression(r["scope"], r["topic_id"], r["reason"])
            )
        rows = await self.db.fetch_all(
            t.contacts.select().where(t.contacts.c.email.in_(list(result)))
        )
        by_id: dict[int, Standing] = {}
        for r in rows:
            standing = result[r["email"]]
            standing.contact = _contact(r)
            by_id[r["id"]] = standing
        if by_id:
            rows = await self.db.fetch_all(
                select(
                    t.subscriptions.c.contact_id,
                    t.subscriptions.c.topic_id,
                    t.subscriptions.c.status,
                ).where(t.subscriptions.c.contact_id.in_(list(by_id)))
            )
            for r in rows:
                by_id[r["contact_id"]].subscriptions[r["topic_id"]] = r["status"]
        return result

    # -- outbox and message log ------------------------------------------------------------

    async def enqueue(
        self, rows: Sequence[Mapping[str, Any]], logs: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write accepted messages and their log entries. Call inside a transaction."""
        if rows:
            await self.db.execute_many(t.outbox.insert(), [dict(r) for r in rows])
        if logs:
            await self.log(logs)

    async def log(self, logs: Sequence[Mapping[str, Any]]) -> None:
        await self.db.execute_many(t.message_log.insert(), [dict(r) for r in logs])

    async def find_idempotent(self, key: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            select(t.outbox.c.message_id, t.outbox.c.state).where(t.outbox.c.idempotency_key == key)
        )
        return dict(row._mapping) if row else None

    async def claim(self, limit: int, lease_seconds: float, now: float) -> list[OutboxItem]:
        """Lease up to `limit` due messages: queued and due, or leased by a worker whose
        lease ran out (it crashed). One statement, so two workers never claim one row."""
        o = t.outbox
        due = (
            select(o.c.id)
            .where(
                or_(
                    and_(o.c.state == "queued", o.c.next_attempt_at <= now),
                    and_(o.c.state == "sending", o.c.lease_until < now),
                )
            )
            .order_by(o.c.next_attempt_at, o.c.id)
            .limit(limit)
        )
        async with self.transaction():
            rows = await self.db.fetch_all(
                o.update()
                .where(o.c.id.in_(due.scalar_subquery()))
                .values(
                    state="sending",
                    lease_until=now + lease_seconds,
                    attempts=o.c.attempts + 1,
                    updated_at=now,
                )
                .returning(
                    o.c.id,
                    o.c.message_id,
                    o.c.email,
                    o.c.contact_id,
                    o.c.category,
                    o.c.topic_id,
                    o.c.sender,
                    o.c.raw,
                    o.c.attempts,
                    o.c.created_at,
                )
            )
        items = [OutboxItem(**r._mapping) for r in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def finish(
        self,
        *,
        sent: Iterable[int] = (),
        retry: Iterable[tuple[int, float, str]] = (),
        failed: Iterable[tuple[int, str]] = (),
        suppressed: Iterable[tuple[int, str]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        now: float,
    ) -> None:
        """Record the outcome of a batch in one transaction. Sent, failed and suppressed
        messages drop their body: the log keeps what happened, not the content."""
        o = t.outbox
        sent = list(sent)
        async with self.transaction():
            if sent:
                await self.db.execute(
                    o.update()
                    .where(o.c.id.in_(sent))
                    .values(state="sent", raw=None, lease_until=None, updated_at=now)
                )
            for state, pairs in (("failed", failed), ("suppressed", suppressed)):
                for outbox_id, reason in pairs:
                    await self.db.execute(
                        o.update()
                        .where(o.c.id == outbox_id)
                        .values(
                            state=state,
                            raw=None,
                            lease_until=None,
                            last_error=reason,
                            updated_at=now,
                        )
                    )
            for outbox_id, when, reason in retry:
                await self.db.execute(
                    o.update()
                    .where(o.c.id == outbox_id)
                    .values(
                        state="queued",
                        next_attempt_at=when,
                        lease_until=None,
                        last_error=reason,
                        updated_at=now,
                    )
                )
            if logs:
                await self.log(logs)

    async def next_due(self) -> float | None:
        """When the next queued message becomes due (None when nothing waits)."""
        o = t.outbox
        return await self.db.fetch_val(
            select(func.min(func.coalesce(o.c.lease_until, o.c.next_attempt_at))).where(
                o.c.state.in_(("queued", "sending"))
            )
        )

    async def outbox_counts(self) -> dict[str, int]:
        rows = await self.db.fetch_all(
            select(t.outbox.c.state, func.count()).group_by(t.outbox.c.state)
        )
        return {r[0]: r[1] for r in rows}

    async def message_status(self, message_id: str) -> dict[str, Any]:
        row = await self.db.fetch_one(
            select(t.outbox.c.state, t.outbox.c.attempts, t.outbox.c.last_error).where(
                t.outbox.c.message_id == message_id
            )
        )
        if row is None:
            raise NotFound(f"no message {message_id!r}")
        return dict(row._mapping)
