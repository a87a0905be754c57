"""What a person can do from their links: refuse, choose topics, export, erase (ST-1, ST-2, PD-*)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import addresses
from .accept import Accepter, Prepared, SendRequest
from .config import Settings
from .render import TEMPLATES
from .store import Contact, Store, Topic
from .tokens import InvalidToken, Signer

log = logging.getLogger("gateway.preferences")

VIETNAM = timezone(timedelta(hours=7))

SUBJECTS = {
    "refusal": {
        "vi": "Xác nhận: bạn đã từ chối nhận thư quảng cáo",
        "en": "Confirmation: you will receive no more promotional email",
    },
    "export": {"vi": "Xác nhận tải dữ liệu của bạn", "en": "Confirm the download of your data"},
    "erase": {"vi": "Xác nhận xóa dữ liệu của bạn", "en": "Confirm the deletion of your data"},
    "preferences": {
        "vi": "Liên kết quản lý tùy chọn nhận thư",
        "en": "Your email preferences link",
    },
}


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


def local_time(ts: float, language: str) -> str:
    moment = datetime.fromtimestamp(ts, VIETNAM)
    if language == "vi":
        return moment.strftime("%H:%M:%S ngày %d/%m/%Y (giờ Việt Nam, UTC+7)")
    return moment.strftime("%d %B %Y at %H:%M:%S (Vietnam time, UTC+7)")


class PreferenceCenter:
    def __init__(
        self, settings: Settings, store: Store, signer: Signer, accepter: Accepter
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.accepter = accepter
        self._mail = TEMPLATES / "mail"
        self._texts: dict[tuple[str, str], str] = {}

    # -- tokens ----------------------------------------------------------------------------

    async def contact(self, purpose: str, token: str) -> Contact:
        """The contact a link names; `InvalidToken` when tampered, expired, of another
        purpose, or naming someone no longer here."""
        payload = self.signer.verify(purpose, token)
        uid = payload[0] if isinstance(payload, list) and payload else payload
        contact = await self.store.get_contact_by_uid(uid) if isinstance(uid, str) else None
        if contact is None:
            raise InvalidToken("unknown")
        return contact

    def link(self, purpose: str, contact: Contact) -> str:
        path = {"preferences": "preferences", "export": "confirm/export", "erase": "confirm/erase"}
        return f"{self.settings.base_url}/{path[purpose]}/{self.signer.sign(purpose, contact.uid)}"

    # -- refusal ---------------------------------------------------------------------------

    async def refuse(self, contact: Contact, *, source: str, ip: str | None = None) -> bool:
        """Stop all promotional mail to this person now (OC-5, ST-1): the suppression is
        committed before this returns, and the worker checks it before every hand-over.
        The first refusal is confirmed by one email (ST-2), queued in the same transaction;
        a repeated one changes nothing."""
        now = time.time()
        hashes = self.signer.address_hashes(contact.email)
        # Rendered before the transaction, so writers wait on the lock as little as possible;
        # a confirmation that cannot be made never stops the refusal itself.
        try:
            confirmation = await self._prepare_mail(
                contact, "refusal", {"received_at": local_time(now, contact.language)}
            )
        except Exception:
            log.exception(
                "the confirmation email could not be queued; the refusal itself is recorded"
            )
            confirmation = None
        async with self.store.transaction():
            added = await self.store.add_suppression(
                email=contact.email,
                email_hash=hashes[0],
                scope="marketing",
                reason="unsubscribe",
                source=source,
                now=now,
            )
            if not added:
                return False
            await self.store.record_consent(
                contact,
                subject=hashes[0],
                action="opt_out",
                source=source,
                policy_version=self.settings.policy_version,
                now=now,
                ip=ip,
            )
            if confirmation is not None:
                await self.accepter.commit(confirmation)
        return True

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
            policy_version=self.settings.policy_version,
        )

    async def update(
        self,
        contact: Contact,
        *,
        topics: set[str],
        stop_all: bool,
        language: str | None,
        ip: str | None = None,
    ) -> Contact:
        """Apply the page's form. Each change is one consent entry, source `preferences`."""
        now = time.time()
        hashes = self.signer.address_hashes(contact.email)
        current = await self.view(contact)
        if stop_all and not current.stopped_all:
            await self.refuse(contact, source="preferences", ip=ip)
        async with self.store.transaction():
            if not stop_all and current.stopped_all:
                # A person's own fresh opt-in lifts their earlier refusal of all promotions.
                await self.store.lift_suppressions(hashes, "marketing")
                await self.store.record_consent(
                    contact,
                    subject=hashes[0],
                    action="opt_in",
                    source="preferences",
                    policy_version=self.settings.policy_version,
                    now=now,
                    ip=ip,
                )
            for choice in current.topics:
                wanted = choice.topic.slug in topics
                if wanted and not choice.subscribed:
                    status = "subscribed"
                elif not wanted and (choice.subscribed or choice.pending):
                    status = "unsubscribed"
                else:
                    continue
                await self.store.set_subscription(
                    contact,
                    choice.topic,
                    status,
                    subject=hashes[0],
                    source="preferences",
                    policy_version=self.settings.policy_version,
                    now=now,
                    ip=ip,
                )
            if language in ("vi", "en") and language != contact.language:
                await self.store.set_language(contact.id, language, now)
        updated = await self.store.get_contact_by_uid(contact.uid)
        assert updated is not None
        return updated

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
        await self.erase_address(contact.email, contact)

    async def erase_address(self, email: str, contact: Contact | None) -> None:
        hashes = self.signer.address_hashes(email)
        async with self.store.transaction():
            await self.store.erase(email, contact, hashes, time.time())

    async def _mail_to(self, contact: Contact, kind: str, context: dict[str, Any]) -> None:
        await self.accepter.commit(await self._prepare_mail(contact, kind, context))

    async def _prepare_mail(self, contact: Contact, kind: str, context: dict[str, Any]) -> Prepared:
        lang = contact.language if contact.language in ("vi", "en") else "vi"
        key = (lang, kind)
        if key not in self._texts:
            self._texts[key] = Path(self._mail / lang / f"{kind}.txt").read_text(encoding="utf-8")
        # A suppression for all mail (a hard bounce, say) stops even these; that is fine.
        return await self.accepter.prepare(
            [
                SendRequest(
                    to=contact.email,
                    subject=SUBJECTS[kind][lang],
                    text=self._texts[key],
                    category="transactional",
                    context={**context, "sender_name": self.settings.sender_name},
                )
            ]
        )
