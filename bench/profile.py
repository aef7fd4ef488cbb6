"""``python -m bench.profile``: two builds of the cached-GET path side by side, and flame graphs.

The regular bench (``python -m bench``) compares the gateway with baselines; this one compares
*code*: a copy of the users service + gateway per **variant**, each variant its own source tree,
all sharing one stack's PostgreSQL, Valkey and auth service (started as ``make run`` does, on
free ports, limits off as in :data:`bench.harness.STACK_ENV`). A variant is ``name=DIR``, where
``DIR`` holds ``gateway/src``, ``libs/common/src`` and ``services/users/src`` (a copy of the
tree taken before a change), put first on ``PYTHONPATH``; ``name=`` (empty) is the working tree.
So a before/after pair is measured in one run, on the same machine noise::

    mkdir -p /tmp/base && for d in gateway/src libs/common/src services/users/src; do
      mkdir -p /tmp/base/$d && cp -a $d/. /tmp/base/$d/; done   # before editing
    .venv/bin/python -m bench.profile --variant before=/tmp/base --variant after= \\
        --rounds 6 --duration 3 --concurrency 1,16

Cells run interleaved (A B, then B A, …) and the table shows per-variant medians: req/s, p50,
p99 and CPU µs per request of each process (from ``/proc``, psutil). ``--profile NAME`` then
drives NAME's gateway at ``--profile-concurrency`` while ``py-spy record`` samples its gateway
and users processes (py-spy is not a project dependency: install it in its own virtualenv, e.g.
``python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy``, and pass ``--py-spy``;
root, or ptrace permission, is needed). It writes speedscope files and prints the top frames by
self time and by total time, from py-spy's collapsed-stack output.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc

from bench import startup, wrk
from bench.harness import REPO, STACK_ENV, environment, need, say
from bench.procstats import Watched, cpu_us_per_request
from bench.tokens import Tokens
from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_devstack.config import DevSettings
from portico_devstack.launcher import Stack

DATA = REPO / ".data" / "profile"
SOURCES = ("gateway/src", "libs/common/src", "services/users/src")


@dataclass
class Variant:
    name: str
    root: Path | None  # None: the working tree
    env: dict[str, str] = field(default_factory=dict)  # extra environment of its processes
    users_port: int = 0
    gateway_port: int = 0
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def pythonpath(self) -> str:
        if self.root is None:
            return os.environ.get("PYTHONPATH", "")
        paths = [str(self.root / s) for s in SOURCES]
        for path in paths:
            if not Path(path).is_dir():
                raise SystemExit(f"variant {self.name}: {path} is missing")
        return os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def _variant(text: str) -> Variant:
    """``NAME=DIR[,KEY=VALUE...]``: a source tree (empty: the working tree) and environment."""
    name, _, rest = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError("a variant is NAME=DIR (DIR empty: the working tree)")
    root, *pairs = rest.split(",")
    env = dict(pair.split("=", 1) for pair in pairs)
    return Variant(name, Path(root).resolve() if root else None, env)


async def start_variant(stack: Stack, variant: Variant, log: IO[str]) -> None:
    """The variant's users service and gateway, on free ports, against the stack's backends."""
    children = {c.name: c for c in stack.children}
    env_extra = {"PYTHONPATH": variant.pythonpath()} if variant.root is not None else {}
    env_extra |= variant.env
    variant.users_port = startup.free_port()
    users_env = (
        children["users"].env
        | env_extra
        | {
            "USERS_GRPC_PORT": str(variant.users_port),
            "USERS_METRICS_PORT": str(startup.free_port()),
            "USERS_SHUTDOWN_DELAY_S": "0",
        }
    )
    proc = await startup.spawn(children["users"].argv, env=users_env, log=log, cwd=REPO)
    variant.procs["users"] = proc
    await startup.wait_ready(proc, startup.grpc_serving(variant.users_port), 60)
    variant.gateway_port = startup.free_port()
    gateway_env = (
        children["gateway"].env
        | env_extra
        | {
            "GATEWAY_PORT": str(variant.gateway_port),
            "GATEWAY_USERS_TARGET": f"127.0.0.1:{variant.users_port}",
        }
    )
    proc = await startup.spawn(children["gateway"].argv, env=gateway_env, log=log, cwd=REPO)
    variant.procs["gateway"] = proc
    await startup.wait_ready(proc, startup.http_ok(f"{variant.url}/readyz"), 60)


@dataclass
class Cell:
    variant: str
    concurrency: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: dict[str, float]


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def table(cells: list[Cell], variants: list[Variant], concurrency: tuple[int, ...]) -> str:
    head = "| variant | c | rounds | req/s | p50 ms | p99 ms | errors | gw µs/req | users µs/req"
    head += " | vk µs/req | req/s each round |"
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for c in concurrency:
        for v in variants:
            mine = [x for x in cells if x.variant == v.name and x.concurrency == c]
            if not mine:
                continue
            rounds = " ".join(f"{x.rps:.0f}" for x in mine)
            lines.append(
                f"| {v.name} | {c} | {len(mine)} | {_median([x.rps for x in mine]):,.0f} "
                f"| {_median([x.p50_ms for x in mine]):.2f} "
                f"| {_median([x.p99_ms for x in mine]):.2f} | {sum(x.errors for x in mine)} "
                f"| {_median([x.cpu['gateway'] for x in mine]):,.0f} "
                f"| {_median([x.cpu['users'] for x in mine]):,.0f} "
                f"| {_median([x.cpu['valkey'] for x in mine]):,.0f} | {rounds} |"
            )
    return "\n".join(lines)


def _function(frame: str) -> str:
    """``name (file:line)`` → ``name (file)``: one function, whatever line was sampled."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if name else frame


