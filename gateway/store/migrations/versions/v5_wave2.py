"""Schema version 5: scoped API keys, who submitted each message, staff of the web console
with their sessions, per-day counts for the dashboard, and the rendered bytes of waiting
messages in a table of their own (outbox_bodies), deleted at delivery.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.store import schema, tally

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NEW_TABLES = (schema.staff, schema.staff_sessions, schema.daily_counts, schema.outbox_bodies)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    keys = {c["name"] for c in inspector.get_columns("api_keys")}
    if "scope" not in keys:
        op.add_column(
            "api_keys",
            sa.Column("scope", sa.String(16), nullable=False, server_default="admin"),
        )
    logged = {c["name"] for c in inspector.get_columns("message_log")}
    if "source" not in logged:
        op.add_column("message_log", sa.Column("source", sa.String(120)))
    # The tables as schema.py declares them today: a later revision that changes one of
    # them alters it from there.
    schema.metadata.create_all(bind, tables=list(NEW_TABLES))
    # The dashboard's per-day counts start from what the database already holds.
    op.execute(tally.backfill_sql(bind.dialect.name, sendings_on_outbox=False))
    # Messages still waiting keep their bytes in outbox_bodies from now on.
    op.execute(
        "INSERT INTO outbox_bodies (outbox_id, raw) SELECT id, raw FROM outbox"
        " WHERE raw IS NOT NULL AND id NOT IN (SELECT outbox_id FROM outbox_bodies)"
    )
    op.execute("UPDATE outbox SET raw = NULL WHERE raw IS NOT NULL")


def downgrade() -> None:
    op.execute(
        "UPDATE outbox SET raw = (SELECT b.raw FROM outbox_bodies b WHERE b.outbox_id = outbox.id)"
        " WHERE id IN (SELECT outbox_id FROM outbox_bodies)"
    )
    schema.metadata.drop_all(op.get_bind(), tables=list(reversed(NEW_TABLES)))
    op.drop_column("message_log", "source")
    op.drop_column("api_keys", "scope")
