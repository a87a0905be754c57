"""The admin API's bodies as pydantic models: the routes validate requests with them, and
/openapi.json publishes their JSON Schemas with the answers'."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, RootModel, WithJsonSchema

MAX_INTEGER = 2**63 - 1  # what both databases store
MAX_PAGE = 1000
MAX_BODY_TEXT = 500_000  # characters; mail clients clip far shorter messages
LATEST_MOMENT = 253402300799  # 9999-12-31T23:59:59Z

# A pattern's meaning in words, for the error that names a field the pattern refused.
SLUG_PATTERN = "^[A-Za-z0-9_-]+$"
REASON_PATTERN = "^[a-z0-9_-]+$"
VERSION_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
HEADER_NAME_PATTERN = "^[!-9;-~]+$"
PATTERN_WORDS = {
    SLUG_PATTERN: "letters, digits, - or _",
    REASON_PATTERN: "lower-case letters, digits, - or _ (e.g. manual, phone, email, complaint)",
    VERSION_PATTERN: "a letter or digit, then letters, digits, ., - or _",
    HEADER_NAME_PATTERN: "printable ASCII without spaces or ':'",
}

# An optional request field left out stays out of `model_dump(exclude_unset=True)`, so the
# handlers tell "not given" from any value; pydantic never validates a default.
ABSENT: Any = None

Email = Annotated[
    str,
    Field(
        min_length=1,
        max_length=320,
        description="an email address",
        json_schema_extra={"format": "email"},
    ),
]
Slug = Annotated[
    str,
    Field(
        min_length=1, max_length=64, pattern=SLUG_PATTERN, description=PATTERN_WORDS[SLUG_PATTERN]
    ),
]
Id = Annotated[int, Field(ge=1, le=MAX_INTEGER)]
Count = Annotated[int, Field(ge=0)]
Time = Annotated[float, Field(description="seconds since the epoch (UTC)")]
Language = Literal["vi", "en"]
Subject = Annotated[str, Field(min_length=1, max_length=998)]
BodyText = Annotated[str, Field(max_length=MAX_BODY_TEXT)]
Name = Annotated[str, Field(max_length=200)]
Phone = Annotated[str, Field(max_length=40)]
PostalAddress = Annotated[str, Field(max_length=500)]
AttributeName = Annotated[str, Field(min_length=1, max_length=64)]
AttributeValue = Annotated[str, Field(max_length=2000)]
HeaderName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=76,
        pattern=HEADER_NAME_PATTERN,
        description=PATTERN_WORDS[HEADER_NAME_PATTERN],
    ),
]


def _moment(value: Any) -> float | str:
    """Seconds since the epoch, or text the route reads as an RFC 3339 date-time."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be seconds since the epoch or an RFC 3339 date-time")
    if value < 0:
        raise ValueError("must be at least 0")
    if value > LATEST_MOMENT:
        raise ValueError(f"must be at most {LATEST_MOMENT}")
    return value


Moment = Annotated[
    float | str,
    PlainValidator(_moment),
    WithJsonSchema(
        {
            "type": ["number", "string"],
            "format": "date-time",
            "minimum": 0,
            "maximum": LATEST_MOMENT,
            "description": "start later: seconds since the epoch, or an RFC 3339 date-time",
        }
    ),
]


class Body(BaseModel):
    """A request body: exactly these fields, each of exactly its JSON type (no coercion:
    "yes" is not true, "5" is not 5)."""

    # The Rust engine's `$` matches only at the very end, as JSON Schema's (ECMA-262) does;
    # Python's also matches before a final newline, so "X-A\n" would pass as a header name.
    model_config = ConfigDict(strict=True, extra="forbid", regex_engine="rust-regex")


# -- requests ------------------------------------------------------------------------------------


class PolicyPublish(Body):
    version: Annotated[str, Field(min_length=1, max_length=32, pattern=VERSION_PATTERN)]
    text: Annotated[str, Field(min_length=1, max_length=200_000)]
    adverse: bool = Field(False, description="true: every contact is told by email")


class ContactCreate(Body):
    email: Email
    name: Name = ABSENT
    phone: Phone = ABSENT
    address: PostalAddress = ABSENT
    language: Language = ABSENT
    attributes: Annotated[
        dict[AttributeName, AttributeValue],
        Field(max_length=100, description="what the person supplied, name to value"),
    ] = ABSENT
    topics: Annotated[list[Slug], Field(max_length=100)] = ABSENT


class ContactUpdate(Body):
    name: Name | None = ABSENT
    phone: Phone | None = ABSENT
    address: PostalAddress | None = ABSENT
    language: Language = ABSENT
    attributes: Annotated[
        dict[AttributeName, AttributeValue | None],
        Field(max_length=100, description="attributes to set; null removes one"),
    ] = ABSENT


class TopicCreate(Body):
    slug: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    double_opt_in: bool = False


