"""Schema version 4, whole: the tables of a new database and its address-hashing key.

Revision ID: 0004
Revises: (the first revision; databases from before it come through the legacy branch)
"""

from __future__ import annotations

from alembic import op

from gateway.store.migrate import give_address_key
from gateway.store.migrations import schema_4

revision = "0004"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    schema_4.metadata.create_all(bind)
    # No row is hashed yet, so no older key needs keeping.
    give_address_key(bind, ())


def downgrade() -> None:
    schema_4.metadata.drop_all(op.get_bind())
