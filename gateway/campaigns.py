"""Campaigns: one template to a topic's subscribers, streamed in pages, throttled, resumable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from . import addresses, content
from .accept import Accepter, Prepared, SendRequest, SendResult
from .config import Settings
from .errors import GatewayError, InvalidInput, NotFound
from .records import Contact
from .render import Draft, Rendered, Renderer
from .render_processes import RenderProcesses
from .store import Store

STATES = ("draft", "scheduled", "sending", "paused", "cancelled", "done")
PAGE = 100  # contacts rendered and accepted per transaction
WINDOW = 2000  # at most this many of a campaign's messages wait in the outbox at once
LEASE = 30.0


@dataclass(frozen=True, slots=True)
class CampaignStatus:
    id: int
    name: str
    topic: str
    state: str
    counts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "topic": self.topic,
            "state": self.state,
            "counts": self.counts,
        }


class Campaigns:
    def __init__(
        self, settings: Settings, store: Store, accepter: Accepter, renderer: Renderer
    ) -> None:
        self.settings = settings
        self.store = store
        self.accepter = accepter
        self.renderer = renderer
        self._slots: dict[int, float] = {}  # next free delivery time per throttled campaign
        self.wake = asyncio.Event()  # set when a page is enqueued: an idle worker claims it now
        self.processes: RenderProcesses | None = None  # see `render_processes`

    # -- definition ------------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        topic: str,
        subject: str,
        html: str | None,
        text: str | None = None,
        keep_blocked: bool = False,
    ) -> int:
        """Refused with the reason when its template cannot render for a contact or holds
        third-party content; nothing is written then. With `keep_blocked` (the console's
        drafts) third-party content is kept, to be shown and fixed: `start` refuses such
        a campaign until it is."""
        values = await self._validate(name, topic, subject, html, text, keep_blocked)
        return await self.store.create_campaign(
            **values, state="draft", cursor=0, enqueued_all=False, created_at=time.time()
        )

    async def edit(
        self,
        campaign_id: int,
        *,
        name: str,
        topic: str,
        subject: str,
        html: str | None,
        text: str | None = None,
        keep_blocked: bool = False,
    ) -> None:
        """Change a campaign while it is a draft, with the checks of `create`."""
        c = await self.get(campaign_id)
        values = await self._validate(name, topic, subject, html, text, keep_blocked)
        if c["state"] != "draft" or not await self.store.update_draft(campaign_id, values):
            raise InvalidInput(f"campaign {campaign_id} is not a draft: it cannot be changed")

    async def _validate(
        self, name: str, topic: str, subject: str, html: str | None, text: str | None, keep: bool
    ) -> dict[str, Any]:
        """A campaign's columns, checked as `create` says."""
        if not name.strip():
            raise InvalidInput("a campaign needs a --name")
        request = SendRequest("preview@example.vn", subject, html, text, "marketing", topic)
        draft = await self.accepter.draft(request)
        assert draft.topic is not None
        for lang in ("vi", "en"):
            rendered = await self._sample(draft, lang)
            if not keep:
                self._refuse(rendered.findings)
        return {
            "name": name.strip(),
            "topic_id": draft.topic.id,
            "subject": subject,
            "html": html,
            "text": text,
        }

    async def sample(self, campaign_id: int, lang: str) -> Rendered:
        """The campaign as a sample contact (not a real one) would get it in `lang`."""
        c = await self.get(campaign_id)
        draft = await self.accepter.draft(
            SendRequest(
                "preview@example.vn", c["subject"], c["html"], c["text"], "marketing", c["topic"]
            )
        )
        return await self._sample(draft, lang)

    async def findings(self, campaign_id: int) -> tuple[content.Finding, ...]:
        """The third-party content the scan finds in the campaign as a sample contact gets
        it, in either language: while there is any, the campaign cannot be sent."""
        found: dict[tuple[str, str], content.Finding] = {}
        for lang in ("vi", "en"):
            for f in (await self.sample(campaign_id, lang)).findings:
                found.setdefault((f.url, f.where), f)
        return tuple(found.values())

    async def _sample(self, draft: Draft, lang: str) -> Rendered:
        contact = Contact(0, "preview", draft.to, "Nguyễn Văn An", lang, "active")
        return await self.accepter.render(draft, contact, {})

    @staticmethod
    def _refuse(findings: tuple[content.Finding, ...]) -> None:
        if findings:
            urls = "; ".join(dict.fromkeys(f"{f.url} ({f.reason})" for f in findings))
            raise InvalidInput(f"the template holds third-party content: {urls}")

    async def get(self, campaign_id: int) -> dict[str, Any]:
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None:
            raise NotFound(f"no campaign {campaign_id}")
        return campaign

    async def preview(self, campaign_id: int, email: str) -> Rendered:
        """The message one contact would get, rendered now (TP-3 scan included)."""
        c = await self.get(campaign_id)
        draft = await self.accepter.draft(
            SendRequest(email, c["subject"], c["html"], c["text"], "marketing", c["topic"])
        )
        standing = (
            await self.store.standings(
                {draft.to: self.accepter.signer.address_hashes(draft.to)}, attributes=True
            )
        )[draft.to]
        if standing.contact is None:
            raise NotFound("no contact with that address")
        return await self.accepter.render(draft, standing.contact, standing.attributes)

    async def test_send(self, campaign_id: int, to: str) -> SendResult:
        """Send the campaign as `to` would get it, subject marked [TEST], to check it in a
        real mail client. Only to an address of the business's own domains: a test send is
        never a way to mail a customer without their opt-in (AD-4)."""
        email = addresses.normalize(to)
        # Into a maildir (the default, for trying the gateway out) nothing leaves the
        # machine: no customer can be mailed, so any address shows how the message looks.
        local = self.settings.smtp_url.lower().startswith("maildir:")
        own = content.is_first_party(email.rpartition("@")[2], self.settings.first_party_domains)
        if not (own or local):
            raise InvalidInput(
                f"a test send goes only to an address of your own domains "
                f"({', '.join(self.settings.first_party_domains)}), not {email}:"
                " add yours to GATEWAY_FIRST_PARTY_DOMAINS"
            )
        c = await self.get(campaign_id)
        draft = await self.accepter.draft(
            SendRequest(
                email, "[TEST] " + c["subject"], c["html"], c["text"], "marketing", c["topic"]
            )
        )
        hashes = self.accepter.signer.address_hashes(email)
        standing = (await self.store.standings({email: hashes}, attributes=True))[email]
        contact = standing.contact or Contact(
            0, "preview", email, "Nguyễn Văn An", self.settings.default_language, "active"
        )
        rendered = await self.accepter.render(draft, contact, standing.attributes)
        if rendered.findings:
            urls = tuple(dict.fromkeys(f.url for f in rendered.findings))
            return SendResult("blocked", "third-party content: " + ", ".join(urls), None, urls)
        prepared = self.accepter.queue(
            standing.contact.id if standing.contact else None,
            email,
            category="test",
            subject=rendered.subject,
            raw=rendered.raw,
            message_id=rendered.message_id,
        )
        await self.accepter.commit(prepared)
        return prepared.results[0]

    async def status(self, campaign_id: int) -> CampaignStatus:
        c = await self.get(campaign_id)
        counts = await self.store.campaign_counts(campaign_id)
        return CampaignStatus(c["id"], c["name"], c["topic"], c["state"], counts)

    async def audience_size(self, campaign_id: int) -> int:
        c = await self.get(campaign_id)
        return await self.store.count_subscribers(c["topic_id"])

    # -- state changes ---------------------------------------------------------------------

    async def start(
        self, campaign_id: int, *, rate: float | None = None, at: float | None = None
    ) -> str:
        c = await self.get(campaign_id)
        if c["state"] == "sending":
            return "sending"  # already running (or its sender died): deliver what is left
        if c["state"] not in ("draft", "scheduled", "paused"):
            raise InvalidInput(f"campaign {campaign_id} is {c['state']}: it cannot be sent again")
        if rate is not None and rate <= 0:
            raise InvalidInput("--rate must be a positive number of messages per second")
        if c["state"] == "draft":
            self._refuse(await self.findings(campaign_id))  # kept by the console, not fixed
        if c["state"] == "paused":
            await self.resume(campaign_id)
            return "sending"
        now = time.time()
        state = "scheduled" if at is not None and at > now else "sending"
        await self.store.update_campaign(
            campaign_id,
            state=state,
            rate=rate,
            scheduled_at=at,
            started_at=now if state == "sending" else None,
        )
        return state

    async def pause(self, campaign_id: int) -> None:
        await self._move(campaign_id, ("sending", "scheduled"), "paused", ("queued",), "paused")

    async def resume(self, campaign_id: int) -> None:
        await self._move(campaign_id, ("paused",), "sending", ("paused",), "queued")

    async def cancel(self, campaign_id: int) -> None:
        await self._move(
            campaign_id,
            ("draft", "scheduled", "sending", "paused"),
            "cancelled",
            ("queued", "paused"),
            "cancelled",
        )

    async def _move(
        self,
        campaign_id: int,
        allowed: tuple[str, ...],
        state: str,
        rows_from: tuple[str, ...],
        rows_to: str,
    ) -> None:
        c = await self.get(campaign_id)
        if c["state"] not in allowed:
            raise InvalidInput(f"campaign {campaign_id} is {c['state']}: cannot make it {state}")
        async with self.store.transaction():
            await self.store.update_campaign(campaign_id, state=state)
            await self.store.move_campaign_rows(campaign_id, rows_from, rows_to, time.time())

    # -- enqueuing -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def render_processes(self, processes: int) -> AsyncIterator[None]:
        """While inside, pages are rendered and scanned in `processes` child processes, so
        the feeding uses every core; reading, deciding, writing and delivering stay in this
        process. 1 renders in this process's threads, as outside."""
        if processes < 1:
            raise InvalidInput("render processes must be 1 or more (1 renders in this process)")
        if processes == 1 or self.processes is not None:
            yield
            return
        pool = RenderProcesses(self.renderer, processes)
        try:
            await pool.start()
        except OSError as exc:
            raise GatewayError(
                f"could not start {processes} render processes ({exc}): free some memory or"
                " processes, or render in this process with --processes 1"
            ) from None
        self.processes = pool
        try:
            yield
        finally:
            self.processes = None
            await pool.close()

    async def tick(self, campaign_id: int) -> None:
        """Enqueue the next part of the audience, keeping at most WINDOW messages waiting,
        so a campaign of a million contacts never renders a million messages at once."""
        c = await self.get(campaign_id)
        now = time.time()
        if c["state"] == "scheduled" and (c["scheduled_at"] or 0) <= now:
            await self.store.update_campaign(campaign_id, state="sending", started_at=now)
            c["state"] = "sending"
        if c["state"] != "sending":
            return
        if c["enqueued_all"]:
            if await self.store.campaign_backlog(campaign_id) == 0:
                await self.store.update_campaign(campaign_id, state="done", finished_at=now)
            return
        if not await self.store.lease_campaign(campaign_id, now, LEASE):
            return  # another process is enqueuing it
        try:
            # Read again under the lease: the last holder (another process) moved the cursor.
            c = await self.get(campaign_id)
            room = WINDOW - await self.store.campaign_backlog(campaign_id)
            cursor = c["cursor"]
            while room > 0:
                page = await self.store.audience_page(c["topic_id"], cursor, min(PAGE, room))
                if not page:
                    await self.store.update_campaign(campaign_id, enqueued_all=True)
                    break
                requests = [
                    SendRequest(
                        email,
                        c["subject"],
                        c["html"],
                        c["text"],
                        "marketing",
                        c["topic"],
                        # one message per campaign and contact, whatever restarts happen
                        idempotency_key=f"campaign:{campaign_id}:{contact_id}",
                        campaign_id=campaign_id,
                        not_before=self._slot(campaign_id, c["rate"]),
                    )
                    for contact_id, email in page
                ]
                cursor = page[-1][0]
                # Rendered outside the write lock (the worker's claims and records do not
                # wait on it); the page and the cursor are written together, so a crash
                # re-enqueues nothing twice.
                prepared = await self._prepare(requests, [cid for cid, _ in page], c)
                async with self.store.transaction():
                    await self.accepter.commit(prepared)
                    await self.store.update_campaign(campaign_id, cursor=cursor)
                self.wake.set()
                room -= len(page)
                if (await self.get(campaign_id))["state"] != "sending":
                    break  # paused or cancelled meanwhile
        finally:
            await self.store.release_campaign(campaign_id)

    async def _prepare(
        self, requests: list[SendRequest], contact_ids: list[int], c: dict[str, Any]
    ) -> Prepared:
        """A page's messages. A recipient whose message cannot be made (a line break in
        their name used in the subject, say) fails alone, its reason in the message log;
        it must not stall the page, and so the whole campaign, on every tick."""
        try:
            return await self.accepter.prepare(requests, self.processes)
        except ValueError:  # InvalidInput and encoding errors: one of the page, not the page
            pass
        results: list[SendResult] = []
        rows: list[dict[str, Any]] = []
        logs: list[dict[str, Any]] = []
        for request, contact_id in zip(requests, contact_ids, strict=True):
            try:
                one = await self.accepter.prepare([request], self.processes)
            except ValueError as exc:
                reason = f"cannot be rendered for this recipient: {exc}"
                results.append(SendResult("failed", reason))
                logs.append(
                    {
                        "message_id": None,
                        "contact_id": contact_id,
                        "email": request.to,
                        "category": "marketing",
                        "topic_id": c["topic_id"],
                        "campaign_id": request.campaign_id,
                        "subject": c["subject"],
                        "status": "failed",
                        "reason": reason[:1000],
                        "created_at": time.time(),
                    }
                )
                continue
            results += one.results
            rows += one.rows
            logs += one.logs
        return Prepared(results, rows, logs)

    def _slot(self, campaign_id: int, rate: float | None) -> float | None:
        if not rate:
            return None
        slot = max(time.time(), self._slots.get(campaign_id, 0.0))
        self._slots[campaign_id] = slot + 1.0 / rate
        return slot

    async def tick_all(self) -> bool:
        """Enqueue for every active campaign; True while any still has audience left."""
        active = await self.store.active_campaigns(time.time())
        for campaign_id in active:
            await self.tick(campaign_id)
        for campaign_id in await self.store.sending_campaigns():
            await self.tick(campaign_id)  # marks finished ones done
        return bool(await self.store.active_campaigns(time.time()))

    async def drive(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        """Beside a worker: keep every running campaign fed until stopped."""
        while not stop.is_set():
            await self.tick_all()
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
