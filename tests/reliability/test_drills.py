"""Fault drills: a fault in the middle of a steady load, then the data is checked.

Each drill runs :class:`~tests.reliability.load.Load` (40 requests/s for 10 s: at most 400
requests, all to 127.0.0.1) against its own :class:`~tests.reliability.stack.DrillStack`,
applies its fault 3 s in, and then asserts:

* the counts (see :mod:`tests.reliability.load` for what each class means): for a backend
  outage, (a) Valkey and (b) PostgreSQL, every request that did not succeed was refused cleanly
  and retryably (``failed`` = 0), and none did after ``RECOVERY_S`` once the backend was back;
  during (a) every read succeeds (served from PostgreSQL, sessions in degraded mode); for (c)
  a rolling restart of the users service, (d) a SIGKILLed audit consumer and (e) a rolling
  restart of the gateway (the new one joins the port with ``SO_REUSEPORT``, then the old one
  gets SIGTERM), no request the stack accepted failed (``failed`` = 0), and for (c) and (e) no
  connection was refused (``refused`` = 0; (e) allows one ``unaccepted``, see the drill);
* the data (:mod:`tests.reliability.checks`): every acknowledged write is in PostgreSQL with its
  last acknowledged value, and every committed change has exactly one audit record.

The counts and checks are printed (``pytest -s``) and written to ``drill-<name>.json`` in the
test's folder; assertion messages carry them too.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import valkey.asyncio as valkey_asyncio

from tests.reliability.checks import GROUP, STREAM, problems, verify
from tests.reliability.load import Load
from tests.reliability.stack import DrillStack

FAULT_AT_S = 3.0
#: After the backend is back, every request started this much later succeeds.
RECOVERY_S = 3.0


async def drill(
    name: str,
    stack: DrillStack,
    tmp_path: Path,
    fault: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run the load, apply ``fault`` at ``FAULT_AT_S``, verify; the report (also printed/saved)."""
    load = Load(stack.base_url, await stack.admin_token())
    running = asyncio.create_task(load.run())
    await asyncio.sleep(FAULT_AT_S)
    started = load.elapsed()
    fault_report = await fault()
    fault_report = {"at_s": round(started, 2), "done_s": round(load.elapsed(), 2)} | fault_report
    await running
    logs = "".join(p.read_text(errors="replace") for p in stack.root.glob("gateway-*.log"))
    load.reclassify_unaccepted(logs)
    report = {
        "drill": name,
        "fault": fault_report,
        "load": load.summary(),
        "checks": await verify(stack.dsn, stack.valkey_url, load.ledger),
    }
    text = json.dumps(report, indent=2, default=str)
    (tmp_path / f"drill-{name}.json").write_text(text)
    print(f"\n=== drill {name} ===\n{text}")  # noqa: T201 (pytest -s shows the counts)
    return report


def assert_sound(report: dict[str, Any]) -> None:
    counts = {
        k: report["load"][k]
        for k in ("sent", "succeeded", "retryable", "refused", "unaccepted", "failed")
    }
    assert report["load"]["failed"] == 0, f"{counts}: {report['load']['failures']}"
    found = problems(report["checks"])
    assert not found, f"{found}: {json.dumps(report['checks'], default=str)}"
    assert report["load"]["acknowledged_creates"] > 0, counts


def assert_recovered(report: dict[str, Any], back_s: float, logs: Path) -> None:
    last = report["load"]["last_not_ok_s"]
    assert last is None or last <= back_s + RECOVERY_S, (
        f"requests still failing {last} s into the load, backend back at {back_s} s: "
        f"{report['load']['by_kind_and_status']}; the last ones: "
        f"{json.dumps(report['load']['last_not_ok'])}; their log lines:\n"
        + log_lines(logs, {r["request_id"] for r in report["load"]["last_not_ok"]})
    )


