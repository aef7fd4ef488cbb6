"""Prometheus metrics shared by the gateway and the services (``prometheus-client``).

* RED of gRPC: ``portico_grpc_server_duration_seconds{service,method,code}`` and
  ``portico_grpc_server_in_flight_requests{service,method}`` (server interceptor),
  ``portico_grpc_client_duration_seconds{service,method,code}`` (client interceptor);
* ``portico_db_pool_in_use_connections{pool}`` / ``portico_db_pool_idle_connections{pool}`` /
  ``portico_db_pool_max_connections{pool}``: read from each tracked asyncpg pool at scrape time;
* ``portico_build_info{component,version}`` = 1.

Durations go in :data:`BUCKETS` (0.1 ms to 10 s). Each observation made inside a sampled span
carries that span's ``trace_id`` as an exemplar (shown in the OpenMetrics format only, i.e. when
the scraper sends ``Accept: application/openmetrics-text``). Every name is registered in
``observability/semconv.yaml``.

Metric objects live in the default registry and are created on first use (:func:`grpc_metrics`),
never at import time. :func:`start_metrics_server` serves them over HTTP from a daemon thread.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

import grpc
from opentelemetry import propagate, trace
from prometheus_client import REGISTRY, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from portico_common.tail_capture import SERVER_FAULTS, TailCapture

#: Histogram buckets, seconds: 0.1 ms … 10 s.
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def exemplar() -> dict[str, str] | None:
    """``{"trace_id": …}`` of the current sampled span, for a histogram observation."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


@dataclass(frozen=True)
class GrpcMetrics:
    server_duration: Histogram
    server_in_flight: Gauge
    client_duration: Histogram


@functools.cache
def grpc_metrics() -> GrpcMetrics:
    """The gRPC RED metrics (created once per process, in the default registry)."""
    return GrpcMetrics(
        server_duration=Histogram(
            "portico_grpc_server_duration_seconds",
            "Time to handle a unary gRPC call, by service, method and status code.",
            ["service", "method", "code"],
            buckets=BUCKETS,
        ),
        server_in_flight=Gauge(
            "portico_grpc_server_in_flight_requests",
            "Unary gRPC calls being handled now.",
            ["service", "method"],
        ),
        client_duration=Histogram(
            "portico_grpc_client_duration_seconds",
            "Time of an outgoing unary gRPC call, by service, method and status code.",
            ["service", "method", "code"],
            buckets=BUCKETS,
        ),
    )


def split_method(full: str | bytes) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``)."""
    text = full.decode() if isinstance(full, bytes) else full
    service, _, method = text.lstrip("/").partition("/")
    return service, method


Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times each unary-unary call; streaming methods (health Watch, reflection) pass through.

    The timing feeds the RED metrics (``record``) and the tail capture (``capture``): a call
    whose server span was not sampled and that ended with a server fault or took longer than
    ``slow_s`` (0: never) gets its span after all (:mod:`portico_common.tail_capture`).

    The timed handler of a method is built once (with its labelled children) and reused while
    the method's inner handler stays the same object (see ``portico_common.interceptors``).
    """

    def __init__(
        self, *, record: bool = True, capture: TailCapture | None = None, slow_s: float = 0.0
    ) -> None:
        self._handlers: dict[str, tuple[Any, Any]] = {}
        self._record = record
        self._capture = capture
        self._slow_s = slow_s if slow_s > 0 else float("inf")

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        held = self._handlers.get(handler_call_details.method)
        if held is not None and held[0] is handler:
            timed: grpc.RpcMethodHandler[Any, Any] = held[1]
            return timed
        timed = _timed(
            handler,
            handler_call_details.method,
            record=self._record,
            capture=self._capture,
            slow_s=self._slow_s,
        )
        self._handlers[handler_call_details.method] = (handler, timed)
        return timed


