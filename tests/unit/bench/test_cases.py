"""The benchmark's cases are consistent: every variant names a server the harness can start and
account for, and each issue 13 target reads variants that exist."""

from __future__ import annotations

import re

from bench.cases import AUTH_PAIRS, CASES, EDGE_ENV, EDGE_PAIRS, OTEL_PAIRS, PATHS, TOKEN_CHECKS
from bench.report import TARGETS


def test_every_variant_runs_on_a_known_server() -> None:
    for case in CASES:
        names = [v.name for v in case.variants]
        assert case.full_path in names, case.name
        assert len(set(names)) == len(names), case.name
        for variant in case.variants:
            assert variant.server in PATHS, (case.name, variant.name)
            assert variant.server in TOKEN_CHECKS, (case.name, variant.name)


def test_pairs_are_distinct_and_the_edge_pairs_switch_only_the_edge_path() -> None:
    pairs = [*OTEL_PAIRS, *AUTH_PAIRS, *EDGE_PAIRS]
    assert len(set(pairs)) == len(pairs)
    assert {EDGE_ENV[m]["GATEWAY_EDGE_READS"] for m in EDGE_PAIRS.values()} == {"true", "false"}
    assert TOKEN_CHECKS["gateway_edge"] == 1  # the users service is not called


def test_the_ratio_targets_name_variants_of_their_case() -> None:
    variants = {(c.name, v.name) for c in CASES for v in c.variants}
    checked = 0
    for target in TARGETS:
        cells = getattr(target.measure, "__closure__", None) or ()
        values = [c.cell_contents for c in cells if isinstance(c.cell_contents, str)]
        case = next((v for v in values if any(v == c.name for c in CASES)), None)
        if case is None:
            continue  # a per-process target
        for name in values:
            if name != case and not re.fullmatch(r"p\d+_ms|rps", name):
                assert (case, name) in variants, (target.name, case, name)
                checked += 1
    assert checked >= 10  # the ratio and overhead targets were read, not skipped
