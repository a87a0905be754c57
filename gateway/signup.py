"""Consent at sign-up (AD-4, PD-1): the public form and its confirmation link.

The form is public: anyone can post anyone's address to it. So a form stores nothing about
the address (no contact, no pending subscription, no consent entry): the whole request
(address, name, language, topics, policy version, time) travels inside the signed link
mailed to that address, and only the confirmation from that mailbox writes anything. Every
topic waits for it, whatever its own double opt-in flag, and nothing the form's author typed
goes into the mail. The same link confirms a re-subscription asked for on the preference
page after a refusal (the page link may have been forwarded). An erased address is not
revived by a form: its tombstone stays until the person confirms, and the confirmation
starts a new contact with a fresh consent history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import addresses
from .accept import Prepared
from .catalog import LANGUAGES, mail_language, subject
from .consent import ConsentingService
from .errors import InvalidInput
from .policy import decide
from .records import Contact, Standing, Topic
from .tokens import InvalidToken

MAX_NAME = 200
SOURCE = "form"

# Who asked, as the link carries it (one letter keeps the link short).
FROM_FORM = "f"
FROM_PAGE = "p"
SOURCES = {FROM_FORM: "form", FROM_PAGE: "preferences"}


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """A validated form: nothing is written until every field passed."""

    email: str
    name: str | None
    language: str | None
    topics: tuple[Topic, ...]


@dataclass(frozen=True, slots=True)
class PendingConfirmation:
    """What a confirmation link asks for, read back from the link itself."""

    email: str
    name: str | None
    language: str
    topics: tuple[Topic, ...]
    policy_version: str
    requested_at: float
    ip: str | None
    source: str  # "form" or "preferences"
    contact: Contact | None  # whoever holds the address now, if anyone


class Signups(ConsentingService):
    # -- the form --------------------------------------------------------------------------

    async def validate(
        self, email: str, name: str | None, language: str | None, topics: Iterable[str]
    ) -> SignupRequest:
        """Raises `InvalidInput` (nothing written) for a bad address, name, language or an
        unknown topic, or when no topic is chosen."""
        address = addresses.normalize(email)
        clean_name = (name or "").strip() or None
        if clean_name is not None:
            if len(clean_name) > MAX_NAME:
                raise InvalidInput(f"the name is longer than {MAX_NAME} characters")
            if any(ord(c) < 32 or ord(c) == 127 for c in clean_name):
                raise InvalidInput("the name contains a control character")
        lang = (language or "").strip() or None
        if lang is not None and lang not in LANGUAGES:
            raise InvalidInput(f"language must be vi or en, not {lang!r}")
        slugs = list(dict.fromkeys(s.strip() for s in topics if s and s.strip()))
        if not slugs:
            raise InvalidInput("choose at least one topic")
        chosen = tuple([await self.accepter.topic(slug) for slug in slugs])
        return SignupRequest(address, clean_name, lang, chosen)

    async def sign_up(self, req: SignupRequest, *, ip: str | None = None) -> bool:
        """Mail the address a link that confirms this sign-up; True when one was queued.
        Nothing about the address is stored (the outbox row of that mail aside). The web
        answer does not wait for this, and is the same either way."""
        now = time.time()
        hashes = self.signer.address_hashes(req.email)
        standing = (await self.store.standings({req.email: hashes}))[req.email]
        if not _asks_for_something(standing, req.topics):
            return False
        # The confirmation passes an erasure (it is how the person comes back) and a refusal
        # of promotions (it is a service message), never a block for all mail (a hard bounce).
        if not decide("transactional", None, standing, opt_in_confirmation=True).allowed:
            return False
        known = standing.contact
        language = req.language or self.settings.default_language
        payload = [
            req.email,
            req.name,
            language,
            [t.slug for t in req.topics],
            await self.consent.policy_version(),
            int(now * 1000),
            ip,
            FROM_FORM,
        ]
        mail_language = known.language if known is not None else language
        erased = standing.erased
        await self.accepter.commit(
            self._mail(req.email, known, "confirm", mail_language, payload, req.topics, erased)
        )
        return True

    # -- the preference page: a re-subscription after a refusal ------------------------------

    async def request_resubscription(
        self, contact: Contact, topics: Sequence[Topic], *, ip: str | None = None
    ) -> None:
        """Mail the person a link that lifts their refusal and starts these topics: a
        preference link may have been forwarded, so only the mailbox may undo a refusal."""
        payload = [
            contact.email,
            None,
            contact.language,
            [t.slug for t in topics],
            await self.consent.policy_version(),
            int(time.time() * 1000),
            ip,
            FROM_PAGE,
        ]
        await self.accepter.commit(
            self._mail(contact.email, contact, "resubscribe", contact.language, payload, topics)
        )

    def link(self, payload: list[Any]) -> str:
        token = self.signer.sign("confirm", payload)
        return f"{self.settings.base_url}/confirm/subscribe/{token}"

    def _mail(
        self,
        email: str,
        contact: Contact | None,
        template: str,
        language: str,
        payload: list[Any],
        topics: Iterable[Topic],
        erased: bool = False,
    ) -> Prepared:
        """Queued as what renders it (`Accepter.render_queued` at dispatch): a link and the
        topics' own names, nothing typed into the form."""
        lang = mail_language(language)
        prepared = self.accepter.queue(
            contact.id if contact is not None else None,
            email,
            category="transactional",
            subject=subject(template, lang),
            template=template,
            context=json.dumps(
                {"link": self.link(payload), "topics": [t.name for t in topics], "lang": lang}
            ),
        )
        if erased:  # the log keeps no trace of an erased address (PD-3)
            for entry in prepared.logs:
                entry.update(email=None, subject=None, contact_id=None)
        return prepared

    # -- the confirmation link -------------------------------------------------------------

    async def pending(self, token: str) -> PendingConfirmation:
        """What a confirmation link asks for; `InvalidToken` when tampered or expired, when
        the person erased their data or refused again after asking, or when a page's
        request names someone no longer here."""
        payload: Any = self.signer.verify("confirm", token)
        if not (
            isinstance(payload, list)
            and len(payload) == 8
            and isinstance(payload[0], str)
            and isinstance(payload[1], str | None)
            and payload[2] in LANGUAGES
            and isinstance(payload[3], list)
            and all(isinstance(s, str) for s in payload[3])
            and isinstance(payload[4], str)
            and isinstance(payload[5], int)
            and isinstance(payload[6], str | None)
            and payload[7] in SOURCES
        ):
            raise InvalidToken("bad payload")
        email, name, language, slugs, version, asked_ms, ip, source = payload
        contact = await self.store.get_contact(email)
        if source == FROM_PAGE and contact is None:
            raise InvalidToken("unknown")
        topics = []
        for slug in slugs:
            topic = await self.store.get_topic(slug)
            if topic is not None:  # a topic removed since is skipped
                topics.append(topic)
        objected = await self.store.newest_objection(
            self.signer.address_hashes(email), [t.id for t in topics]
        )
        if objected is not None and objected * 1000 > asked_ms:
            # An erasure or a refusal made after the request withdraws it.
            raise InvalidToken("unknown: withdrawn since")
        return PendingConfirmation(
            email,
            name,
            language,
            tuple(topics),
            version,
            asked_ms / 1000,
            ip,
            SOURCES[source],
            contact,
        )

    async def confirm(self, pending: PendingConfirmation, *, ip: str | None = None) -> bool:
        """The person pressed the button: the subscriptions start, each recorded as a
        `confirm` (a form's request first as the `opt_in` it was), and their earlier
        objections are lifted (their own fresh opt-in). An erased address gets a new
        contact with a fresh history. Idempotent: False when nothing changed."""
        now = time.time()
        email = pending.email
        hashes = self.signer.address_hashes(email)
        version = await self.consent.policy_version()
        async with self.store.transaction():
            standing = (await self.store.standings({email: hashes}))[email]
            if not _asks_for_something(standing, pending.topics):
                return False
            erased = await self.store.lift_erasure(hashes)
            contact = standing.contact
            if contact is None:
                contact, _ = await self.store.upsert_contact(
                    email,
                    profile={"name": pending.name, "language": pending.language},
                    attributes={},
                    source=SOURCE,
                    now=now,
                )
            elif contact.status == "stopped":
                await self.store.reactivate(contact.id, now)
            refused = {s.topic_id for s in standing.suppressions if s.scope == "topic"}
            starting = [
                topic
                for topic in pending.topics
                if standing.subscriptions.get(topic.id) != "subscribed" or topic.id in refused
            ]
            if pending.source == SOURCE:
                # The form wrote nothing: its request enters the ledger now, as it was made.
                for topic in starting:
                    await self.consent.record(
                        contact,
                        "opt_in",
                        source=SOURCE,
                        now=pending.requested_at,
                        topic_id=topic.id,
                        ip=pending.ip,
                        version=pending.policy_version,
                    )
            for topic in starting:
                await self.store.confirm_subscription(contact, topic, now)
                await self.consent.record(
                    contact,
                    "confirm",
                    source="link",
                    now=now,
                    topic_id=topic.id,
                    ip=ip,
                    version=version,
                )
            lifted = await self.store.lift_objections(hashes, [t.id for t in pending.topics])
            if lifted:
                # The refusal of all promotions is lifted by the person's own confirmation.
                await self.consent.record(
                    contact, "confirm", source="link", now=now, ip=ip, version=version
                )
        return bool(starting or lifted or erased)


def _asks_for_something(standing: Standing, topics: Iterable[Topic]) -> bool:
    """Would confirming change anything: a new contact, a topic not yet running, or an
    objection (erasure, refusal of all promotions, of one of these topics) to lift?"""
    if standing.contact is None:
        return True
    topics = list(topics)
    ids = {t.id for t in topics}
    for s in standing.suppressions:
        if s.reason == "erased" or s.scope == "marketing":
            return True
        if s.scope == "topic" and s.topic_id in ids:
            return True
    return any(standing.subscriptions.get(t.id) != "subscribed" for t in topics)
