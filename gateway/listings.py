"""What the operator lists and looks up (`gateway contacts list`, `gateway messages list|show`):
the facade's reads of contacts and the message log, so the command line never reaches into the
store (gateway/store/listings.py holds the queries)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import Gateway


async def contacts(
    gw: Gateway, *, topic: str | None, after_id: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of contacts (of a topic's subscribers when given) and how many there are."""
    topic_id = (await gw.accepter.topic(topic)).id if topic else None
    rows = await gw.store.list_contacts(topic_id=topic_id, after_id=after_id, limit=limit)
    return rows, await gw.store.count_contacts(topic_id)


async def messages(
    gw: Gateway, *, email: str | None, campaign_id: int | None, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """The newest messages first, to one address or of one campaign when given."""
    return await gw.store.list_messages(
        email=email, campaign_id=campaign_id, before_id=before_id, limit=limit
    )


async def message(
    gw: Gateway, *, log_id: int | None = None, message_id: str | None = None
) -> dict[str, Any] | None:
    """One message by its Message-ID (or the log number of one refused at accept), with
    its history; None when there is none."""
    found = await gw.store.message_entry(log_id=log_id, message_id=message_id)
    if found is not None:
        found["history"] = (
            await gw.store.message_story(found["message_id"]) if found["message_id"] else []
        )
    return found