def top_frames(raw: Path, limit: int) -> str:
    """Top functions of a py-spy ``--format raw`` file (collapsed stacks) by self and total time.

    Samples whose leaf is the event loop waiting (``select``/``epoll``) are idle, and are
    reported apart: percentages are of the busy samples.
    """
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        if frames[-1].split(" (")[0].endswith(("select", "poll", "Thread.run", "wait")):
            idle += count
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    out = [f"{raw.name}: {samples} busy samples ({idle} idle or other threads)"]
    for title, counter in (("self", own), ("total", total)):
        out.append(f"  top by {title} time (% of busy samples):")
        for frame, count in counter.most_common(limit):
            out.append(f"    {100 * count / max(samples, 1):5.1f}%  {frame}")
    return "\n".join(out)


async def py_spy_record(
    py_spy: str, pid: int, out: Path, duration_s: int, fmt: str, *, native: bool
) -> asyncio.subprocess.Process:
    argv = [
        py_spy, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", "250",
        "--format", fmt, "--output", str(out),
    ]  # fmt: skip
    # --nonblocking reads the stacks without stopping the process (less perturbation), but
    # py-spy can only unwind native (C, Cython) frames of a stopped one.
    argv.append("--native" if native else "--nonblocking")
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def run(args: argparse.Namespace) -> int:
    variants: list[Variant] = args.variant or [Variant("working-tree", None)]
    log_path = DATA / "profile.log"
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
    with log_path.open("w") as log, contextlib.redirect_stdout(log):
        try:
            with environment(STACK_ENV):
                await stack.start()
            for v in variants:
                await start_variant(stack, v, log)
                say(f"variant {v.name}: gateway {v.url}, users :{v.users_port}, root {v.root}")
            valkey = need(stack.valkey, "Valkey")
            tokens = Tokens(stack.gateway_url, os.urandom(4).hex(), min_left_s=600)
            await tokens.start()
            owner = tokens.logins["owner"].user_id
            async with grpc.aio.insecure_channel(stack.users_target) as channel:
                stub = users_pb2_grpc.UserServiceStub(channel)
                await stub.GetUser(
                    users_pb2.GetUserRequest(id=owner), metadata=tokens.metadata("owner")
                )
            path = f"/v1/users/{owner}"
            cells: list[Cell] = []
            for v in variants:  # warm-up: imports, caches, JIT-free but lazy paths
                await wrk.run(
                    v.url + path, connections=16, duration_s=args.warmup,
                    headers=tokens.header("owner"),
                )  # fmt: skip
            for c in args.concurrency:
                for rnd in range(args.rounds):
                    order = variants if rnd % 2 == 0 else list(reversed(variants))
                    for v in order:
                        await tokens.fresh()
                        procs = Watched()
                        procs.add("gateway", v.procs["gateway"].pid)
                        procs.add("users", v.procs["users"].pid)
                        procs.add("valkey", valkey.pid)
                        before = procs.sample()
                        load = await wrk.run(
                            v.url + path,
                            connections=c,
                            duration_s=args.duration,
                            headers=tokens.header("owner"),
                        )
                        after = procs.sample()
                        cpu = cpu_us_per_request(before, after, load.requests)
                        cell = Cell(
                            v.name, c, rnd, load.rps, load.p50_ms, load.p99_ms, load.errors, cpu
                        )
                        cells.append(cell)
                        say(
                            f"{v.name:<14} c={c:<3} r{rnd} {load.rps:>7.0f} req/s "
                            f"p50 {load.p50_ms:.2f} ms p99 {load.p99_ms:.2f} ms "
                            f"gw {cpu['gateway']:.0f} µs users {cpu['users']:.0f} µs "
                            f"errors {load.errors}"
                        )
            if cells:
                print(table(cells, variants, args.concurrency), file=out, flush=True)
                if args.json:
                    args.json.write_text(json.dumps([c.__dict__ for c in cells], indent=1))
            for name in args.profile.split(",") if args.profile else ():
                await profile(args, name, variants, tokens, path, out)
        finally:
            for v in variants:
                for proc in reversed(v.procs.values()):
                    await startup.terminate(proc)
            await stack.stop()
    return 0


