"""The frequency cap at accept: when a marketing message just queued will be held, and
until when (the worker holds it; see gateway.worker)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from . import addresses
from .policy import DAY, cap_opens, cap_words
from .store import Store


async def held_until(store: Store, cap: int, queued: Sequence[tuple[str, str]]) -> dict[str, str]:
    """For marketing messages just queued, as (address, Message-ID): the reason of those the
    frequency cap will hold, by Message-ID. An estimate from the marketing mail sent to the
    address in the last 24 hours, on the wire, and queued before it (a refusal or a cancelled
    message ahead frees a place sooner). They are queued all the same; the worker holds them."""
    if not queued or cap <= 0:
        return {}
    now = time.time()
    emails = {message_id: addresses.normalize(to) for to, message_id in queued}
    ahead = await store.marketing_ahead(sorted(set(emails.values())), now - DAY)
    reasons: dict[str, str] = {}
    for message_id, email in emails.items():
        mail = ahead.get(email, [])
        own = next((o for _, o, m in mail if m == message_id), None)
        times = [
            max(at, now) if outbox_id is not None else at
            for at, outbox_id, _ in mail
            if outbox_id is None or (own is not None and outbox_id < own)
        ]
        opens = cap_opens(times, cap)
        if opens is not None and opens > now:
            until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(opens))
            reasons[message_id] = f"held by the frequency cap ({cap_words(cap)}) until {until}"
    return reasons
