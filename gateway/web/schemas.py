"""JSON Schemas of the admin API's bodies: the routes validate requests against these, and
/openapi.json publishes them with the responses'."""

from __future__ import annotations

from typing import Any

from .validate import MAX_INTEGER

MAX_PAGE = 1000
MAX_BODY_TEXT = 500_000  # characters; mail clients clip far shorter messages

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def text(max_length: int, min_length: int = 0, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length, **extra}
    if min_length:
        schema["minLength"] = min_length
    return schema


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def strict(properties: dict[str, Schema], *required: str, **extra: Any) -> Schema:
    """An object with exactly these fields, the `required` ones at least."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


def record(properties: dict[str, Schema]) -> Schema:
    """An answer: every field always present."""
    return strict(properties, *properties)


STRING: Schema = {"type": "string"}
OPTIONAL_STRING: Schema = {"type": ["string", "null"]}
EMAIL = text(320, 1, format="email", description="an email address")
SLUG = text(64, 1, pattern="^[A-Za-z0-9_-]+$", description="letters, digits, - or _")
LANGUAGE: Schema = {"type": "string", "enum": ["vi", "en"]}
SUBJECT = text(998, 1)
BODY = text(MAX_BODY_TEXT)
REASON = text(
    32,
    1,
    pattern="^[a-z0-9_-]+$",
    description="lower-case letters, digits, - or _ (e.g. manual, phone, email, complaint)",
)
COUNT: Schema = {"type": "integer", "minimum": 0}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
ID: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER}
TIME: Schema = {"type": "number", "description": "seconds since the epoch (UTC)"}
BAD_ROWS: Schema = {"type": "array", "items": record({"line": COUNT, "reason": STRING})}
PROFILE = {"name": text(200), "phone": text(40), "address": text(500)}


def attributes(value: Schema, description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "propertyNames": text(64, 1),
        "additionalProperties": value,
        "maxProperties": 100,
    }


# Request bodies: the routes validate against exactly these.
REQUESTS: dict[str, Schema] = {
    "PolicyPublish": strict(
        {
            "version": text(32, 1, pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$"),
            "text": text(200_000, 1),
            "adverse": {"type": "boolean", "description": "true: every contact is told by email"},
        },
        "version",
        "text",
    ),
    "ContactCreate": strict(
        {
            "email": EMAIL,
            **PROFILE,
            "language": LANGUAGE,
            "attributes": attributes(text(2000), "what the person supplied, name to value"),
            "topics": {"type": "array", "items": SLUG, "maxItems": 100},
        },
        "email",
    ),
    "ContactUpdate": strict(
        {
            **{name: nullable(schema) for name, schema in PROFILE.items()},
            "language": LANGUAGE,
            "attributes": attributes(nullable(text(2000)), "attributes to set; null removes one"),
        }
    ),
    "TopicCreate": strict(
        {"slug": SLUG, "name": text(200, 1), "double_opt_in": {"type": "boolean"}},
        "slug",
        "name",
    ),
    "SuppressionCreate": strict(
        {
            "email": EMAIL,
            "reason": REASON,
            "scope": {"type": "string", "enum": ["all", "marketing"]},
        },
        "email",
    ),
    "MessageCreate": strict(
        {
            "to": EMAIL,
            "subject": SUBJECT,
            "html": BODY,
            "text": BODY,
            "category": {"type": "string", "enum": ["transactional", "marketing", "policy"]},
            "topic": SLUG,
            "headers": {
                "type": "object",
                "propertyNames": text(
                    76,
                    1,
                    pattern="^[!-9;-~]+$",
                    description="printable ASCII without spaces or ':'",
                ),
                "additionalProperties": text(998),
                "maxProperties": 50,
            },
            "context": {
                "type": "object",
                "description": "extra values the templates see",
                "maxProperties": 100,
            },
            "idempotency_key": text(255, 1),
        },
        "to",
        "subject",
    ),
    "CampaignCreate": strict(
        {
            "name": text(200, 1),
            "topic": SLUG,
            "subject": SUBJECT,
            "html": text(MAX_BODY_TEXT, 1),
            "text": BODY,
        },
        *("name", "topic", "subject", "html"),
    ),
    "CampaignSend": strict(
        {
            "rate": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100000,
                "description": "at most this many messages per second",
            },
            "at": {
                "type": ["number", "string"],
                "format": "date-time",
                "minimum": 0,
                "maximum": 253402300799,
                "description": "start later: seconds since the epoch, or an RFC 3339 date-time",
            },
        }
    ),
}


def page_of(item: str) -> Schema:
    return record(
        {
            "items": {"type": "array", "items": ref(item)},
            "next": {
                "type": ["integer", "null"],
                "description": "pass as ?after= for the next page; null on the last page",
            },
        }
    )


COUNTS = record(
    {k: COUNT for k in ("queued", "sent", "suppressed", "blocked", "failed", "bounced")}
)
STATES = ["draft", "scheduled", "sending", "paused", "cancelled", "done"]

RESPONSES: dict[str, Schema] = {
    "PolicyReport": record(
        {
            "version": STRING,
            "adverse": {"type": "boolean"},
            "published_at": {"type": "number"},
            "notices": record({"queued": {"type": "integer"}, "suppressed": {"type": "integer"}}),
        }
    ),
    "Error": record({"error": {"type": "string", "description": "what is wrong, in a sentence"}}),
    "Contact": record(
        {
            "id": ID,
            "email": STRING,
            "name": OPTIONAL_STRING,
            "phone": OPTIONAL_STRING,
            "address": OPTIONAL_STRING,
            "language": STRING,
            "status": {"type": "string", "enum": ["active", "stopped"]},
            "source": STRING,
            "attributes": {"type": "object", "additionalProperties": STRING},
            "subscriptions": {
                "type": "object",
                "description": "topic slug to pending, subscribed or unsubscribed",
                "additionalProperties": STRING,
            },
            "effective": {
                "type": "object",
                "description": "topic slug to what happens to its mail now: state receiving,"
                " or stopped with why (refused all promotional mail, suppressed, erased, ...)",
                "additionalProperties": STRING_MAP,
            },
            "created_at": TIME,
            "updated_at": TIME,
        }
    ),
    "ContactPage": page_of("Contact"),
    "ContactOrPage": {"oneOf": [ref("Contact"), ref("ContactPage")]},
    "ContactExport": {
        "type": "object",
        "description": "everything held about the person (PD-2)",
        "required": [
            "profile",
            "attributes",
            "subscriptions",
            "consent",
            "suppressions",
            "messages",
        ],
    },
    "Erased": record({"id": ID, "erased": {"type": "boolean"}}),
    "ImportReport": record(
        {"created": COUNT, "updated": COUNT, "subscribed": COUNT, "bad_rows": BAD_ROWS}
    ),
    "Subscription": record(
        {
            "contact_id": ID,
            "topic": STRING,
            "status": {"type": "string", "enum": ["pending", "subscribed", "unsubscribed"]},
            "changed": {"type": "boolean"},
        }
    ),
    "Topic": record(
        {"slug": STRING, "name": STRING, "double_opt_in": {"type": "boolean"}, "subscribers": COUNT}
    ),
    "TopicList": {"type": "array", "items": ref("Topic")},
    "Suppression": record(
        {
            "id": ID,
            "email": {"type": ["string", "null"], "description": "null once the person was erased"},
            "scope": STRING,
            "topic": OPTIONAL_STRING,
            "reason": STRING,
            "source": STRING,
            "created_at": TIME,
        }
    ),
    "SuppressionPage": page_of("Suppression"),
    "SuppressionAdded": record({"email": STRING, "added": {"type": "boolean"}}),
    "SuppressionRemoved": record({"email": STRING, "removed": COUNT}),
    "SuppressionImportReport": record({"added": COUNT, "already": COUNT, "bad_rows": BAD_ROWS}),
    "SendResult": strict(
        {
            "status": {"type": "string", "enum": ["queued", "suppressed", "blocked"]},
            "reason": OPTIONAL_STRING,
            "message_id": OPTIONAL_STRING,
            "blocked_urls": {"type": "array", "items": STRING},
        },
        *("status", "reason", "message_id"),
    ),
    "MessageStatus": record(
        {"message_id": STRING, "state": STRING, "attempts": COUNT, "last_error": OPTIONAL_STRING}
    ),
    "CampaignStatus": record(
        {
            "id": ID,
            "name": STRING,
            "topic": STRING,
            "state": {"type": "string", "enum": STATES},
            "counts": COUNTS,
        }
    ),
    "CampaignList": {
        "type": "array",
        "items": record(
            {"id": ID, "name": STRING, "topic": STRING, "state": STRING, "created_at": TIME}
        ),
    },
    "Preview": record(
        {
            "subject": STRING,
            "html": OPTIONAL_STRING,
            "text": STRING,
            "blocked_urls": {
                "type": "array",
                "items": STRING,
                "description": "third-party URLs that would block this message (TP-1)",
            },
        }
    ),
}
