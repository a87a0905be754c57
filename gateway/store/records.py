"""Plain records the store hands out: no database types leak past the store package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Topic:
    id: int
    slug: str
    name: str
    double_opt_in: bool


@dataclass(frozen=True, slots=True)
class Contact:
    id: int
    uid: str
    email: str
    name: str | None
    language: str
    status: str


@dataclass(frozen=True, slots=True)
class Suppression:
    scope: str  # all | marketing | topic
    topic_id: int | None
    reason: str


@dataclass(slots=True)
class Standing:
    """What policy needs to know about one address: contact, suppressions, subscriptions."""

    contact: Contact | None = None
    suppressions: list[Suppression] = field(default_factory=list)
    subscriptions: dict[int, str] = field(default_factory=dict)  # topic_id -> status
    attributes: dict[str, str] = field(default_factory=dict)  # loaded on request


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    message_id: str
    email: str
    contact_id: int | None
    category: str
    topic_id: int | None
    sender: str
    raw: bytes | None
    attempts: int
    created_at: float
    campaign_id: int | None = None
    template: str | None = None  # rendered at dispatch when raw is None
    context: str | None = None


def _contact(row: Any) -> Contact:
    return Contact(row["id"], row["uid"], row["email"], row["name"], row["language"], row["status"])
