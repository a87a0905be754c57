"""Alembic's environment: it runs on the connection gateway/store/migrate.py hands over, inside
that connection's transaction, so an upgrade commits whole or not at all (and, on PostgreSQL,
under the advisory lock taken on it first)."""

from alembic import context

from gateway.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise SystemExit("the gateway's migrations run through `gateway init`, on its database")
context.configure(
    connection=connection,
    target_metadata=metadata,
    # legacy_4 keeps rows hashed under these keys findable (see migrate.give_address_key)
    legacy_address_keys=tuple(config.attributes.get("legacy_address_keys", ())),
)
with context.begin_transaction():
    context.run_migrations()
