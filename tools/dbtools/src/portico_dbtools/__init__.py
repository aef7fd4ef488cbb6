"""``portico-db``: back up and restore Portico's PostgreSQL database with PostgreSQL's own tools.

A backup is a ``pg_dump`` custom-format archive plus a JSON manifest beside it (row count and
checksum of every table, the schema, the dump's sha256), both taken from one snapshot. A restore
goes into a fresh database, is verified against the manifest, and only then replaces the target.
docs/operations.md has the procedures; ``portico-db --help`` the options.
"""
