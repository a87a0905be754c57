"""Accept: validate, apply policy, render, scan, and write to the outbox in one transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import addresses, mime, render_threads
from .catalog import SUBJECTS, local_time, mail_language
from .config import Settings
from .errors import InvalidMessage, MessageRefused, UnknownTopic
from .frequency import held_until
from .policy import CATEGORIES, decide
from .records import Contact, OutboxItem, Topic
from .render import DROPPED, RESERVED, Draft, Rendered, Renderer
from .store import Store
from .submitted import Submitted
from .tokens import Signer

if TYPE_CHECKING:
    from .render_processes import RenderProcesses

# Mail that asks an address to confirm a sign-up: rendered from its own context (the
# address may belong to no contact yet), never from anything the form's author typed.
CONFIRMATIONS = ("confirm", "resubscribe")


@dataclass(frozen=True, slots=True)
class SendResult:
    status: str  # queued | suppressed | blocked
    reason: str = ""
    message_id: str | None = None
    blocked_urls: tuple[str, ...] = ()

    @property
    def queued(self) -> bool:
        return self.status == "queued"

    def raise_for_status(self) -> SendResult:
        if self.status != "queued":
            raise MessageRefused(self.status, self.reason)
        return self

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason or None,
            "message_id": self.message_id,
        }
        if self.blocked_urls:
            data["blocked_urls"] = list(self.blocked_urls)
        return data


@dataclass(frozen=True, slots=True)
class Prepared:
    results: list[SendResult]
    rows: list[dict[str, Any]]
    logs: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SendRequest:
    to: str
    subject: str
    html: str | None = None
    text: str | None = None
    category: str = "transactional"
    topic: str | None = None
    headers: Mapping[str, str] | None = None
    context: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    campaign_id: int | None = None
    not_before: float | None = None  # earliest delivery (a campaign's --rate spreads its mail)
    source: str | None = None  # who handed it in: "apikey:NAME", "smtp:NAME"; kept in the log
    message: Submitted | None = None  # a whole message an application built (SMTP submission)


class Accepter:
    def __init__(
        self, settings: Settings, store: Store, signer: Signer, renderer: Renderer
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.renderer = renderer
        self._topics: dict[str, Topic] = {}

    async def topic(self, slug: str) -> Topic:
        topic = self._topics.get(slug)
        if topic is None:
            topic = await self.store.get_topic(slug)
            if topic is None:
                raise UnknownTopic(
                    f"unknown topic {slug!r}: create it with `gateway topics add {slug} --name …`"
                )
            self._topics[slug] = topic
        return topic

    async def render(
        self,
        draft: Draft,
        contact: Contact | None,
        attributes: Mapping[str, str] | None = None,
        *,
        message_id: str | None = None,
    ) -> Rendered:
        """`Renderer.render` in a render thread, stopped after GATEWAY_RENDER_TIMEOUT: a
        pathological template or body never holds up the event loop (and so every other
        request) and never runs on unseen."""
        return (await self.render_many([(draft, contact, attributes)], message_id))[0]

    async def render_many(
        self,
        items: Sequence[tuple[Draft, Contact | None, Mapping[str, str] | None]],
        message_id: str | None = None,
        processes: RenderProcesses | None = None,
    ) -> list[Rendered]:
        """Several messages in one trip to a render thread (a campaign's page), each with
        GATEWAY_RENDER_TIMEOUT of its own; with `processes`, in those child processes."""
        if processes is not None:
            return await processes.render_many(self.settings.render_timeout, items, message_id)
        return await render_threads.render_many(
            self.renderer, self.settings.render_timeout, items, message_id
        )

    def _check_body(self, what: str, body: str | None) -> None:
        limit = self.settings.max_body_bytes
        # A character is 1 to 4 bytes in UTF-8: encode only when the length leaves a doubt.
        if body and len(body) * 4 > limit and (len(body) > limit or len(body.encode()) > limit):
            raise InvalidMessage(
                f"the {what} body is larger than {limit} bytes: send a shorter message"
                " (GATEWAY_MAX_BODY_BYTES sets the limit)"
            )

    async def draft(self, req: SendRequest) -> Draft:
        """Everything that can be wrong with a request, found before anything is written."""
        to = addresses.normalize(req.to)
        if req.category not in CATEGORIES:
            raise InvalidMessage(
                f"category must be one of {', '.join(CATEGORIES)}, not {req.category!r}"
            )
        topic = None
        if req.category == "marketing":
            if not req.topic:
                raise InvalidMessage(
                    "marketing mail needs a topic: the recipient must have opted in to it"
                )
            topic = await self.topic(req.topic)
        elif req.topic:
            raise InvalidMessage("a topic applies to marketing mail only")
        if not (req.subject or "").strip():
            raise InvalidMessage("the subject is empty")
        mime.check_header("Subject", req.subject)
        if req.message is None:
            self._check_body("html", req.html)
            self._check_body("text", req.text)
            if not (req.html or "").strip() and not (req.text or "").strip():
                raise InvalidMessage("the message has no body: give html, text or both")
        label = self.settings.ad_label
        if req.category != "marketing" and label and req.subject.lstrip().startswith(label):
            raise InvalidMessage(
                f"only marketing mail carries the {label} label (it marks advertising)"
            )
        headers = []
        for name, value in (req.headers or {}).items():
            mime.check_header(name, value)
            lowered = name.lower()
            if lowered.startswith("list-") or lowered in DROPPED:
                continue  # LU-1: only the gateway's own List-* headers go out; no receipts
            if lowered in RESERVED:
                raise InvalidMessage(f"header {name} is set by the gateway and cannot be supplied")
            headers.append((name, mime.encode_text(value)))
        return Draft(
            to=to,
            subject=req.subject,
            html=req.html or None,
            text=req.text or None,
            category=req.category,
            topic=topic,
            headers=tuple(headers),
            context=dict(req.context or {}),
            message=req.message,
        )

    async def send(self, req: SendRequest) -> SendResult:
        return (await self.send_many([req]))[0]

    async def refusal(self, to: str) -> str | None:
        """Why no mail at all may go to `to` now (an erasure, a hard bounce, a refusal of all
        mail), or None. SMTP submission answers it at RCPT, before it knows the category."""
        to = addresses.normalize(to)
        async with self.store.connection():
            standings = await self.store.standings({to: self.signer.address_hashes(to)})
        decision = decide("transactional", None, standings[to])
        return None if decision.allowed else decision.reason

    async def send_many(self, requests: Sequence[SendRequest]) -> list[SendResult]:
        """Accept a batch: the same checks as one by one, in one transaction. Invalid input
        anywhere in the batch raises before anything is written."""
        prepared = await self.prepare(requests)
        await self.commit(prepared)
        # A message the frequency cap will hold says so (queued all the same).
        fresh = [
            (req.to, res.message_id)
            for req, res in zip(requests, prepared.results, strict=True)
            if req.category == "marketing" and res.queued and not res.reason and res.message_id
        ]
        held = await held_until(self.store, self.settings.marketing_daily_cap, fresh)
        return [
            replace(r, reason=held[r.message_id]) if r.message_id in held else r
            for r in prepared.results
        ]

    def queue_template(
        self, contact: Contact, *, template: str, subject: str, context: Mapping[str, Any]
    ) -> Prepared:
        """A service message of the gateway's own, queued as what renders it: the worker
        renders it at dispatch, so the request that caused it (a one-click refusal) only
        writes a row. Its policy check is the worker's, just before SMTP."""
        return self.queue(
            contact.id,
            contact.email,
            category="transactional",
            subject=subject,
            template=template,
            context=json.dumps(dict(context)),
        )

    def own_mail(
        self,
        to: str,
        kind: str,
        language: object,
        context: Mapping[str, Any],
        *,
        category: str = "transactional",
        idempotency_key: str | None = None,
    ) -> SendRequest:
        """A mail the gateway writes itself (a refusal's confirmation, a link, a policy
        notice): its subject and text of `kind` in the person's language."""
        lang = mail_language(language)
        return SendRequest(
            to=to,
            subject=SUBJECTS[kind][lang],
            text=self.renderer.mail_text(lang, kind),
            category=category,
            context={**context, "sender_name": self.settings.sender_name},
            idempotency_key=idempotency_key,
        )

    async def render_queued(self, item: OutboxItem) -> bytes:
        """Render a message queued as a template (see `queue_template`) just before its
        delivery: the worker's `render`."""
        kind = item.template or ""
        context = json.loads(item.context or "{}")
        contact = None
        if kind in CONFIRMATIONS and item.email:
            language = context.get("lang")
            context = {"link": context["link"], "topics": list(context.get("topics") or [])}
        else:
            contact = await self.store.get_contact(item.email) if item.email else None
            if contact is None or kind not in SUBJECTS:
                raise ValueError(f"cannot render {item.template!r} for this row")
            language = contact.language
            if "received_at" in context:
                context["received_at"] = local_time(float(context["received_at"]), language)
        draft = await self.draft(self.own_mail(item.email or "", kind, language, context))
        rendered = self.renderer.render(draft, contact, {}, message_id=item.message_id)
        if rendered.findings:
            raise ValueError("the template holds third-party content")
        return rendered.raw

    def queue(
        self,
        contact_id: int | None,
        email: str,
        *,
        category: str,
        subject: str,
        raw: bytes | None = None,
        message_id: str | None = None,
        template: str | None = None,
        context: str | None = None,
    ) -> Prepared:
        """The outbox row and log entry of a message the gateway made itself (rendered, or
        to be rendered at dispatch); `commit` writes them."""
        now = time.time()
        message_id = message_id or self.renderer.new_message_id()
        base = {
            "message_id": message_id,
            "contact_id": contact_id,
            "email": email,
            "category": category,
            "topic_id": None,
            "created_at": now,
            "campaign_id": None,
        }
        row = {
            **base,
            "sender": self.settings.from_address,
            "raw": raw,
            "state": "queued",
            "attempts": 0,
            "next_attempt_at": now,
            "idempotency_key": None,
            "updated_at": now,
            "template": template,
            "context": context,
        }
        log = {**base, "subject": subject, "status": "accepted", "reason": None}
        return Prepared([SendResult("queued", "", message_id)], [row], [log])

    async def commit(self, prepared: Prepared) -> None:
        """Write what `prepare` made; inside the caller's transaction if it has one."""
        async with self.store.transaction():
            await self.store.enqueue(prepared.rows, prepared.logs)

    async def prepare(
        self, requests: Sequence[SendRequest], processes: RenderProcesses | None = None
    ) -> Prepared:
        """Everything up to the write: validate, decide, render, scan. Nothing is written,
        so a caller can render outside its own short transaction and commit inside it.
        With `processes` (a campaign's pages) the renders run in those child processes."""
        drafts = [await self.draft(req) for req in requests]
        now = time.time()
        results: list[SendResult | None] = [None] * len(drafts)
        rows: list[dict[str, Any]] = []
        logs: list[dict[str, Any]] = []
        async with self.store.connection():
            keys = [r.idempotency_key for r in requests if r.idempotency_key]
            known = await self.store.find_idempotent(keys)
            for i, req in enumerate(requests):
                if req.idempotency_key in known:
                    results[i] = SendResult(
                        "queued", "already accepted", known[req.idempotency_key]
                    )
            pending = [i for i in range(len(drafts)) if results[i] is None]
            standings = await self.store.standings(
                {drafts[i].to: self.signer.address_hashes(drafts[i].to) for i in pending},
                attributes=True,
            )
            entries: dict[int, dict[str, Any]] = {}  # the log entry of each, by position
            allowed: list[tuple[int, dict[str, Any], Contact | None, Mapping[str, str]]] = []
            for i in pending:
                draft = drafts[i]
                standing = standings[draft.to]
                contact = standing.contact
                topic_id = draft.topic.id if draft.topic else None
                base_log = {
                    "contact_id": contact.id if contact else None,
                    "email": draft.to,
                    "category": draft.category,
                    "topic_id": topic_id,
                    "campaign_id": requests[i].campaign_id,
                    "created_at": now,
                    "source": requests[i].source,
                }
                decision = decide(draft.category, topic_id, standing)
                if not decision.allowed:
                    results[i] = SendResult("suppressed", decision.reason)
                    entry = {**base_log, "subject": draft.subject}
                    if decision.erased:
                        entry.update(email=None, subject=None, contact_id=None)
                    entries[i] = {**entry, "status": "suppressed", "reason": decision.reason}
                    continue
                allowed.append((i, base_log, contact, standing.attributes))
            items = [(drafts[i], c, a) for i, _, c, a in allowed]
            renders = await self.render_many(items, processes=processes)
            for (i, base_log, _, _), rendered in zip(allowed, renders, strict=True):
                draft = drafts[i]
                topic_id = draft.topic.id if draft.topic else None
                if rendered.findings:
                    urls = tuple(dict.fromkeys(f.url for f in rendered.findings))
                    reason = "third-party content: " + "; ".join(
                        dict.fromkeys(f"{f.url} ({f.reason})" for f in rendered.findings)
                    )
                    results[i] = SendResult("blocked", reason, None, urls)
                    entries[i] = {
                        **base_log,
                        "subject": rendered.subject,
                        "status": "blocked",
                        "reason": reason,
                    }
                    continue
                rows.append(
                    {
                        "message_id": rendered.message_id,
                        "contact_id": base_log["contact_id"],
                        "email": draft.to,
                        "category": draft.category,
                        "topic_id": topic_id,
                        "sender": self.settings.from_address,
                        "raw": rendered.raw,
                        "state": "queued",
                        "attempts": 0,
                        "next_attempt_at": max(now, requests[i].not_before or now),
                        "idempotency_key": requests[i].idempotency_key,
                        "campaign_id": requests[i].campaign_id,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                entries[i] = {
                    **base_log,
                    "message_id": rendered.message_id,
                    "subject": rendered.subject,
                    "status": "accepted",
                    "reason": None,
                }
                results[i] = SendResult("queued", "", rendered.message_id)
            logs = [entries[i] for i in pending]
        return Prepared([r for r in results if r is not None], rows, logs)
