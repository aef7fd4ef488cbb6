"""GetUser in five server layouts, measured A/B in one run: ``python -m bench.server_models``.

The question (performance issue): a synchronous ``grpc.server`` with a thread pool served more
calls than grpc.aio on one core; would another layout serve our servicer better? This starts the
same minimal GetUser servicer in each layout and loads them in interleaved rounds.

The servicer is the users service's cache hit, nothing else: ``HGET <prefix>user:<id> d`` in one
embedded Valkey (:class:`portico_devstack.backends.EmbeddedValkey`, as the bench harness uses),
the bytes parsed as ``portico.users.v1.User`` and answered in a ``GetUserResponse``, registered
with the generated ``add_UserServiceServicer_to_server``. No interceptors, no token check, no
telemetry: the difference between models is the server layout alone.

Models (each its own process on 127.0.0.1, all started once and alive for the whole run):

* ``a`` aio-uvloop: grpc.aio + uvloop + valkey.asyncio (what portico_users runs today);
* ``b`` aio-asyncio: the same on asyncio's default loop;
* ``c`` sync-pool: ``grpc.server(ThreadPoolExecutor(--workers))`` + the synchronous valkey client
  (its connection pool);
* ``d`` sync-loop-thread: the sync server whose handlers hand a coroutine to one background uvloop
  thread (``asyncio.run_coroutine_threadsafe``) using valkey.asyncio: the layout a sync server
  would need to keep asyncpg;
* ``e`` aio-uvloop-x2 (opt-in): two processes of ``a`` on one port (``grpc.so_reuseport``); the
  kernel spreads *connections* between them, so the client opens ``--channels`` connections.

Load: one client process per cell (``load`` below: grpc.aio on uvloop, ``--channels`` channels
with their own connections, ``--concurrency`` closed-loop callers, a short warm-up, then
``--duration`` s timed). It reads the server processes' and Valkey's CPU time from /proc at the
edges of the timed window, so CPU µs per call counts that window only. Pinned (the default on
2+ cores; ``--no-pin`` turns it off), every server runs on ``--server-cpus`` (one core: the
issue's "on one core") and the client and Valkey on the other cores, so a model's calls/s is
what one core serves, until the client saturates its core (``loadgen cores`` near 1: then read
CPU µs/call).

Rounds interleave the models (A B C D, then D C B A, ...) and both concurrencies, so drift
(±15-20 % within an hour here, NOTES.md) hits every model alike; the table shows medians over
rounds, the JSON every cell: ``bench/results/server-models-<timestamp>.json``.

Internal roles (started by the run): ``python -m bench.server_models serve MODEL ...`` and
``python -m bench.server_models load ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Iterator, Sequence
from concurrent import futures
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

import grpc
import psutil
import uvloop
import valkey
import valkey.asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from bench import startup
from bench.baselines import DEFAULT_KEY_PREFIX
from bench.grpc_load import percentile
from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_devstack.backends import EmbeddedValkey

REPO = Path(__file__).resolve().parent.parent
USER_ID = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Model:
    key: str
    name: str
    kind: str  # how `serve` runs it: aio-uvloop, aio-asyncio, sync-pool, sync-loop-thread
    processes: int = 1
    note: str = ""


MODELS: dict[str, Model] = {
    m.key: m
    for m in (
        Model("a", "aio-uvloop", "aio-uvloop", note="grpc.aio + uvloop + valkey.asyncio (today)"),
        Model("b", "aio-asyncio", "aio-asyncio", note="grpc.aio + default asyncio loop"),
        Model("c", "sync-pool", "sync-pool", note="grpc.server(ThreadPoolExecutor) + sync valkey"),
        Model(
            "d",
            "sync-loop-thread",
            "sync-loop-thread",
            note="sync grpc.server + one uvloop thread (run_coroutine_threadsafe) + valkey.asyncio",
        ),
        Model(
            "e", "aio-uvloop-x2", "aio-uvloop", 2, note="2 x (a) sharing the port (SO_REUSEPORT)"
        ),
    )
}
KINDS = ("aio-uvloop", "aio-asyncio", "sync-pool", "sync-loop-thread")


def say(message: str) -> None:
    sys.stderr.write(f"server-models | {message}\n")
    sys.stderr.flush()


def _cpus(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x.strip()}


def pin(cpus: set[int]) -> None:
    """Every thread of this process on ``cpus`` (threads started later inherit it)."""
    if not cpus:
        return
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of a process we started (Valkey) on ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def sample_user() -> users_pb2.User:
    """A user as the users service caches it (serialized ``portico.users.v1.User``)."""
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC))
    updated.FromDatetime(dt.datetime(2026, 11, 20, 9, 8, 7, 654321, tzinfo=dt.UTC))
    return users_pb2.User(
        id=USER_ID,
        email="ada.lovelace@example.com",
        display_name="Ada Lovelace",
        create_time=created,
        update_time=updated,
        etag="7",
    )


# ---------------------------------------------------------------------------- servers


class _AioServicer(users_pb2_grpc.UserServiceServicer):
    """GetUser from Valkey with valkey.asyncio (models a, b, e). Other RPCs: UNIMPLEMENTED."""

    def __init__(self, client: valkey.asyncio.Valkey, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def GetUser(  # noqa: N802 (the generated base class names it)
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> users_pb2.GetUserResponse:
        read = cast(
            "Awaitable[bytes | None]", self._client.hget(f"{self._prefix}user:{request.id}", "d")
        )
        data = await read
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not cached")
        return users_pb2.GetUserResponse(user=users_pb2.User.FromString(data))


class _SyncServicer(users_pb2_grpc.UserServiceServicer):
    """GetUser from Valkey with the synchronous client, in a pool thread (model c)."""

    def __init__(self, client: valkey.Valkey, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def GetUser(  # noqa: N802 (the generated base class names it)
        self, request: users_pb2.GetUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.GetUserResponse:
        data = cast("bytes | None", self._client.hget(f"{self._prefix}user:{request.id}", "d"))
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "not cached")
        return users_pb2.GetUserResponse(user=users_pb2.User.FromString(data))


class _BridgedServicer(users_pb2_grpc.UserServiceServicer):
    """GetUser in a pool thread that waits for a coroutine on one loop thread (model d)."""

    def __init__(
        self, client: valkey.asyncio.Valkey, prefix: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._loop = loop

    async def _read(self, user_id: str) -> bytes | None:
        read = cast(
            "Awaitable[bytes | None]", self._client.hget(f"{self._prefix}user:{user_id}", "d")
        )
        return await read

    def GetUser(  # noqa: N802 (the generated base class names it)
        self, request: users_pb2.GetUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.GetUserResponse:
        future = asyncio.run_coroutine_threadsafe(self._read(request.id), self._loop)
        data = future.result(CALL_TIMEOUT_S)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "not cached")
        return users_pb2.GetUserResponse(user=users_pb2.User.FromString(data))


def _bound(port: int, asked: int) -> None:
    if port != asked:
        raise SystemExit(f"could not bind 127.0.0.1:{asked}")


async def _serve_aio(port: int, valkey_url: str, prefix: str, *, reuseport: bool) -> None:
    client = valkey.asyncio.Valkey.from_url(valkey_url, socket_timeout=CALL_TIMEOUT_S)
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuseport))])
    # Only GetUser is written: the generated base answers UNIMPLEMENTED to the other RPCs at run
    # time, though its .pyi marks them abstract.
    servicer = _AioServicer(client, prefix)  # type: ignore[abstract]
    users_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    _bound(server.add_insecure_port(f"127.0.0.1:{port}"), port)
    await server.start()
    gc.collect()
    gc.freeze()  # as portico_users.server.serve does after start-up
    await server.wait_for_termination()


def _serve_sync(port: int, valkey_url: str, prefix: str, *, workers: int, bridged: bool) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 0)]
    )
    servicer: users_pb2_grpc.UserServiceServicer
    if bridged:
        loop = uvloop.new_event_loop()
        threading.Thread(target=loop.run_forever, name="valkey-loop", daemon=True).start()
        client = valkey.asyncio.Valkey.from_url(valkey_url, socket_timeout=CALL_TIMEOUT_S)
        servicer = _BridgedServicer(client, prefix, loop)  # type: ignore[abstract]
    else:
        sync_client = valkey.Valkey.from_url(
            valkey_url, socket_timeout=CALL_TIMEOUT_S, max_connections=workers
        )
        servicer = _SyncServicer(sync_client, prefix)  # type: ignore[abstract]
    users_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    _bound(server.add_insecure_port(f"127.0.0.1:{port}"), port)
    server.start()
    gc.collect()
    gc.freeze()
    server.wait_for_termination()


def serve(args: argparse.Namespace) -> None:
    """One server process; SIGTERM (the default action) ends it."""
    pin(_cpus(args.cpus))
    if args.kind == "aio-uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(
                _serve_aio(args.port, args.valkey_url, args.prefix, reuseport=args.reuseport)
            )
    elif args.kind == "aio-asyncio":
        asyncio.run(_serve_aio(args.port, args.valkey_url, args.prefix, reuseport=args.reuseport))
    else:
        bridged = args.kind == "sync-loop-thread"
        _serve_sync(args.port, args.valkey_url, args.prefix, workers=args.workers, bridged=bridged)


# ---------------------------------------------------------------------------- load


def _cpu_s(pids: Sequence[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        out[pid] = t.user + t.system
    return out


async def drive(
    target: str,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    channels: int,
    server_pids: Sequence[int],
    valkey_pid: int | None,
) -> dict[str, Any]:
    """Closed-loop GetUser calls; latencies and the processes' CPU over the timed window only."""
    n = max(1, min(channels, concurrency))
    # A local subchannel pool per channel: each opens its own connection (SO_REUSEPORT spreads
    # connections, not calls), instead of all sharing one.
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.aio.insecure_channel(target, options=opts) for _ in range(n)]
    request = users_pb2.GetUserRequest(id=USER_ID)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    try:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 5) for c in chans))
        stubs = [users_pb2_grpc.UserServiceStub(c) for c in chans]

        async def worker(i: int, until: float, record: bool) -> None:
            stub = stubs[i % n]
            while (start := time.perf_counter()) < until:
                try:
                    await stub.GetUser(request, timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    continue
                if record:
                    latencies.append(time.perf_counter() - start)

        async def run(seconds: float, record: bool) -> None:
            until = time.perf_counter() + seconds
            await asyncio.gather(*(worker(i, until, record) for i in range(concurrency)))

        await run(warmup_s, False)
        warmup_errors = dict(errors)
        errors.clear()
        watched = [*server_pids, *([valkey_pid] if valkey_pid else [])]
        before, cpu0, t0 = _cpu_s(watched), time.process_time(), time.perf_counter()
        await run(duration_s, True)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = _cpu_s(watched)
    finally:
        await asyncio.gather(*(c.close() for c in chans))
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "duration_s": elapsed,
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
        "warmup_errors": warmup_errors,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else 0.0,
        "max_ms": ms[-1] if ms else 0.0,
        "loadgen_cpu_s": cpu,
        "server_cpu_s": {str(p): after[p] - before[p] for p in server_pids},
        "valkey_cpu_s": after[valkey_pid] - before[valkey_pid] if valkey_pid else 0.0,
        "connections": n,
    }


