"""What ``observability/`` refers to: the PromQL of the dashboards and rules, and its metric names.

Shared by the unit tests in this package and by
``tests/integration/observability/test_metrics_catalog.py``, which scrapes the real processes and
checks that every Portico metric named here is exposed.

Metric names are read from PromQL with a small lexer (:func:`metric_names`): string literals,
label matchers ``{...}``, ranges ``[...]`` and grouping clauses ``by (...)``/``on (...)`` are
removed, then every identifier that is not a keyword and not called like a function is a metric
name. promtool checks the syntax separately (:func:`check_rules`), so the lexer only has to be
right on valid PromQL.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
RULES = OBSERVABILITY / "prometheus" / "rules"
RULE_TESTS = OBSERVABILITY / "prometheus" / "tests"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
DATASOURCES = OBSERVABILITY / "grafana" / "datasources"
SEMCONV = OBSERVABILITY / "semconv.yaml"
#: The collector's configuration layers, in merge order (base first).
COLLECTOR_LAYERS = (
    OBSERVABILITY / "otel-collector" / "collector.yaml",
    OBSERVABILITY / "otel-collector" / "collector-prod.yaml",
)

#: Metrics that come from elsewhere than Portico's code, each with where it comes from. Exact
#: names, not prefixes, so a typo in a dashboard still fails.
EXTERNAL_METRICS: dict[str, str] = {
    "up": "Prometheus: 1 when the target's last scrape succeeded",
    "ALERTS": "Prometheus: one series per pending or firing alert",
    "process_cpu_seconds_total": "prometheus-client's default process collector, in every process",
    "process_resident_memory_bytes": "prometheus-client's default process collector",
    "traces_span_metrics_calls_total": (
        "collector spanmetrics connector (otel-collector/collector.yaml: namespace "
        "traces.span.metrics)"
    ),
    "traces_span_metrics_duration_seconds_bucket": "collector spanmetrics connector (unit s)",
    "cnpg_backends_total": "CloudNativePG exporter, default query `backends`",
    "cnpg_collector_last_available_backup_timestamp": "CloudNativePG exporter, in-core backups",
    "cnpg_pg_stat_archiver_last_archived_time": "CloudNativePG exporter, `pg_stat_archiver`",
    "cnpg_pg_stat_archiver_last_failed_time": "CloudNativePG exporter, `pg_stat_archiver`",
    "cnpg_backends_waiting_total": "CloudNativePG exporter, default query `backends_waiting`",
    "cnpg_pg_database_size_bytes": "CloudNativePG exporter, default query `pg_database`",
    "cnpg_pg_replication_lag": "CloudNativePG exporter, default query `pg_replication`",
    "cnpg_pg_stat_database_xact_commit": "CloudNativePG exporter, `pg_stat_database`",
    "cnpg_pg_stat_database_xact_rollback": "CloudNativePG exporter, `pg_stat_database`",
    "cnpg_pg_stat_database_blks_hit": "CloudNativePG exporter, `pg_stat_database`",
    "cnpg_pg_stat_database_blks_read": "CloudNativePG exporter, `pg_stat_database`",
    "redis_up": "redis_exporter (the Valkey pod's sidecar)",
    "redis_commands_processed_total": "redis_exporter",
    "redis_memory_used_bytes": "redis_exporter",
    "redis_memory_max_bytes": "redis_exporter",
    "redis_connected_clients": "redis_exporter",
    "redis_db_keys": "redis_exporter",
    "redis_keyspace_hits_total": "redis_exporter",
    "redis_keyspace_misses_total": "redis_exporter",
    "redis_evicted_keys_total": "redis_exporter",
}

#: Grafana's built-in range variables, and what stands in for them when promtool parses a query.
_RANGE_VARIABLES = ("$__rate_interval", "$__interval", "$__range")
_VARIABLE = re.compile(r"\$\{[^}]+\}|\[\[[^\]]+\]\]|\$\w+")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*\w+\s*\)\s*$", re.DOTALL)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard or rule file, and where it is."""

    where: str
    expr: str

    @property
    def promql(self) -> str:
        """The expression with Grafana's variables replaced, so that promtool can parse it."""
        return to_promql(self.expr)


def to_promql(expr: str) -> str:
    """``expr`` with Grafana variables replaced: ranges by ``5m``, others by ``placeholder``."""
    for variable in _RANGE_VARIABLES:
        expr = expr.replace(variable, "5m")
    return _VARIABLE.sub("placeholder", expr)


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects (recording-rule names included)."""
    text = _STRING.sub('""', promql)
    text = _BRACES.sub("{}", text)
    while _BRACKETS.search(text):
        text = _BRACKETS.sub("", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


@dataclass(frozen=True)
class Matcher:
    metric: str
    label: str
    op: str
    value: str


def matchers(promql: str) -> Iterator[Matcher]:
    """Every label matcher written inside a metric's braces, e.g. ``up{job="gateway"}``."""
    for selector in _SELECTOR.finditer(promql):
        for label, op, value in _MATCHER.findall(selector.group(2)):
            yield Matcher(selector.group(1), label, op, value)


