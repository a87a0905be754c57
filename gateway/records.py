"""Plain data every layer reads (contacts, topics, standings, outbox items): no I/O, no
database types."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def erased(self) -> bool:
        """The person asked for their data to be deleted: only a keyed hash is left."""
        return any(s.reason == "erased" for s in self.suppressions)


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