class SuppressionCreate(Body):
    email: Email
    reason: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            pattern=REASON_PATTERN,
            description=PATTERN_WORDS[REASON_PATTERN],
        ),
    ] = ABSENT
    scope: Literal["all", "marketing"] = ABSENT


class MessageCreate(Body):
    to: Email
    subject: Subject
    html: BodyText = ABSENT
    text: BodyText = ABSENT
    category: Literal["transactional", "marketing", "policy"] = ABSENT
    topic: Slug = ABSENT
    headers: Annotated[
        dict[HeaderName, Annotated[str, Field(max_length=998)]], Field(max_length=50)
    ] = ABSENT
    context: Annotated[
        dict[str, Any], Field(max_length=100, description="extra values the templates see")
    ] = ABSENT
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] = ABSENT


class CampaignCreate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    topic: Slug
    subject: Subject
    html: Annotated[str, Field(min_length=1, max_length=MAX_BODY_TEXT)]
    text: BodyText = ABSENT


class CampaignSend(Body):
    rate: Annotated[
        float, Field(gt=0, le=100000, description="at most this many messages per second")
    ] = ABSENT
    at: Moment = ABSENT


# -- answers: documented, and checked against what the routes send by tests/test_api_fuzz.py --


class Answer(BaseModel):
    """A response body: every field always present, no other."""

    model_config = ConfigDict(extra="forbid")


OptionalText = str | None


class Error(Answer):
    error: str = Field(description="what is wrong, in a sentence")


class Notices(Answer):
    queued: int
    suppressed: int


class PolicyReport(Answer):
    version: str
    adverse: bool
    published_at: float
    notices: Notices


class Contact(Answer):
    id: Id
    email: str
    name: OptionalText
    phone: OptionalText
    address: OptionalText
    language: str
    status: Literal["active", "stopped"]
    source: str
    attributes: dict[str, str]
    subscriptions: dict[str, str] = Field(
        description="topic slug to pending, subscribed or unsubscribed"
    )
    effective: dict[str, dict[str, str]] = Field(
        description="topic slug to what happens to its mail now: state receiving,"
        " or stopped with why (refused all promotional mail, suppressed, erased, ...)"
    )
    created_at: Time
    updated_at: Time


class ContactPage(Answer):
    items: list[Contact]
    next: int | None = Field(description="pass as ?after= for the next page; null on the last page")


class ContactOrPage(RootModel[Contact | ContactPage]):
    pass


class ContactExport(BaseModel):
    """Everything held about the person (their right of access)."""

    profile: Any
    attributes: Any
    subscriptions: Any
    consent: Any
    suppressions: Any
    messages: Any


class Erased(Answer):
    id: Id
    erased: bool


class BadRow(Answer):
    line: Count
    reason: str


class ImportReport(Answer):
    created: Count
    updated: Count
    subscribed: Count
    bad_rows: list[BadRow]


class Subscription(Answer):
    contact_id: Id
    topic: str
    status: Literal["pending", "subscribed", "unsubscribed"]
    changed: bool


class Topic(Answer):
    slug: str
    name: str
    double_opt_in: bool
    subscribers: Count


class TopicList(RootModel[list[Topic]]):
    pass


class Suppression(Answer):
    id: Id
    email: str | None = Field(description="null once the person was erased")
    scope: str
    topic: OptionalText
    reason: str
    source: str
    created_at: Time


class SuppressionPage(Answer):
    items: list[Suppression]
    next: int | None = Field(description="pass as ?after= for the next page; null on the last page")


class SuppressionAdded(Answer):
    email: str
    added: bool


class SuppressionRemoved(Answer):
    email: str
    removed: Count


class SuppressionImportReport(Answer):
    added: Count
    already: Count
    bad_rows: list[BadRow]


class SendResult(Answer):
    status: Literal["queued", "suppressed", "blocked"]
    reason: OptionalText = Field(
        description="why it was not queued; for a queued marketing message the frequency cap"
        ' holds, that it is held and until when ("held by the frequency cap (…) until …")'
    )
    message_id: OptionalText
    blocked_urls: list[str] = Field(default_factory=list)


class MessageStatus(Answer):
    message_id: str
    state: str
    attempts: Count
    last_error: OptionalText


class Counts(Answer):
    queued: Count
    sent: Count
    suppressed: Count
    blocked: Count
    failed: Count
    bounced: Count


class CampaignStatus(Answer):
    id: Id
    name: str
    topic: str
    state: Literal["draft", "scheduled", "sending", "paused", "cancelled", "done"]
    counts: Counts


class CampaignSummary(Answer):
    id: Id
    name: str
    topic: str
    state: str
    created_at: Time


class CampaignList(RootModel[list[CampaignSummary]]):
    pass


class Preview(Answer):
    subject: str
    html: OptionalText
    text: str
    blocked_urls: list[str] = Field(
        description="URLs outside the first-party domains that would block this message"
    )
