"""Tables of the gateway, one definition for SQLite and PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Bumped with every change to the tables; `gateway init` brings an older database up to it.
SCHEMA_VERSION = 6

metadata = MetaData()

# Times are seconds since the epoch (UTC) in Float columns: cheap to compare on both databases.

# schema_version; address_key: the key addresses are hashed under (hex, never rotates, shared
# by every process on the database); legacy_address_keys: the keys rows written before it
# were hashed under (hex, comma-separated), looked up and never written.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

topics = Table(
    "topics",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("double_opt_in", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)

# Promise 1: name, email, phone, postal address, language, and what the person supplied.
contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),  # opaque id used in links
    Column("email", String(320), nullable=False, unique=True),  # normalized
    Column("name", Text),
    Column("phone", String(40)),
    Column("postal_address", Text),
    Column("language", String(8), nullable=False),
    Column("status", String(16), nullable=False, default="active"),  # active | stopped
    Column("stopped_at", Float),
    Column("source", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

contact_attributes = Table(
    "contact_attributes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Column("source", String(32), nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("contact_id", "key"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("topic_id", Integer, ForeignKey("topics.id"), nullable=False),
    Column("status", String(16), nullable=False),  # pending | subscribed | unsubscribed
    Column("created_at", Float, nullable=False),
    Column("subscribed_at", Float),
    Column("unsubscribed_at", Float),
    UniqueConstraint("contact_id", "topic_id"),
    # a campaign's audience, paged by contact id: one range scan per page at any size
    Index("ix_subscriptions_audience", "topic_id", "status", "contact_id"),
)

# scope: all | marketing | topic. An erased address keeps only `email_hash` (a keyed hash).
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320)),
    Column("email_hash", String(64)),
    Column("scope", String(16), nullable=False),
    Column("topic_id", Integer, ForeignKey("topics.id")),
    Column("reason", String(32), nullable=False),
    Column("source", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_suppressions_email", "email"),
    Index("ix_suppressions_email_hash", "email_hash"),
)

# Append-only (PD-1). `subject` is the keyed hash of the address so the record outlives erasure.
consent_ledger = Table(
    "consent_ledger",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("subject", String(64), nullable=False),
    Column("topic_id", Integer, ForeignKey("topics.id")),
    Column("action", String(16), nullable=False),  # opt_in | confirm | opt_out
    Column("source", String(32), nullable=False),
    Column("policy_version", String(32), nullable=False),
    Column("ip", String(64)),
    Column("created_at", Float, nullable=False),
    Index("ix_consent_contact", "contact_id"),
)

# A campaign: one template to the subscribers of one topic. The audience is streamed by
# contact id; `cursor` is the last contact id already enqueued, so a restart resumes.
campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("topic_id", Integer, ForeignKey("topics.id"), nullable=False),
    Column("subject", Text, nullable=False),
    Column("html", Text),
    Column("text", Text),
    Column("state", String(16), nullable=False),  # draft|scheduled|sending|paused|cancelled|done
    Column("rate", Float),  # messages per second; None: as fast as the workers go
    Column("scheduled_at", Float),
    Column("cursor", Integer, nullable=False, default=0),
    Column("enqueued_all", Boolean, nullable=False, default=False),
    Column("lease_until", Float),  # one process at a time enqueues a campaign's audience
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
)

# One row per message. `raw` is the complete rendered message (CRLF bytes).
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("email", String(320)),
    Column("category", String(16), nullable=False),
    Column("topic_id", Integer, ForeignKey("topics.id")),
    Column("sender", String(320), nullable=False),
    Column("raw", LargeBinary),
    Column("state", String(16), nullable=False),  # queued | sending | sent | failed | suppressed
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", Float),
    Column("next_attempt_at", Float, nullable=False),
    Column("idempotency_key", String(255), unique=True),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id")),
    # A system message (a refusal confirmation, say) may be queued as what renders it:
    # the template's name and its context (JSON); the worker renders it at dispatch.
    Column("template", String(32)),
    Column("context", Text),
    # When the receiving server took it (NULL: not yet, or never). This is the message's
    # `sent` event: the message log keeps the events an outbox row cannot hold (accepted,
    # held, refused, bounced…), and a sent message costs no second log row.
    Column("sent_at", Float),
    Index("ix_outbox_due", "state", "next_attempt_at"),
    Index("ix_outbox_campaign", "campaign_id", "state"),
    # a person's messages (erasure, export, the frequency cap's in-flight count), and the
    # rows a deleted contact leaves (ON DELETE SET NULL) without a scan of the whole outbox
    Index("ix_outbox_email", "email"),
    Index("ix_outbox_contact", "contact_id"),
)

# The rendered bytes of a message that waits for delivery, kept apart from its outbox row
# and deleted when the message reaches a final state (sent, failed, bounced, suppressed,
# cancelled) or is erased: the outbox rows stay small and densely packed, and the pages a
# delivered body frees are reused by the next ones. (`outbox.raw` is the same bytes as
# rows of releases before schema 5 kept them; nothing writes it any more.)
outbox_bodies = Table(
    "outbox_bodies",
    metadata,
    Column("outbox_id", Integer, ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True),
    Column("raw", LargeBinary, nullable=False),
)

# What happened to each message: accepted, held, suppressed, blocked, failed, bounced (with
# reason). That it was sent is `outbox.sent_at`, the one event every message has.
message_log = Table(
    "message_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(255)),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("email", String(320)),
    Column("category", String(16), nullable=False),
    Column("topic_id", Integer, ForeignKey("topics.id")),
    Column("subject", Text),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id")),
    # who handed the message in: "apikey:NAME" (HTTP), "smtp:NAME" (submission), or NULL
    Column("source", String(120)),
    Index("ix_message_log_message", "message_id"),
    Index("ix_message_log_contact", "contact_id"),
    # a person's messages by address (the operator's listing, the console, an export)
    Index("ix_message_log_email", "email"),
    Index("ix_message_log_campaign", "campaign_id", "status"),
)


# Admin API keys: only a hash of the key is kept; the key is shown once when made.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # the first characters, to tell keys apart
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("last_used_at", Float),
    # admin: everything; send: only POST /api/v1/messages and SMTP submission
    Column("scope", String(16), nullable=False, server_default="admin"),
)

# Promise 9: every read of a person's data through the API or CLI, who/what/when, never the data.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("actor", String(120), nullable=False),  # "apikey:NAME" or "cli:USER"
    Column("action", String(64), nullable=False),  # e.g. contacts.get, contacts.export
    Column("subject", String(64)),  # keyed hash of the address read, or a contact id
    Column("created_at", Float, nullable=False),
    Index("ix_audit_created", "created_at"),
)

# Privacy policy versions (promise 10, PD-5) and who was told of an adverse one.
policies = Table(
    "policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", String(32), nullable=False, unique=True),
    Column("text", Text, nullable=False),
    Column("adverse", Boolean, nullable=False, default=False),
    Column("published_at", Float, nullable=False),
)

policy_notices = Table(
    "policy_notices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("policy_id", Integer, ForeignKey("policies.id"), nullable=False),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("subject", String(64), nullable=False),  # keyed hash: the record outlives erasure
    Column("message_id", String(255)),
    Column("status", String(16), nullable=False),  # queued | suppressed
    Column("created_at", Float, nullable=False),
    UniqueConstraint("policy_id", "subject"),
    Index("ix_policy_notices_contact", "contact_id"),  # ON DELETE SET NULL of a contact
)

# What receiving servers said about our mail: SMTP replies to the worker, DSNs, complaint
# reports (BN-1..BN-4). Soft bounces are counted per address from here (BN-3); sender-side
# problems (5.7.x) are kept as alerts. Erasure deletes a person's rows.
bounces = Table(
    "bounces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320)),
    Column("message_id", String(255)),
    Column("kind", String(16), nullable=False),  # hard | soft | policy | complaint
    Column("status", String(16)),  # RFC 3463 enhanced status, e.g. 5.1.1
    Column("detail", Text),  # the server's reply or the report's diagnostic, one line
    Column("source", String(16), nullable=False),  # smtp | dsn | arf | detected
    Column("created_at", Float, nullable=False),
    Index("ix_bounces_email", "email", "kind", "created_at"),
    Index("ix_bounces_kind", "kind", "created_at"),
)


# Staff of the web console (/admin): the password is an Argon2 hash, never the password.
staff = Table(
    "staff",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin | marketer | viewer
    Column("password_hash", Text, nullable=False),
    Column("language", String(8)),  # the console's language; NULL: GATEWAY_DEFAULT_LANGUAGE
    Column("created_at", Float, nullable=False),
    Column("password_changed_at", Float, nullable=False),
)

# A console session: only a hash of the cookie's token is kept, with its CSRF token.
staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("staff_id", Integer, ForeignKey("staff.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Index("ix_staff_sessions_staff", "staff_id"),
)

# Per-day counts for the dashboard (sent, bounced, complained, refused, ...), kept as they
# happen so the dashboard never scans the message log. `day` is the UTC date, YYYY-MM-DD.
daily_counts = Table(
    "daily_counts",
    metadata,
    Column("day", String(10), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("n", Integer, nullable=False, default=0),
    UniqueConstraint("day", "metric", name="uq_daily_counts"),
)
