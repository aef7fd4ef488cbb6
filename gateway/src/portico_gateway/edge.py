"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with bounds on what a client
may make the process hold (issue 14, item 8).

uvicorn parses requests with httptools (llhttp), which puts no bound on a request's head: a
256 KiB header was buffered and handed to the app. Nor does it bound the time a client takes to
send a request: a connection that trickles a header byte now and then, or a body slower than
any real client (slowloris), held its socket and memory for ever. :class:`EdgeProtocol` adds,
per connection:

* **Head size.** While a request's head (request line and headers) is incomplete, the bytes
  received for it are counted; past :attr:`EdgeLimits.max_head_bytes` (the header bound plus
  :data:`REQUEST_LINE_ALLOWANCE`) the request is refused with **431** and the connection closed.
  So the parser never holds more than that plus one read. The exact bounds on header bytes and
  header count are checked on the parsed headers by
  :class:`~portico_gateway.middleware.edge_limits.EdgeLimitsMiddleware` (431 as problem+json,
  with the request id, through every middleware).
* **Read time.** A request's head must arrive within ``header_timeout_s`` of the connection
  opening (or of its first byte, on a kept-alive connection), its body within
  ``body_timeout_s`` of the head; otherwise **408** and the connection closes. The app, if it
  was waiting for the body, sees a disconnect.
* **Connections.** A connection beyond ``max_connections`` open at once is served only a
  **503** (problem+json with ``Retry-After``, answered by the middleware so it is logged and
  counted) and closed, so established connections keep being served while the process is full.

* **Stopping.** uvicorn's graceful shutdown closes every connection that is not in the middle
  of a request, including one accepted a moment ago whose request is still on its way (or
  half parsed): its client saw the connection open and lost the request. Here such a
  connection gets :data:`FIRST_REQUEST_GRACE_S` for its request to begin (and the usual read
  bounds to complete it), is answered, and then closes; an idle kept-alive connection closes at
  once, as before (HTTP clients expect that and retry on another connection).

Refusals written here (431 for an oversized head, 408) are problem+json with a fresh request
id, written straight to the socket: there is no complete request to hand to the app. The
connection is then half-closed and what the client still sends is read and dropped for at most
:data:`LINGER_S` (a close with unread data would reset the connection and the client could lose
the answer), as nginx's lingering close does.

Each refusal is counted in ``portico_gateway_connections_refused_total{reason}``; open
connections are ``portico_gateway_open_connections``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from prometheus_client import Counter, Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from portico_gateway.errors import PROBLEM_BASE, PROBLEM_JSON

_log = logging.getLogger(__name__)

#: Head bytes allowed on top of the header bound, for the request line (method, target, version).
REQUEST_LINE_ALLOWANCE = 8192
#: How long a refused connection's further bytes are read and dropped before it is closed.
LINGER_S = 2.0
#: While stopping: how long a connection that has sent nothing yet may take to start its request.
FIRST_REQUEST_GRACE_S = 2.0
#: The ASGI scope extension (``scope["extensions"]``) that marks a request on a connection over
#: the limit.
OVER_CAPACITY = "portico.over_capacity"


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one connection may make the gateway hold (``GATEWAY_*`` settings)."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int  # 0: no limit

    @property
    def max_head_bytes(self) -> int:
        return self.max_header_bytes + REQUEST_LINE_ALLOWANCE


@dataclass(frozen=True)
class EdgeMetrics:
    refused: Counter
    open_connections: Gauge


#: The ``reason`` label values of ``portico_gateway_connections_refused_total``.
REFUSAL_REASONS = ("request_header_too_large", "read_timeout", "over_capacity")


@functools.cache
def edge_metrics() -> EdgeMetrics:
    """The connection metrics (created once per process, in the default registry), exposed
    from the start: each refusal reason at 0, so a rule's ``rate()`` has a series to read."""
    metrics = EdgeMetrics(
        refused=Counter(
            "portico_gateway_connections_refused_total",
            "Requests refused at the connection: head too large (431), too slow (408), over "
            "the connection limit (503).",
            ["reason"],
        ),
        open_connections=Gauge(
            "portico_gateway_open_connections", "HTTP connections the gateway holds open now."
        ),
    )
    for reason in REFUSAL_REASONS:
        metrics.refused.labels(reason)
    return metrics


