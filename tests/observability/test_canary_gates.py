"""The canary gates can fail: the AnalysisTemplates' queries, run by promtool on synthetic series.

Each query of ``k8s/components/rollouts/analysis-templates.yaml`` is taken as it is, with the
arguments a Rollout passes (``rollouts.yaml``), and evaluated by ``promtool test rules`` over four
canaries: a healthy one, one answering 5 % errors, one that got slow, and one with no series at
all (not scraped). promtool asserts the value each query returns; the template's own
``successCondition`` is then applied to that value. The conditions are all ``result[0] <op>
<number>``, checked by a pattern before they are evaluated, so Python's comparison is the
expression language's (Argo Rollouts' ``expr`` has no Python binding to call instead).

Stable pods with errors and slow answers sit beside the canary in every scenario: the queries
must judge the canary's pods only.
"""

from __future__ import annotations

import math
import operator
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.catalog import ROOT, promtool

ROLLOUTS = ROOT / "k8s" / "components" / "rollouts"
NAMESPACE = "portico-staging"
CANARY = "7d9f8c6b5"
STABLE = "5c6d7e8f9"
_ARG = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")
_CONDITION = re.compile(r"^result\[0\] (>=|<|<=|>) ([0-9.]+)$")
_OPS = {">=": operator.ge, "<": operator.lt, "<=": operator.le, ">": operator.gt}
#: Bucket bounds of the latency histograms (observability/semconv.yaml).
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
MINUTES = 10


def templates() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((ROLLOUTS / "analysis-templates.yaml").read_text())
    return {d["metadata"]["name"]: d for d in docs if d}


def rollout_args() -> dict[str, dict[str, str]]:
    """The fixed arguments each Rollout passes (namespace and canary-hash are set below)."""
    docs = yaml.safe_load_all((ROLLOUTS / "rollouts.yaml").read_text())
    found = {}
    for rollout in (d for d in docs if d):
        analysis = rollout["spec"]["strategy"]["canary"]["analysis"]
        args = {a["name"]: a["value"] for a in analysis["args"] if "value" in a}
        found[rollout["metadata"]["name"]] = {
            **args,
            "namespace": NAMESPACE,
            "canary-hash": CANARY,
            "template": analysis["templates"][0]["templateName"],
        }
    return found


def fill(text: str, args: dict[str, str]) -> str:
    return _ARG.sub(lambda m: args[m.group(1)], text)


@dataclass(frozen=True)
class Canary:
    """Per-minute traffic of the canary pod: requests, errors, and the bucket they land in."""

    requests: int
    errors: int
    le: str  # every request is answered within this bucket (and not the one below)
    scraped: bool = True


SCENARIOS = {
    "healthy": (Canary(1000, 2, "0.025"), True),
    "five-percent-errors": (Canary(1000, 50, "0.025"), False),
    "latency-regression": (Canary(1000, 0, "2.5"), False),
    "no-series": (Canary(0, 0, "0.025", scraped=False), False),
}


def series(app: str, args: dict[str, str], pod_hash: str, canary: Canary) -> list[dict[str, str]]:
    """input_series of one pod of ``app``: the histogram the app's template reads."""
    pod = f"{app}-{pod_hash}-x2k4p"
    common = f'namespace="{NAMESPACE}", pod="{pod}", job="{app}"'
    good, bad = canary.requests - canary.errors, canary.errors
    if app == "gateway":
        metric = "portico_http_server_duration_seconds"
        labels = [
            (f'{common}, route="/v1/users/{{id}}", method="GET", status="200"', good),
            (f'{common}, route="/v1/users/{{id}}", method="GET", status="503"', bad),
        ]
    else:
        metric = "portico_grpc_server_duration_seconds"
        service = f'service="{args["service"]}", method="Get"'
        labels = [
            (f'{common}, {service}, code="OK"', good),
            (f'{common}, {service}, code="UNAVAILABLE"', bad),
        ]
    out = []
    for label_set, per_minute in labels:
        out.append(
            {"series": f"{metric}_count{{{label_set}}}", "values": f"0+{per_minute}x{MINUTES}"}
        )
        reached = False
        for le in BUCKETS:
            reached = reached or le == canary.le
            value = per_minute if reached else 0
            out.append(
                {
                    "series": f'{metric}_bucket{{{label_set}, le="{le}"}}',
                    "values": f"0+{value}x{MINUTES}",
                }
            )
    return out


