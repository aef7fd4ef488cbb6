"""The printed table, the ratios, the targets, and the machine description for the JSON."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cases import CASES, FULL_PATH, OTEL_PAIRS, PRODUCTION_RATIO

#: The product's processes (targets on start-up and memory apply to each).
SERVICES = ("users", "auth", "audit", "gateway")
#: Issue 13's per-process targets: exec → ready (s) and idle RSS (MiB), each strictly below.
READY_LIMIT_S = 1.0
IDLE_RSS_LIMIT_MB = 80.0
_SHORT = {
    "gateway": "gw",
    "users": "users",
    "valkey": "vk",
    "postgres": "pg",
    "monolith": "mono",
    "monolith_verify": "mono+v",
    "gateway_otel_on": "gw",
    "users_otel_on": "users",
    "gateway_otel_off": "gw",
    "gateway_otel_sampled": "gw",
    "users_otel_sampled": "users",
    "users_otel_off": "users",
    "gateway_auth_on": "gw",
    "users_auth_on": "users",
    "gateway_auth_off": "gw",
    "users_auth_off": "users",
}


def machine(repo: Path, wrk_version: str) -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gb": round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_generator": wrk_version,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


def _row(rows: list[dict[str, Any]], case: str, variant: str, c: int) -> dict[str, Any] | None:
    return next(
        (r for r in rows if (r["case"], r["variant"], r["concurrency"]) == (case, variant, c)),
        None,
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per case, variant and concurrency (medians over rounds)."""
    lines = [
        "| case | variant | c | token checks | req/s | p50 ms | p90 ms | p99 ms | errors "
        "| CPU µs/req (path) | per process µs/req | loadgen µs/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for r in rows:
        cpu = r["cpu_us_per_req"]
        parts = [f"{_SHORT.get(p, p)} {cpu.get(p, 0):.0f}" for p in r["processes"]]
        if cpu.get("launcher", 0) >= 5:  # the dev launcher relaying the services' log lines
            parts.append(f"(log relay {cpu['launcher']:.0f})")
        total = sum(cpu.get(p, 0.0) for p in r["processes"])
        extra = f" (miss {r['cache_miss_ratio']:.0%})" if "cache_miss_ratio" in r else ""
        errors = f"**{r['errors']} FAILED**" if r.get("failed_rounds") else f"{r['errors']}"
        lines.append(
            f"| {r['case']}{extra} | {r['variant']} | {r['concurrency']} "
            f"| {r.get('token_checks', '-')} | {r['rps']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {errors} "
            f"| {total:,.0f} | {' · '.join(parts)} | {cpu.get('loadgen', 0):.0f} |"
        )
    return "\n".join(lines)


def auth_lines(result: dict[str, Any]) -> str:
    """What the run did about access tokens and rate limits, and what a token check costs."""
    env = " ".join(f"{k}={v}" for k, v in result.get("stack_env", {}).items())
    cost = result.get("token_verification") or {}
    lines = [
        f"Rate limits off in the stack ({env}): they are a per-client policy (by default 600/min "
        "per address, 300/min per user), and all this load comes from 127.0.0.1 as two users, so "
        "they would answer 429 at once. The benchmark measures serving requests, not a quota.",
        "Access tokens: every request carries a valid one (get_cached: the user reading their "
        'own account; other cases: the dev admin), and a cell with any error fails. "token '
        "checks\" is how many times a request's token is verified: the gateway path twice (the "
        "gateway, then the users service), direct gRPC and mono+verify once, monolith and floor "
        "never (mono+verify is the monolith plus one check with GetUser's access rule).",
    ]
    if cost:
        # token_verification.measure: a token seen for the first time, and one seen before (the
        # verifier remembers a verified signature; the bench reuses its tokens, so the latter).
        first, verify = cost["verify_first_median_us"], cost["verify_repeat_median_us"]
        exists = cost["exists_median_us"]
        lines.append(
            f"TokenVerifier.verify this run (bench/token_verification.py, against the stack's "
            f"Valkey): median {verify:.0f} µs for a token seen before, mostly the session's "
            f"Valkey EXISTS ({exists:.0f} µs); {first:.0f} µs the first time "
            f"({cost['local_median_us']:.0f} µs of it local: signature, claims). Two checks ≈ "
            f"{2 * verify / 1000:.2f} ms of each gateway request."
        )
    return "\n".join(lines)


def failure_lines(failures: list[str]) -> str:
    if not failures:
        return "All cells: every request answered 2xx / OK."
    return "\n".join(
        [f"**{len(failures)} FAILED CELL(S)** (any error fails a cell):"]
        + [f"- {f}" for f in failures]
    )


def ratios(rows: list[dict[str, Any]], concurrency: tuple[int, ...]) -> list[dict[str, Any]]:
    """Full path (the case's ``full_path`` variant) ÷ each other variant of it, per concurrency."""
    out: list[dict[str, Any]] = []
    for case in CASES:
        for variant in case.variants:
            if variant.name == case.full_path:
                continue
            for c in concurrency:
                full, base = (
                    _row(rows, case.name, case.full_path, c),
                    _row(rows, case.name, variant.name, c),
                )
                if full is None or base is None or not base["p50_ms"] or not base["rps"]:
                    continue
                out.append(
                    {
                        "case": case.name,
                        "full": case.full_path,
                        "over": variant.name,
                        "concurrency": c,
                        "p50": full["p50_ms"] / base["p50_ms"],
                        "p99": full["p99_ms"] / base["p99_ms"] if base["p99_ms"] else None,
                        "rps": full["rps"] / base["rps"],
                    }
                )
    return out


def ratio_lines(items: list[dict[str, Any]]) -> str:
    lines = [
        "| case | full path ÷ | c | p50 x | p99 x | req/s x |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for x in items:
        p99 = f"{x['p99']:.2f}" if x["p99"] is not None else "-"
        full = x.get("full", FULL_PATH)
        over = x["over"] if full == FULL_PATH else f"{x['over']} ({full} ÷ it)"
        lines.append(
            f"| {x['case']} | {over} | {x['concurrency']} | {x['p50']:.2f} | {p99} "
            f"| {x['rps']:.2f} |"
        )
    return "\n".join(lines)


def _path_cpu(row: dict[str, Any]) -> float:
    return sum(float(row["cpu_us_per_req"].get(p, 0.0)) for p in row["processes"])


def otel_lines(rows: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    """The telemetry overhead: the cached GET with tracing + metrics on and off, interleaved."""
    names = {
        mode: next(v.name for c in CASES for v in c.variants if v.server == server)
        for server, mode in OTEL_PAIRS.items()
    }
    off_name = names.pop("off")
    cells = sorted({r["concurrency"] for r in rows if r["case"] == "otel_overhead"})
    if not cells:
        return ""
    lines = [
        "Telemetry overhead (otel_overhead: cached GET through gateway + users; on = tracing "
        "always_on, spans batched and exported over OTLP/gRPC to a local sink, and request "
        "metrics recorded (not scraped); prod = production's settings, head sampling "
        f"parentbased_traceidratio {PRODUCTION_RATIO} plus tail capture; off = "
        "OTEL_SDK_DISABLED and PORTICO_METRICS_ENABLED=false):",
        "",
        "| variant | c | p50 ms | p50 off ms | p50 ÷ off | p99 ÷ off | req/s ÷ off "
        "| CPU µs/req | CPU µs/req off | CPU - off µs/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in names.values():
        for c in cells:
            on = _row(rows, "otel_overhead", name, c)
            off = _row(rows, "otel_overhead", off_name, c)
            if on is None or off is None or not off["p50_ms"] or not off["rps"]:
                continue
            cpu_on, cpu_off = _path_cpu(on), _path_cpu(off)
            p99 = f"{on['p99_ms'] / off['p99_ms']:.2f}" if off["p99_ms"] else "-"
            lines.append(
                f"| {name} | {c} | {on['p50_ms']:.2f} | {off['p50_ms']:.2f} "
                f"| {on['p50_ms'] / off['p50_ms']:.2f} | {p99} | {on['rps'] / off['rps']:.2f} "
                f"| {cpu_on:,.0f} | {cpu_off:,.0f} | {cpu_on - cpu_off:,.0f} |"
            )
    if stats:
        spans = ", ".join(f"{k} {v}" for k, v in sorted(stats["spans"].items()))
        lines += [
            "",
            f"OTLP sink: {sum(stats['spans'].values()):,} spans in {stats['exports']:,} exports "
            f"({spans}); {stats['spans_per_request']:.1f} spans per traced request; the "
            f"gateway's server spans number {stats['exported_share']:.0%} of the "
            f"{stats['requests_to_traced_gateway']:,} requests wrk counted for the traced "
            "gateway (wrk leaves out those in flight when it stops: 100% or more means no "
            "span was dropped).",
        ]
        if "sampled_share" in stats:
            lines.append(
                f"The prod pair exported server spans for {stats['sampled_share']:.1%} of its "
                f"requests (head sampling by trace id, {PRODUCTION_RATIO}, plus tail capture)."
            )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    limit: str
    measure: Callable[[list[dict[str, Any]], dict[str, Any], dict[str, Any]], float | None]
    ok: Callable[[float], bool]
    unit: str


def _get(case: str, variant: str, c: int, key: str) -> Callable[..., float | None]:
    def measure(rows: list[dict[str, Any]], *_: Any) -> float | None:
        r = _row(rows, case, variant, c)
        return None if r is None else float(r[key])

    return measure


def _overhead(case: str, on: str, off: str) -> Callable[..., float | None]:
    """How much longer the c=1 median is with a feature on than off, in percent."""

    def measure(rows: list[dict[str, Any]], *_: Any) -> float | None:
        with_it, without = _row(rows, case, on, 1), _row(rows, case, off, 1)
        if with_it is None or without is None or not without["p50_ms"]:
            return None
        return 100 * (float(with_it["p50_ms"]) / float(without["p50_ms"]) - 1)

    return measure


def _worst(key: str, names: tuple[str, ...]) -> Callable[..., float | None]:
    def measure(_: Any, startup: dict[str, Any], rss: dict[str, Any]) -> float | None:
        values = startup.get(key, {})
        found = [
            statistics.median(v) if isinstance(v, list) else float(v)
            for n, v in values.items()
            if n in names
        ]
        return max(found) if found else None

    return measure


def _make_run(_: Any, startup: dict[str, Any], __: Any) -> float | None:
    runs = startup.get("make_run_to_first_request_s")
    return float(statistics.median(runs)) if runs else None


def _ratio(case: str, a: str, b: str, c: int, key: str) -> Callable[..., float | None]:
    """``key`` of variant ``a`` over the same of ``b`` (same case, same concurrency, same run)."""

    def measure(rows: list[dict[str, Any]], *_: Any) -> float | None:
        top, bottom = _row(rows, case, a, c), _row(rows, case, b, c)
        if top is None or bottom is None or not bottom[key]:
            return None
        return float(top[key]) / float(bottom[key])

    return measure


#: Issue 13's targets, each a ratio of two variants measured in the same run (absolute times on
#: these machines drift 2x between days), and the per-process ones.
TARGETS: tuple[Target, ...] = (
    Target("cached GET, edge path (auth on, production telemetry), c=1 p50 ÷ mono+verify",
           "≤ 1.2x", _ratio("get_cached", "edge", "mono+verify", 1, "p50_ms"),
           lambda v: v <= 1.2, "x"),
    Target("same, c=16 req/s ÷ mono+verify", "≥ 0.8x",
           _ratio("get_cached", "edge", "mono+verify", 16, "rps"), lambda v: v >= 0.8, "x"),
    Target("same, c=16 p99 ÷ mono+verify p99", "≤ 1.5x",
           _ratio("get_cached", "edge", "mono+verify", 16, "p99_ms"), lambda v: v <= 1.5, "x"),
    Target("cached GET through the users service (edge off), c=1 p50 ÷ mono+verify", "≤ 2.0x",
           _ratio("get_cached", "via users", "mono+verify", 1, "p50_ms"),
           lambda v: v <= 2.0, "x"),
    Target("production telemetry overhead, c=1 p50 (otel prod ÷ off - 1)", "≤ 10 %",
           _overhead("otel_overhead", "otel prod", "otel off"), lambda v: v <= 10, "%"),
    Target("gateway /healthz c=1 p50 ÷ bare ASGI floor", "≤ 2x",
           _ratio("healthz", "gateway", "floor", 1, "p50_ms"), lambda v: v <= 2, "x"),
    Target("observability overhead, c=1 p50 (otel on ÷ off - 1; dev settings)", "≤ 15 %",
           _overhead("otel_overhead", "otel on", "otel off"), lambda v: v <= 15, "%"),
    Target("auth overhead, c=1 p50 (auth on ÷ off - 1)", "≤ 10 %",
           _overhead("auth_overhead", "auth on", "auth off"), lambda v: v <= 10, "%"),
    Target("slowest service exec → ready", "< 1 s",
           _worst("exec_to_ready_s", SERVICES), lambda v: v < READY_LIMIT_S, "s"),
    Target("make run → first request (warm)", "< 5 s", _make_run, lambda v: v < 5, "s"),
    Target("largest idle RSS of a service (a copy, 2 s after ready)", "< 80 MiB",
           _worst("rss_idle_mb", SERVICES), lambda v: v < IDLE_RSS_LIMIT_MB, "MiB"),
)  # fmt: skip


def targets(
    rows: list[dict[str, Any]], startup: dict[str, Any], rss: dict[str, Any]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in TARGETS:
        value = t.measure(rows, startup, rss)
        out.append(
            {
                "target": t.name,
                "limit": t.limit,
                "value": value,
                "unit": t.unit,
                "met": None if value is None else t.ok(value),
            }
        )
    return out


def target_lines(items: list[dict[str, Any]]) -> str:
    lines = ["| target | limit | measured | met |", "|---|---|--:|:-:|"]
    for x in items:
        value = "-" if x["value"] is None else f"{x['value']:,.2f} {x['unit']}"
        met = {True: "yes", False: "**no**", None: "-"}[x["met"]]
        lines.append(f"| {x['target']} | {x['limit']} | {value} | {met} |")
    return "\n".join(lines)


def process_target_lines(startup: dict[str, Any]) -> str:
    """Each Python process against the start-up and memory targets (medians of its copies)."""
    times: dict[str, list[float]] = startup.get("exec_to_ready_s", {})
    idle: dict[str, list[float]] = startup.get("rss_idle_mb", {})
    lines = [
        f"| process | exec → ready s (< {READY_LIMIT_S:g}) | met "
        f"| idle RSS MiB (< {IDLE_RSS_LIMIT_MB:g}) | met |",
        "|---|--:|:-:|--:|:-:|",
    ]
    for name in times:  # each service, and its copies under --startup-env variants
        if name.split(" ")[0] not in SERVICES:
            continue
        ready = statistics.median(times[name])
        rss = statistics.median(idle[name]) if idle.get(name) else None
        lines.append(
            f"| {name} | {ready:.2f} | {'yes' if ready < READY_LIMIT_S else '**no**'} "
            f"| {'-' if rss is None else f'{rss:.1f}'} "
            f"| {'-' if rss is None else ('yes' if rss < IDLE_RSS_LIMIT_MB else '**no**')} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def startup_lines(startup: dict[str, Any], rss: dict[str, Any]) -> str:
    lines = [
        "| process | exec → ready s | RSS at ready MiB | RSS 2 s later MiB (anonymous) "
        "| idle RSS MiB | RSS after load MiB |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    idle_copy: dict[str, list[float]] = startup.get("rss_idle_mb", {})
    anon_copy: dict[str, list[float]] = startup.get("anon_idle_mb", {})
    times: dict[str, list[float]] = startup.get("exec_to_ready_s", {})
    at_ready: dict[str, list[float]] = startup.get("rss_at_ready_mb", {})
    names = list(dict.fromkeys([*times, *rss.get("idle", {})]))
    for n in names:
        if n == "launcher":
            continue
        t = f"{statistics.median(times[n]):.2f}" if n in times else "-"
        r = f"{statistics.median(at_ready[n]):.0f}" if n in at_ready else "-"
        later = f"{statistics.median(idle_copy[n]):.0f}" if idle_copy.get(n) else "-"
        if anon_copy.get(n):
            later += f" ({statistics.median(anon_copy[n]):.0f})"
        idle = rss.get("idle", {}).get(n)
        loaded = rss.get("after_load", {}).get(n)
        lines.append(
            f"| {n} | {t} | {r} | {later} | {'-' if idle is None else f'{idle:.0f}'} "
            f"| {'-' if loaded is None else f'{loaded:.0f}'} |"
        )
    answers = startup.get("make_run_to_first_answer_s")
    if answers:
        lines.append(
            f"| `make run` → first answer (401, no token; warm, median of {len(answers)}) "
            f"| {statistics.median(answers):.2f} | | | | |"
        )
    runs = startup.get("make_run_to_first_request_s")
    if runs:
        lines.append(
            f"| `make run` → first request (admin login + GET 200; warm, median of {len(runs)}) "
            f"| {statistics.median(runs):.2f} | | | | |"
        )
    if "make_run_cold_s" in startup:
        lines.append(f"| `make run` → first request (cold: new data dir) "
                     f"| {startup['make_run_cold_s']:.2f} | | | | |")  # fmt: skip
    return "\n".join(lines)
