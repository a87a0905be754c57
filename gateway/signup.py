"""Consent at sign-up (AD-4, PD-1): the public form and its confirmation link.

A topic without double opt-in starts at once; one with double opt-in waits (`pending`) until
the person presses the button behind the link mailed to them. The form is public: anyone can
post anyone's address to it, so what it may do on its own is limited to what a mailbox
owner's confirmation would not add. An address with a standing objection of its own (an
erasure, a refusal of all promotional mail, an opt-out of the topic) is therefore never
revived by the form alone: every topic it asks for waits for the confirmation, which lifts
the objection (the person's own fresh opt-in). A known contact's profile is not changed by
the form either. The answer is the same whether or not the address was known.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import addresses
from .accept import Accepter, SendRequest
from .config import Settings
from .errors import InvalidInput
from .store import Contact, Store, Topic
from .tokens import InvalidToken, Signer

LANGUAGES = ("vi", "en")
MAX_NAME = 200
SOURCE = "form"

SUBJECTS = {
    "vi": "Xác nhận đăng ký nhận thư",
    "en": "Please confirm your subscription",
}


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """A validated form: nothing is written until every field passed."""

    email: str
    name: str | None
    language: str | None
    topics: tuple[Topic, ...]


@dataclass(frozen=True, slots=True)
class PendingConfirmation:
    contact: Contact
    topics: tuple[Topic, ...]


class Signups:
    def __init__(
        self, settings: Settings, store: Store, signer: Signer, accepter: Accepter
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.accepter = accepter

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
        """Record the sign-up; returns True when a confirmation email was queued. The
        caller answers the same either way."""
        now = time.time()
        hashes = self.signer.address_hashes(req.email)
        subject = hashes[0]
        version = await self.store.current_policy_version(self.settings.policy_version)
        async with self.store.transaction():
            standing = (await self.store.standings({req.email: hashes}))[req.email]
            erased = any(s.reason == "erased" for s in standing.suppressions)
            refused = any(s.scope == "marketing" for s in standing.suppressions)
            known = standing.contact
            # The form never changes a known contact's profile: anyone can post it.
            profile: dict[str, str | None] = (
                {"name": req.name, "language": req.language or self.settings.default_language}
                if known is None
                else {}
            )
            contact, _ = await self.store.upsert_contact(
                req.email, profile=profile, attributes={}, source=SOURCE, now=now
            )
            if known is not None and known.status == "stopped":
                await self.store.reactivate(contact.id, now)
            if erased:
                await self.store.hold_erased_for_confirmation(hashes, req.email, SOURCE, now)
            to_confirm: list[Topic] = []
            for topic in req.topics:
                current = standing.subscriptions.get(topic.id)
                if current == "subscribed":
                    continue
                opted_out = current == "unsubscribed" or any(
                    s.scope == "topic" and s.topic_id == topic.id for s in standing.suppressions
                )
                if not topic.double_opt_in and not (erased or refused or opted_out):
                    await self.store.set_subscription(
                        contact,
                        topic,
                        "subscribed",
                        subject=subject,
                        source=SOURCE,
                        policy_version=version,
                        now=now,
                        ip=ip,
                    )
                    continue
                if current != "unsubscribed":
                    # A person's own opt-out stays as it is until they confirm.
                    await self.store.set_subscription(
                        contact,
                        topic,
                        "pending",
                        subject=subject,
                        source=SOURCE,
                        policy_version=version,
                        now=now,
                        ip=ip,
                    )
                to_confirm.append(topic)
            if not to_confirm:
                return False
            # Rendered inside the transaction: the contact may be new. A suppression for all
            # mail (a hard bounce) stops the confirmation too; the answer is the same.
            link = self.link(contact, to_confirm)
            prepared = await self.accepter.prepare([self._mail(contact, link, to_confirm)])
            await self.accepter.commit(prepared)
        return prepared.results[0].queued

    def link(self, contact: Contact, topics: Iterable[Topic]) -> str:
        token = self.signer.sign("confirm", [contact.uid, [t.slug for t in topics]])
        return f"{self.settings.base_url}/confirm/subscribe/{token}"

    def _mail(self, contact: Contact, link: str, topics: list[Topic]) -> SendRequest:
        lang = contact.language if contact.language in LANGUAGES else "vi"
        return SendRequest(
            to=contact.email,
            subject=SUBJECTS[lang],
            text=self.accepter.renderer.mail_text(lang, "confirm"),
            category="transactional",
            context={
                "link": link,
                "topics": [t.name for t in topics],
                "sender_name": self.settings.sender_name,
            },
        )

    # -- the confirmation link -------------------------------------------------------------

    async def pending(self, token: str) -> PendingConfirmation:
        """What a confirmation link names; `InvalidToken` when tampered, expired, or naming
        a person no longer here (erased since)."""
        payload: Any = self.signer.verify("confirm", token)
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or not isinstance(payload[0], str)
            or not isinstance(payload[1], list)
            or not all(isinstance(s, str) for s in payload[1])
        ):
            raise InvalidToken("bad payload")
        contact = await self.store.get_contact_by_uid(payload[0])
        if contact is None:
            raise InvalidToken("unknown")
        topics = []
        for slug in payload[1]:
            topic = await self.store.get_topic(slug)
            if topic is not None:  # a topic removed since is skipped
                topics.append(topic)
        return PendingConfirmation(contact, tuple(topics))

    async def confirm(self, pending: PendingConfirmation, *, ip: str | None = None) -> bool:
        """The person pressed the button: the subscriptions start, each recorded as a
        `confirm`, and their earlier objections are lifted (their own fresh opt-in).
        Idempotent: False when nothing changed."""
        contact = pending.contact
        now = time.time()
        hashes = self.signer.address_hashes(contact.email)
        version = await self.store.current_policy_version(self.settings.policy_version)
        async with self.store.transaction():
            confirmed = []
            for topic in pending.topics:
                if await self.store.confirm_subscription(contact, topic, now):
                    await self.store.record_consent(
                        contact,
                        subject=hashes[0],
                        action="confirm",
                        source="link",
                        policy_version=version,
                        now=now,
                        topic_id=topic.id,
                        ip=ip,
                    )
                    confirmed.append(topic.id)
            if not confirmed:
                return False
            if await self.store.lift_objections(hashes, confirmed):
                # The refusal of all promotions (or the hold after an erasure) is lifted.
                await self.store.record_consent(
                    contact,
                    subject=hashes[0],
                    action="confirm",
                    source="link",
                    policy_version=version,
                    now=now,
                    ip=ip,
                )
        return True
