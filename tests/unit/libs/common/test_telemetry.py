"""Propagators and samplers from OTEL_* settings; every custom metric name is registered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import REGISTRY

from portico_audit.consumer import backlog_gauges, events_counter
from portico_common.config import TelemetrySettings
from portico_common.metrics import grpc_metrics, record_build_info, track_pool
from portico_common.outbox import outbox_metrics
from portico_common.telemetry import propagator, sampler
from portico_gateway.telemetry import http_metrics
from portico_users.cache import CACHE_HIT, cache_requests

SEMCONV = Path(__file__).resolve().parents[4] / "observability" / "semconv.yaml"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_default_propagators_accept_w3c_and_b3_and_emit_both() -> None:
    composite = propagator(TelemetrySettings().propagators)
    w3c = trace.get_current_span(composite.extract({"traceparent": TRACEPARENT}))
    assert format(w3c.get_span_context().trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    b3_headers = {
        "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
        "x-b3-spanid": "a2fb4a1d1a96d312",
    }
    b3 = trace.get_current_span(composite.extract(b3_headers)).get_span_context()
    assert format(b3.trace_id, "032x") == "463ac35c9f6413ad48485a3953bb6124"

    carrier: dict[str, str] = {}
    composite.inject(carrier, context=composite.extract({"traceparent": TRACEPARENT}))
    assert carrier["traceparent"] == TRACEPARENT
    assert carrier["x-b3-traceid"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_propagators_can_be_narrowed_or_refused() -> None:
    carrier: dict[str, str] = {}
    only_w3c = propagator("tracecontext")
    only_w3c.inject(carrier, context=only_w3c.extract({"traceparent": TRACEPARENT}))
    assert set(carrier) == {"traceparent"}
    nothing = propagator("none").extract({"traceparent": TRACEPARENT}, context=Context())
    assert not trace.get_current_span(nothing).get_span_context().is_valid
    with pytest.raises(ValueError, match="jaeger"):
        propagator("tracecontext,jaeger")


def test_samplers_follow_otel_traces_sampler() -> None:
    assert isinstance(sampler(TelemetrySettings()), ParentBased)
    ratio = sampler(TelemetrySettings(traces_sampler="traceidratio", traces_sampler_arg=0.25))
    assert isinstance(ratio, TraceIdRatioBased)
    assert ratio.rate == 0.25


def test_telemetry_settings_read_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    settings = TelemetrySettings()
    assert settings.exporter_otlp_endpoint == "http://collector:4317"
    assert settings.traces_sampler == "parentbased_traceidratio"
    assert settings.traces_sampler_arg == 0.1


def test_every_custom_metric_and_attribute_is_in_semconv() -> None:
    grpc_metrics(), http_metrics(), cache_requests(), outbox_metrics(), events_counter()
    backlog_gauges()
    record_build_info("test", "portico-common")
    track_pool("unit-test", _Pool())()
    names = {  # as exposed: counters get their _total suffix
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in REGISTRY.collect()
        if metric.name.startswith("portico_")
    }
    registered = set(re.findall(r"^\s*- name: (\S+)", SEMCONV.read_text(), re.MULTILINE))
    assert names, "no portico metrics created"
    assert names <= registered, names - registered
    assert CACHE_HIT in registered


class _Pool:
    def get_size(self) -> int:
        return 2

    def get_idle_size(self) -> int:
        return 1

    def get_max_size(self) -> int:
        return 10
