"""From version 1 to 2: campaigns, API keys, the audit log, policy versions and their notices;
outbox and message_log rows name their campaign, and an outbox row may hold a system message
as its template and context.

Revision ID: legacy_2
Revises: (a database the migrator before alembic left at version 1)
"""

from __future__ import annotations

from alembic import op

from gateway.store.migrations import schema_4

revision = "legacy_2"
down_revision = None
branch_labels = ("legacy",)
depends_on = None

# The statements version 2 ran, as it ran them.
STATEMENTS = [
    "ALTER TABLE outbox ADD COLUMN campaign_id INTEGER REFERENCES campaigns (id)",
    "ALTER TABLE message_log ADD COLUMN campaign_id INTEGER REFERENCES campaigns (id)",
    "ALTER TABLE outbox ADD COLUMN template VARCHAR(32)",
    "ALTER TABLE outbox ADD COLUMN context TEXT",
]


def upgrade() -> None:
    # The new tables first: the new columns refer to campaigns.
    schema_4.create_missing(
        op.get_bind(), ["campaigns", "api_keys", "audit_log", "policies", "policy_notices"]
    )
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("a database is not taken back to a release before alembic")
