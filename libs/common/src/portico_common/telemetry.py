"""OpenTelemetry tracing, set up once per process (:func:`setup_telemetry`).

Configuration is the standard ``OTEL_*`` variables only (:class:`TelemetrySettings`):

* ``OTEL_SERVICE_NAME`` names the process (default: the component's name);
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` turns on the OTLP/gRPC span exporter (batching). Unset (the
  local default), no exporter is installed: spans still get ids (logs and exemplars carry them)
  but go nowhere and nothing is logged about it;
* ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: head sampling (parent-based by default;
  production keeps a small ratio, and :mod:`portico_common.tail_capture` still records every
  unsampled request that failed or was slow: :func:`tail_capture`);
* ``OTEL_PROPAGATORS``: W3C ``tracecontext`` + ``baggage`` and B3 multi-header by default, so a
  mesh or caller speaking either is joined, and both are emitted downstream.

Instrumentation: the gRPC server and client interceptors come from :func:`server_interceptors` /
:func:`client_interceptors` (together with the RED metrics of :mod:`portico_common.metrics`);
asyncpg is patched process-wide when ``instrument_asyncpg`` is true; the gateway instruments
FastAPI itself. All of them use the *global* tracer provider, so code built before
``setup_telemetry`` runs (or in tests, without it) works, just without recording spans.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
)
from opentelemetry.propagate import set_global_textmap
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from portico_common.config import TelemetrySettings, get_metrics_settings
from portico_common.metrics import ClientMetricsInterceptor, ServerMetricsInterceptor
from portico_common.tail_capture import TailCapture

_log = logging.getLogger(__name__)

_PROPAGATORS: dict[str, type[TextMapPropagator]] = {
    "tracecontext": TraceContextTextMapPropagator,
    "baggage": W3CBaggagePropagator,
    "b3": B3SingleFormat,
    "b3multi": B3MultiFormat,
}

_provider: TracerProvider | None = None
_capture: TailCapture | None = None


def propagator(names: str) -> CompositePropagator:
    """The propagator for an ``OTEL_PROPAGATORS`` value; ``ValueError`` for an unknown name."""
    chosen: list[TextMapPropagator] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name not in _PROPAGATORS:
            raise ValueError(f"OTEL_PROPAGATORS: unknown propagator {name!r}")
        chosen.append(_PROPAGATORS[name]())
    return CompositePropagator(chosen)


def sampler(settings: TelemetrySettings) -> Sampler:
    """The head sampler ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``) names."""
    ratio = TraceIdRatioBased(settings.traces_sampler_arg)
    base: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(ratio),
    }
    return base[settings.traces_sampler]


def setup_telemetry(
    settings: TelemetrySettings,
    *,
    service_name: str,
    span_processors: Sequence[SpanProcessor] = (),
    instrument_asyncpg: bool = False,
) -> TracerProvider | None:
    """Install the global propagator and tracer provider; patch asyncpg when asked.

    Once per process: a second call (tests build several components in one process) keeps the
    first provider and only adds ``span_processors`` to it. Returns the provider, or None when
    ``OTEL_SDK_DISABLED`` is true.
    """
    global _provider, _capture
    set_global_textmap(propagator(settings.propagators))
    if instrument_asyncpg:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
    if settings.sdk_disabled:
        return None
    if _provider is None:
        name = settings.service_name or service_name
        resource = Resource.create({"service.name": name})
        _provider = TracerProvider(resource=resource, sampler=sampler(settings))
        _capture = TailCapture(resource, [])
        if settings.exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            # The exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, TLS) itself.
            batch = BatchSpanProcessor(OTLPSpanExporter())
            _provider.add_span_processor(batch)
            _capture.add_span_processor(batch)
            _log.info("exporting spans over OTLP to %s", settings.exporter_otlp_endpoint)
        trace.set_tracer_provider(_provider)
    for processor in span_processors:
        _provider.add_span_processor(processor)
        if _capture is not None:
            _capture.add_span_processor(processor)
    return _provider


def tail_capture() -> TailCapture | None:
    """The process's tail capture (its spans go where the sampled ones go); None while tracing
    is not set up or ``OTEL_SDK_DISABLED`` is true."""
    return _capture


#: Not traced: probes would drown the traffic, and OpenTelemetry's aio server interceptor
#: breaks streaming handlers that ``context.write()`` instead of yielding (health ``Watch``).
UNTRACED_SERVICES = ("/grpc.health.", "/grpc.reflection.")


def traced(details: grpc.HandlerCallDetails | grpc.aio.ClientCallDetails) -> bool:
    """Whether a call to ``details.method`` gets a span: all but health and reflection."""
    method: str | bytes = details.method
    text = method.decode() if isinstance(method, bytes) else method
    return not text.startswith(UNTRACED_SERVICES)


def server_interceptors(*, slow_s: float = 0.0) -> list[grpc.aio.ServerInterceptor]:
    """Outermost server interceptors: the server span, then RED metrics inside it, which also
    hand an unsampled call that failed or took over ``slow_s`` (0: never) to the tail capture."""
    span = aio_server_interceptor(filter_=traced)  # type: ignore[no-untyped-call]
    record = get_metrics_settings().enabled
    capture = tail_capture()
    if not record and capture is None:
        return [span]
    return [span, ServerMetricsInterceptor(record=record, capture=capture, slow_s=slow_s)]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors for a channel: the client span (propagating context), then metrics."""
    spans = aio_client_interceptors(filter_=traced)  # type: ignore[no-untyped-call]
    interceptors: list[grpc.aio.ClientInterceptor] = list(spans)
    if get_metrics_settings().enabled:
        interceptors.append(ClientMetricsInterceptor())
    return interceptors
