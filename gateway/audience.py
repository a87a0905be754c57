"""Who a campaign or a policy notice would reach, counted without sending (the dry runs).

Each person is judged by `policy.decide`, the same decision accept and the worker make, on
the same standing read from the store, page by page: a dry run of a million contacts reads
them in pages and holds only the counts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput
from .policy import DAY, decide
from .store import Store
from .tokens import Signer

if TYPE_CHECKING:
    from .core import Gateway

PAGE = 1000

# Why someone would not get it, in words (the keys are suppression reasons and `decide`'s
# codes); an unknown reason is shown as it is stored.
REASONS = {
    "erased": "erased at their request",
    "hard_bounce": "address bounced (hard bounce)",
    "soft_bounce": "address kept failing (soft bounces)",
    "complaint": "reported the mail as spam",
    "unsubscribe": "refused promotional mail (unsubscribe link or preference page)",
    "email": "refused promotional mail by email",
    "phone": "refused promotional mail by phone",
    "refusal": "refused promotional mail",
    "manual": "blocked by staff",
    "not_contact": "not a contact",
    "not_subscribed": "not subscribed to the topic",
}


# Subscriptions that keep someone out of a campaign's audience, in words.
OUTSIDE = {
    "pending": "waiting to confirm their subscription",
    "unsubscribed": "unsubscribed from the topic",
}


def reason_words(code: str) -> str:
    return REASONS.get(code, code)


@dataclass
class Audience:
    """The counts of a dry run. `would_get`: messages that would be queued now; `held`: of
    those, how many the frequency cap would hold back for a while; `already`: people who
    already got it (a campaign resumed, notices of an interrupted publish); `suppressed`:
    who would not get it, by reason; `not_in_audience`: subscriptions that keep people out
    of a campaign's audience (waiting for confirmation, unsubscribed)."""

    would_get: int = 0
    held: int = 0
    already: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    not_in_audience: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "would_get": self.would_get,
            "held_by_frequency_cap": self.held,
            "already_sent": self.already,
            "suppressed": dict(self.suppressed),
            "suppressed_total": sum(self.suppressed.values()),
            "not_in_audience": dict(self.not_in_audience),
        }

    def lines(self, what: str = "message") -> list[str]:
        """The counts in words, one line each."""
        out = [
            f"{self.would_get} would get the {what}, "
            f"{sum(self.suppressed.values())} suppressed; nothing was sent or written"
        ]
        if self.held:
            out.append(
                f"  {self.held} of them already had the most marketing mail allowed in 24 hours"
                " (GATEWAY_MARKETING_DAILY_CAP): theirs waits until the window opens"
            )
        if self.already:
            out.append(f"  {self.already} already got it and will not get it again")
        for code, n in sorted(self.suppressed.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  suppressed, {reason_words(code)}: {n}")
        for state, n in self.not_in_audience.items():
            if n:
                out.append(f"  not in the audience, {OUTSIDE.get(state, state)}: {n}")
        return out


async def count(
    store: Store,
    signer: Signer,
    pages: Any,
    *,
    category: str,
    topic_id: int | None = None,
    idempotency_key: Any = None,
    daily_cap: int | None = None,
) -> Audience:
    """Judge every (contact id, address) that `pages(after_id)` yields, page by page, as a
    message of `category` would be at accept time. `idempotency_key(contact_id)` names the
    key a real run gives each message (an existing one counts as already sent); with
    `daily_cap`, marketing mail is checked against the frequency cap too."""
    found = Audience()
    after = 0
    while page := await pages(after):
        after = page[-1][0]
        await _judge(found, store, signer, page, category, topic_id, idempotency_key, daily_cap)
    return found


async def _judge(
    found: Audience,
    store: Store,
    signer: Signer,
    page: Sequence[tuple[int, str]],
    category: str,
    topic_id: int | None,
    idempotency_key: Any,
    daily_cap: int | None,
) -> None:
    async with store.connection():
        done: set[str] = set()
        if idempotency_key is not None:
            keys = {idempotency_key(cid): email for cid, email in page}
            done = {keys[k] for k in await store.find_idempotent(list(keys))}
        standings = await store.standings({e: signer.address_hashes(e) for _, e in page})
        go: list[str] = []
        for _, email in page:
            if email in done:
                found.already += 1
                continue
            decision = decide(category, topic_id, standings[email])
            if decision.allowed:
                go.append(email)
            else:
                code = decision.code or "other"
                found.suppressed[code] = found.suppressed.get(code, 0) + 1
        found.would_get += len(go)
        if daily_cap is not None and category == "marketing" and go:
            recent = await store.recent_marketing(go, time.time() - DAY)
            found.held += sum(1 for e in go if len(recent.get(e, ())) >= daily_cap)


async def for_campaign(gw: Gateway, campaign_id: int) -> tuple[dict[str, Any], Audience]:
    """The campaign and who `campaign send` would mail now (its dry run): its topic's
    subscribers judged as accept will judge them, those it already mailed (a paused or
    interrupted campaign) apart, and who the frequency cap would hold back for a while."""
    c = await gw.campaigns.get(campaign_id)
    if c["state"] not in ("draft", "scheduled", "paused", "sending"):
        raise InvalidInput(f"campaign {campaign_id} is {c['state']}: it cannot be sent again")
    store = gw.store

    async def pages(after: int) -> list[tuple[int, str]]:
        return await store.audience_page(c["topic_id"], after, PAGE)

    found = await count(
        store,
        gw.signer,
        pages,
        category="marketing",
        topic_id=c["topic_id"],
        idempotency_key=lambda contact_id: f"campaign:{campaign_id}:{contact_id}",
        daily_cap=gw.settings.marketing_daily_cap,
    )
    subscriptions = await store.subscription_counts(c["topic_id"])
    found.not_in_audience = {state: subscriptions.get(state, 0) for state in OUTSIDE}
    return c, found
