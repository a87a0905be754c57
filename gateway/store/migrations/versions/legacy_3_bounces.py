"""From version 2 to 3: the bounces table (what receiving servers said about our mail).

Revision ID: legacy_3
Revises: legacy_2
"""

from __future__ import annotations

from alembic import op

from gateway.store.migrations import schema_4

revision = "legacy_3"
down_revision = "legacy_2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema_4.create_missing(op.get_bind(), ["bounces"])


def downgrade() -> None:
    raise NotImplementedError("a database is not taken back to a release before alembic")
