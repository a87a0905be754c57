"""What a person can do from their links: refuse, choose topics, export, erase (ST-1, ST-2, PD-*)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from . import addresses
from .catalog import LANGUAGES, local_time
from .consent import ConsentingService
from .records import Contact, Topic

log = logging.getLogger("gateway.preferences")


@dataclass(frozen=True, slots=True)
class TopicChoice:
    topic: Topic
    subscribed: bool
    pending: bool


@dataclass(frozen=True, slots=True)
class PreferenceView:
    contact: Contact
    topics: list[TopicChoice]
    stopped_all: bool
    history: list[dict[str, Any]]
    policy_version: str
    refused_topics: frozenset[int] = frozenset()  # topics refused by a suppression of their own


@dataclass(frozen=True, slots=True)
class PreferenceUpdate:
    """What the page's form did. `confirm` is True when the person asked to receive
    promotional mail again after a refusal: that waits for the link mailed to them
    (`Signups.request_resubscription`), with `topics` the ones it names."""

    contact: Contact
    confirm: bool = False
    topics: tuple[Topic, ...] = ()


class PreferenceCenter(ConsentingService):
    # -- tokens ----------------------------------------------------------------------------

    async def contact(self, purpose: str, token: str) -> Contact:
        """The contact a link names; `InvalidToken` when tampered, expired, of another
        purpose, or naming someone no longer here."""
        return await self.consent.link_holder(purpose, token)

    def link(self, purpose: str, contact: Contact) -> str:
        path = {"preferences": "preferences", "export": "confirm/export", "erase": "confirm/erase"}
        return f"{self.settings.base_url}/{path[purpose]}/{self.signer.sign(purpose, contact.uid)}"

    # -- refusal ---------------------------------------------------------------------------

    async def refuse(
        self, contact: Contact, *, source: str, ip: str | None = None, reason: str = "unsubscribe"
    ) -> bool:
        """The person's own refusal of all promotional mail (ST-1, ST-2): `Consent.refuse`."""
        return await self.consent.refuse(contact, source=source, ip=ip, reason=reason)

    # -- the preference page ---------------------------------------------------------------

    async def view(self, contact: Contact) -> PreferenceView:
        topics = await self.store.all_topics()
        subscriptions = await self.store.subscriptions_of(contact.id)
        standing = (
            await self.store.standings({contact.email: self.signer.address_hashes(contact.email)})
        )[contact.email]
        history = await self.store.consent_history(contact.id)
        for entry in history:
            entry["when"] = local_time(entry["created_at"], contact.language)
        return PreferenceView(
            contact=contact,
            topics=[
                TopicChoice(
                    t, subscriptions.get(t.id) == "subscribed", subscriptions.get(t.id) == "pending"
                )
                for t in topics
            ],
            stopped_all=any(s.scope == "marketing" for s in standing.suppressions),
            history=history,
            policy_version=await self.consent.policy_version(),
            refused_topics=frozenset(
                s.topic_id
                for s in standing.suppressions
                if s.scope == "topic" and s.topic_id is not None
            ),
        )

    async def update(
        self,
        contact: Contact,
        *,
        topics: set[str],
        stop_all: bool,
        language: str | None,
        ip: str | None = None,
    ) -> PreferenceUpdate:
        """Apply the page's form. Each change is one consent entry, source `preferences`.
        Opting out applies at once. Receiving promotional mail again after a refusal of all
        of it (or of one topic) is only recorded as a wish (`pending`, an `opt_in` entry):
        a preference link may have been forwarded, so the refusal is lifted only by the
        link mailed to the person (the result says which topics it names)."""
        now = time.time()
        current = await self.view(contact)
        if stop_all and not current.stopped_all:
            await self.refuse(contact, source="preferences", ip=ip)
        lift_all = not stop_all and current.stopped_all
        to_confirm: list[Topic] = []
        async with self.store.transaction():
            if lift_all:
                await self.consent.record(
                    contact,
                    "opt_in",
                    source="preferences",
                    now=now,
                    ip=ip,
                    version=current.policy_version,
                )
            for choice in current.topics:
                wanted = choice.topic.slug in topics
                refused = lift_all or (not stop_all and choice.topic.id in current.refused_topics)
                if wanted and refused:
                    to_confirm.append(choice.topic)
                    if choice.subscribed:
                        continue
                    status = "pending"
                elif wanted and not choice.subscribed:
                    status = "subscribed"
                elif not wanted and (choice.subscribed or choice.pending):
                    status = "unsubscribed"
                else:
                    continue
                await self.consent.set_subscription(
                    contact,
                    choice.topic,
                    status,
                    source="preferences",
                    now=now,
                    ip=ip,
                    version=current.policy_version,
                )
            if language in LANGUAGES and language != contact.language:
                await self.store.set_language(contact.id, language, now)
        updated = await self.store.get_contact_by_uid(contact.uid)
        assert updated is not None
        return PreferenceUpdate(updated, lift_all or bool(to_confirm), tuple(to_confirm))

    # -- a person's own data ---------------------------------------------------------------

    async def request(self, contact: Contact, purpose: str) -> None:
        """Mail the person a short-lived link that confirms an export or an erasure, so a
        forwarded newsletter does not let a stranger read or erase their data."""
        await self._mail_to(contact, purpose, {"link": self.link(purpose, contact)})

    async def send_preferences_link(self, address: str) -> bool:
        """For /manage: mail a fresh preference link if the address is a contact. The caller
        answers the same either way."""
        email = addresses.normalize(address)
        contact = await self.store.get_contact(email)
        if contact is None:
            return False
        await self._mail_to(contact, "preferences", {"link": self.link("preferences", contact)})
        return True

    async def export(self, contact: Contact) -> dict[str, Any]:
        return await self.store.export(contact.email, contact)

    async def erase(self, contact: Contact) -> None:
        hashes = self.signer.address_hashes(contact.email)
        async with self.store.transaction():
            await self.store.erase(contact.email, contact, hashes, time.time())

    async def _mail_to(self, contact: Contact, kind: str, context: dict[str, Any]) -> None:
        # A suppression for all mail (a hard bounce, say) stops even these; that is fine.
        request = self.accepter.own_mail(contact.email, kind, contact.language, context)
        await self.accepter.commit(await self.accepter.prepare([request]))
