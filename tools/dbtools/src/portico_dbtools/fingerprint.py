"""What a database holds, compactly: rows and a checksum per table, and its schema as lines.

Taken inside the caller's transaction (a backup takes it in the very snapshot ``pg_dump`` reads).
A table's checksum is the md5 of its rows' md5s, sorted: it does not depend on row order, on a
primary key (every table gets one) or on the collation (sorted bytewise, ``COLLATE "C"``). A row's
text depends on session settings (time zone, date and float formats), so they are pinned for the
transaction. The schema lines name every column (type, nullability, default), constraint and index
of the user schemas, so a restore that lost a constraint or an index is caught too. Sequences are
left out: their state is not transactional, so a dump and a snapshot may disagree on it honestly.
"""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel, ConfigDict

from portico_dbtools.target import quote_ident

_PINNED = (
    "SET LOCAL search_path TO ''",  # every name printed schema-qualified
    "SET LOCAL TimeZone TO 'UTC'",
    "SET LOCAL DateStyle TO 'ISO, YMD'",
    "SET LOCAL IntervalStyle TO 'postgres'",
    "SET LOCAL extra_float_digits TO 3",
    "SET LOCAL bytea_output TO 'hex'",
)

_USER_SCHEMA = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"

_TABLES = f"""
SELECT n.nspname AS schema, c.relname AS name
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMA}
ORDER BY 1, 2
"""  # noqa: S608 (a constant clause, no input)

_SCHEMA = f"""
SELECT format('schema %s', n.nspname) AS line
FROM pg_catalog.pg_namespace n WHERE {_USER_SCHEMA}
UNION ALL
SELECT format(
    'column %s.%s #%s %s %s%s%s', n.nspname, c.relname,
    row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
    pg_catalog.format_type(a.atttypid, a.atttypmod),
    CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
    coalesce(' default ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''))
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_SCHEMA}
UNION ALL
SELECT format('constraint %s.%s %s %s', n.nspname, c.relname, k.conname,
              pg_catalog.pg_get_constraintdef(k.oid))
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_SCHEMA}
UNION ALL
SELECT format('index %s', pg_catalog.pg_get_indexdef(i.indexrelid))
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_SCHEMA}
"""  # noqa: S608 (a constant clause, no input)


class TableStats(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    md5: str


class Fingerprint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: ``"schema.table"`` → its rows and checksum.
    tables: dict[str, TableStats]
    #: One line per schema, column, constraint and index of the user schemas, sorted.
    ddl: list[str]

    @property
    def total_rows(self) -> int:
        return sum(stats.rows for stats in self.tables.values())


def _qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def _digest_query(table: str) -> str:
    """Row count and checksum of ``table`` (a quoted, schema-qualified name)."""
    digest = "md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), ''))"
    hashed = f"SELECT md5(ROW(r.*)::text) AS h FROM {table} AS r"  # noqa: S608 (quoted names)
    return f"SELECT count(*) AS n, {digest} AS digest FROM ({hashed}) AS hashed"  # noqa: S608


async def take(conn: asyncpg.Connection) -> Fingerprint:
    """The fingerprint of ``conn``'s database; call inside a (repeatable read) transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("take() reads in the caller's transaction; open one first")
    for statement in _PINNED:
        await conn.execute(statement)
    tables: dict[str, TableStats] = {}
    for row in await conn.fetch(_TABLES):
        stats = await conn.fetchrow(_digest_query(_qualified(row["schema"], row["name"])))
        if stats is None:  # pragma: no cover - an aggregate always returns one row
            raise RuntimeError(f"no row from counting {row['schema']}.{row['name']}")
        tables[f"{row['schema']}.{row['name']}"] = TableStats(rows=stats["n"], md5=stats["digest"])
    ddl = sorted((str(r["line"]) for r in await conn.fetch(_SCHEMA)), key=str.encode)
    return Fingerprint(tables=tables, ddl=ddl)


async def tables_with_rows(conn: asyncpg.Connection) -> list[str]:
    """The user tables of ``conn``'s database that hold at least one row."""
    found: list[str] = []
    for row in await conn.fetch(_TABLES):
        if await conn.fetchval(
            f"SELECT EXISTS (SELECT FROM {_qualified(row['schema'], row['name'])})"  # noqa: S608 (quoted)
        ):
            found.append(f"{row['schema']}.{row['name']}")
    return found


def differences(expected: Fingerprint, actual: Fingerprint, *, limit: int = 20) -> list[str]:
    """Human-readable differences (empty when ``actual`` matches ``expected``)."""
    found: list[str] = []
    for name in sorted(expected.tables.keys() | actual.tables.keys()):
        want, got = expected.tables.get(name), actual.tables.get(name)
        if want is None:
            if got is not None:
                found.append(f"table {name}: not in the backup ({got.rows} rows)")
        elif got is None:
            found.append(f"table {name}: missing (the backup has {want.rows} rows)")
        elif want.rows != got.rows:
            found.append(f"table {name}: {want.rows} rows in the backup, {got.rows} restored")
        elif want.md5 != got.md5:
            found.append(
                f"table {name}: {got.rows} rows as in the backup, but their contents differ "
                f"(checksum {want.md5[:12]}… expected, {got.md5[:12]}… found)"
            )
    want_ddl, got_ddl = set(expected.ddl), set(actual.ddl)
    found += [f"schema: missing {line}" for line in sorted(want_ddl - got_ddl)]
    found += [f"schema: unexpected {line}" for line in sorted(got_ddl - want_ddl)]
    if len(found) > limit:
        found = [*found[:limit], f"… and {len(found) - limit} more"]
    return found