def raw_problem(status: int, detail: str, *, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 ``application/problem+json`` answer that closes the connection."""
    rid = uuid.uuid4().hex
    title = HTTPStatus(status).phrase
    body = json.dumps(
        {
            "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
            "title": title,
            "status": status,
            "detail": detail,
            "instance": "",
            "request_id": rid,
        }
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {title}",
        f"content-type: {PROBLEM_JSON}",
        f"content-length: {len(body)}",
        "connection: close",
        "cache-control: no-store",
        f"x-request-id: {rid}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module doc (:func:`protocol_for`)."""

    limits: ClassVar[EdgeLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._metrics = edge_metrics()
        self._reading_head = True  # until a head is complete; again from the next message's start
        self._head_bytes = 0
        self._read_timer: asyncio.TimerHandle | None = None
        self._refused = False  # an answer was written here: drop what follows, then close
        self._over_capacity = False
        self._stopping = False  # the server is shutting down: answer what is on its way, close

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._metrics.open_connections.inc()
        limit = self.limits.max_connections
        self._over_capacity = limit > 0 and len(self.connections) > limit
        self._arm(self.limits.header_timeout_s)  # a connection that never sends a request

    def connection_lost(self, exc: Exception | None) -> None:
        self._metrics.open_connections.dec()
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        super().data_received(data)
        if self._reading_head and self.parser is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(
                    431,
                    "request_header_too_large",
                    f"the request's headers exceed {self.limits.max_header_bytes} bytes",
                )

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        if self._read_timer is None or self._stopping:
            self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._arm(self.limits.body_timeout_s)
        if self._over_capacity:
            self.scope.setdefault("extensions", {})[OVER_CAPACITY] = {}  # present: refuse
            self._metrics.refused.labels("over_capacity").inc()
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # Graceful stop

    def shutdown(self) -> None:
        """uvicorn's graceful stop, except for a connection whose first request has not been
        parsed yet: it gets a short grace to arrive (see the module doc)."""
        self._stopping = True
        cycle: RequestResponseCycle | None = self.cycle  # None until a first head is parsed
        if cycle is not None or self._refused or self.transport.is_closing():
            super().shutdown()  # in a request: answer it and close; idle kept-alive: close
        elif self._reading_head and self._head_bytes == 0:
            self._arm(min(FIRST_REQUEST_GRACE_S, self.limits.header_timeout_s))
        # else a head is arriving: the header read bound (armed at its start) still holds

    # Bounds

    def _arm(self, delay_s: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(delay_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self._refused:
            return
        if self._stopping and self._reading_head and self._head_bytes == 0:
            self.transport.close()  # stopping, and no request came: nothing to answer
            return
        cycle = self.cycle if not self._reading_head else None
        if cycle is not None and cycle.response_started:
            self.transport.close()  # answered without reading the whole body: nothing to add
            return
        if self._reading_head and self._head_bytes == 0:
            detail = "no request arrived in time"
        else:
            detail = "the request was not received in time"
        self._refuse(408, "read_timeout", detail)

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answer ``status`` on the socket, stop the request, linger, then close."""
        self._refused = True
        self._disarm()
        self._metrics.refused.labels(reason).inc()
        _log.debug("refused a connection's request: %s (%s)", status, reason)
        if self.cycle is not None and not self.cycle.response_complete:
            # the app (if it runs) sees a disconnect, and its answer goes nowhere
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(raw_problem(status, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def protocol_for(limits: EdgeLimits) -> type[EdgeProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""

    class BoundEdgeProtocol(EdgeProtocol):
        pass

    BoundEdgeProtocol.limits = limits
    return BoundEdgeProtocol
