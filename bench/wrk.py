"""Run wrk (Debian's package) for one cell and parse the summary line of ``scripts/report.lua``."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"
_MARK = "BENCH_WRK "


class WrkError(Exception):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load generator run measured (latencies in milliseconds)."""

    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    #: What the errors were: HTTP status class or gRPC code → count (empty when none).
    error_codes: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: run `make bench` (it installs Debian's wrk)")
    return found


def _script_text(scenario: str | None) -> str:
    body = (SCRIPTS / scenario).read_text() if scenario else ""
    return body + "\n" + (SCRIPTS / "report.lua").read_text()


async def version() -> str:
    proc = await asyncio.create_subprocess_exec(
        wrk_binary(), "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return out.decode().splitlines()[0].split(" Copyright")[0].strip() if out else "wrk"


async def run(
    url: str,
    *,
    connections: int,
    duration_s: float,
    scenario: str | None = None,
    args: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
    threads: int = 1,
) -> LoadResult:
    """One wrk run: ``connections`` keep-alive connections for ``duration_s`` against ``url``.

    ``headers`` go on every request (``-H``; the scenario scripts copy ``wrk.headers`` into the
    headers they pass to ``wrk.format``). wrk counts a response with a status of 400 or more as a
    status error; which status it cannot tell without a Lua ``response`` hook on every request,
    which would cost the floor baseline much of its speed. They are ``"http_4xx_5xx"`` in
    ``error_codes``.
    """
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script:
        script.write(_script_text(scenario))
        script.flush()
        argv = [
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "5s",
            "-s",
            script.name,
            *(a for n, v in (headers or {}).items() for a in ("-H", f"{n}: {v}")),
            url,
            "--",
            *args,
            str(threads),
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
    text = out.decode("utf-8", "replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise WrkError(f"wrk failed (exit {proc.returncode}): {text.strip()[-800:]}")
    data = json.loads(line.removeprefix(_MARK))
    codes = {
        "http_4xx_5xx": int(data["status_errors"]),
        "socket": sum(int(data[k]) for k in ("connect_errors", "read_errors", "write_errors")),
        "timeout": int(data["timeouts"]),
    }
    codes = {k: v for k, v in codes.items() if v}
    return LoadResult(
        requests=int(data["requests"]),
        duration_s=int(data["duration_us"]) / 1e6,
        errors=sum(codes.values()),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        error_codes=codes,
    )