def load(args: argparse.Namespace) -> None:
    pin(_cpus(args.cpus))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(
            drive(
                args.target,
                concurrency=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                channels=args.channels,
                server_pids=[int(p) for p in args.server_pids.split(",")],
                valkey_pid=args.valkey_pid,
            )
        )
    sys.stdout.write(json.dumps(result) + "\n")


# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = 3.0
    warmup_s: float = 1.0
    cell_warmup_s: float = 0.3
    rounds: int = 4
    concurrency: tuple[int, ...] = (1, 16)
    models: tuple[str, ...] = ("a", "b", "c", "d")
    workers: int = 16
    channels: int = 4
    pin: bool = True
    server_cpus: tuple[int, ...] = (0,)


@dataclass(slots=True)
class Cell:
    model: str
    concurrency: int
    round: int
    requests: int
    duration_s: float
    rps: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server_cpu_us_per_call: float
    server_cores: float
    server_cpu_split: list[float]
    valkey_cpu_us_per_call: float
    loadgen_cpu_us_per_call: float
    loadgen_cores: float
    rss_mb: float
    error_codes: dict[str, int]


@dataclass(slots=True)
class Running:
    model: Model
    port: int
    procs: list[asyncio.subprocess.Process]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def rss_mb(self) -> float:
        return sum(psutil.Process(pid).memory_info().rss for pid in self.pids) / 2**20


