"""The rest of ``observability/``: collector layers, scrape config, log pipeline, Kibana, Jaeger.

No OpenTelemetry Collector, Grafana, Fluent Bit or Kibana validator installs from a registry here
(``NOTES.md``), so these are structural checks of the files against each other and against the
code: the ports in the scrape config are the settings' defaults, the log fields Kibana shows are
the ones ``portico_common.logs.JsonFormatter`` writes, the ids the links use exist.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest

from portico_audit.config import AuditSettings
from portico_auth.config import AuthSettings
from portico_common.logs import JsonFormatter
from portico_common.tail_capture import CAPTURE_ATTRIBUTE, Reason
from portico_gateway.config import GatewaySettings
from portico_users.config import UsersSettings
from tests.observability.catalog import (
    COLLECTOR_LAYERS,
    DATASOURCES,
    OBSERVABILITY,
    RULES,
    load_yaml,
    promtool,
)

PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yaml"
FLUENT_BIT = OBSERVABILITY / "fluent-bit" / "fluent-bit.yaml"
KIBANA = OBSERVABILITY / "kibana" / "saved-objects.ndjson"
INDEX_TEMPLATE = OBSERVABILITY / "elasticsearch" / "index-template.json"
JAEGER_UI = OBSERVABILITY / "jaeger" / "jaeger-ui.json"
KUSTOMIZATION = OBSERVABILITY / "kustomization.yaml"
TRACE_SEARCH = "portico-logs-of-one-trace"
#: Fields every Portico JSON log line has (portico_common.logs).
LOG_FIELDS = {"timestamp", "level", "logger", "message", "service", "request_id"}
TRACE_FIELDS = {"trace_id", "span_id"}


# ------------------------------------------------------------------ OpenTelemetry Collector


def merge(base: Any, layer: Any) -> Any:
    """The collector's merge of two configuration layers: maps merge key by key, lists and
    scalars of the later layer replace the earlier ones (confmap's default)."""
    if isinstance(base, dict) and isinstance(layer, dict):
        merged = dict(base)
        for key, value in layer.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return layer


def effective_configs() -> dict[str, dict[str, Any]]:
    """The configuration each environment runs: base alone, and base + prod."""
    base, prod = (load_yaml(p) for p in COLLECTOR_LAYERS)
    return {"base": base, "prod": merge(base, prod)}


def test_the_merge_replaces_lists_like_the_collector() -> None:
    merged = merge({"a": {"b": [1, 2], "c": 1}}, {"a": {"b": [3]}})
    assert merged == {"a": {"b": [3], "c": 1}}


@pytest.mark.parametrize("layer", COLLECTOR_LAYERS, ids=lambda p: p.name)
def test_every_collector_layer_starts_by_saying_what_it_adds_and_that_arrays_are_replaced(
    layer: Path,
) -> None:
    lines = layer.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = " ".join(header)
    assert lines[0].startswith("# OpenTelemetry Collector,")
    assert "adds" in text
    assert "REPLACES arrays" in text


@pytest.mark.parametrize("env", ["base", "prod"])
def test_every_pipeline_component_is_defined_and_every_connector_is_joined(env: str) -> None:
    config = effective_configs()[env]
    pipelines: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    connectors = set(config.get("connectors", {}))
    for name, pipeline in pipelines.items():
        for receiver in pipeline["receivers"]:
            assert receiver in set(config["receivers"]) | connectors, (name, receiver)
        for processor in pipeline.get("processors", []):
            assert processor in config["processors"], (name, processor)
        for exporter in pipeline["exporters"]:
            assert exporter in set(config["exporters"]) | connectors, (name, exporter)
    for connector in connectors:
        assert any(connector in p["exporters"] for p in pipelines.values()), connector
        assert any(connector in p["receivers"] for p in pipelines.values()), connector
    assert set(config["service"]["extensions"]) <= set(config["extensions"])


@pytest.mark.parametrize("env", ["base", "prod"])
def test_memory_limiter_comes_first_and_batch_last_in_every_pipeline(env: str) -> None:
    for name, pipeline in effective_configs()[env]["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        if "batch" in processors:
            assert processors[-1] == "batch", name


@pytest.mark.parametrize("env", ["base", "prod"])
def test_span_metrics_see_every_span_and_jaeger_only_the_sampled_ones(env: str) -> None:
    pipelines = effective_configs()[env]["service"]["pipelines"]
    to_metrics = [p for p in pipelines.values() if "spanmetrics" in p["exporters"]]
    to_jaeger = [p for p in pipelines.values() if "otlp/jaeger" in p["exporters"]]
    assert len(to_metrics) == len(to_jaeger) == 1
    assert "tail_sampling" not in to_metrics[0]["processors"]
    assert "tail_sampling" in to_jaeger[0]["processors"]
    assert to_metrics[0]["receivers"] == to_jaeger[0]["receivers"] == ["otlp"]
    from_metrics = [p for p in pipelines.values() if "spanmetrics" in p["receivers"]]
    assert [p["exporters"] for p in from_metrics] == [["prometheus"]]


@pytest.mark.parametrize("env", ["base", "prod"])
def test_tail_sampling_keeps_errors_slow_traces_and_a_share_of_the_rest(env: str) -> None:
    policies = effective_configs()[env]["processors"]["tail_sampling"]["policies"]
    by_type = {p["type"]: p for p in policies}
    assert set(by_type) == {"status_code", "latency", "string_attribute", "probabilistic"}
    # The apps' tail-captured spans (unsampled at the head, then failed or slow) are all kept.
    captured = by_type["string_attribute"]["string_attribute"]
    assert captured["key"] == CAPTURE_ATTRIBUTE
    assert sorted(captured["values"]) == sorted(get_args(Reason))
    assert by_type["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    # "Slow" is the gateway's latency SLO threshold (the le="0.25" bucket of its rules).
    assert by_type["latency"]["latency"]["threshold_ms"] == 250
    assert 'le="0.25"' in (RULES / "gateway.yaml").read_text()
    assert 0 < by_type["probabilistic"]["probabilistic"]["sampling_percentage"] <= 100


def test_prod_keeps_what_the_apps_head_sampled_and_drops_the_debug_exporter() -> None:
    base, prod = effective_configs()["base"], effective_configs()["prod"]

    def share(config: dict[str, Any]) -> float:
        (policy,) = (
            p for p in config["processors"]["tail_sampling"]["policies"]
            if p["type"] == "probabilistic"
        )  # fmt: skip
        return float(policy["probabilistic"]["sampling_percentage"])

    # The apps sample at the head in staging and prod (tests/k8s: parentbased_traceidratio):
    # what reaches the collector there is the share already; in dev they send every trace.
    assert share(base) < 100
    assert share(prod) == 100
    assert any("debug" in p["exporters"] for p in base["service"]["pipelines"].values())
    assert not any("debug" in p["exporters"] for p in prod["service"]["pipelines"].values())
    assert prod["exporters"]["otlp/jaeger"]["tls"]["insecure"] is False


# ------------------------------------------------------------------ Prometheus scrape config


def test_scrape_jobs_use_the_ports_the_processes_serve_metrics_on() -> None:
    ports = {
        "gateway": GatewaySettings.model_fields["port"].default,
        "users": UsersSettings.model_fields["metrics_port"].default,
        "auth": AuthSettings.model_fields["metrics_port"].default,
        "audit": AuditSettings.model_fields["metrics_port"].default,
    }
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    for name, port in ports.items():
        relabel = jobs[name]["relabel_configs"]
        keep = [r for r in relabel if r.get("action") == "keep"]
        assert keep[0]["regex"] == f"portico;{name}"
        (address,) = (r for r in relabel if r.get("target_label") == "__address__")
        assert address["replacement"] == f"$1:{port}", name
        assert {r.get("target_label") for r in relabel} >= {"namespace", "pod"}


def test_the_scrape_config_loads_every_rule_file() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    loaded = {p for pattern in config["rule_files"] for p in PROMETHEUS_CONFIG.parent.glob(pattern)}
    assert loaded == set(RULES.glob("*.yaml"))


def checkable_config(directory: Path) -> Path:
    """The scrape config with Kubernetes discovery swapped for static targets (Debian's promtool
    is built without it), and the rule files by absolute path."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["rule_files"] = [str(RULES / "*.yaml")]
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["kubernetes-sd.invalid:80"]}]
    path = directory / "prometheus.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.mark.usefixtures("needs_promtool")
def test_promtool_accepts_the_scrape_config_and_its_rule_files(tmp_path: Path) -> None:
    binary = promtool()
    assert binary is not None
    result = subprocess.run(
        [binary, "check", "config", str(checkable_config(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ logs: Fluent Bit, ES, Kibana


def json_log_line() -> dict[str, Any]:
    record = logging.LogRecord(
        "portico_gateway.access", logging.INFO, __file__, 1, "GET", None, None
    )
    record.__dict__.update(method="GET", route="/v1/users/{id}", status=200, duration_ms=1.5)
    entry: dict[str, Any] = json.loads(JsonFormatter("gateway").format(record))
    return entry


def fluent_bit_plugins(section: str) -> list[dict[str, Any]]:
    plugins: list[dict[str, Any]] = load_yaml(FLUENT_BIT)["pipeline"][section]
    return plugins


def test_the_json_formatter_writes_the_fields_the_log_pipeline_relies_on() -> None:
    entry = json_log_line()
    assert set(entry) >= LOG_FIELDS | TRACE_FIELDS
    assert {"method", "route", "status", "duration_ms"} <= set(entry)


def test_fluent_bit_parses_the_json_lines_of_the_app_containers_into_fields() -> None:
    (kubernetes,) = (f for f in fluent_bit_plugins("filters") if f["name"] == "kubernetes")
    assert kubernetes["merge_log"] is True  # JSON line -> top-level fields (trace_id, ...)
    assert not kubernetes.get("merge_log_key")  # ... at the top level, not nested
    assert kubernetes["keep_log"] is False
    (grep,) = (f for f in fluent_bit_plugins("filters") if f["name"] == "grep")
    kept = re.search(r"\^\((.*)\)\$", grep["regex"])
    assert kept is not None
    assert set(kept.group(1).split("|")) == {"gateway", "users", "auth", "audit", "migrations"}
    (tail,) = fluent_bit_plugins("inputs")
    assert tail["name"] == "tail"
    assert "_portico-*_" in tail["path"]


def elasticsearch_output() -> dict[str, Any]:
    (output,) = fluent_bit_plugins("outputs")
    assert output["name"] == "es"
    return output


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in KIBANA.read_text().splitlines() if line.strip()]


def test_logs_land_in_the_indices_the_template_kibana_and_grafana_read() -> None:
    output = elasticsearch_output()
    assert output["logstash_format"] is True
    pattern = f"{output['logstash_prefix']}-*"
    template = json.loads(INDEX_TEMPLATE.read_text())
    assert template["index_patterns"] == [pattern]
    (data_view,) = (o for o in saved_objects() if o["type"] == "index-pattern")
    assert data_view["attributes"]["title"] == pattern
    assert data_view["attributes"]["timeFieldName"] == output["time_key"] == "@timestamp"
    (elasticsearch,) = (s for s in grafana_datasources() if s["type"] == "elasticsearch")
    assert elasticsearch["jsonData"]["index"] == pattern


def test_ids_are_exact_match_keywords_in_elasticsearch() -> None:
    properties = json.loads(INDEX_TEMPLATE.read_text())["template"]["mappings"]["properties"]
    for field in ("trace_id", "span_id", "request_id", "service", "level"):
        assert properties[field]["type"] == "keyword", field
    assert set(properties) - {"@timestamp"} <= set(json_log_line()) | {"exception"}


def test_kibana_export_has_a_data_view_and_a_logs_of_one_trace_search() -> None:
    objects = saved_objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects)
    for obj in objects:
        for reference in obj["references"]:
            assert (reference["type"], reference["id"]) in ids, reference
    (search,) = (o for o in objects if o["type"] == "search")
    assert search["id"] == TRACE_SEARCH
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["language"] == "kuery"
    assert source["query"]["query"].startswith('trace_id:"')
    assert search["attributes"]["sort"] == [["@timestamp", "asc"]]
    assert set(search["attributes"]["columns"]) <= set(json_log_line())


# ------------------------------------------------------------------ links between the tools


def grafana_datasources() -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = []
    for path in DATASOURCES.glob("*.yaml"):
        sources += load_yaml(path)["datasources"]
    return sources


def test_jaeger_s_trace_view_links_to_the_kibana_search_of_the_trace() -> None:
    (pattern,) = json.loads(JAEGER_UI.read_text())["linkPatterns"]
    assert pattern["type"] == "traces"
    assert f"/app/discover#/view/{TRACE_SEARCH}?" in pattern["url"]
    # Jaeger prints trace ids without leading zeros, the logs have all 32 digits: match the end.
    assert "query:'trace_id:*#{traceID}'" in pattern["url"]


def test_grafana_links_metrics_traces_and_logs_both_ways() -> None:
    sources = {s["uid"]: s for s in grafana_datasources()}
    prometheus, jaeger, elasticsearch = (
        sources["prometheus"], sources["jaeger"], sources["elasticsearch"],
    )  # fmt: skip
    (exemplars,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert (exemplars["name"], exemplars["datasourceUid"]) == ("trace_id", "jaeger")
    to_logs = jaeger["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "elasticsearch"
    assert to_logs["query"] == "trace_id:*$${__trace.traceId}"
    links = {
        link.get("datasourceUid", "url"): link for link in elasticsearch["jsonData"]["dataLinks"]
    }
    assert links["jaeger"]["field"] == links["url"]["field"] == "trace_id"
    assert f"/app/discover#/view/{TRACE_SEARCH}?" in links["url"]["url"]


def test_grafana_s_own_variables_are_escaped_from_provisioning_expansion() -> None:
    for path in DATASOURCES.glob("*.yaml"):
        text = path.read_text()
        # Provisioning expands $VAR and ${VAR}; Grafana's $__x / ${__x} must be written $$.
        assert not re.search(r"(?<!\$)\$\{?__", text), path.name


# ------------------------------------------------------------------ kustomization


def generators() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = load_yaml(KUSTOMIZATION)["configMapGenerator"]
    return entries


def test_every_file_is_shipped_by_the_kustomization_once() -> None:
    config = load_yaml(KUSTOMIZATION)
    generated = [*config["configMapGenerator"], *config.get("secretGenerator", [])]
    shipped = [OBSERVABILITY / f for g in generated for f in g["files"]]
    shipped += [OBSERVABILITY / r for r in config["resources"]]
    assert len(shipped) == len(set(shipped))
    # The rule files reach the cluster as the PrometheusRules rendered from them.
    assert OBSERVABILITY / "prometheus" / "prometheus-rules.yaml" in shipped
    shipped += list(RULES.glob("*.yaml"))
    on_disk = {
        p
        for p in OBSERVABILITY.rglob("*")
        if p.is_file()
        and p.suffix in (".yaml", ".json", ".ndjson")
        and p.parent.name != "tests"  # promtool unit tests
        and p.name not in ("kustomization.yaml", "semconv.yaml")
        # The same scrapes for a Prometheus without the operator (promtool checks it; the
        # cluster's Prometheus uses the PodMonitors of k8s/components/monitoring).
        and p != PROMETHEUS_CONFIG
    }
    assert set(shipped) == on_disk


def test_grafana_sidecar_labels_mark_dashboards_and_datasources() -> None:
    for generator in generators():
        labels = generator.get("options", {}).get("labels", {})
        files = generator["files"]
        if any(f.startswith("grafana/dashboards/") for f in files):
            assert labels == {"grafana_dashboard": "1"}, generator["name"]
            assert len(files) == 1, "one dashboard per ConfigMap (annotation size limit)"
        elif any(f.startswith("grafana/datasources/") for f in files):
            assert labels == {"grafana_datasource": "1"}, generator["name"]
        else:
            assert "grafana_dashboard" not in labels, generator["name"]
