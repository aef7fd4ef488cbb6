"""The soak's load mix: each operation as often as its weight, spread through the cycle."""

from __future__ import annotations

import itertools
from collections import Counter

from bench.soak import MIX, schedule


def test_schedule_sends_each_operation_as_often_as_its_weight() -> None:
    cycle = schedule(MIX)
    assert len(cycle) == sum(MIX.values())
    assert Counter(cycle) == Counter(MIX)


def test_schedule_interleaves_instead_of_sending_runs_of_one_kind() -> None:
    assert schedule({"a": 3, "b": 2, "c": 1}) == ["a", "b", "a", "c", "b", "a"]
    cycle = schedule(MIX) * 2  # the load repeats the cycle: runs across its end count too
    longest = Counter[str]()
    for op, run in itertools.groupby(cycle):
        longest[op] = max(longest[op], len(list(run)))
    # 59 % reads cannot avoid short runs of reads; nothing else ever comes twice in a row.
    assert longest["get"] <= 3
    assert all(longest[op] == 1 for op in MIX if op != "get"), longest
