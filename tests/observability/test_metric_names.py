"""Every metric the dashboards, rules and data sources use exists somewhere, and is explained.

A name is accepted when it is one of Portico's own metrics (``observability/semconv.yaml``, the
registry ``tests/unit/libs/common/test_telemetry.py`` keeps complete), a recording rule of
``observability/prometheus/rules``, or an external metric listed in
``catalog.EXTERNAL_METRICS`` with where it comes from. That the Portico ones are really exposed
after traffic is ``tests/integration/observability/test_metrics_catalog.py``'s job.
"""

from __future__ import annotations

import pytest

from tests.observability.catalog import (
    COLLECTOR_LAYERS,
    EXTERNAL_METRICS,
    exposed_names,
    load_yaml,
    matchers,
    metric_names,
    origin,
    recorded_names,
    referenced_metrics,
    semconv_metrics,
)


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        ("up", {"up"}),
        ('sum by (route, le) (rate(a_bucket{route=~"/v1/.+", le="0.25"}[5m]))', {"a_bucket"}),
        ("histogram_quantile(0.99, sum by (le) (rate(b_bucket[$__rate_interval])))", {"b_bucket"}),
        (
            'x:y:rate5m{a="b"} / on (a, b) group_left () (1 - z:objective)',
            {"x:y:rate5m", "z:objective"},
        ),
        ("a > (14.4 * 0.001) and b offset 5m > bool 1e3 or vector(1) unless c", {"a", "b", "c"}),
        ('sum_over_time(r[30d:5m]) / count(s{job="gateway"} == 0)', {"r", "s"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("max without (instance) (g) - ignoring (pod) h", {"g", "h"}),
        ("time() - process_start_time_seconds", {"process_start_time_seconds"}),
    ],
)
def test_metric_names_are_read_from_promql(promql: str, names: set[str]) -> None:
    assert metric_names(promql) == names


def test_label_matchers_are_read_per_selector() -> None:
    found = list(matchers('rate(m_count{service="s.v1.S", code=~"A|B"}[5m]) / n{le="0.1"}'))
    assert [(m.metric, m.label, m.op, m.value) for m in found] == [
        ("m_count", "service", "=", "s.v1.S"),
        ("m_count", "code", "=~", "A|B"),
        ("n", "le", "=", "0.1"),
    ]


def test_every_metric_used_is_portico_s_a_recording_rule_or_a_listed_external_one() -> None:
    unknown = {
        name: places[:3] for name, places in referenced_metrics().items() if origin(name) is None
    }
    assert not unknown, f"metrics nobody emits (add to semconv or EXTERNAL_METRICS): {unknown}"


def test_every_listed_external_metric_is_still_used() -> None:
    unused = set(EXTERNAL_METRICS) - set(referenced_metrics())
    assert not unused, f"EXTERNAL_METRICS lists names no query uses: {unused}"


def test_every_recording_rule_that_is_read_is_defined_before_use() -> None:
    used = {n for n in referenced_metrics() if ":" in n}
    assert used <= recorded_names()


def test_every_portico_metric_is_shown_or_alerted_on_somewhere() -> None:
    used = set(referenced_metrics())
    unused = [
        name for name, kind in semconv_metrics().items() if not exposed_names(name, kind) & used
    ]
    assert not unused, f"semconv metrics no dashboard or rule uses: {unused}"


def test_span_metric_names_match_the_collector_s_spanmetrics_settings() -> None:
    base = load_yaml(COLLECTOR_LAYERS[0])
    spanmetrics = base["connectors"]["spanmetrics"]
    prefix = spanmetrics["namespace"].replace(".", "_")
    assert spanmetrics["histogram"]["unit"] == "s"
    for name in (n for n in referenced_metrics() if n.startswith("traces_")):
        assert name in {f"{prefix}_calls_total", f"{prefix}_duration_seconds_bucket"}, name
