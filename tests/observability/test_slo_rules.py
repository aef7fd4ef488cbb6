"""The SLO rule files share one shape: every SLO, every window, thresholds from its objective.

promtool checks the syntax and runs the behaviour tests (``make obs-check``); this module checks
what promtool cannot: that the six SLOs (gateway, users, auth x availability, latency) are
written alike, so the tests of one (``observability/prometheus/tests/slow-burn.yaml``) stand for
all, that every alert carries what on-call needs, and that every alert has a unit test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.observability.catalog import (
    ROOT,
    RULE_TESTS,
    load_yaml,
    rule_files,
    rules,
    unparsable,
)
from tests.observability.catalog import (
    rule_queries as all_rule_queries,
)

COMPONENTS = ("gateway", "users", "auth")
SLOS = ("availability", "latency")
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
OBJECTIVES = {"availability": 0.999, "latency": 0.99}
#: Google SRE workbook, "Alerting on SLOs", table 5-8: (severity, factor, long, short window).
BURN_RATES = {
    "FastBurn": ("page", ((14.4, "1h", "5m"), (6.0, "6h", "30m"))),
    "SlowBurn": ("ticket", ((3.0, "1d", "2h"), (1.0, "3d", "6h"))),
}
_CONDITION = re.compile(
    r"portico:slo_errors:ratio_rate(\w+)\{([^}]*)\}\s*>\s*\(([\d.]+)\s*\*\s*([\d.]+)\)"
)


def records_of(component: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(record name, slo) -> rule, for one component's file."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name, rule in rules():
        if name == f"{component}.yaml" and "record" in rule:
            assert rule["labels"]["component"] == component
            key = (rule["record"], rule["labels"]["slo"])
            assert key not in found, f"{component}: {key} recorded twice"
            found[key] = rule
    return found


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for _, rule in rules() if "alert" in rule}


def test_there_is_one_rule_file_per_component() -> None:
    # audit.yaml: the audit service's alerts (dead letters); it has no SLO of its own yet.
    # postgres.yaml: backup health of the CloudNativePG cluster (no SLO either).
    # valkey.yaml: memory of the Valkey instances, before one is full (no SLO either).
    assert set(rule_files()) == {f"{c}.yaml" for c in (*COMPONENTS, "audit", "postgres", "valkey")}


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_slo_records_its_objective_rates_and_every_window(component: str) -> None:
    records = records_of(component)
    for slo in SLOS:
        objective = records[("portico:slo_objective:ratio", slo)]
        assert objective["expr"] == f"vector({OBJECTIVES[slo]})"
        assert ("portico:slo_requests:rate5m", slo) in records
        assert ("portico:slo_errors:rate5m", slo) in records
        for window in WINDOWS:
            assert (f"portico:slo_errors:ratio_rate{window}", slo) in records, (slo, window)


@pytest.mark.parametrize("component", COMPONENTS)
def test_long_windows_sum_the_5m_rates_of_the_same_slo(component: str) -> None:
    records = records_of(component)
    for slo in SLOS:
        selector = f'{{component="{component}", slo="{slo}"}}'
        short = " ".join(records[("portico:slo_errors:ratio_rate5m", slo)]["expr"].split())
        assert short == (
            f"portico:slo_errors:rate5m{selector} / portico:slo_requests:rate5m{selector}"
        )
        for window in WINDOWS[1:]:
            expr = " ".join(
                records[(f"portico:slo_errors:ratio_rate{window}", slo)]["expr"].split()
            )
            assert expr == (
                f"sum_over_time(portico:slo_errors:rate5m{selector}[{window}]) / "
                f"sum_over_time(portico:slo_requests:rate5m{selector}[{window}])"
            )


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("slo", SLOS)
@pytest.mark.parametrize("kind", sorted(BURN_RATES))
def test_burn_rate_alerts_use_the_workbook_windows_and_the_slo_s_own_budget(
    component: str, slo: str, kind: str
) -> None:
    name = f"Portico{component.title()}{slo.title()}{kind}"
    alert = alerts()[name]
    severity, pairs = BURN_RATES[kind]
    assert alert["labels"] == {"severity": severity}
    budget = round(1 - OBJECTIVES[slo], 6)
    conditions = _CONDITION.findall(alert["expr"])
    expected = []
    for factor, long, short in pairs:
        for window in (long, short):
            expected.append((window, f'component="{component}", slo="{slo}"', factor, budget))
    got = [(w, sel, float(f), float(b)) for w, sel, f, b in conditions]
    assert got == expected
    # Each pair is long AND short; the two pairs are OR-ed.
    assert " ".join(alert["expr"].split()).count(") or (") == 1
    assert alert["expr"].count(" and") == 2


def test_every_alert_says_how_bad_where_and_what_to_do() -> None:
    for name, alert in alerts().items():
        assert name.startswith("Portico"), name
        assert alert["labels"]["severity"] in ("page", "ticket"), name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        # Its own runbook section (test_alertmanager checks the page has that heading).
        assert annotations["runbook_url"] == f"docs/observability.md#{name.lower()}", name
        # Which environment (or pod): one Prometheus may watch several namespaces.
        assert re.search(r"\{\{ \$labels\.(namespace|pod) \}\}", annotations["summary"]), name


def test_every_alert_has_a_promtool_unit_test() -> None:
    tested: set[str] = set()
    for path in RULE_TESTS.glob("*.yaml"):
        for test in load_yaml(path)["tests"]:
            for check in test.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert set(alerts()) <= tested, f"alerts never shown firing in a test: {set(alerts()) - tested}"


def test_every_unit_test_file_loads_rule_files_that_exist() -> None:
    for path in RULE_TESTS.glob("*.yaml"):
        for rule_file in load_yaml(path)["rule_files"]:
            assert (path.parent / rule_file).resolve().is_file(), (path.name, rule_file)


def telemetry_page() -> str:
    return (ROOT / "docs" / "telemetry.md").read_text()


def test_the_docs_document_every_alert_under_the_runbook_anchor() -> None:
    section = telemetry_page().split("\n## SLOs, error budgets and alerts\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    for name in alerts():
        generic = re.sub(
            r"^Portico(Gateway|Users|Auth)(Availability|Latency)", "Portico<Component><Slo>", name
        )
        assert f"`{name}`" in section or f"`{generic}`" in section, name


def test_the_docs_state_how_many_promtool_test_cases_there_are() -> None:
    cases = sum(len(load_yaml(p)["tests"]) for p in RULE_TESTS.glob("*.yaml"))
    assert f"({cases} cases)" in telemetry_page()


@pytest.mark.usefixtures("needs_promtool")
def test_every_rule_expression_parses(tmp_path: Path) -> None:
    assert unparsable(all_rule_queries(), tmp_path) == []
