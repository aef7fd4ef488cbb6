"""One benchmark run: start the stack and the baselines, measure every cell, stop everything.

Everything listens on 127.0.0.1 on free ports, so a ``make run`` stack on the default ports can
keep running. The stack's own data folder (``.data/bench/``) is emptied at the start of each run,
so every run measures the same number of rows. Only processes started here are stopped, by pid.

The stack runs with the gateway's rate limits and the auth service's login throttle off
(:data:`STACK_ENV`, as the e2e tier runs it): they are a per-client policy, and every request
here comes from one address and two users, so they would answer 429 at once; the benchmark
measures the cost of serving requests, not a client's quota. Every request carries a valid
access token (:mod:`bench.tokens`), and a cell with any error (an HTTP status of 400 or more, a
gRPC error, a socket error or timeout) is marked failed, said loudly, and fails the run.

The tracing-overhead case (``otel_overhead``) runs on two more gateway + users pairs, started
here from the launcher's own command lines and environments and differing only in ``OTEL_*``
(:data:`bench.cases.OTEL_ENV`); the traced pair exports to :mod:`bench.otlp_sink`, whose span
counts end up in the results (``checks``, ``otel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import grpc
import httpx
from valkey.asyncio import Valkey

from bench import otlp_sink, startup, wrk
from bench.baselines import DEFAULT_KEY_PREFIX
from bench.cases import (
    AUTH_OFF_PATH,
    AUTH_PAIRS,
    CASES,
    EDGE_ENV,
    EDGE_PAIRS,
    OTEL_ENV,
    OTEL_PAIRS,
    Case,
    Variant,
)
from bench.grpc_load import TOKEN_VARIABLE
from bench.procstats import Watched, cpu_us_per_request
from bench.tokens import Caller, Tokens
from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_devstack.config import DevSettings
from portico_devstack.launcher import Stack

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".data" / "bench"
STARTUP_DATA = REPO / ".data" / "bench-startup"

#: Set in the environment the launcher gives the stack's services (tests/e2e/conftest.py sets the
#: same): rate limits per client address and per user, and the login throttle, off.
STACK_ENV: dict[str, str] = {
    "GATEWAY_RATE_LIMIT_ADDRESS_PER_MINUTE": "0",
    "GATEWAY_RATE_LIMIT_USER_PER_MINUTE": "0",
    "AUTH_THROTTLE__ADDRESS_LIMIT": "1000000",
    "AUTH_THROTTLE__SIGNUP_ADDRESS_LIMIT": "1000000",
}

#: Launcher children timed from exec to ready as copies on free ports: port variables (the
#: service's, then any other it binds, such as its metrics port), probe kind, extra environment
#: (no shutdown delay: the copies are stopped at once).
COPIES: dict[str, tuple[tuple[str, ...], str, dict[str, str]]] = {
    "users": (("USERS_GRPC_PORT", "USERS_METRICS_PORT"), "grpc", {"USERS_SHUTDOWN_DELAY_S": "0"}),
    "auth": (("AUTH_GRPC_PORT", "AUTH_METRICS_PORT"), "grpc", {"AUTH_SHUTDOWN_DELAY_S": "0"}),
    "gateway": (("GATEWAY_PORT",), "http", {"GATEWAY_SHUTDOWN_DELAY_S": "0"}),
    # Its own consumer name (the default is host-pid: unique already), in the stack's group.
    "audit": (("AUDIT_GRPC_PORT", "AUDIT_METRICS_PORT"), "grpc", {"AUDIT_SHUTDOWN_DELAY_S": "0"}),
}


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = 3.0
    warmup_s: float = 1.0
    rounds: int = 2
    concurrency: tuple[int, ...] = (1, 16, 64)
    cases: tuple[str, ...] = tuple(c.name for c in CASES)
    miss_pool: int = 10_000
    patch_pool: int = 256
    startup_repeats: int = 3
    token_samples: int = 5_000  # timed TokenVerifier.verify calls (bench.token_verification)
    #: Extra environments each start-up copy also runs with (``--startup-env``), interleaved.
    startup_env: tuple[dict[str, str], ...] = ()
    quick: bool = False


@dataclass(slots=True)
class Cell:
    case: str
    variant: str
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
    cpu_us_per_req: dict[str, float]
    cache_fills: int | None = None
    error_codes: dict[str, int] = field(default_factory=dict)
    caller: str = ""
    token_checks: int = 0
    #: Why the cell failed ("" when every request got a 2xx / OK).
    failure: str = ""


@dataclass(slots=True)
class Fixtures:
    cached_id: str = ""
    cached_file: Path = Path()
    miss_file: Path = Path()
    pool_file: Path = Path()
    pool_ids: list[str] = field(default_factory=list)


def say(message: str) -> None:
    sys.stderr.write(f"bench | {message}\n")
    sys.stderr.flush()


def need(value: T | None, what: str) -> T:
    """``value``, which the run's order guarantees is set by now."""
    if value is None:
        raise RuntimeError(f"{what} is not started")
    return value


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (which the launcher's children inherit)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Bench:
    def __init__(self, options: Options, log: IO[str], workdir: Path) -> None:
        self.options = options
        self.log = log
        self.workdir = workdir
        self.tag = secrets.token_hex(4)
        self.watched = Watched()
        self.stack: Stack | None = None
        self.baselines: dict[str, asyncio.subprocess.Process] = {}
        self.urls: dict[str, str] = {}
        self.fixtures = Fixtures()
        self.cells: list[Cell] = []
        self.startup: dict[str, Any] = {}
        self.rss: dict[str, dict[str, float]] = {}
        self.checks: dict[str, Any] = {}
        self.failures: list[str] = []
        self.tokens: Tokens | None = None
        self._channel: grpc.aio.Channel | None = None
        self._valkey: Valkey | None = None
        self._cell_no = 0
        #: Processes of the otel_overhead case (pairs and sink), by watched name.
        self.otel: dict[str, asyncio.subprocess.Process] = {}
        self.sink_port = 0
        #: Requests answered per server (warm-ups included): what the sink's counts are put over.
        self.sent: Counter[str] = Counter()
        #: What the OTLP sink received (bench.otlp_sink), read after the traced pair stopped.
        self.otel_stats: dict[str, Any] = {}

    # ------------------------------------------------------------ set-up

    @property
    def users_target(self) -> str:
        return need(self.stack, "the stack").users_target

    @property
    def stub(self) -> UserServiceAsyncStub:
        return users_pb2_grpc.UserServiceStub(need(self._channel, "the gRPC channel"))

    @property
    def cache_url(self) -> str:
        """The users cache's Valkey (its own instance in the launcher's stack)."""
        stack = need(self.stack, "the stack")
        return need(stack.valkey_cache or stack.valkey, "embedded Valkey").url

    def metadata(self, caller: Caller) -> tuple[tuple[str, str], ...]:
        return need(self.tokens, "the tokens").metadata(caller)

    def header(self, caller: Caller) -> dict[str, str]:
        return need(self.tokens, "the tokens").header(caller)

    async def start_stack(self, data: Path = DATA) -> None:
        """The ``make run`` stack on free ports, over a fresh ``data`` folder."""
        shutil.rmtree(data, ignore_errors=True)
        update: dict[str, Any] = {
            "data_dir": data,
            "host": "127.0.0.1",
            "valkey_port": 0,
            "database_url": None,
            "valkey_url": None,
        }
        for name in DevSettings.model_fields:  # every service port: a free one
            if name.endswith("_port") and name != "valkey_port":
                update[name] = startup.free_port()
        settings = DevSettings().model_copy(update=update)
        self.stack = Stack(settings)
        started = time.perf_counter()
        with environment(STACK_ENV):  # the launcher builds its children's environment in start()
            await self.stack.start()
        self.startup["stack_start_s"] = time.perf_counter() - started
        valkey = need(self.stack.valkey, "embedded Valkey")
        for child in self.stack.children:
            self.watched.add(child.name, need(child.process, child.name).pid)
        self.watched.add("valkey", valkey.pid)
        self.watched.add("postgres", need(self.stack.postgres, "PostgreSQL").pid, tree=True)
        self.watched.add("launcher", os.getpid())
        self.urls["gateway"] = self.stack.gateway_url
        self._channel = grpc.aio.insecure_channel(self.users_target)
        # The users read cache has a Valkey of its own (the launcher's evicting instance): the
        # hooks that warm, empty and count it, and the monoliths that read it, go there.
        self._valkey = Valkey.from_url(self.cache_url)
        # A token must outlive the cell it is handed to (and the hook before it).
        margin = max(180.0, self.options.duration_s + 60)
        self.tokens = Tokens(self.stack.gateway_url, self.tag, min_left_s=margin)
        await self.tokens.start()

    async def _create(self, n: int, label: str) -> list[users_pb2.User]:
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> users_pb2.User:
            async with gate:
                request = users_pb2.CreateUserRequest(
                    email=f"{label}-{self.tag}-{i}@example.com", display_name=f"Seed {label} {i}"
                )
                reply = await self.stub.CreateUser(
                    request, timeout=10, metadata=self.metadata("admin")
                )
                return reply.user

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def seed(self) -> None:
        o, f = self.options, self.fixtures
        started = time.perf_counter()
        # The cached GET reads the owner's own account (signed up by Tokens.start).
        f.cached_id = need(self.tokens, "the tokens").logins["owner"].user_id
        f.cached_file = self.workdir / "cached_ids.txt"
        f.cached_file.write_text(f.cached_id + "\n")
        pool = await self._create(o.patch_pool, "patch")
        f.pool_ids = [u.id for u in pool]
        f.pool_file = self.workdir / "patch_pool.txt"
        misses = await self._create(o.miss_pool, "miss")
        f.miss_file = self.workdir / "miss_ids.txt"
        f.miss_file.write_text("".join(u.id + "\n" for u in misses))
        elapsed = time.perf_counter() - started
        say(f"seeded {o.patch_pool + o.miss_pool} users in {elapsed:.1f} s (and the owner)")

    async def start_baselines(self) -> None:
        owner = self.header("owner")
        user_path = f"/v1/users/{self.fixtures.cached_id}"
        async with httpx.AsyncClient(headers=owner) as client:
            reply = await client.get(f"{self.urls['gateway']}{user_path}")
        reply.raise_for_status()
        body_file = self.workdir / "user.json"
        body_file.write_bytes(reply.content)
        stack = need(self.stack, "the stack")
        monolith = ["--valkey-url", self.cache_url, "--key-prefix", DEFAULT_KEY_PREFIX]
        sessions_url = need(stack.valkey, "embedded Valkey").url
        for kind, extra in (
            ("floor", ["--body-file", str(body_file)]),
            ("monolith", monolith),
            (
                "monolith_verify",
                [*monolith, "--auth-target", stack.auth_target, "--sessions-url", sessions_url],
            ),
        ):
            port = startup.free_port()
            url = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "bench.baselines", kind, "--port", str(port), *extra]
            t0 = time.perf_counter()
            proc = await startup.spawn(argv, env=dict(os.environ), log=self.log, cwd=REPO)
            self.baselines[kind] = proc
            ready = startup.http_ok(f"{url}{user_path}", headers=owner)
            await startup.wait_ready(proc, ready, 30)
            self.startup.setdefault("exec_to_ready_s", {})[kind] = [time.perf_counter() - t0]
            self.watched.add(kind, proc.pid)
            self.urls[kind] = url
        async with httpx.AsyncClient(headers=owner) as client:
            mono = await client.get(f"{self.urls['monolith']}{user_path}")
            verifying = await client.get(f"{self.urls['monolith_verify']}{user_path}")
            refused = await client.get(
                f"{self.urls['monolith_verify']}{user_path}", headers={"Authorization": "Bearer x"}
            )
        async with httpx.AsyncClient() as client:
            anonymous = await client.get(f"{self.urls['gateway']}{user_path}")
        self.checks["monolith_json_equals_gateway"] = mono.json() == reply.json()
        self.checks["monolith_etag_equals_gateway"] = mono.headers.get("etag") == reply.headers.get(
            "etag"
        )
        self.checks["monolith_verify_json_equals_gateway"] = verifying.json() == reply.json()
        # The tokens are what let the load in: without one, both refuse.
        self.checks["monolith_verify_refuses_bad_token"] = refused.status_code == 401
        self.checks["gateway_refuses_no_token"] = anonymous.status_code == 401
        # Limits on would add RateLimit headers (and Valkey calls) to every answer.
        self.checks["gateway_rate_limits_off"] = "ratelimit" not in reply.headers

    def _pair_env(self, server: str) -> tuple[str, dict[str, str]]:
        """The users process's name and the extra environment of ``server``'s pair."""
        if server in OTEL_PAIRS:  # templates: {sink} and {component} are filled per process
            mode = OTEL_PAIRS[server]
            return f"users_otel_{mode}", dict(OTEL_ENV[mode])
        if server in EDGE_PAIRS:  # production telemetry, the edge path on or off
            return server.replace("gateway_", "users_"), OTEL_ENV["sampled"] | EDGE_ENV[
                EDGE_PAIRS[server]
            ]
        mode = AUTH_PAIRS[server]
        if mode == "on":
            return "users_auth_on", {}
        path = os.pathsep.join([str(REPO / AUTH_OFF_PATH), os.environ.get("PYTHONPATH", "")])
        return "users_auth_off", {"PYTHONPATH": path.rstrip(os.pathsep)}

    async def start_otel_pairs(self) -> None:
        """The gateway + users pairs of the tracing- and auth-overhead cases, and the OTLP sink."""
        selected = [c for c in CASES if c.name in self.options.cases]
        pairs = OTEL_PAIRS.keys() | AUTH_PAIRS.keys() | EDGE_PAIRS.keys()
        servers = [v.server for c in selected for v in c.variants if v.server in pairs]
        if not servers:
            return
        stack = need(self.stack, "the stack")
        children = {c.name: c for c in stack.children}
        traced = [s for s in servers if s in EDGE_PAIRS or OTEL_PAIRS.get(s, "off") != "off"]
        if traced:
            self.sink_port = startup.free_port()
            argv = [sys.executable, "-m", "bench.otlp_sink", "--port", str(self.sink_port)]
            sink = await startup.spawn(argv, env=dict(os.environ), log=self.log, cwd=REPO)
            self.otel["otlp_sink"] = sink
            await startup.wait_ready(sink, self._sink_ready, 30)
            self.watched.add("otlp_sink", sink.pid)
        for server in dict.fromkeys(servers):
            users_name, extra = self._pair_env(server)
            users, gateway = children["users"], children["gateway"]
            grpc_port, metrics_port, http_port = (startup.free_port() for _ in range(3))
            for component, child, name, env, probe in (
                (
                    "users",
                    users,
                    users_name,
                    {
                        "USERS_GRPC_PORT": str(grpc_port),
                        "USERS_METRICS_PORT": str(metrics_port),
                        "USERS_SHUTDOWN_DELAY_S": "0",
                    },
                    startup.grpc_serving(grpc_port),
                ),
                (
                    "gateway",
                    gateway,
                    server,
                    {
                        "GATEWAY_PORT": str(http_port),
                        "GATEWAY_USERS_TARGET": f"127.0.0.1:{grpc_port}",
                    },
                    startup.http_ok(f"http://127.0.0.1:{http_port}/readyz"),
                ),
            ):
                base = child.env
                own = extra
                if server in OTEL_PAIRS or server in EDGE_PAIRS:  # telemetry all in ``extra``
                    base = {k: v for k, v in base.items() if not k.startswith("OTEL_")}
                    address = f"127.0.0.1:{self.sink_port}"
                    own = {k: v.format(sink=address, component=component) for k, v in extra.items()}
                proc = await startup.spawn(child.argv, env=base | env | own, log=self.log, cwd=REPO)
                self.otel[name] = proc
                await startup.wait_ready(proc, probe, 30)
                self.watched.add(name, proc.pid)
            self.urls[server] = f"http://127.0.0.1:{http_port}"
        await self._check_otel_pairs()

    async def _sink_ready(self) -> bool:
        try:
            await otlp_sink.stats(self.sink_port)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def _check_otel_pairs(self) -> None:
        """Each pair answers what the stack's gateway answers; only the traced one has traces."""
        owner = self.header("owner")
        user_path = f"/v1/users/{self.fixtures.cached_id}"
        async with httpx.AsyncClient(headers=owner, timeout=5) as client:
            expected = (await client.get(self.urls["gateway"] + user_path)).json()
            for server, mode in OTEL_PAIRS.items():
                if server not in self.urls:
                    continue
                answer = await client.get(self.urls[server] + user_path)
                self.checks[f"otel_{mode}_json_equals_gateway"] = answer.json() == expected
                if mode == "sampled":  # a problem names its trace only when it was sampled
                    continue
                # A problem names its trace only when the request was traced (errors.problem).
                problem = (await client.get(self.urls[server] + "/v1/no-such-route")).json()
                traced = "trace_id" in problem
                key = "has" if mode == "on" else "has_no"
                self.checks[f"otel_{mode}_problem_{key}_trace_id"] = traced == (mode == "on")
            for server, path_kind in EDGE_PAIRS.items():
                if server not in self.urls:
                    continue
                answer = await client.get(self.urls[server] + user_path)
                key = path_kind.replace(" ", "_")
                self.checks[f"{key}_json_equals_gateway"] = answer.json() == expected
                other = await client.get(
                    self.urls[server] + "/v1/users/00000000-0000-4000-8000-000000000000"
                )
                self.checks[f"{key}_refuses_another_account"] = other.status_code == 403
            for server, mode in AUTH_PAIRS.items():
                if server not in self.urls:
                    continue
                answer = await client.get(self.urls[server] + user_path)
                self.checks[f"auth_{mode}_json_equals_gateway"] = answer.json() == expected
                # Both still refuse a request without a token, and the owner's token is still
                # only good for the owner's account (the rules are applied in both).
                anonymous = await client.get(
                    self.urls[server] + user_path, headers={"authorization": ""}
                )
                self.checks[f"auth_{mode}_refuses_no_token"] = anonymous.status_code == 401
                other = await client.get(
                    self.urls[server] + "/v1/users/00000000-0000-4000-8000-000000000000"
                )
                self.checks[f"auth_{mode}_refuses_another_account"] = other.status_code == 403

    async def check_coherence(self, rounds: int = 20) -> None:
        """PATCH through the stack's gateway, then GET at once through the pairs' gateways (the
        edge path and the path through users): the new version every time. A stale answer
        fails the run. Then: the edge pair really answered from the cache (its hit counter)."""
        readers = [s for s in EDGE_PAIRS if s in self.urls]
        if not readers:
            return
        path = f"/v1/users/{self.fixtures.cached_id}"
        stale: list[str] = []
        async with httpx.AsyncClient(headers=self.header("owner"), timeout=10) as client:
            for i in range(rounds):
                name = f"coherence {self.tag} {i}"
                patched = await client.patch(
                    self.urls["gateway"] + path, json={"display_name": name}
                )
                patched.raise_for_status()
                for server in readers:
                    got = await client.get(self.urls[server] + path)
                    seen = got.json().get("display_name") if got.status_code == 200 else None
                    if seen != name or got.headers.get("etag") != patched.headers.get("etag"):
                        stale.append(f"{server} round {i}: {got.status_code} {seen!r}")
            metrics = (await client.get(self.urls["gateway_edge"] + "/metrics")).text
        hits = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("portico_gateway_edge_reads_total{") and 'result="hit"' in line
        )
        self.checks["coherence_patch_then_get_through_another_gateway"] = not stale
        self.checks["edge_pair_answered_from_the_cache"] = hits > 0
        if stale:
            self.failures.append(
                f"coherence: {len(stale)} stale answer(s) after a PATCH through another "
                f"gateway: {stale[:5]}"
            )

    async def finish_otel(self) -> None:
        """Stop the pairs (the traced one flushes its last spans on exit), then read the sink."""
        for name in sorted(self.otel, key=lambda n: (n == "otlp_sink", n.startswith("users"))):
            if name == "otlp_sink":
                with contextlib.suppress(grpc.aio.AioRpcError):
                    self.otel_stats = await otlp_sink.stats(self.sink_port)
            await startup.terminate(self.otel[name])
        if self.otel_stats:
            stats = self.otel_stats
            traced = self.sent.get("gateway_otel_on", 0)
            gateway_spans = int(stats["server_spans"].get("gateway", 0))
            always = sum(v for k, v in stats["spans"].items() if not k.endswith("-sampled"))
            self.otel_stats |= {
                "requests_to_traced_gateway": traced,
                "spans_per_request": always / max(gateway_spans, 1),
                "exported_share": gateway_spans / max(traced, 1),
            }
            if "gateway_otel_on" in self.sent:  # the sink may run for other pairs only
                self.checks["otel_on_spans_exported"] = gateway_spans > 0
            if "gateway_otel_sampled" in self.sent:
                sampled = int(stats["server_spans"].get("gateway-sampled", 0))
                share = sampled / max(self.sent["gateway_otel_sampled"], 1)
                self.otel_stats["sampled_share"] = share
                # 1 in 20 by trace id (plus any tail-captured slow request): far from 0 and
                # from 1 over thousands of requests.
                self.checks["otel_prod_keeps_about_a_twentieth"] = 0.02 < share < 0.1

    async def measure_process_startup(self) -> None:
        """Copies of each service on another port, against the running backends and services."""
        children = need(self.stack, "the stack").children
        times: dict[str, list[float]] = self.startup.setdefault("exec_to_ready_s", {})
        rss: dict[str, list[float]] = self.startup.setdefault("rss_at_ready_mb", {})
        idle: dict[str, list[float]] = self.startup.setdefault("rss_idle_mb", {})
        anon: dict[str, list[float]] = self.startup.setdefault("anon_idle_mb", {})
        variants: list[tuple[str, dict[str, str]]] = [("", {})]
        variants += [(" " + ",".join(f"{k}={v}" for k, v in e.items()), e) for e in
                     self.options.startup_env]  # fmt: skip
        for repeat in range(self.options.startup_repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]  # A B, then B A
            for child in children:
                if child.name not in COPIES:
                    continue
                for label, variant_env in order:
                    variables, kind, extra = COPIES[child.name]
                    ports = {v: str(startup.free_port()) for v in variables}
                    port = int(ports[variables[0]])
                    env = child.env | extra | variant_env | ports
                    probe = (
                        startup.grpc_serving(port)
                        if kind == "grpc"
                        else startup.http_ok(f"http://127.0.0.1:{port}/readyz")
                    )
                    got = await startup.exec_to_ready(
                        child.argv, env=env, probe=probe, log=self.log
                    )
                    name = child.name + label
                    times.setdefault(name, []).append(got.ready_s)
                    rss.setdefault(name, []).append(got.rss_at_ready_mb)
                    idle.setdefault(name, []).append(got.rss_idle_mb)
                    anon.setdefault(name, []).append(got.anon_idle_mb)

    async def measure_make_run(self) -> None:
        """`make run` → first authenticated ``GET /v1/users`` (and → first answer, a 401)."""
        runs: list[float] = []
        answers: list[float] = []
        if not (STARTUP_DATA / "postgres").exists():
            _, cold = await startup.make_run_to_first_request(
                REPO, data_dir=STARTUP_DATA, log=self.log
            )
            self.startup["make_run_cold_s"] = cold
        for _ in range(self.options.startup_repeats):
            answered, served = await startup.make_run_to_first_request(
                REPO, data_dir=STARTUP_DATA, log=self.log
            )
            answers.append(answered)
            runs.append(served)
        self.startup["make_run_to_first_answer_s"] = answers
        self.startup["make_run_to_first_request_s"] = runs

    # ------------------------------------------------------------ cells

    async def _hook(self, case: Case) -> None:
        f = self.fixtures
        await need(self.tokens, "the tokens").fresh()  # log in again if a token nears its expiry
        metadata = self.metadata(case.caller)
        if case.before_cell == "warm_cached":
            request = users_pb2.GetUserRequest(id=f.cached_id)
            await self.stub.GetUser(request, timeout=5, metadata=metadata)
        elif case.before_cell == "flush_cache":
            valkey = need(self._valkey, "the Valkey client")
            keys = [k async for k in valkey.scan_iter(match=f"{DEFAULT_KEY_PREFIX}*")]
            for i in range(0, len(keys), 1000):
                await valkey.unlink(*keys[i : i + 1000])
        elif case.before_cell == "refresh_etags":
            # Patches the previous cell left in flight still finish server-side: let them land.
            await asyncio.sleep(0.5)
            gate = asyncio.Semaphore(32)

            async def etag(user_id: str) -> str:
                async with gate:
                    request = users_pb2.GetUserRequest(id=user_id)
                    reply = await self.stub.GetUser(request, timeout=5, metadata=metadata)
                    return str(reply.user.etag)

            tags = await asyncio.gather(*(etag(i) for i in f.pool_ids))
            f.pool_file.write_text(
                "".join(f"{i} {t}\n" for i, t in zip(f.pool_ids, tags, strict=True))
            )

    def _fixture_file(self, variant: Variant) -> Path | None:
        return {
            "cached_id": self.fixtures.cached_file,
            "miss_ids": self.fixtures.miss_file,
            "patch_pool": self.fixtures.pool_file,
        }.get(variant.fixture or "")

    async def _grpc_load(
        self, variant: Variant, concurrency: int, duration_s: float, tag: str, caller: Caller
    ) -> tuple[wrk.LoadResult, float]:
        op = need(variant.grpc_op, "the gRPC operation")
        argv = [
            sys.executable, "-m", "bench.grpc_load", "--target", self.users_target,
            "--op", op, "--concurrency", str(concurrency),
            "--duration", str(duration_s), "--tag", tag,
        ]  # fmt: skip
        ids = self._fixture_file(variant)
        if ids is not None:
            argv += ["--ids", str(ids)]
        token = need(self.tokens, "the tokens").token(caller)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            env=os.environ | {TOKEN_VARIABLE: token},
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"grpc_load failed (exit {proc.returncode}); see the log")
        data = json.loads(out.decode().strip().splitlines()[-1])
        result = wrk.LoadResult(
            requests=int(data["requests"]),
            duration_s=float(data["duration_s"]),
            errors=int(data["errors"]),
            p50_ms=float(data["p50_ms"]),
            p90_ms=float(data["p90_ms"]),
            p99_ms=float(data["p99_ms"]),
            mean_ms=float(data["mean_ms"]),
            max_ms=float(data["max_ms"]),
            error_codes=dict(data["error_codes"]),
        )
        return result, float(data["cpu_s"])

    async def _load(
        self, case: Case, variant: Variant, concurrency: int, duration_s: float
    ) -> tuple[wrk.LoadResult, float | None]:
        self._cell_no += 1
        tag = f"{self.tag}-{self._cell_no}"
        await need(self.tokens, "the tokens").fresh()
        if variant.grpc_op is not None:
            return await self._grpc_load(variant, concurrency, duration_s, tag, case.caller)
        result = await self._wrk(case, variant, concurrency, duration_s, tag)
        self.sent[variant.server] += result.requests
        return result, None

    async def _wrk(
        self, case: Case, variant: Variant, concurrency: int, duration_s: float, tag: str
    ) -> wrk.LoadResult:
        path = variant.path.replace("{user}", self.fixtures.cached_id)
        args: tuple[str, ...] = ()
        if variant.fixture == "tag":
            args = (tag,)
        elif (fixture := self._fixture_file(variant)) is not None:
            args = (str(fixture),)
        return await wrk.run(
            self.urls[variant.server] + path,
            connections=concurrency,
            duration_s=duration_s,
            scenario=variant.script,
            args=args,
            headers={} if variant.anonymous else self.header(case.caller),
        )

    async def _failure(self, case: Case, variant: Variant, load: wrk.LoadResult) -> str:
        """Why a cell failed, with the status of one plain request when wrk cannot tell it."""
        if not load.errors:
            return "" if load.requests else "no request completed"
        share = load.errors / max(load.requests, 1)
        why = (
            f"{load.errors} error(s) in {load.requests} requests ({share:.1%}): {load.error_codes}"
        )
        if (
            variant.grpc_op is None
            and variant.script is None
            and "http_4xx_5xx" in load.error_codes
        ):
            url = self.urls[variant.server] + variant.path.replace(
                "{user}", self.fixtures.cached_id
            )
            async with httpx.AsyncClient(headers=self.header(case.caller), timeout=5) as client:
                probe = await client.get(url)
            why += f"; one GET now answers {probe.status_code} {probe.text[:200]!r}"
        return why

    async def cell(self, case: Case, variant: Variant, concurrency: int, rnd: int) -> Cell:
        await self._hook(case)
        valkey = need(self._valkey, "the Valkey client")
        fills_before = int(await valkey.dbsize()) if case.count_fills else 0
        before = self.watched.sample()
        load, driver_cpu_s = await self._load(case, variant, concurrency, self.options.duration_s)
        after = self.watched.sample()
        cpu = cpu_us_per_request(before, after, load.requests)
        if driver_cpu_s is not None:  # the driver's own loop, not its interpreter start-up
            cpu["loadgen"] = driver_cpu_s * 1e6 / max(load.requests, 1)
        fills = int(await valkey.dbsize()) - fills_before if case.count_fills else None
        failure = await self._failure(case, variant, load)
        if failure:
            message = f"{case.name} {variant.name} c={concurrency} r{rnd}: {failure}"
            self.failures.append(message)
            say(f"FAILED CELL {message}")
        return Cell(
            case=case.name,
            variant=variant.name,
            concurrency=concurrency,
            round=rnd,
            requests=load.requests,
            duration_s=load.duration_s,
            rps=load.rps,
            errors=load.errors,
            p50_ms=load.p50_ms,
            p90_ms=load.p90_ms,
            p99_ms=load.p99_ms,
            mean_ms=load.mean_ms,
            max_ms=load.max_ms,
            cpu_us_per_req=cpu,
            cache_fills=fills,
            error_codes=load.error_codes,
            caller=case.caller,
            token_checks=variant.token_checks,
            failure=failure,
        )

    async def run_cases(self) -> None:
        o = self.options
        for case in CASES:
            if case.name not in o.cases:
                continue
            say(f"{case.name}: warm-up")
            for variant in case.variants:
                await self._hook(case)
                warm, _ = await self._load(case, variant, 16, o.warmup_s)
                if warm.errors:
                    say(f"warning: {case.name} {variant.name} warm-up errors {warm.error_codes}")
            for c in o.concurrency:
                for rnd in range(o.rounds):
                    # A B C, then C B A: drift over time hits every variant alike.
                    order = case.variants if rnd % 2 == 0 else tuple(reversed(case.variants))
                    for variant in order:
                        cell = await self.cell(case, variant, c, rnd)
                        self.cells.append(cell)
                        say(
                            f"{case.name:<10} {variant.name:<11} c={c:<3} r{rnd} "
                            f"{cell.rps:>8.0f} req/s  p50 {cell.p50_ms:.2f} ms  "
                            f"p99 {cell.p99_ms:.2f} ms  errors {cell.errors}"
                        )

    # ------------------------------------------------------------ tear-down

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._valkey is not None:
            await self._valkey.aclose()
        await self.finish_otel()
        for proc in self.baselines.values():
            await startup.terminate(proc)
        if self.stack is not None:
            await self.stack.stop()

    # ------------------------------------------------------------ results

    def summary(self) -> list[dict[str, Any]]:
        """Median over rounds of every (case, variant, concurrency) cell."""
        rows: list[dict[str, Any]] = []
        for case in CASES:
            for c in self.options.concurrency:
                for variant in case.variants:
                    cells = [
                        x
                        for x in self.cells
                        if (x.case, x.variant, x.concurrency) == (case.name, variant.name, c)
                    ]
                    if not cells:
                        continue
                    row: dict[str, Any] = {
                        "case": case.name,
                        "variant": variant.name,
                        "concurrency": c,
                        "rounds": len(cells),
                        "processes": list(variant.processes),
                        "caller": case.caller,
                        "token_checks": variant.token_checks,
                    }
                    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"):
                        row[key] = _median([getattr(x, key) for x in cells])
                    row["errors"] = sum(x.errors for x in cells)
                    row["failed_rounds"] = sum(1 for x in cells if x.failure)
                    row["requests"] = sum(x.requests for x in cells)
                    names = cells[0].cpu_us_per_req.keys()
                    row["cpu_us_per_req"] = {
                        n: _median([x.cpu_us_per_req[n] for x in cells]) for n in names
                    }
                    if case.count_fills:
                        fills = sum(x.cache_fills or 0 for x in cells)
                        row["cache_miss_ratio"] = fills / max(row["requests"], 1)
                    rows.append(row)
        return rows

    def cells_json(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.cells]


@contextlib.contextmanager
def stdout_to(log: IO[str]) -> Iterator[None]:
    """The launcher relays its children's log lines to stdout: keep them in the log file."""
    with contextlib.redirect_stdout(log):
        yield


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