def _listening(pid: int, port: int) -> startup.Probe:
    async def probe() -> bool:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port
            for c in psutil.Process(pid).net_connections(kind="tcp")
        )

    return probe


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


class Run:
    def __init__(self, options: Options, log: IO[str], workdir: Path) -> None:
        self.o = options
        self.log = log
        self.workdir = workdir
        self.valkey = EmbeddedValkey(workdir / "valkey")
        self.servers: dict[str, Running] = {}
        self.cells: list[Cell] = []
        self.checks: dict[str, bool] = {}
        self.rss_idle: dict[str, float] = {}
        self.failures: list[str] = []
        all_cpus = sorted(os.sched_getaffinity(0))
        server = set(options.server_cpus) & set(all_cpus)
        rest = set(all_cpus) - server
        self.pinned = options.pin and bool(server) and bool(rest)
        self.server_cpus = ",".join(map(str, sorted(server))) if self.pinned else ""
        self.loadgen_cpus = ",".join(map(str, sorted(rest))) if self.pinned else ""

    async def start(self) -> None:
        await asyncio.to_thread(self.valkey.start)
        if self.pinned:
            pin_process(self.valkey.pid, _cpus(self.loadgen_cpus))
        client = valkey.asyncio.Valkey.from_url(self.valkey.url)
        try:
            key = f"{DEFAULT_KEY_PREFIX}user:{USER_ID}"
            data = sample_user().SerializeToString()
            await client.hset(key, mapping={"v": "7", "d": data})
        finally:
            await client.aclose()
        for key in self.o.models:
            model = MODELS[key]
            port = startup.free_port()
            argv = [
                sys.executable, "-m", "bench.server_models", "serve", model.kind,
                "--port", str(port), "--valkey-url", self.valkey.url,
                "--prefix", DEFAULT_KEY_PREFIX, "--workers", str(self.o.workers),
                "--cpus", self.server_cpus,
            ]  # fmt: skip
            if model.processes > 1:
                argv.append("--reuseport")
            procs = []
            for i in range(model.processes):
                proc = await startup.spawn(argv, env=dict(os.environ), log=self.log, cwd=REPO)
                procs.append(proc)
                # A second process on a shared port: its own listening socket, then any answer.
                if i:
                    await startup.wait_ready(proc, _listening(proc.pid, port), 30)
                await startup.wait_ready(proc, self._answers(key, port), 30)
            self.servers[key] = Running(model, port, procs)
            say(f"({key}) {model.name} on 127.0.0.1:{port}, pid(s) {self.servers[key].pids}")
        await asyncio.sleep(0.5)
        self.rss_idle = {k: r.rss_mb() for k, r in self.servers.items()}

    def _answers(self, key: str, port: int) -> startup.Probe:
        """Ready when GetUser answers the cached user, byte for byte."""
        expected = sample_user().SerializeToString()

        async def probe() -> bool:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = users_pb2_grpc.UserServiceStub(channel)
                try:
                    reply = await stub.GetUser(users_pb2.GetUserRequest(id=USER_ID), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
            ok = reply.user.SerializeToString() == expected
            self.checks[f"({key})_answers_the_cached_user"] = ok
            return ok

        return probe

    async def _load(self, key: str, concurrency: int, duration_s: float) -> dict[str, Any]:
        server = self.servers[key]
        argv = [
            sys.executable, "-m", "bench.server_models", "load",
            "--target", f"127.0.0.1:{server.port}", "--concurrency", str(concurrency),
            "--duration", str(duration_s), "--warmup", str(self.o.cell_warmup_s),
            "--channels", str(self.o.channels), "--server-pids", ",".join(map(str, server.pids)),
            "--valkey-pid", str(self.valkey.pid), "--cpus", self.loadgen_cpus,
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=self.log
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), duration_s + 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"load for ({key}) failed (exit {proc.returncode}); see the log")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    async def warm_up(self) -> None:
        for key in self.o.models:
            await self._load(key, max(self.o.concurrency), self.o.warmup_s)

    async def cell(self, key: str, concurrency: int, rnd: int) -> Cell:
        r = await self._load(key, concurrency, self.o.duration_s)
        n, seconds = max(int(r["requests"]), 1), float(r["duration_s"])
        split = [float(v) for v in r["server_cpu_s"].values()]
        server_s = sum(split)
        cell = Cell(
            model=key,
            concurrency=concurrency,
            round=rnd,
            requests=int(r["requests"]),
            duration_s=seconds,
            rps=int(r["requests"]) / seconds,
            errors=int(r["errors"]),
            p50_ms=float(r["p50_ms"]),
            p90_ms=float(r["p90_ms"]),
            p99_ms=float(r["p99_ms"]),
            mean_ms=float(r["mean_ms"]),
            max_ms=float(r["max_ms"]),
            server_cpu_us_per_call=server_s * 1e6 / n,
            server_cores=server_s / seconds,
            server_cpu_split=[s / server_s if server_s else 0.0 for s in split],
            valkey_cpu_us_per_call=float(r["valkey_cpu_s"]) * 1e6 / n,
            loadgen_cpu_us_per_call=float(r["loadgen_cpu_s"]) * 1e6 / n,
            loadgen_cores=float(r["loadgen_cpu_s"]) / seconds,
            rss_mb=self.servers[key].rss_mb(),
            error_codes=dict(r["error_codes"]),
        )
        if cell.errors or not cell.requests or r["warmup_errors"]:
            why = f"({key}) c={concurrency} r{rnd}: {cell.errors} errors {cell.error_codes}"
            self.failures.append(f"{why}, warm-up {r['warmup_errors']}")
            say(f"FAILED CELL {why}")
        return cell

    async def run_rounds(self) -> None:
        for rnd in range(self.o.rounds):
            for c in self.o.concurrency:
                # A B C D, then D C B A: drift over time hits every model alike.
                order = self.o.models if rnd % 2 == 0 else tuple(reversed(self.o.models))
                for key in order:
                    cell = await self.cell(key, c, rnd)
                    self.cells.append(cell)
                    say(
                        f"r{rnd} c={c:<3} ({key}) {MODELS[key].name:<17} {cell.rps:>7.0f} calls/s"
                        f"  p50 {cell.p50_ms:.3f} ms  p99 {cell.p99_ms:.3f} ms"
                        f"  server {cell.server_cpu_us_per_call:.0f} µs/call"
                        f" ({cell.server_cores:.2f} cores)  loadgen {cell.loadgen_cores:.2f} cores"
                    )

    async def stop(self) -> None:
        for server in self.servers.values():
            for proc in server.procs:
                await startup.terminate(proc)
        await asyncio.to_thread(self.valkey.stop)

    def summary(self) -> list[dict[str, Any]]:
        """Median over rounds per (model, concurrency)."""
        rows: list[dict[str, Any]] = []
        for c in self.o.concurrency:
            for key in self.o.models:
                cells = [x for x in self.cells if (x.model, x.concurrency) == (key, c)]
                if not cells:
                    continue
                row: dict[str, Any] = {
                    "model": key,
                    "name": MODELS[key].name,
                    "what": MODELS[key].note,
                    "processes": MODELS[key].processes,
                    "concurrency": c,
                    "rounds": len(cells),
                    "requests": sum(x.requests for x in cells),
                    "errors": sum(x.errors for x in cells),
                    "rps_min": min(x.rps for x in cells),
                    "rps_max": max(x.rps for x in cells),
                    "rss_mb_idle": self.rss_idle.get(key, 0.0),
                    "rss_mb_max": max(x.rss_mb for x in cells),
                }
                for name in (
                    "rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms",
                    "server_cpu_us_per_call", "server_cores", "valkey_cpu_us_per_call",
                    "loadgen_cpu_us_per_call", "loadgen_cores",
                ):  # fmt: skip
                    row[name] = _median([getattr(x, name) for x in cells])
                rows.append(row)
        return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model ÷ model (a), at each concurrency (medians)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        base = next(
            (r for r in rows if r["model"] == "a" and r["concurrency"] == row["concurrency"]),
            None,
        )
        if base is None or row["model"] == "a":
            continue
        entry: dict[str, Any] = {"model": row["model"], "concurrency": row["concurrency"]}
        for name in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_call"):
            entry[name] = row[name] / base[name] if base[name] else None
        out.append(entry)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | c | calls/s | vs a | p50 ms | p99 ms | server CPU µs/call | vs a "
        "| server cores | valkey µs/call | loadgen cores | RSS MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        base = next(
            (b for b in rows if b["model"] == "a" and b["concurrency"] == r["concurrency"]), r
        )
        rps_x = r["rps"] / base["rps"] if base["rps"] else 0.0
        cpu_x = (
            r["server_cpu_us_per_call"] / base["server_cpu_us_per_call"]
            if base["server_cpu_us_per_call"]
            else 0.0
        )
        lines.append(
            f"| ({r['model']}) {r['name']} | {r['concurrency']} | {r['rps']:.0f} | {rps_x:.2f} "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['server_cpu_us_per_call']:.0f} "
            f"| {cpu_x:.2f} | {r['server_cores']:.2f} | {r['valkey_cpu_us_per_call']:.0f} "
            f"| {r['loadgen_cores']:.2f} | {r['rss_mb_max']:.0f} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(  # read-only
        ["git", "rev-parse", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ | {"GIT_OPTIONAL_LOCKS": "0"},
    ).stdout.strip()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "valkey_py": valkey.__version__,
        "uvloop": importlib.metadata.version("uvloop"),
        "git_commit": commit,
    }


