"""Tail capture: one span for every request head sampling dropped that failed or was slow.

At production settings the processes sample traces at the head (``OTEL_TRACES_SAMPLER=
parentbased_traceidratio``): an unsampled request costs no span recording or export, which is
what keeps telemetry within its budget (docs/telemetry.md, "Sampling in production"). Head
sampling decides before the outcome is known, though, so on its own it would lose most errors
and slow requests. This module gets them back at almost no cost on the fast path: the
gateway's access middleware and the services' metrics interceptor time every request anyway,
and when one whose server span was *not* sampled ends in a server-side failure (HTTP 5xx; a
gRPC code the availability SLO counts as bad, :data:`SERVER_FAULTS`) or took longer than the
process's latency-SLO threshold (``*_TRACE_SLOW_S``), they call :meth:`TailCapture.emit`, which
records one span after the fact:

* with the request's own ids: the trace id that was propagated downstream and that the logs
  and problem documents carry, and the span id the unsampled server span had, so the spans
  that every process on the path emitted for the same request share one trace;
* parented on the caller's span (from the request's ``traceparent``/B3 headers), a root at the
  gateway;
* its start and end time taken from the measured duration, its status ERROR for a failure;
* ``portico.trace.tail_capture`` = ``error`` or ``slow``, which the collector's tail-sampling
  policy keeps (``observability/otel-collector/``).

The span goes through a tracer provider of its own that samples everything (``ALWAYS_ON``)
and shares the main provider's span processors (the OTLP batch exporter), so it is exported
exactly like a sampled span. A request that *was* sampled is never captured twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

#: The attribute every captured span carries, with its reason (the collector keeps it).
CAPTURE_ATTRIBUTE = "portico.trace.tail_capture"

Reason = Literal["error", "slow"]

#: gRPC codes that are a failure of the server, not an answer: the availability SLO's bad
#: events (observability/prometheus/rules/), the codes the gateway turns into a 5xx. A
#: NOT_FOUND or INVALID_ARGUMENT is the service working; capturing those would let any caller
#: make every process export spans at will.
SERVER_FAULTS = frozenset({"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS"})


class _RequestIds(IdGenerator):
    """Hands the next span the ids it must carry (set under the capture's lock, just before)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


class TailCapture:
    """Emits the post-hoc span of an unsampled request (see the module's docstring)."""

    def __init__(self, resource: Resource, processors: list[SpanProcessor]) -> None:
        self._ids = _RequestIds()
        self._lock = threading.Lock()
        # shutdown_on_exit=False: the processors are the main provider's, which flushes and
        # shuts them down at exit; doing it twice would drop what is queued after the first.
        self._provider = TracerProvider(
            resource=resource, sampler=ALWAYS_ON, id_generator=self._ids, shutdown_on_exit=False
        )
        for processor in processors:
            self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer(__name__)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self._provider.add_span_processor(processor)

    def emit(
        self,
        *,
        request: SpanContext,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        elapsed_s: float,
        reason: Reason,
        attributes: Mapping[str, AttributeValue],
        error: str | None = None,
    ) -> bool:
        """Record the span of the request whose unsampled server span was ``request``.

        Returns False (and records nothing) when ``request`` was sampled (its span is exported
        already) or is not a valid span context (tracing off).
        """
        if not request.is_valid or request.trace_flags.sampled:
            return False
        end_ns = time.time_ns()
        start_ns = end_ns - int(elapsed_s * 1e9)
        context = Context()
        if parent is not None and parent.is_valid and parent.trace_id == request.trace_id:
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        with self._lock:  # the ids are read by start_span, synchronously, under the lock
            self._ids.trace_id, self._ids.span_id = request.trace_id, request.span_id
            span = self._tracer.start_span(
                name,
                context=context,
                kind=kind,
                attributes={**attributes, CAPTURE_ATTRIBUTE: reason},
                start_time=start_ns,
            )
        if reason == "error":
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)
        return True
