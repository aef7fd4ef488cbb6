"""What must hold after a drill: acknowledged writes kept, every committed change audited once.

The outbox row of a change is written in the change's own transaction, so ``users.outbox`` and
``auth.outbox`` list exactly the committed changes, whatever the clients were told (a create
whose response was lost may be committed too). After the drill, within a bound:

* every outbox row is published, and ``audit.events`` holds exactly the outbox's event ids (one
  row per id by its primary key; no event missing, none extra);
* the stream's consumer group has nothing pending (every delivery acknowledged);
* each user row has exactly one ``user.created`` record, and ``version - 1`` ``user.updated``
  records (each committed update bumps the version once);
* every acknowledged create is a row, holding its last acknowledged ``display_name`` (or a value
  sent after it whose outcome the client never learnt).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from portico_common.valkey import client as valkey_client
from tests.reliability.load import Ledger

STREAM = "portico:events:v1"
GROUP = "audit"


async def _outbox_state(conn: asyncpg.Connection) -> tuple[set[str], int, set[str]]:
    outbox = {
        str(r["id"])
        for r in await conn.fetch(
            "SELECT id FROM users.outbox UNION ALL SELECT id FROM auth.outbox"
        )
    }
    unpublished = await conn.fetchval(
        "SELECT (SELECT count(*) FROM users.outbox WHERE published_at IS NULL)"
        " + (SELECT count(*) FROM auth.outbox WHERE published_at IS NULL)"
    )
    audited = {str(r["id"]) for r in await conn.fetch("SELECT id FROM audit.events")}
    return outbox, int(unpublished), audited


async def _pending(valkey_url: str) -> int:
    # One server or the primary through Sentinel (the failover drill), as the services connect.
    client = valkey_client(valkey_url, socket_timeout_s=5, connect_timeout_s=2)
    try:
        info = await client.xpending(STREAM, GROUP)
        return int(info["pending"])
    finally:
        await client.aclose()


async def wait_caught_up(dsn: str, valkey_url: str, within_s: float = 20.0) -> dict[str, Any]:
    """Wait until the outbox is published and audited and nothing is pending; the last state."""
    deadline = time.monotonic() + within_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            outbox, unpublished, audited = await _outbox_state(conn)
            pending = await _pending(valkey_url)
            state = {
                "outbox_events": len(outbox),
                "unpublished": unpublished,
                "audited": len(audited),
                "missing_from_audit": sorted(outbox - audited)[:10],
                "audited_not_in_outbox": sorted(audited - outbox)[:10],
                "pending_in_group": pending,
            }
            if (unpublished == 0 and outbox == audited and pending == 0) or (
                time.monotonic() > deadline
            ):
                state["caught_up_s"] = round(within_s - (deadline - time.monotonic()), 2)
                return state
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def verify(dsn: str, valkey_url: str, ledger: Ledger) -> dict[str, Any]:
    """Every invariant of the module docstring; a dict of violations (all empty when sound)."""
    caught_up = await wait_caught_up(dsn, valkey_url)
    conn = await asyncpg.connect(dsn)
    try:
        rows = {
            str(r["id"]): (r["display_name"], r["version"])
            for r in await conn.fetch("SELECT id, display_name, version FROM users.users")
        }
        counts = {
            (str(r["subject"]), r["type"]): r["n"]
            for r in await conn.fetch(
                "SELECT subject, type, count(*) AS n FROM audit.events"
                " WHERE type LIKE 'user.%' GROUP BY subject, type"
            )
        }
    finally:
        await conn.close()
    missing = sorted(set(ledger.acked) - set(rows))
    stale = {
        uid: {"db": rows[uid][0], "acked": name, "uncertain": ledger.uncertain.get(uid, [])}
        for uid, name in ledger.acked.items()
        if uid in rows and rows[uid][0] not in (name, *ledger.uncertain.get(uid, []))
    }
    audit_mismatch = {
        uid: {
            "version": version,
            "created": counts.get((uid, "user.created"), 0),
            "updated": counts.get((uid, "user.updated"), 0),
        }
        for uid, (_, version) in rows.items()
        if counts.get((uid, "user.created"), 0) != 1
        or counts.get((uid, "user.updated"), 0) != version - 1
    }
    return {
        "caught_up": caught_up,
        "users_rows": len(rows),
        "acked_missing": missing,
        "acked_stale": stale,
        "audit_mismatch": dict(list(audit_mismatch.items())[:10]),
    }


def problems(verified: dict[str, Any]) -> list[str]:
    """The violated invariants, in words (empty: all hold)."""
    found = []
    up = verified["caught_up"]
    if up["unpublished"] or up["missing_from_audit"] or up["audited_not_in_outbox"]:
        found.append("outbox and audit.events differ, or outbox rows unpublished")
    if up["pending_in_group"]:
        found.append("entries still pending in the consumer group")
    if verified["acked_missing"]:
        found.append("acknowledged creates missing")
    if verified["acked_stale"]:
        found.append("acknowledged patches lost")
    if verified["audit_mismatch"]:
        found.append("a committed change without exactly one audit record")
    return found
