"""What a person can do from their links: refuse, choose topics, export, erase (ST-1, ST-2, PD-*)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from . import addresses
from .accept import Accepter, Prepared, SendRequest
from .config import Settings
from .records import Contact, OutboxItem, Topic
from .store import Store
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
    "confirm": {"vi": "Xác nhận đăng ký nhận thư", "en": "Please confirm your subscription"},
    "resubscribe": {
        "vi": "Xác nhận nhận lại thư của chúng tôi",
        "en": "Please confirm you want our email again",
    },
}

# Mail that asks an address to confirm a sign-up: rendered from its own context (the
# address may belong to no contact yet), never from anything the form's author typed.
CONFIRMATIONS = ("confirm", "resubscribe")


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

    async def policy_version(self) -> str:
        """The privacy policy version consents are recorded under now (promise 10): the
        one published last (`gateway policy publish`), else GATEWAY_POLICY_VERSION."""
        return await self.store.current_policy_version(self.settings.policy_version)

    # -- refusal ---------------------------------------------------------------------------

    async def refuse(
        self, contact: Contact, *, source: str, ip: str | None = None, reason: str = "unsubscribe"
    ) -> bool:
        """Stop all promotional mail to this person now (OC-5, ST-1): the suppression is
        committed before this returns, and the worker checks it before every hand-over.
        The first refusal is confirmed by one email (ST-2), queued in the same transaction;
        a repeated one changes nothing."""
        now = time.time()
        hashes = self.signer.address_hashes(contact.email)
        # ST-2's confirmation is queued as what renders it (the worker renders it at
        # dispatch): this request only writes rows, inside one short transaction.
        lang = contact.language if contact.language in ("vi", "en") else "vi"
        confirmation = self.accepter.queue_template(
            contact,
            template="refusal",
            subject=SUBJECTS["refusal"][lang],
            context={"received_at": now},
        )
        async with self.store.transaction():
            added = await self.store.add_suppression(
                email=contact.email,
                email_hash=hashes[0],
                scope="marketing",
                reason=reason,
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
                policy_version=await self.policy_version(),
                now=now,
                ip=ip,
            )
            await self.accepter.commit(confirmation)
        return True

    async def suppress_address(
        self, email: str, *, scope: str, reason: str, source: str, now: float
    ) -> bool:
        """Add one suppression under the address's keyed hash; False when it already stood.
        Call inside a transaction."""
        return await self.store.add_suppression(
            email=email,
            email_hash=self.signer.address_hash(email),
            scope=scope,
            reason=reason,
            source=source,
            now=now,
        )

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
            policy_version=await self.policy_version(),
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
        hashes = self.signer.address_hashes(contact.email)
        current = await self.view(contact)
        if stop_all and not current.stopped_all:
            await self.refuse(contact, source="preferences", ip=ip)
        lift_all = not stop_all and current.stopped_all
        to_confirm: list[Topic] = []
        async with self.store.transaction():
            if lift_all:
                await self.store.record_consent(
                    contact,
                    subject=hashes[0],
                    action="opt_in",
                    source="preferences",
                    policy_version=current.policy_version,
                    now=now,
                    ip=ip,
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
                await self.store.set_subscription(
                    contact,
                    choice.topic,
                    status,
                    subject=hashes[0],
                    source="preferences",
                    policy_version=current.policy_version,
                    now=now,
                    ip=ip,
                )
            if language in ("vi", "en") and language != contact.language:
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
        await self.erase_address(contact.email, contact)

    async def erase_address(self, email: str, contact: Contact | None) -> None:
        hashes = self.signer.address_hashes(email)
        async with self.store.transaction():
            await self.store.erase(email, contact, hashes, time.time())

    async def render_queued(self, item: OutboxItem) -> bytes:
        """Render a message queued as a template (see Accepter.queue_template)."""
        context = json.loads(item.context or "{}")
        if item.template in CONFIRMATIONS and item.email:
            return await self._render_confirmation(item, item.template, context)
        contact = await self.store.get_contact(item.email) if item.email else None
        if contact is None or item.template not in SUBJECTS:
            raise ValueError(f"cannot render {item.template!r} for this row")
        if "received_at" in context:
            context["received_at"] = local_time(float(context["received_at"]), contact.language)
        draft = await self.accepter.draft(self._request(contact, item.template, context))
        rendered = self.accepter.renderer.render(draft, contact, {}, message_id=item.message_id)
        if rendered.findings:
            raise ValueError("the template holds third-party content")
        return rendered.raw

    async def _render_confirmation(
        self, item: OutboxItem, kind: str, context: dict[str, Any]
    ) -> bytes:
        lang = str(context["lang"]) if context.get("lang") in ("vi", "en") else "vi"
        request = SendRequest(
            to=item.email or "",
            subject=SUBJECTS[kind][lang],
            text=self.accepter.renderer.mail_text(lang, kind),
            category="transactional",
            context={
                "link": context["link"],
                "topics": list(context.get("topics") or []),
                "sender_name": self.settings.sender_name,
            },
        )
        draft = await self.accepter.draft(request)
        rendered = self.accepter.renderer.render(draft, None, {}, message_id=item.message_id)
        if rendered.findings:
            raise ValueError("the template holds third-party content")
        return rendered.raw

    async def _mail_to(self, contact: Contact, kind: str, context: dict[str, Any]) -> None:
        await self.accepter.commit(await self._prepare_mail(contact, kind, context))

    async def _prepare_mail(self, contact: Contact, kind: str, context: dict[str, Any]) -> Prepared:
        # A suppression for all mail (a hard bounce, say) stops even these; that is fine.
        return await self.accepter.prepare([self._request(contact, kind, context)])

    def _request(self, contact: Contact, kind: str, context: dict[str, Any]) -> SendRequest:
        lang = contact.language if contact.language in ("vi", "en") else "vi"
        return SendRequest(
            to=contact.email,
            subject=SUBJECTS[kind][lang],
            text=self.accepter.renderer.mail_text(lang, kind),
            category="transactional",
            context={**context, "sender_name": self.settings.sender_name},
        )