async def profile(
    args: argparse.Namespace,
    name: str,
    variants: list[Variant],
    tokens: Tokens,
    path: str,
    out: IO[str],
) -> None:
    chosen = next((v for v in variants if v.name == name), None)
    if chosen is None:
        raise SystemExit(f"--profile {name}: no such variant")
    if not args.py_spy:
        raise SystemExit("--profile needs --py-spy PATH (py-spy in its own virtualenv)")
    out_dir: Path = args.out
    seconds = max(2, round(args.profile_duration))
    await tokens.fresh()
    recorders: list[tuple[Path, asyncio.subprocess.Process]] = []
    for process in ("gateway", "users"):
        pid = need(chosen.procs[process].pid, process)
        for fmt, suffix in (("speedscope", "speedscope.json"), ("raw", "txt")):
            target = out_dir / f"{chosen.name}-{process}.{suffix}"
            recorder = await py_spy_record(
                args.py_spy, pid, target, seconds, fmt, native=args.native
            )
            recorders.append((target, recorder))
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    load = await wrk.run(
        chosen.url + path,
        connections=args.profile_concurrency,
        duration_s=seconds + 1,
        headers=tokens.header("owner"),
    )
    say(
        f"profiled {chosen.name} c={args.profile_concurrency}: {load.rps:.0f} req/s under py-spy "
        f"({time.perf_counter() - started:.1f} s)"
    )
    for target, proc in recorders:
        _, err = await proc.communicate()
        if proc.returncode != 0:
            say(f"py-spy for {target.name} failed: {err.decode()[-400:]}")
    for target, _ in recorders:
        if target.suffix == ".txt" and target.exists():
            print(top_frames(target, args.top), file=out, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description="Cached GET through the gateway: variants (source trees) interleaved, "
        "CPU per process, optional py-spy flame graphs.",
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=_variant,
        help="NAME=DIR[,KEY=VALUE...] (DIR empty: working tree)",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--concurrency", type=lambda s: tuple(int(x) for x in s.split(",") if x), default=(1, 16)
    )
    parser.add_argument("--json", type=Path, help="write every cell here")
    parser.add_argument(
        "--profile", help="variants to sample with py-spy after the cells (NAME[,NAME...])"
    )
    parser.add_argument("--py-spy", help="path of the py-spy binary")
    parser.add_argument("--profile-duration", type=float, default=10.0)
    parser.add_argument("--profile-concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument(
        "--analyze", type=Path, nargs="+", help="only summarize py-spy raw files, run nothing"
    )
    parser.add_argument("--out", type=Path, default=DATA.parent / "profiles")
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.analyze:
        for raw in args.analyze:
            print(top_frames(raw, args.top))
        return
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
