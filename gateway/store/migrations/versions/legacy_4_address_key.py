"""From version 3 to 4: the database's own address-hashing key; rows hashed under the keys
derived from GATEWAY_SECRET_KEYS stay findable. Also every index version 4 declares: a few were
added without a new version number, and the migrator then created whatever was missing. After
this revision the database equals revision 0004 and is stamped so.

Revision ID: legacy_4
Revises: legacy_3
"""

from __future__ import annotations

from alembic import op

from gateway.store.migrate import give_address_key
from gateway.store.migrations import schema_4

revision = "legacy_4"
down_revision = "legacy_3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    schema_4.create_missing(bind)
    give_address_key(bind, op.get_context().opts.get("legacy_address_keys", ()))


def downgrade() -> None:
    raise NotImplementedError("a database is not taken back to a release before alembic")
