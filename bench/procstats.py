"""CPU time and RSS of the processes under test, read with psutil around each measured cell."""

from __future__ import annotations

import resource
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU seconds (user + system) per process name, and the load generators' (reaped children)."""

    cpu_s: dict[str, float]
    loadgen_cpu_s: float


class Watched:
    """Named processes whose CPU is attributed to each cell; ``tree`` includes child processes.

    PostgreSQL does its work in one backend process per connection, children of the postmaster,
    so it is watched as a tree: the live processes' CPU plus what each has collected from
    children it reaped (a backend that exits during a cell moves its CPU time to the
    postmaster's ``children_*`` times, so the sum never goes backwards). The harness itself is
    watched as ``launcher``: it relays the services' log lines, as ``make run`` does.
    """

    def __init__(self) -> None:
        self._procs: dict[str, tuple[psutil.Process, bool]] = {}

    def add(self, name: str, pid: int, *, tree: bool = False) -> None:
        self._procs[name] = (psutil.Process(pid), tree)

    @property
    def names(self) -> list[str]:
        return list(self._procs)

    def pid(self, name: str) -> int:
        return self._procs[name][0].pid

    @staticmethod
    def _cpu(proc: psutil.Process, tree: bool) -> float:
        procs = [proc, *proc.children(recursive=True)] if tree else [proc]
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
            if tree:  # children that exited and were reaped: their time moved to the parent
                total += t.children_user + t.children_system
        return total

    def sample(self) -> Sample:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return Sample(
            cpu_s={n: self._cpu(p, tree) for n, (p, tree) in self._procs.items()},
            loadgen_cpu_s=usage.ru_utime + usage.ru_stime,
        )

    def rss_mb(self) -> dict[str, float]:
        """Resident set size per process (for a tree: the sum over the tree), MiB."""
        out: dict[str, float] = {}
        for name, (proc, tree) in self._procs.items():
            procs = [proc, *proc.children(recursive=True)] if tree else [proc]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            out[name] = total / 2**20
        return out


def cpu_us_per_request(before: Sample, after: Sample, requests: int) -> dict[str, float]:
    """CPU microseconds per request for each watched process, plus ``loadgen``."""
    n = max(requests, 1)
    per = {k: (after.cpu_s[k] - before.cpu_s[k]) * 1e6 / n for k in after.cpu_s}
    per["loadgen"] = (after.loadgen_cpu_s - before.loadgen_cpu_s) * 1e6 / n
    return per
