"""A stand-in OpenTelemetry Collector for the tracing-overhead case: OTLP/gRPC in, nothing out.

``python -m bench.otlp_sink --port N`` serves ``opentelemetry.proto.collector.trace.v1.
TraceService/Export`` on 127.0.0.1: it decodes every request (as a collector's receiver would),
counts the spans by ``service.name`` and kind, and drops them. So the traced processes pay the
whole client-side cost (span creation, batching, protobuf encoding, the gRPC export) and the sink
proves that spans really arrived. ``/bench.OtlpSink/Stats`` answers the counts as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
STATS_METHOD = "/bench.OtlpSink/Stats"


class Sink:
    def __init__(self) -> None:
        self.exports = 0
        self.spans: Counter[str] = Counter()  # by service.name
        self.server_spans: Counter[str] = Counter()  # kind SERVER, by service.name

    async def export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        self.exports += 1
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans[service] += 1
                    if span.kind == Span.SPAN_KIND_SERVER:
                        self.server_spans[service] += 1
        return ExportTraceServiceResponse()

    async def stats(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        counts = {
            "exports": self.exports,
            "spans": dict(self.spans),
            "server_spans": dict(self.server_spans),
        }
        return json.dumps(counts).encode()


async def stats(port: int) -> dict[str, Any]:
    """The counts of the sink on ``port`` (raises ``grpc.aio.AioRpcError`` until it serves)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(STATS_METHOD)
        reply = await call(b"", timeout=2)
    counts: dict[str, Any] = json.loads(reply)
    return counts


async def serve(port: int) -> None:
    sink = Sink()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE,
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        sink.export,
                        request_deserializer=ExportTraceServiceRequest.FromString,
                        response_serializer=ExportTraceServiceResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "bench.OtlpSink", {"Stats": grpc.unary_unary_rpc_method_handler(sink.stats)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
