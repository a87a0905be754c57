"""Privacy policy versions (promise 10, PD-5): publish, and tell everyone of an adverse change.

The version published last is the one the consent ledger records from then on. Publishing a
version marked adverse emails every contact who has data stored, even those who refused
promotional mail (category `policy`: only erasure and hard bounces stop it), and records each
notice in `policy_notices` with the keyed hash of the address, so the record outlives erasure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import content
from .accept import SendRequest
from .audience import PAGE, Audience
from .audience import count as count_audience
from .catalog import local_time, mail_language
from .consent import ConsentingService
from .errors import Conflict, InvalidInput, NotFound

VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,31}")


@dataclass
class PublishReport:
    version: str
    adverse: bool
    published_at: float
    audience: int = 0  # contacts with data stored when the version was published
    queued: int = 0  # notices queued for delivery
    suppressed: int = 0  # notices the policy stopped (hard bounce), each recorded

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "adverse": self.adverse,
            "published_at": self.published_at,
            "notices": {"queued": self.queued, "suppressed": self.suppressed},
        }


async def audience(gw: Any, *, now: float | None = None) -> Audience:
    """Who a notice of an adverse version published now would reach, and who not and why
    (a dry run: nothing is sent or written): every contact with data stored is judged as
    `notify` would judge them (`policy.decide`, category policy), and each erased address
    counts as suppressed, "erased" (nothing is left of them to tell). `gw` is the Gateway
    (or anything with its `store` and `signer`, e.g. `gw.policies`). Used by `gateway policy
    publish --dry-run` and the console's policy page."""
    store, signer = gw.store, gw.signer
    before = time.time() if now is None else now

    async def pages(after: int) -> list[tuple[int, str]]:
        return [(c.id, c.email) for c in await store.policy_audience(after, before, PAGE)]

    found = await count_audience(store, signer, pages, category="policy")
    erased = await store.count_erased()
    if erased:
        found.suppressed["erased"] = found.suppressed.get("erased", 0) + erased
    return found


class Policies(ConsentingService):
    async def current_version(self) -> str:
        """The version the consent ledger records now (`Consent.policy_version`)."""
        return await self.consent.policy_version()

    async def current(self) -> dict[str, Any] | None:
        return await self.store.current_policy()

    async def get(self, version: str) -> dict[str, Any]:
        policy = await self.store.get_policy(version)
        if policy is None:
            raise NotFound(f"no policy version {version!r} has been published")
        return policy

    async def versions(self) -> list[dict[str, Any]]:
        return await self.store.list_policies()

    def url(self, version: str) -> str:
        return f"{self.settings.base_url}/policy?version={version}"

    async def publish(
        self,
        version: str,
        text: str,
        adverse: bool = False,
        *,
        progress: Callable[[int, int], Any] | None = None,
        page_size: int = 500,
        send_notices: bool = True,
    ) -> PublishReport:
        """Store a new version; when it is adverse, notify every contact (PD-5). A version
        already published is refused (`Conflict`, nothing written). With `send_notices`
        False an adverse version is recorded and its notices left to `notify` (the console
        queues them after answering)."""
        version, text = await self.check(version, text)
        now = time.time()
        async with self.store.transaction():
            if await self.store.get_policy(version) is not None:
                raise Conflict(f"policy version {version} is already published")
            await self.store.add_policy(version, text, adverse, now)
        if not adverse or not send_notices:
            return PublishReport(version, adverse, now)
        return await self.notify(version, progress=progress, page_size=page_size)

    async def check(self, version: str, text: str) -> tuple[str, str]:
        """The version and text as `publish` would store them, or the reason it would refuse
        them (`InvalidInput`, `Conflict`): a dry run checks with this and writes nothing."""
        version = (version or "").strip()
        if not VERSION.fullmatch(version):
            raise InvalidInput(
                "a policy version is 1 to 32 letters, digits, '.', '-' or '_', e.g. 2025.07"
            )
        text = (text or "").strip()
        if not text:
            raise InvalidInput("the policy text is empty")
        if "\x00" in text:
            raise InvalidInput("the policy text contains a NUL character")
        # The notice carries the text: a third-party link in it would block every notice
        # (promise 7), so it is refused here, before anything is written.
        findings = content.scan(
            None,
            text,
            self.settings.first_party_domains,
            link_domains=self.settings.link_domains,
        )
        if findings:
            urls = ", ".join(dict.fromkeys(f.url for f in findings))
            raise InvalidInput(
                f"the policy text links outside the first-party domains ({urls}): to allow"
                " links there add the domain to GATEWAY_LINK_DOMAINS (or to"
                " GATEWAY_FIRST_PARTY_DOMAINS if it is your own)"
            )
        if await self.store.get_policy(version) is not None:
            raise Conflict(f"policy version {version} is already published")
        return version, text

    async def notify(
        self,
        version: str,
        *,
        progress: Callable[[int, int], Any] | None = None,
        page_size: int = 500,
    ) -> PublishReport:
        """Send the notices of an adverse version to every contact not yet told. Contacts
        are streamed in pages by id; each page is queued and recorded in one transaction,
        so an interrupted run resumes where it stopped and never tells anyone twice."""
        policy = await self.get(version)
        report = PublishReport(version, policy["adverse"], policy["published_at"])
        if not policy["adverse"]:
            return report
        after = await self.store.notice_cursor(policy["id"])
        total = await self.store.count_policy_audience(after, policy["published_at"])
        report.audience = total
        done = 0
        if progress is not None:
            progress(0, total)
        while batch := await self.store.policy_audience(after, policy["published_at"], page_size):
            after = batch[-1].id
            requests = [self._notice(policy, c.email, c.language, c.uid) for c in batch]
            prepared = await self.accepter.prepare(requests)
            now = time.time()
            notices = []
            for contact, result in zip(batch, prepared.results, strict=True):
                queued = result.status == "queued"
                report.queued += queued
                report.suppressed += not queued
                notices.append(
                    {
                        "policy_id": policy["id"],
                        "contact_id": contact.id,
                        "subject": self.signer.address_hash(contact.email),
                        "message_id": result.message_id,
                        "status": "queued" if queued else "suppressed",
                        "created_at": now,
                    }
                )
            async with self.store.transaction():
                await self.accepter.commit(prepared)
                await self.store.add_policy_notices(notices)
            done += len(batch)
            if progress is not None:
                progress(done, max(total, done))
        return report

    def _notice(self, policy: dict[str, Any], email: str, language: str, uid: str) -> SendRequest:
        lang = mail_language(language)
        context = {
            "version": policy["version"],
            "policy_text": policy["text"],
            "policy_url": self.url(policy["version"]),
            "published_at": local_time(policy["published_at"], lang),
        }
        return self.accepter.own_mail(
            email,
            "policy",
            lang,
            context,
            category="policy",
            # A second run can never queue a second notice to the same person.
            idempotency_key=f"policy:{policy['id']}:{uid}",
        )