def _timed(
    handler: Any,
    full_method: str,
    *,
    record: bool,
    capture: TailCapture | None,
    slow_s: float,
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` (unary-unary) with its calls counted in flight and timed by status code
    (``record``), and handed to ``capture`` when unsampled and failed or slower than ``slow_s``."""
    service, method = split_method(full_method)
    behaviour: Behaviour = handler.unary_unary
    m = grpc_metrics()
    duration = m.server_duration
    in_flight = m.server_in_flight.labels(service, method)
    by_code: dict[str, Any] = {}  # status name → labelled histogram

    async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        start = time.perf_counter()
        if record:
            in_flight.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await behaviour(request, context)
            code = _set_code(context, grpc.StatusCode.OK)
            return response
        except BaseException:
            code = _set_code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            elapsed = time.perf_counter() - start
            name = _name(code)
            if record:
                in_flight.dec()
                child = by_code.get(name)
                if child is None:
                    child = by_code[name] = duration.labels(service, method, name)
                child.observe(elapsed, exemplar())
            if capture is not None and (name in SERVER_FAULTS or elapsed > slow_s):
                _capture_call(capture, context, full_method, service, method, name, elapsed)

    return grpc.unary_unary_rpc_method_handler(
        timed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _set_code(context: grpc.aio.ServicerContext[Any, Any], default: Any) -> Any:
    code: Any = context.code()  # None until set (grpc.aio: set_code or abort)
    return default if code is None else code


def _name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpc.aio may report the raw integer
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "UNKNOWN"


def _capture_call(
    capture: TailCapture,
    context: grpc.aio.ServicerContext[Any, Any],
    full_method: str,
    service: str,
    method: str,
    code: str,
    elapsed: float,
) -> None:
    """The tail capture's span of one call (the rare path: only failed or slow calls get here)."""
    carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    caller = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    status = getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
    capture.emit(
        request=trace.get_current_span().get_span_context(),
        parent=caller,
        name=full_method,  # the gRPC instrumentation's server span name
        kind=trace.SpanKind.SERVER,
        elapsed_s=elapsed,
        reason="error" if code in SERVER_FAULTS else "slow",
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "rpc.grpc.status_code": status.value[0],
        },
        error=code,
    )


class ClientMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Times each outgoing unary call until its status is known."""

    def __init__(self) -> None:
        # (method path, status name) → labelled histogram: one per RPC and outcome seen.
        self._durations: dict[tuple[str | bytes, str], Any] = {}

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            call = await continuation(client_call_details, request)
            code = _name(await call.code())
            return call
        except BaseException as exc:
            code = _name(exc.code()) if isinstance(exc, grpc.aio.AioRpcError) else "CANCELLED"
            raise
        finally:
            key = (client_call_details.method, code)
            child = self._durations.get(key)
            if child is None:
                service, method = split_method(client_call_details.method)
                child = grpc_metrics().client_duration.labels(service, method, code)
                self._durations[key] = child
            child.observe(time.perf_counter() - start, exemplar())


class SizedPool(Protocol):
    """What the pool gauges read (asyncpg's ``Pool`` has all three)."""

    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...


class _PoolCollector(Collector):
    def __init__(self) -> None:
        self.pools: dict[str, SizedPool] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use = GaugeMetricFamily(
            "portico_db_pool_in_use_connections",
            "PostgreSQL connections checked out of the pool.",
            labels=["pool"],
        )
        idle = GaugeMetricFamily(
            "portico_db_pool_idle_connections",
            "Open PostgreSQL connections waiting in the pool.",
            labels=["pool"],
        )
        limit = GaugeMetricFamily(
            "portico_db_pool_max_connections", "The pool's size limit.", labels=["pool"]
        )
        for name, pool in list(self.pools.items()):
            size, free = pool.get_size(), pool.get_idle_size()
            in_use.add_metric([name], size - free)
            idle.add_metric([name], free)
            limit.add_metric([name], pool.get_max_size())
        yield from (in_use, idle, limit)


@functools.cache
def _pools() -> _PoolCollector:
    collector = _PoolCollector()
    REGISTRY.register(collector)
    return collector


def track_pool(name: str, pool: SizedPool) -> Callable[[], None]:
    """Report ``pool``'s gauges under ``pool=name``; returns the function that stops it."""
    pools = _pools().pools
    pools[name] = pool

    def untrack() -> None:
        if pools.get(name) is pool:
            del pools[name]

    return untrack


@functools.cache
def _build_info() -> Gauge:
    return Gauge(
        "portico_build_info", "1, labelled with the running component's version.",
        ["component", "version"],
    )  # fmt: skip


def record_build_info(component: str, distribution: str) -> None:
    """Set ``portico_build_info{component, version}`` from the installed distribution."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        version = "unknown"
    _build_info().labels(component, version).set(1)


class MetricsServer:
    """``/metrics`` (text or OpenMetrics) served from a daemon thread; ``port`` is the bound one."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host)
        self.port: int = self._server.server_port

    def stop(self) -> None:
        """Stop serving (blocks up to ~0.5 s: call it through ``asyncio.to_thread``)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
