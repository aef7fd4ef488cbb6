"""``python -m bench.idle_rss``: idle memory of each Python process, for source trees side by side.

``make bench`` reads each process's RSS once, after the run's seeding (``rss_mb.idle``). This
one compares *code and environment*: for each **variant** it starts its own users, auth, audit
and gateway processes (as ``make run`` starts them, on free ports, wired to one another) against
one stack's PostgreSQL and Valkey, warms them through the variant's gateway (sign-up, logins, a
few creates, list pages, the audit log, ``--requests`` cached GETs), lets them settle, and reads
``/proc/<pid>/smaps_rollup`` (:func:`bench.procstats.memory`): RSS, PSS, anonymous and
file-backed pages, threads. A variant is ``NAME=DIR[,KEY=VALUE...]`` as in :mod:`bench.profile`,
where ``DIR`` holds a copy of every service's ``src`` (:data:`SOURCES`; empty: the working
tree), and ``KEY=VALUE`` pairs are added to all four processes' environment::

    mkdir -p /tmp/base && for d in gateway/src services/{common,users,auth,audit}/src; do
      mkdir -p /tmp/base/$d && cp -a $d/. /tmp/base/$d/; done   # before editing
    .venv/bin/python -m bench.idle_rss --variant before=/tmp/base --variant after= \\
        --variant arena2=,MALLOC_ARENA_MAX=2 --rounds 2

Rounds run the variants interleaved (A B, then B A), one variant's processes at a time, and
the table shows per-variant medians. Everything listens on 127.0.0.1; only processes started
here are stopped, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import httpx

from bench import startup
from bench.harness import REPO, STACK_ENV, environment, say
from bench.procstats import Memory, memory
from bench.tokens import Tokens
from portico_devstack.config import DevSettings
from portico_devstack.launcher import Stack

DATA = REPO / ".data" / "idle-rss"
SOURCES = (
    "gateway/src",
    "libs/common/src",
    "services/users/src",
    "services/auth/src",
    "services/audit/src",
)
PROCESSES = ("users", "auth", "audit", "gateway")


@dataclass
class Variant:
    name: str
    root: Path | None  # None: the working tree
    env: dict[str, str] = field(default_factory=dict)

    def pythonpath(self) -> str:
        inherited = os.environ.get("PYTHONPATH", "")
        if self.root is None:
            return inherited
        paths = [str(self.root / s) for s in SOURCES]
        for path in paths:
            if not Path(path).is_dir():
                raise SystemExit(f"variant {self.name}: {path} is missing")
        return os.pathsep.join([*paths, inherited]).rstrip(os.pathsep)


def _variant(text: str) -> Variant:
    """``NAME=DIR[,KEY=VALUE...]``: a source tree (empty: the working tree) and environment."""
    name, _, rest = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError("a variant is NAME=DIR (DIR empty: the working tree)")
    root, *pairs = rest.split(",")
    env = dict(pair.split("=", 1) for pair in pairs)
    return Variant(name, Path(root).resolve() if root else None, env)


@dataclass
class Sample:
    variant: str
    round: int
    process: str
    ready_s: float
    at_ready: Memory
    idle: Memory


async def run_variant(
    stack: Stack, variant: Variant, rnd: int, args: argparse.Namespace, log: IO[str]
) -> list[Sample]:
    """Start the variant's four processes, warm them, read their memory, stop them."""
    children = {c.name: c for c in stack.children}
    ports = {name: startup.free_port() for name in PROCESSES}
    target = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    extra = variant.env | ({"PYTHONPATH": variant.pythonpath()} if variant.root else {})
    envs = {
        "users": {
            "USERS_GRPC_PORT": str(ports["users"]),
            "USERS_METRICS_PORT": str(startup.free_port()),
            "USERS_SHUTDOWN_DELAY_S": "0",
            "USERS_AUTH_TARGET": target["auth"],
        },
        "auth": {
            "AUTH_GRPC_PORT": str(ports["auth"]),
            "AUTH_METRICS_PORT": str(startup.free_port()),
            "AUTH_SHUTDOWN_DELAY_S": "0",
            "AUTH_USERS_TARGET": target["users"],
        },
        "audit": {
            "AUDIT_GRPC_PORT": str(ports["audit"]),
            "AUDIT_METRICS_PORT": str(startup.free_port()),
            "AUDIT_SHUTDOWN_DELAY_S": "0",
            "AUDIT_AUTH_TARGET": target["auth"],
        },
        "gateway": {
            "GATEWAY_PORT": str(ports["gateway"]),
            "GATEWAY_SHUTDOWN_DELAY_S": "0",
            "GATEWAY_USERS_TARGET": target["users"],
            "GATEWAY_AUTH_TARGET": target["auth"],
            "GATEWAY_AUDIT_TARGET": target["audit"],
        },
    }
    url = f"http://127.0.0.1:{ports['gateway']}"
    procs: dict[str, asyncio.subprocess.Process] = {}
    ready_s: dict[str, float] = {}
    at_ready: dict[str, Memory] = {}
    try:
        for name in PROCESSES:
            child = children[name]
            probe = (
                startup.http_ok(f"{url}/readyz")
                if name == "gateway"
                else startup.grpc_serving(ports[name])
            )
            started = time.perf_counter()
            proc = await startup.spawn(
                child.argv, env=child.env | envs[name] | extra, log=log, cwd=REPO
            )
            procs[name] = proc
            await startup.wait_ready(proc, probe, 60)
            ready_s[name] = time.perf_counter() - started
            at_ready[name] = memory(proc.pid)
        await warm(url, args.requests)
        await asyncio.sleep(args.settle)
        return [
            Sample(variant.name, rnd, name, ready_s[name], at_ready[name], memory(procs[name].pid))
            for name in PROCESSES
        ]
    finally:
        for proc in reversed(procs.values()):
            await startup.terminate(proc)