@contextlib.contextmanager
def _log_file(workdir: Path) -> Iterator[IO[str]]:
    with (workdir / "server-models.log").open("w") as log:
        yield log


async def measure(options: Options) -> dict[str, Any]:
    started = time.perf_counter()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    with (
        tempfile.TemporaryDirectory(prefix="portico-server-models-") as tmp,
        _log_file(Path(tmp)) as log,
    ):
        run = Run(options, log, Path(tmp))
        try:
            if run.pinned:
                cpus = f"servers on CPU {run.server_cpus}; load generator and Valkey on"
                say(f"{cpus} {run.loadgen_cpus}")
            else:
                say("not pinned: servers, load generator and Valkey share every CPU")
            await run.start()
            say("warming up each model")
            await run.warm_up()
            await run.run_rounds()
        except BaseException:
            log.flush()
            sys.stderr.write((Path(tmp) / "server-models.log").read_text()[-4000:])
            raise
        finally:
            await run.stop()
    rows = run.summary()
    return {
        "timestamp": stamp,
        "machine": machine(),
        "options": asdict(options)
        | {"pinned": run.pinned, "server_cpus": run.server_cpus, "loadgen_cpus": run.loadgen_cpus},
        "models": {k: asdict(MODELS[k]) for k in options.models},
        "wall_s": time.perf_counter() - started,
        "checks": run.checks,
        "failures": run.failures,
        "summary": rows,
        "ratios_vs_a": ratios(rows),
        "rss_mb_idle": run.rss_idle,
        "cells": [asdict(c) for c in run.cells],
    }