def evaluate(tmp_path: Path, query: str, inputs: list[dict[str, str]]) -> float:
    """The value promtool computes for ``query`` at minute 5 (it asserts it, we read it back)."""
    binary = promtool()
    assert binary is not None
    probe = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                # A deliberately wrong expectation: promtool's failure message prints the value.
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "5m",
                        "exp_samples": [{"labels": "{}", "value": -42}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(probe, sort_keys=False))
    result = subprocess.run(
        [binary, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    got = re.search(r"got:\s*(?:\{\}\s*)?([-+0-9.eEinfINFaN]+)", output)
    assert got, output
    value = float(got.group(1))
    confirm(tmp_path, query, inputs, value)
    return value


def confirm(tmp_path: Path, query: str, inputs: list[dict[str, str]], value: float) -> None:
    """promtool's own assertion that the query returns exactly ``value`` (NaN: the query
    returns a series whose value is not equal to itself, asserted with ``!= bool``)."""
    binary = promtool()
    assert binary is not None
    if math.isnan(value):
        expr, expected = f"({query}) != bool ({query})", 1.0
    else:
        expr, expected = query, value
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "5m",
                        "exp_samples": [{"labels": "{}", "value": expected}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "confirm.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [binary, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def passes(condition: str, value: float) -> bool:
    match = _CONDITION.match(condition.strip())
    assert match, f"condition outside what this test evaluates: {condition!r}"
    return bool(_OPS[match.group(1)](value, float(match.group(2))))


def test_conditions_accept_no_nan_and_queries_fall_back_to_failing_values() -> None:
    for template in templates().values():
        for metric in template["spec"]["metrics"]:
            assert "isNaN" not in metric["successCondition"], metric["name"]
            query = metric["provider"]["prometheus"]["query"]
            assert "vector(1)" not in query, "no data must not read as a perfect success rate"


@pytest.mark.usefixtures("needs_promtool")
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("app", ["gateway", "users", "auth", "audit"])
def test_canary_gate(app: str, scenario: str, tmp_path: Path) -> None:
    canary, should_pass = SCENARIOS[scenario]
    args = rollout_args()[app]
    template = templates()[args["template"]]
    # Stable pods next to the canary, bad on purpose: 30 % errors and slow.
    inputs = series(app, args, STABLE, Canary(1000, 300, "2.5"))
    if canary.scraped:
        inputs += series(app, args, CANARY, canary)
    verdicts = {}
    for metric in template["spec"]["metrics"]:
        query = fill(metric["provider"]["prometheus"]["query"], args)
        condition = fill(metric["successCondition"], args)
        value = evaluate(tmp_path, query, inputs)
        verdicts[metric["name"]] = (value, passes(condition, value))
    summary = {name: f"{v:g} -> {'pass' if ok else 'FAIL'}" for name, (v, ok) in verdicts.items()}
    if should_pass:
        assert all(ok for _, ok in verdicts.values()), summary
    elif scenario == "five-percent-errors":
        assert not verdicts["success-rate"][1], summary
    elif scenario == "latency-regression":
        assert not verdicts["p99-latency"][1], summary
    else:  # no series: both gates fail
        assert not any(ok for _, ok in verdicts.values()), summary


@pytest.mark.usefixtures("needs_promtool")
def test_a_canary_without_requests_in_the_window_fails(tmp_path: Path) -> None:
    """Series exist but carry no traffic (0/0 = NaN): not a pass either."""
    args = rollout_args()["users"]
    template = templates()[args["template"]]
    inputs = series("users", args, CANARY, Canary(0, 0, "0.025"))
    for metric in template["spec"]["metrics"]:
        value = evaluate(tmp_path, fill(metric["provider"]["prometheus"]["query"], args), inputs)
        assert math.isnan(value), (metric["name"], value)
        assert not passes(fill(metric["successCondition"], args), value), metric["name"]
