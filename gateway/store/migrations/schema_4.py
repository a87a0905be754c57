"""The tables as schema version 4 has them, frozen: what revision 0004 creates on a new
database, and what the legacy revisions add to a database an older release made. Never edited:
the tables change by a new revision (schema.py declares them as they are now, and
tests/test_migrations.py checks that a migrated database matches it)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

sa.Table(
    "topics",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("double_opt_in", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
)

sa.Table(
    "contacts",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("uid", sa.String(32), nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.Text()),
    sa.Column("phone", sa.String(40)),
    sa.Column("postal_address", sa.Text()),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stopped_at", sa.Float()),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
)

sa.Table(
    "contact_attributes",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column(
        "contact_id", sa.Integer(), sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.UniqueConstraint("contact_id", "key"),
)

sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column(
        "contact_id", sa.Integer(), sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("topic_id", sa.Integer(), sa.ForeignKey("topics.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("subscribed_at", sa.Float()),
    sa.Column("unsubscribed_at", sa.Float()),
    sa.UniqueConstraint("contact_id", "topic_id"),
    sa.Index("ix_subscriptions_audience", "topic_id", "status", "contact_id"),
)

sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("email", sa.String(320)),
    sa.Column("email_hash", sa.String(64)),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("topic_id", sa.Integer(), sa.ForeignKey("topics.id")),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Index("ix_suppressions_email", "email"),
    sa.Index("ix_suppressions_email_hash", "email_hash"),
)

sa.Table(
    "consent_ledger",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("contact_id", sa.Integer(), sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("topic_id", sa.Integer(), sa.ForeignKey("topics.id")),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("policy_version", sa.String(32), nullable=False),
    sa.Column("ip", sa.String(64)),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Index("ix_consent_contact", "contact_id"),
)

sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("topic_id", sa.Integer(), sa.ForeignKey("topics.id"), nullable=False),
    sa.Column("subject", sa.Text(), nullable=False),
    sa.Column("html", sa.Text()),
    sa.Column("text", sa.Text()),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rate", sa.Float()),
    sa.Column("scheduled_at", sa.Float()),
    sa.Column("cursor", sa.Integer(), nullable=False),
    sa.Column("enqueued_all", sa.Boolean(), nullable=False),
    sa.Column("lease_until", sa.Float()),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("started_at", sa.Float()),
    sa.Column("finished_at", sa.Float()),
)

sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("message_id", sa.String(255), nullable=False, unique=True),
    sa.Column("contact_id", sa.Integer(), sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("email", sa.String(320)),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("topic_id", sa.Integer(), sa.ForeignKey("topics.id")),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("raw", sa.LargeBinary()),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("lease_until", sa.Float()),
    sa.Column("next_attempt_at", sa.Float(), nullable=False),
    sa.Column("idempotency_key", sa.String(255), unique=True),
    sa.Column("last_error", sa.Text()),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id")),
    sa.Column("template", sa.String(32)),
    sa.Column("context", sa.Text()),
    sa.Index("ix_outbox_due", "state", "next_attempt_at"),
    sa.Index("ix_outbox_campaign", "campaign_id", "state"),
    sa.Index("ix_outbox_email", "email"),
    sa.Index("ix_outbox_contact", "contact_id"),
)

sa.Table(
    "message_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("message_id", sa.String(255)),
    sa.Column("contact_id", sa.Integer(), sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("email", sa.String(320)),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("topic_id", sa.Integer(), sa.ForeignKey("topics.id")),
    sa.Column("subject", sa.Text()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id")),
    sa.Index("ix_message_log_message", "message_id"),
    sa.Index("ix_message_log_contact", "contact_id"),
    sa.Index("ix_message_log_recent", "email", "status", "created_at"),
    sa.Index("ix_message_log_campaign", "campaign_id", "status"),
)

sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("revoked_at", sa.Float()),
    sa.Column("last_used_at", sa.Float()),
)

sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("actor", sa.String(120), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(64)),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Index("ix_audit_created", "created_at"),
)

sa.Table(
    "policies",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("version", sa.String(32), nullable=False, unique=True),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("adverse", sa.Boolean(), nullable=False),
    sa.Column("published_at", sa.Float(), nullable=False),
)

sa.Table(
    "policy_notices",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id"), nullable=False),
    sa.Column("contact_id", sa.Integer(), sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(255)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.UniqueConstraint("policy_id", "subject"),
    sa.Index("ix_policy_notices_contact", "contact_id"),
)

sa.Table(
    "bounces",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("email", sa.String(320)),
    sa.Column("message_id", sa.String(255)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16)),
    sa.Column("detail", sa.Text()),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Index("ix_bounces_email", "email", "kind", "created_at"),
    sa.Index("ix_bounces_kind", "kind", "created_at"),
)


def create_missing(bind: sa.Connection, names: Iterable[str] | None = None) -> None:
    """Create the named tables (all when None) and their indexes, each only where missing: a
    database from an older release may lack indexes declared after it (they came without a
    new version number), and the migrator it had created whatever was missing."""
    tables = [metadata.tables[n] for n in names] if names is not None else metadata.sorted_tables
    metadata.create_all(bind, tables=tables, checkfirst=True)
    for table in tables:
        for index in table.indexes:
            index.create(bind, checkfirst=True)