def render(result: dict[str, Any]) -> str:
    m, o = result["machine"], result["options"]
    pinned = (
        f"servers pinned to CPU {o['server_cpus']}, load generator + Valkey to {o['loadgen_cpus']}"
        if o["pinned"]
        else "not pinned"
    )
    head = (
        f"Machine: {m['cpu_model']}, {m['cores']} cores, Python {m['python']}, grpcio "
        f"{m['grpcio']}, valkey-py {m['valkey_py']}, uvloop {m['uvloop']}; commit "
        f"{m['git_commit'][:10]}; {result['timestamp']}; {o['duration_s']:g} s cells, median of "
        f"{o['rounds']} interleaved rounds; {pinned}; sync pool {o['workers']} workers; "
        f"{o['channels']} client connections (fewer at c=1)"
    )
    legend = "\n".join(f"({k}) {v['name']}: {v['note']}" for k, v in result["models"].items())
    parts = [head, legend, table(result["summary"])]
    if result["failures"]:
        parts.append("FAILED CELLS:\n" + "\n".join(result["failures"]))
    return "\n\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server_models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell (3)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (4)")
    parser.add_argument(
        "--concurrency",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(1, 16),
        help="closed-loop callers, e.g. 1,16 (default)",
    )
    parser.add_argument(
        "--models",
        type=lambda s: tuple(s.split(",")),
        default=("a", "b", "c", "d"),
        help="subset of a,b,c,d,e in this order (default a,b,c,d; e is opt-in)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per model (1)")
    parser.add_argument("--workers", type=int, default=16, help="sync models' pool size (16)")
    parser.add_argument("--channels", type=int, default=4, help="client connections (4)")
    parser.add_argument("--server-cpus", default="0", help="CPUs of the servers when pinned (0)")
    parser.add_argument("--no-pin", action="store_true", help="let every process use every CPU")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="folder of the JSON result"
    )
    roles = parser.add_subparsers(dest="role", title="internal roles (started by the run)")
    s = roles.add_parser("serve", help="one server process")
    s.add_argument("kind", choices=KINDS)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--valkey-url", required=True)
    s.add_argument("--prefix", default=DEFAULT_KEY_PREFIX)
    s.add_argument("--workers", type=int, default=16)
    s.add_argument("--reuseport", action="store_true")
    s.add_argument("--cpus", default="", help="pin to these CPUs, e.g. 0")
    ld = roles.add_parser("load", help="one load cell; prints JSON")
    ld.add_argument("--target", required=True)
    ld.add_argument("--concurrency", type=int, default=1)
    ld.add_argument("--duration", type=float, default=3.0)
    ld.add_argument("--warmup", type=float, default=0.3)
    ld.add_argument("--channels", type=int, default=4)
    ld.add_argument("--server-pids", required=True, help="comma-separated")
    ld.add_argument("--valkey-pid", type=int)
    ld.add_argument("--cpus", default="", help="pin to these CPUs, e.g. 1")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.role == "serve":
        serve(args)
        return 0
    if args.role == "load":
        load(args)
        return 0
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: choose from {','.join(MODELS)}")
    options = Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        concurrency=args.concurrency,
        models=args.models,
        workers=args.workers,
        channels=args.channels,
        pin=not args.no_pin,
        server_cpus=tuple(sorted(_cpus(args.server_cpus))),
    )
    result = asyncio.run(measure(options))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"server-models-{result['timestamp']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    print(f"in {result['wall_s']:.0f} s")
    if result["failures"]:
        say(f"{len(result['failures'])} cell(s) FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
