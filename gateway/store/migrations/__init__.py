"""Alembic's migrations of the gateway's tables, run by `gateway init` and on every start
(gateway/store/migrate.py drives them; nothing here runs on import).

Two lines of history. `0004` is the first revision: it creates schema version 4 whole on a
new database. The `legacy` branch (legacy_2, legacy_3, legacy_4) is what the migrator before
alembic did from each older version; a database that migrator left at version N runs the
branch from N, and is then stamped `0004`, which it now equals.

The next change to the tables: edit schema.py, bump SCHEMA_VERSION to 5, and add
versions/v5_<what>.py with `revision = "0005"` and `down_revision = "0004"` (a revision's id
is its schema version, four digits).
"""