def log_lines(folder: Path, request_ids: set[str], limit: int = 40) -> str:
    """The lines of the stack's logs in ``folder`` that name one of ``request_ids``."""
    found = [
        f"{path.name}: {line[:600]}"
        for path in sorted(folder.glob("*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if any(rid in line for rid in request_ids)
    ]
    return "\n".join(found[-limit:])


async def until_valkey_takes_writes(url: str, within_s: float = 60.0) -> None:
    client: Any = valkey_asyncio.from_url(url, socket_timeout=5)  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + within_s
    try:
        while True:
            try:
                await client.set("portico:drill:probe", "1", ex=60)
                return
            except Exception:  # loading its data (LOADING), or not listening yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_valkey_killed_and_restarted(stack: DrillStack, tmp_path: Path) -> None:
    async def fault() -> dict[str, Any]:
        stack.kill_valkey()
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.start_valkey)
        # "Back" is when Valkey takes a write again (it has replayed its append-only file), not
        # when its process answers PING: on a busy machine the replay alone took seconds, and
        # the recovery bound is the stack's, not Valkey's loading time.
        await until_valkey_takes_writes(stack.valkey_url)
        return {"what": "SIGKILL Valkey, 2 s down, restart on the same port and AOF data"}

    report = await drill("valkey", stack, tmp_path, fault)
    assert_sound(report)
    assert_recovered(report, report["fault"]["done_s"], stack.root)
    # The cache is an optimization and the session store's degraded mode accepts signed tokens
    # for reads: no read may fail while Valkey is away.
    reads = {k: n for k, n in report["load"]["by_kind_and_status"].items() if k.startswith("read")}
    assert set(reads) == {"read 200"}, reads


async def test_postgres_restarted(stack: DrillStack, tmp_path: Path) -> None:
    async def fault() -> dict[str, Any]:
        await asyncio.to_thread(stack.restart_postgres)
        return {"what": "pg_ctl restart -m fast (connections cut, server back on its socket)"}

    report = await drill("postgres", stack, tmp_path, fault)
    assert_sound(report)
    assert_recovered(report, report["fault"]["done_s"], stack.root)


async def test_users_rolling_restart(stack: DrillStack, tmp_path: Path) -> None:
    old = stack.services["users"]

    async def fault() -> dict[str, Any]:
        # The new process binds the same port (gRPC servers set SO_REUSEPORT), then the old one
        # drains: the gateway's channel reconnects to whichever listener the kernel picks.
        new = await stack.start_service("users", ready_on_log="users service listening on")
        old.signal(signal.SIGTERM)
        code = await old.wait(15)
        return {
            "what": "start a second users process, then SIGTERM the first",
            "old_exit_code": code,
            "new_running": new.running,
        }

    report = await drill("users-rolling-restart", stack, tmp_path, fault)
    assert report["fault"]["old_exit_code"] == 0, report["fault"]
    assert_sound(report)
    load = report["load"]
    assert load["refused"] == load["unaccepted"] == 0, load


async def test_audit_consumer_killed_mid_stream(stack: DrillStack, tmp_path: Path) -> None:
    dead = stack.services["audit"]
    dead_name = dead.env["AUDIT_CONSUMER__NAME"]

    async def fault() -> dict[str, Any]:
        dead.signal(signal.SIGKILL)
        await dead.wait(5)
        await asyncio.sleep(1.0)  # events pile up in the stream with no consumer running
        client = valkey_asyncio.Valkey.from_url(stack.valkey_url)
        try:
            # The dead consumer's unfinished batch: a kill between XREADGROUP and XACK leaves
            # entries pending with it. The audit consumer drains its batch in milliseconds, so
            # the kill alone rarely lands there; read the waiting entries under its name (what
            # it would have read next) so the successor must take them over with XAUTOCLAIM.
            await client.xreadgroup(GROUP, dead_name, {STREAM: ">"}, count=50)
            consumers = await client.xinfo_consumers(STREAM, GROUP)
        finally:
            await client.aclose()
        pending = {c["name"].decode(): int(c["pending"]) for c in consumers}
        await stack.start_service("audit")
        return {
            "what": "SIGKILL the audit process mid-batch, start another (new consumer name)",
            "dead_consumer": dead_name,
            "pending_per_consumer_at_kill": pending,
        }

    report = await drill("audit-consumer-kill", stack, tmp_path, fault)
    assert report["fault"]["pending_per_consumer_at_kill"].get(dead_name, 0) > 0, report["fault"]
    assert_sound(report)


async def test_gateway_sigterm(stack: DrillStack, tmp_path: Path) -> None:
    old = stack.services["gateway"]

    async def fault() -> dict[str, Any]:
        # As a Deployment's rolling update does (maxSurge): the new gateway is up on the same
        # port (GATEWAY_REUSE_PORT) before the old one gets SIGTERM, drains and exits.
        started = time.monotonic()
        new = await stack.start_service("gateway", ready_on_log="listening on http://")
        ready_s = time.monotonic() - started
        old.signal(signal.SIGTERM)
        code = await old.wait(15)
        return {
            "what": "start a second gateway on the same port (SO_REUSEPORT), SIGTERM the first",
            "new_ready_s": round(ready_s, 2),
            "old_exit_code": code,
            "new_running": new.running,
        }

    report = await drill("gateway-sigterm", stack, tmp_path, fault)
    assert report["fault"]["old_exit_code"] == 0, report["fault"]
    assert report["fault"]["new_running"], report["fault"]
    assert_sound(report)
    load = report["load"]
    # A listener always exists, so no connection is refused. A closing listener resets what
    # sits in its own accept queue (Linux, without net.ipv4.tcp_migrate_req), and uvicorn's stop
    # closed accepted connections whose request had not been read yet: up to 7 lost on a busy
    # machine. The gateway now takes its accept queue just before closing the listener and
    # answers a fresh connection's request (portico_gateway.__main__, .edge); what remains is
    # the microseconds between that last accept and the close.
    assert load["refused"] == 0, load
    assert load["unaccepted"] <= 1, load