async def warm(url: str, requests: int) -> None:
    """What a process has done by the time ``make bench`` reads ``rss_mb.idle``, in small.

    Sign-up and logins (auth, Argon2), creates (users, the outbox, audit's consumer), list
    pages, the audit log, then ``requests`` cached GETs of the owner's own account, 8 at a time.
    """
    tokens = Tokens(url, uuid.uuid4().hex[:8], min_left_s=60)
    await tokens.start()
    owner = tokens.logins["owner"].user_id
    admin, mine = tokens.header("admin"), tokens.header("owner")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for i in range(20):
            body = {"email": f"idle-{uuid.uuid4().hex[:12]}@example.com", "display_name": f"I {i}"}
            created = await client.post("/v1/users", json=body, headers=admin)
            created.raise_for_status()
        for _ in range(3):
            page = await client.get("/v1/users", params={"page_size": 20}, headers=admin)
            page.raise_for_status()
        (await client.get("/v1/audit/events", headers=admin)).raise_for_status()

        async def reader(n: int) -> None:
            for _ in range(n):
                (await client.get(f"/v1/users/{owner}", headers=mine)).raise_for_status()

        await asyncio.gather(*(reader(requests // 8) for _ in range(8)))


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def table(samples: list[Sample], variants: list[Variant]) -> str:
    lines = [
        "| process | variant | rounds | ready s | RSS at ready | idle RSS | idle PSS | anon "
        "| file | threads |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in PROCESSES:
        for v in variants:
            mine = [s for s in samples if s.variant == v.name and s.process == name]
            if not mine:
                continue
            lines.append(
                f"| {name} | {v.name} | {len(mine)} | {_median([s.ready_s for s in mine]):.2f} "
                f"| {_median([s.at_ready.rss for s in mine]):.1f} "
                f"| {_median([s.idle.rss for s in mine]):.1f} "
                f"| {_median([s.idle.pss for s in mine]):.1f} "
                f"| {_median([s.idle.anon for s in mine]):.1f} "
                f"| {_median([s.idle.file for s in mine]):.1f} "
                f"| {max(s.idle.threads for s in mine)} |"
            )
    return "\n".join(lines) + "\n(MiB; medians over rounds; threads: the most seen)"


async def run(args: argparse.Namespace) -> int:
    variants: list[Variant] = args.variant or [Variant("working-tree", None)]
    settings = DevSettings().model_copy(
        update={
            "data_dir": DATA / "stack",
            "host": "127.0.0.1",
            "valkey_port": 0,
            "database_url": None,
            "valkey_url": None,
            **{
                n: startup.free_port()
                for n in DevSettings.model_fields
                if n.endswith("_port") and n != "valkey_port"
            },
        }
    )
    stack = Stack(settings)
    out = sys.stdout  # the launcher relays its children's lines to stdout: keep them in the log
    samples: list[Sample] = []
    with (DATA / "idle_rss.log").open("w") as log, contextlib.redirect_stdout(log):
        try:
            with environment(STACK_ENV):
                await stack.start()
            for rnd in range(args.rounds):
                order = variants if rnd % 2 == 0 else list(reversed(variants))
                for v in order:
                    mine = await run_variant(stack, v, rnd, args, log)
                    samples += mine
                    say(
                        f"r{rnd} {v.name:<14} "
                        + " ".join(f"{s.process} {s.idle.rss:.1f}" for s in mine)
                        + " MiB idle RSS"
                    )
        finally:
            await stack.stop()
    print(table(samples, variants), file=out, flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle_rss",
        description="Idle RSS of users, auth, audit and gateway processes per variant "
        "(source tree + environment), warmed the same way, interleaved rounds.",
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=_variant,
        help="NAME=DIR[,KEY=VALUE...] (DIR empty: working tree)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000, help="cached GETs while warming")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading")
    parser.add_argument("--json", type=Path, help="write every sample here")
    return parser


def main() -> None:
    args = _parser().parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
