"""``python -m bench`` (``make bench``): measure the full path against same-run baselines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, token_verification, wrk
from bench.cases import CASES
from bench.harness import DATA, REPO, STACK_ENV, Bench, Options, need, say, stdout_to, utc_stamp

QUICK = Options(
    duration_s=1.0,
    warmup_s=1.0,
    rounds=1,
    concurrency=(1, 16),
    miss_pool=1_500,
    patch_pool=128,
    startup_repeats=1,
    token_samples=1_000,
    quick=True,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start the `make run` stack and baselines on loopback, measure each case at "
        "each concurrency with the variants interleaved, print a table, write JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (< 60 s): 1 s cells")
    parser.add_argument("--duration", type=float, help="seconds per cell (default 3)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per variant (default 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per cell (default 2)")
    parser.add_argument(
        "--concurrency", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 1,16,64"
    )
    parser.add_argument(
        "--cases", type=lambda s: tuple(s.split(",")), help=f"subset of {[c.name for c in CASES]}"
    )
    parser.add_argument("--no-make-run", action="store_true", help="skip the `make run` timing")
    parser.add_argument(
        "--startup-only",
        action="store_true",
        help="only start-up and memory: start the stack, time exec → ready of a copy of each "
        "service, read its RSS at ready and 2 s later, print them against the targets (≈ 1 min)",
    )
    parser.add_argument(
        "--startup-env",
        action="append",
        default=[],
        metavar="NAME=VALUE[,NAME=VALUE]",
        help="also start each copy with these variables (repeatable: one variant each), "
        "interleaved with the plain copies, e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="folder of the JSON results"
    )
    return parser


def _options(args: argparse.Namespace) -> Options:
    base = QUICK if args.quick else Options()
    update: dict[str, Any] = {}
    for name, key in (
        ("duration", "duration_s"),
        ("warmup", "warmup_s"),
        ("rounds", "rounds"),
        ("concurrency", "concurrency"),
        ("cases", "cases"),
    ):
        if getattr(args, name) is not None:
            update[key] = getattr(args, name)
    if args.startup_env:
        update["startup_env"] = tuple(
            dict(pair.split("=", 1) for pair in variant.split(",")) for variant in args.startup_env
        )
    return Options(**(_fields(base) | update))


def _fields(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in Options.__dataclass_fields__}


async def _measure(options: Options, *, make_run: bool, startup_only: bool) -> dict[str, Any]:
    started = time.perf_counter()
    stamp = utc_stamp()
    log_path = DATA.parent / "bench.log"
    wrk_version = "not used" if startup_only else await wrk.version()
    with (
        tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp,
        log_path.open("w") as log,
        stdout_to(log),
    ):
        bench = Bench(options, log, Path(tmp))
        token_cost: dict[str, float] = {}
        try:
            say(f"starting the stack (logs: {log_path.relative_to(REPO)})")
            await bench.start_stack()
            if startup_only:
                say("timing exec → ready and idle RSS of a copy of each service")
                await bench.measure_process_startup()
                bench.rss["idle"] = bench.watched.rss_mb()
                return _result(bench, options, stamp, started, wrk_version, {})
            await bench.seed()
            await bench.start_baselines()
            await bench.start_otel_pairs()
            say("timing exec → ready of users and gateway copies")
            await bench.measure_process_startup()
            await asyncio.sleep(1)
            bench.rss["idle"] = bench.watched.rss_mb()
            say("timing TokenVerifier.verify against the stack's Valkey")
            valkey = need(need(bench.stack, "the stack").valkey, "embedded Valkey")
            token_cost = await token_verification.measure(valkey.url, options.token_samples)
            await bench.run_cases()
            say("coherence: PATCH through one gateway, GET through the others")
            await bench.check_coherence()
            bench.rss["after_load"] = bench.watched.rss_mb()
        finally:
            say("stopping")
            await bench.stop()
        if make_run:
            say("timing `make run` → first served request")
            await bench.measure_make_run()
    return _result(bench, options, stamp, started, wrk_version, token_cost)


def _result(
    bench: Bench,
    options: Options,
    stamp: str,
    started: float,
    wrk_version: str,
    token_cost: dict[str, float],
) -> dict[str, Any]:
    rows = bench.summary()
    return {
        "timestamp": stamp,
        "machine": report.machine(REPO, wrk_version),
        "options": _fields(options) | {"concurrency": list(options.concurrency)},
        "wall_s": time.perf_counter() - started,
        "checks": bench.checks,
        "failures": bench.failures,
        "stack_env": STACK_ENV,
        "token_verification": token_cost,
        "logins": bench.tokens.logins_done if bench.tokens else 0,
        "summary": rows,
        "ratios": report.ratios(rows, options.concurrency),
        "otel": bench.otel_stats,
        "targets": report.targets(rows, bench.startup, bench.rss),
        "startup": bench.startup,
        "rss_mb": bench.rss,
        "cells": bench.cells_json(),
    }


def render(result: dict[str, Any]) -> str:
    """The printed report: machine line, table, ratios, start-up and memory, targets."""
    m, o = result["machine"], result["options"]
    dirty = " (dirty)" if m["git_dirty"] else ""
    parts = [
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GiB, "
        f"Python {m['python']}, {m['load_generator']}; commit {m['git_commit'][:10]}{dirty}; "
        f"{result['timestamp']}; {o['duration_s']:g} s cells, median of {o['rounds']} "
        "interleaved round(s)",
        report.table(result["summary"]),
        report.auth_lines(result),
        "Ratios (full path ÷ baseline):",
        report.ratio_lines(result["ratios"]),
        report.otel_lines(result["summary"], result.get("otel") or {}),
        report.startup_lines(result["startup"], result["rss_mb"]),
        report.process_target_lines(result["startup"]),
        report.target_lines(result["targets"]),
        f"checks: {result['checks']}",
        report.failure_lines(result["failures"]),
    ]
    return "\n\n".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = _options(args)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(
        _measure(
            options,
            make_run=not (args.no_make_run or args.startup_only),
            startup_only=args.startup_only,
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "startup-" if args.startup_only else ""  # results keep the latest of each kind
    path = args.out / f"{kind}{result['timestamp']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"wrote {path} in {result['wall_s']:.0f} s")
    if result["failures"]:
        say(f"{len(result['failures'])} cell(s) FAILED: see the report above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
