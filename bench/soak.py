"""A bounded soak: the ``make run`` stack under a fixed request rate, watched for errors and leaks.

``python -m bench.soak --duration 300 --rate 50`` starts the stack as the benchmark does
(:meth:`bench.harness.Bench.start_stack`: fresh data, free ports, rate limits off, two signed-in
callers) and sends a mix of reads and writes through the gateway:

* ``get``: the owner reads their own account (the cached GET), 60 %;
* ``list``: the admin lists the first page of 20 users, 20 %;
* ``create``: the admin creates a user (a new email each time), 10 %;
* ``patch``: the admin renames one of the users created here, 10 %;
* ``session``: a whole session, 1 %: the owner logs in (password grant: one argon2id hash,
  ≈ 150 ms of CPU, hence the small share), refreshes (rotation), logs out, then reads with the
  refreshed access token, which must now answer 401 (``expected``: the gateway's remembered
  "alive" must be dropped by the logout's pub/sub message, not after its 5 s). Four requests,
  each timed and counted on its own.

The operations are interleaved (smooth weighted round-robin), not sent in runs of one kind.

**Open loop at a fixed rate.** Request *i* is due at ``start + i / rate``, and is sent then
whether or not earlier ones have answered (each is its own task), so a slow server does not slow
the load down (no coordinated omission, unlike a closed loop such as wrk's). Its latency counts
from when it was due, not from when it got sent. The driver reports how late sends were
(``send_lag_ms``); more than ``--max-in-flight`` outstanding requests count as errors
(``dropped``) instead of queueing without bound. Debian has no wrk2, and wrk is closed-loop.

Every ``--interval`` seconds it records p50/p90/p99, the count and the errors by status (or
exception name) of the requests that ended in that interval, and the RSS of each process
(psutil; PostgreSQL summed over its process tree). The summary compares RSS after the warm-up
with the end: growth of more than ``--leak-mb`` in the gateway, users or auth process is flagged
as a possible leak. Results: ``bench/results/soak-<UTC time>.json``. Exit 1 on any error or flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import report
from bench.harness import DATA, REPO, STACK_ENV, Bench, Options, need, say, stdout_to, utc_stamp

#: Operation → share of operations (out of 100); a ``session`` is four requests.
MIX: dict[str, int] = {"get": 59, "list": 20, "create": 10, "patch": 10, "session": 1}
#: Outcomes that are not errors besides 2xx: the read after a logout must be refused.
EXPECTED = "expected"
#: Processes whose RSS growth is judged (the others are reported only).
JUDGED = ("gateway", "users", "auth")
RSS_OF = ("gateway", "users", "auth", "valkey", "postgres")
#: The soak stack's own data folder (a benchmark run may use .data/bench/ meanwhile).
SOAK_DATA = DATA.parent / "soak"


@dataclass(slots=True)
class Interval:
    """The requests that ended in one interval."""

    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def row(self, at_s: float, rss: dict[str, float], seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        errors = _errors(self.outcomes)
        return {
            "t_s": round(at_s, 1),
            "requests": len(lat),
            "rps": round(len(lat) / seconds, 1) if seconds > 0 else 0.0,
            "p50_ms": _percentile(lat, 50),
            "p90_ms": _percentile(lat, 90),
            "p99_ms": _percentile(lat, 99),
            "max_ms": round(lat[-1], 2) if lat else 0.0,
            "errors": sum(errors.values()),
            "errors_by_status": errors,
            "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        }


def _errors(outcomes: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in outcomes.items() if not (k.startswith("2") or k.endswith(EXPECTED))}


def schedule(mix: dict[str, int]) -> list[str]:
    """One cycle of ``sum(mix.values())`` operations, each as often as its weight, spread out
    (smooth weighted round-robin, as nginx balances upstreams) rather than in runs of one kind."""
    total = sum(mix.values())
    current = dict.fromkeys(mix, 0)
    out: list[str] = []
    for _ in range(total):
        for op, weight in mix.items():
            current[op] += weight
        chosen = max(current, key=lambda op: current[op])
        current[chosen] -= total
        out.append(chosen)
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return round(sorted_values[index], 2)


class Soak:
    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench = bench
        self.args = args
        self.current = Interval()
        self.created: list[str] = []
        self.lags_ms: list[float] = []
        self.in_flight = 0
        self.sent = 0
        self.totals: Counter[str] = Counter()
        self._seq = itertools.count()
        self._random = random.Random(1)  # a reproducible load mix

    def rss(self) -> dict[str, float]:
        for _ in range(3):  # a PostgreSQL backend may end while its tree is listed
            try:
                every = self.bench.watched.rss_mb()
            except psutil.NoSuchProcess:
                continue
            return {name: every[name] for name in RSS_OF if name in every}
        raise RuntimeError("cannot read the stack's RSS: a process is gone")

    def _record(self, op: str, outcome: str, since: float) -> None:
        self.current.latencies_ms.append((time.perf_counter() - since) * 1000)
        self.current.outcomes[outcome if outcome.startswith("2") else f"{op} {outcome}"] += 1

    async def session(self, http: httpx.AsyncClient, due: float) -> None:
        """Log in, refresh, log out, then read with the refreshed token: it must be refused."""
        owner = need(self.bench.tokens, "the tokens").logins["owner"]
        steps = iter(("login", "refresh", "logout", "read after logout"))
        step, since = next(steps), due
        try:
            reply = await http.post(
                "/v1/auth/token",
                data={
                    "grant_type": "password",
                    "username": owner.email,
                    "password": owner.password,
                },
            )
            self._record(step, str(reply.status_code), since)
            if reply.status_code != 200:
                return
            step, since = next(steps), time.perf_counter()
            refresh = reply.json()["refresh_token"]
            reply = await http.post("/v1/auth/refresh", json={"refresh_token": refresh})
            self._record(step, str(reply.status_code), since)
            if reply.status_code != 200:
                return
            body = reply.json()
            step, since = next(steps), time.perf_counter()
            reply = await http.post(
                "/v1/auth/logout", json={"refresh_token": body["refresh_token"]}
            )
            self._record(step, str(reply.status_code), since)
            if reply.status_code != 204:
                return
            step, since = next(steps), time.perf_counter()
            reply = await http.get(
                f"/v1/users/{owner.user_id}",
                headers={"Authorization": f"Bearer {body['access_token']}"},
            )
            ended = reply.status_code == 401
            self._record(
                step, f"401 {EXPECTED}" if ended else f"{reply.status_code} (not 401)", since
            )
        except httpx.HTTPError as exc:
            self._record(step, type(exc).__name__, since)

    async def one(self, http: httpx.AsyncClient, op: str, due: float) -> None:
        if op == "session":
            try:
                await self.session(http, due)
            finally:
                self.in_flight -= 1
            return
        tokens = need(self.bench.tokens, "the tokens")
        try:
            if op == "patch" and not self.created:
                op = "create"
            if op == "get":
                owner = tokens.logins["owner"].user_id
                reply = await http.get(f"/v1/users/{owner}", headers=tokens.header("owner"))
            elif op == "list":
                reply = await http.get(
                    "/v1/users", params={"page_size": 20}, headers=tokens.header("admin")
                )
            elif op == "create":
                n = next(self._seq)
                reply = await http.post(
                    "/v1/users",
                    json={
                        "email": f"soak-{self.bench.tag}-{n}@example.com",
                        "display_name": f"Soak {n}",
                    },
                    headers=tokens.header("admin"),
                )
                if reply.status_code == 201:
                    self.created.append(reply.json()["id"])
            else:
                user_id = self._random.choice(self.created[-256:])
                reply = await http.patch(
                    f"/v1/users/{user_id}",
                    json={"display_name": f"Soak patched {next(self._seq)}"},
                    headers=tokens.header("admin"),
                )
            outcome = str(reply.status_code)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        finally:
            self.in_flight -= 1
        self._record(op, outcome, due)

    async def run(self) -> dict[str, Any]:
        a = self.args
        url = need(self.bench.stack, "the stack").gateway_url
        ops = schedule(MIX)
        rss_start = self.rss()
        say(f"RSS at start (MiB): {_fmt(rss_start)}")
        intervals: list[dict[str, Any]] = []
        rss_warm: dict[str, float] | None = None
        limits = httpx.Limits(max_connections=a.max_in_flight, max_keepalive_connections=64)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
            start = time.perf_counter()
            last = start
            next_mark = start + a.interval
            for i in itertools.count():
                due = start + i / a.rate
                if due >= start + a.duration:
                    break
                while next_mark <= due:  # interval boundaries before this send
                    await asyncio.sleep(max(0.0, next_mark - time.perf_counter()))
                    now = time.perf_counter()
                    row = self.current.row(now - start, self.rss(), now - last)
                    intervals.append(row)
                    self.totals.update(self.current.outcomes)
                    self.current, last = Interval(), now
                    say(_interval_line(row))
                    if rss_warm is None and now - start >= a.warmup:
                        rss_warm = row["rss_mb"]
                    next_mark += a.interval
                    await need(self.bench.tokens, "the tokens").fresh()
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                self.lags_ms.append((time.perf_counter() - due) * 1000)
                self.sent += 1
                op = ops[i % len(ops)]
                if self.in_flight >= a.max_in_flight:
                    self.current.outcomes[f"{op} dropped"] += 1
                    continue
                self.in_flight += 1
                task = asyncio.create_task(self.one(http, op, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    while tasks:
                        await asyncio.gather(*tasks, return_exceptions=True)
            now = time.perf_counter()
            row = self.current.row(now - start, self.rss(), now - last)
            intervals.append(row)
            self.totals.update(self.current.outcomes)
            say(_interval_line(row))
            wall = now - start
        rss_end = self.rss()
        warm = rss_warm or rss_start
        growth = {n: round(rss_end[n] - warm[n], 1) for n in rss_end}
        suspects = [n for n in JUDGED if growth.get(n, 0.0) > a.leak_mb]
        errors = _errors(self.totals)
        lags = sorted(self.lags_ms)
        return {
            "options": {k: v for k, v in vars(a).items() if k != "out"},
            "mix": MIX,
            "wall_s": round(wall, 1),
            "sent": self.sent,
            "achieved_send_rate": round(self.sent / a.duration, 1),
            "send_lag_ms": {"p50": _percentile(lags, 50), "p99": _percentile(lags, 99)},
            "requests": sum(self.totals.values()),
            "errors": sum(errors.values()),
            "errors_by_status": errors,
            "outcomes": dict(self.totals),
            "users_created": len(self.created),
            "rss_mb": {
                "start": _round(rss_start),
                "after_warmup": _round(warm),
                "end": _round(rss_end),
                "growth_after_warmup": growth,
            },
            "leak_threshold_mb": a.leak_mb,
            "leak_suspects": suspects,
            "intervals": intervals,
        }


def _round(rss: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in rss.items()}


def _fmt(rss: dict[str, float]) -> str:
    return " · ".join(f"{k} {v:.1f}" for k, v in rss.items())


def _interval_line(row: dict[str, Any]) -> str:
    return (
        f"t={row['t_s']:>6.1f}s n={row['requests']:>5} p50 {row['p50_ms']:>7.2f} "
        f"p90 {row['p90_ms']:>7.2f} p99 {row['p99_ms']:>7.2f} ms errors {row['errors']} "
        f"{row['errors_by_status'] or ''} RSS {_fmt(row['rss_mb'])}"
    )


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    rss = result["rss_mb"]
    lines = [
        f"Soak {result['timestamp']}: {result['options']['duration']:g} s at "
        f"{result['options']['rate']:g} req/s (sent {result['sent']}, "
        f"{result['achieved_send_rate']} req/s, send lag p99 {result['send_lag_ms']['p99']} ms); "
        f"{m['cpu_model']}, {m['cores']} cores; commit {m['git_commit'][:10]}",
        "",
        "| t s | requests | p50 ms | p90 ms | p99 ms | errors | RSS gw / users / auth MiB |",
        "|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in result["intervals"]:
        g = r["rss_mb"]
        lines.append(
            f"| {r['t_s']:.0f} | {r['requests']} | {r['p50_ms']} | {r['p90_ms']} | "
            f"{r['p99_ms']} | {r['errors']} | {g.get('gateway', 0):.1f} / {g.get('users', 0):.1f}"
            f" / {g.get('auth', 0):.1f} |"
        )
    lines += ["", "| process | start MiB | after warm-up MiB | end MiB | growth after warm-up |"]
    lines.append("|---|--:|--:|--:|--:|")
    for name in rss["end"]:
        lines.append(
            f"| {name} | {rss['start'][name]} | {rss['after_warmup'][name]} | "
            f"{rss['end'][name]} | {rss['growth_after_warmup'][name]:+.1f} |"
        )
    verdict = (
        f"possible leak (> {result['leak_threshold_mb']} MiB after warm-up): "
        + ", ".join(result["leak_suspects"])
        if result["leak_suspects"]
        else f"no leak flagged (threshold {result['leak_threshold_mb']} MiB after warm-up)"
    )
    lines += [
        "",
        f"errors: {result['errors']} of {result['requests']} {result['errors_by_status'] or ''}",
        verdict,
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak the make-run stack at a fixed request rate (open loop); report errors, "
        "latency percentiles per interval and process RSS, to catch leaks.",
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (300)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    parser.add_argument("--interval", type=float, default=10.0, help="report period, s (10)")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="RSS growth counts from here, s (30)"
    )
    parser.add_argument(
        "--leak-mb", type=float, default=10.0, help="RSS growth after warm-up flagged (10 MiB)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=256, help="more outstanding requests are dropped"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return parser


async def _soak(args: argparse.Namespace) -> dict[str, Any]:
    stamp = utc_stamp()
    log_path = DATA.parent / "soak.log"
    with (
        tempfile.TemporaryDirectory(prefix="portico-soak-") as tmp,
        log_path.open("w") as log,
        stdout_to(log),
    ):
        bench = Bench(Options(duration_s=args.duration), log, Path(tmp))
        try:
            say(f"starting the stack (logs: {log_path.relative_to(REPO)})")
            await bench.start_stack(SOAK_DATA)
            need(bench.tokens, "the tokens").min_left_s = 180.0  # refreshed every interval
            await asyncio.sleep(1)
            result = await Soak(bench, args).run()
        finally:
            say("stopping")
            await bench.stop()
    return {
        "timestamp": stamp,
        "machine": report.machine(REPO, "python open-loop driver (httpx)"),
        "stack_env": STACK_ENV,
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.interval <= 0:
        _parser().error("--rate, --duration and --interval must be positive")
    DATA.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_soak(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{result['timestamp']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"wrote {path}")
    p99s = [r["p99_ms"] for r in result["intervals"] if r["requests"]]
    if p99s:
        say(f"p99 per interval: median {statistics.median(p99s):.1f} ms, max {max(p99s):.1f} ms")
    return 1 if result["errors"] or result["leak_suspects"] else 0


if __name__ == "__main__":
    sys.exit(main())
