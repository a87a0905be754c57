"""Queries about people: topics, contacts, and the standing policy decides on."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from ..errors import StoreError
from ..records import Contact, Standing, Suppression, Topic
from . import schema as t
from .base import StoreBase
from .rows import _contact


def _chunks(items: list[Any], size: int = 500) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class PeopleQueries(StoreBase):
    # -- topics ------------------------------------------------------------------------

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

    async def all_topics(self) -> list[Topic]:
        rows = await self.db.fetch_all(t.topics.select().order_by(t.topics.c.name))
        return [Topic(r["id"], r["slug"], r["name"], r["double_opt_in"]) for r in rows]

    async def list_topics(self) -> list[tuple[Topic, int]]:
        """Each topic with the number of people who would receive it: subscribed, and not
        stopped by a suppression (a refusal of all promotional mail, a block of all mail,
        an erasure or a refusal of the topic)."""
        rows = await self.rows(
            "SELECT t.id, t.slug, t.name, t.double_opt_in, (SELECT COUNT(*) FROM subscriptions s"
            " JOIN contacts c ON c.id = s.contact_id WHERE s.topic_id = t.id"
            " AND s.status = 'subscribed' AND NOT EXISTS (SELECT 1 FROM suppressions x"
            " WHERE x.email = c.email AND (x.scope IN ('all', 'marketing')"
            " OR (x.scope = 'topic' AND x.topic_id = t.id)))) FROM topics t ORDER BY t.slug"
        )
        return [(Topic(r[0], r[1], r[2], bool(r[3])), int(r[4])) for r in rows]

    # -- contacts ----------------------------------------------------------------------

    async def get_contact(self, email: str) -> Contact | None:
        row = await self.db.fetch_one(t.contacts.select().where(t.contacts.c.email == email))
        return _contact(row) if row else None

    async def get_contact_by_uid(self, uid: str) -> Contact | None:
        rows = await self.rows(
            "SELECT id, uid, email, name, language, status FROM contacts WHERE uid = ?", (uid,)
        )
        return Contact(*rows[0]) if rows else None

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

    async def set_language(self, contact_id: int, language: str, now: float) -> None:
        await self.db.execute(
            t.contacts.update()
            .where(t.contacts.c.id == contact_id)
            .values(language=language, updated_at=now)
        )

    async def import_batch(
        self,
        items: Sequence[Mapping[str, Any]],
        standings: Mapping[str, Standing],
        *,
        source: str,
        policy_version: str,
        default_language: str,
        subject_of: Mapping[str, str],
        now: float,
    ) -> list[tuple[bool, int]]:
        """Create or update many contacts and start their subscriptions in a few statements
        (an import of a million rows must not cost a query per field). Each item has a
        distinct email and no erasure tombstone; returns (created, subscriptions started).
        A person's own opt-out is never undone by an import. Call inside a transaction."""
        fresh = [i for i in items if standings[i["email"]].contact is None]
        await self.run_many(
            "INSERT INTO contacts (uid, email, name, phone, postal_address, language, status,"
            " source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
            [
                (
                    secrets.token_urlsafe(12),
                    i["email"],
                    i["name"],
                    i["phone"],
                    i["address"],
                    i["language"] or default_language,
                    source,
                    now,
                    now,
                )
                for i in fresh
            ],
        )
        await self.run_many(
            "UPDATE contacts SET name = COALESCE(?, name), phone = COALESCE(?, phone),"
            " postal_address = COALESCE(?, postal_address), language = COALESCE(?, language),"
            " updated_at = ? WHERE id = ?",
            [
                (i["name"], i["phone"], i["address"], i["language"], now, contact.id)
                for i in items
                if (contact := standings[i["email"]].contact) is not None
                and any(i[k] is not None for k in ("name", "phone", "address", "language"))
            ],
        )
        ids: dict[str, int] = {}
        emails = [i["email"] for i in items]
        for chunk in _chunks(emails):
            for cid, email in await self.rows(
                f"SELECT id, email FROM contacts WHERE email IN ({self.marks(len(chunk))})", chunk
            ):
                ids[email] = cid
        inserts, updates, consents, results = [], [], [], []
        for item in items:
            standing = standings[item["email"]]
            cid = ids[item["email"]]
            started = 0
            for topic in item["topics"]:
                current = standing.subscriptions.get(topic.id)
                wanted = "pending" if topic.double_opt_in else "subscribed"
                if current in (wanted, "subscribed", "unsubscribed"):
                    continue
                stamp = now if wanted == "subscribed" else None
                if current is None:
                    inserts.append((cid, topic.id, wanted, now, stamp))
                else:
                    updates.append((wanted, stamp, cid, topic.id))
                consents.append(
                    (
                        cid,
                        subject_of[item["email"]],
                        topic.id,
                        "opt_in",
                        source,
                        policy_version,
                        now,
                    )
                )
                started += 1
            results.append((standing.contact is None, started))
        await self.run_many(
            "INSERT INTO subscriptions (contact_id, topic_id, status, created_at, subscribed_at)"
            " VALUES (?, ?, ?, ?, ?)",
            inserts,
        )
        await self.run_many(
            "UPDATE subscriptions SET status = ?, subscribed_at = ? WHERE contact_id = ?"
            " AND topic_id = ?",
            updates,
        )
        await self.run_many(
            "INSERT INTO consent_ledger (contact_id, subject, topic_id, action, source,"
            " policy_version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            consents,
        )
        return results

    # -- standing: what policy decides on, in a few queries for a whole batch ----------

    async def standings(
        self, hashes: Mapping[str, Sequence[str]], *, attributes: bool = False
    ) -> dict[str, Standing]:
        """For each normalized address (keys of `hashes`, values its keyed hashes under every
        key in use), its contact, suppressions, subscriptions and (if asked) attributes.
        Four statements for a whole batch, whatever its size up to a chunk."""
        result = {email: Standing() for email in hashes}
        emails = list(result)
        owner = {h: email for email, hs in hashes.items() for h in hs}
        for chunk in _chunks(list(owner)):
            for email_hash, scope, topic_id, reason in await self.rows(
                "SELECT email_hash, scope, topic_id, reason FROM suppressions"
                f" WHERE email_hash IN ({self.marks(len(chunk))})",
                chunk,
            ):
                result[owner[email_hash]].suppressions.append(Suppression(scope, topic_id, reason))
        by_id: dict[int, Standing] = {}
        for chunk in _chunks(emails):
            for cid, uid, email, name, language, status in await self.rows(
                "SELECT id, uid, email, name, language, status FROM contacts"
                f" WHERE email IN ({self.marks(len(chunk))})",
                chunk,
            ):
                standing = result[email]
                standing.contact = Contact(cid, uid, email, name, language, status)
                by_id[cid] = standing
        ids = list(by_id)
        for chunk in _chunks(ids):
            for cid, topic_id, status in await self.rows(
                "SELECT contact_id, topic_id, status FROM subscriptions"
                f" WHERE contact_id IN ({self.marks(len(chunk))})",
                chunk,
            ):
                by_id[cid].subscriptions[topic_id] = status
            if attributes:
                for cid, key, value in await self.rows(
                    "SELECT contact_id, key, value FROM contact_attributes"
                    f" WHERE contact_id IN ({self.marks(len(chunk))})",
                    chunk,
                ):
                    by_id[cid].attributes[key] = value
        return result