# ------------------------------------------------------------------ dashboards


@functools.cache
def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, nested ones (collapsed rows) included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def datasource_type(holder: dict[str, Any], default: str = "prometheus") -> str:
    datasource = holder.get("datasource")
    if isinstance(datasource, dict):
        return str(datasource.get("type", default))
    return default


def dashboard_queries() -> list[Query]:
    """The PromQL of every Prometheus panel target and query variable of every dashboard."""
    found: list[Query] = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if datasource_type(target, datasource_type(panel)) == "prometheus":
                    where = f"{name}: panel {panel.get('title')!r} target {target.get('refId')}"
                    found.append(Query(where, str(target["expr"])))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable.get("query")
            text = str(query.get("query", "") if isinstance(query, dict) else query)
            label_values = _LABEL_VALUES.match(text)
            if label_values:
                text = label_values.group(1) or ""
            if text.strip():
                found.append(Query(f"{name}: variable {variable['name']!r}", text))
    return found


# ------------------------------------------------------------------ rules


@functools.cache
def rule_files() -> dict[str, dict[str, Any]]:
    """Every rule file (plain rule groups), by file name."""
    return {path.name: load_yaml(path) for path in sorted(RULES.glob("*.yaml"))}


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, rule) for every recording and alerting rule."""
    for name, document in rule_files().items():
        for group in document["groups"]:
            for rule in group["rules"]:
                yield name, rule


def rule_queries() -> list[Query]:
    return [
        Query(f"{name}: {rule.get('record') or rule.get('alert')}", str(rule["expr"]))
        for name, rule in rules()
    ]


def recorded_names() -> set[str]:
    return {str(rule["record"]) for _, rule in rules() if "record" in rule}


def datasource_queries() -> list[Query]:
    """The PromQL in the Grafana data sources (trace to metrics links)."""
    found: list[Query] = []
    for path in sorted(DATASOURCES.glob("*.yaml")):
        for source in load_yaml(path)["datasources"]:
            links = source.get("jsonData", {}).get("tracesToMetrics", {})
            for query in links.get("queries", []):
                # Provisioning writes Grafana's $__tags as $$__tags; it expands to matchers.
                expr = str(query["query"]).replace("$$__tags", 'service_name="placeholder"')
                found.append(Query(f"{path.name}: {source['name']} {query['name']!r}", expr))
    return found


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_queries() + datasource_queries()


# ------------------------------------------------------------------ metric names


@functools.cache
def semconv_metrics() -> dict[str, str]:
    """Portico's own metrics (``observability/semconv.yaml``): name -> kind."""
    document = load_yaml(SEMCONV)
    return {str(m["name"]): str(m["kind"]) for m in document["metrics"]}


def exposed_names(name: str, kind: str) -> set[str]:
    """The sample names a metric of ``kind`` shows in the text exposition format."""
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return {name}


def portico_sample_names() -> dict[str, str]:
    """Every sample name Portico's code exposes -> the semconv metric it belongs to."""
    return {
        sample: name
        for name, kind in semconv_metrics().items()
        for sample in exposed_names(name, kind)
    }


def origin(name: str) -> str | None:
    """Where a metric name used by a query comes from, or None when nothing explains it."""
    if name in recorded_names():
        return "recording rule in observability/prometheus/rules"
    if name in portico_sample_names():
        return f"Portico's code (semconv.yaml: {portico_sample_names()[name]})"
    return EXTERNAL_METRICS.get(name)


def referenced_metrics() -> dict[str, list[str]]:
    """Every metric name the dashboards and rules use -> where (first few places)."""
    found: dict[str, list[str]] = {}
    for query in all_queries():
        for name in metric_names(query.promql):
            found.setdefault(name, []).append(query.where)
    return found


def sample_names(exposition: str) -> set[str]:
    """The sample names in a Prometheus text exposition (comments skipped)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


# ------------------------------------------------------------------ promtool


def promtool() -> str | None:
    """The promtool binary (Debian package `prometheus`; make obs-check installs it)."""
    return shutil.which("promtool")


def unparsable(queries: list[Query], directory: Path) -> list[str]:
    """promtool's complaints about ``queries``, each wrapped as a recording rule (none: all parse).

    ``promtool check rules`` names a failing rule by its record name (``query:n<index>``), which
    maps the complaint back to its dashboard panel or rule.
    """
    binary = promtool()
    assert binary is not None, "promtool is missing"
    rules_ = [{"record": f"query:n{i}", "expr": q.promql} for i, q in enumerate(queries)]
    path = directory / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules_}]}))
    result = subprocess.run(
        [binary, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return []
    output = result.stdout + result.stderr
    failing = sorted({int(i) for i in re.findall(r"query:n(\d+)", output)})
    return [f"{queries[i].where}: {queries[i].expr}" for i in failing] or [output]
