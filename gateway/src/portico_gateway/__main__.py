"""``portico-gateway``: run the REST gateway with uvicorn (settings: ``GATEWAY_*``, ``OTEL_*``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from portico_common.cli import load_settings, setup_telemetry_or_exit
from portico_common.logs import configure_logging
from portico_gateway.app import create_app, openapi_text
from portico_gateway.config import GatewaySettings, get_settings
from portico_gateway.edge import EdgeLimits, protocol_for

_log = logging.getLogger("portico_gateway")


def _parser() -> argparse.ArgumentParser:
    fields = GatewaySettings.model_fields
    settings_help = "\n".join(
        f"  GATEWAY_{name.upper():<22} {info.description or ''} (default: {info.default})"
        for name, info in fields.items()
    )
    parser = argparse.ArgumentParser(
        prog="portico-gateway",
        description="Portico's REST gateway: FastAPI in front of the gRPC services.",
        epilog="Settings (environment variables):\n" + settings_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--openapi",
        action="store_true",
        help="print the OpenAPI document the gateway serves at /openapi.json (JSON) and exit;"
        " `make openapi` writes it to docs/api/openapi.json",
    )
    return parser


#: Exit status after a forced stop (a second SIGTERM/SIGINT while draining).
FORCED_EXIT_CODE = 1


class _Server(uvicorn.Server):
    """uvicorn with Portico's stop sequence, exit codes and ``gc.freeze()``.

    Stopping: the first SIGTERM or SIGINT marks the app as draining (``app.state.draining``:
    ``/readyz`` answers 503) and keeps serving for ``delay_s``, so probes and balancers stop
    sending; then uvicorn's graceful shutdown closes the listener, lets in-flight requests finish
    within ``timeout_graceful_shutdown`` (cancelling what is left after it) and runs the lifespan's
    shutdown. A drained gateway exits 0 (uvicorn would re-raise the signal and end "killed by
    SIGTERM"). A second signal, during the delay or the drain, forces the exit at once
    (uvicorn only does that for a second SIGINT): :data:`FORCED_EXIT_CODE`.

    Once started (lifespan done, sockets bound), everything allocated so far lives as long as
    the process: :func:`gc.freeze` moves it out of the collector's sight, so the full
    collections that per-request garbage triggers stop walking FastAPI's, pydantic's and
    protobuf's start-up objects again and again.
    """

    def __init__(self, config: uvicorn.Config, *, app: FastAPI, delay_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._delay_s = delay_s
        #: time.monotonic() at which draining ends and uvicorn's shutdown begins.
        self._stop_at: float | None = None
        self._announced = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # uvicorn names its address only when it bound the socket itself.
            for sock in sockets or ():
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                _log.info("listening on http://%s:%d (SO_REUSEPORT)", shown, port)
            gc.collect()
            gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only flags and a timestamp here; on_tick acts on them.
        if self._stop_at is not None:  # the second signal
            self.force_exit = True
            self.should_exit = True
            return
        self._app.state.draining = True
        self._stop_at = time.monotonic() + self._delay_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Closing a listener resets the connections still in its accept queue; with SO_REUSEPORT
        # the kernel kept spreading new connections to this listener until that instant, and on
        # a busy machine the loop's last accept may be 100 ms old (the gateway drill lost 7 in
        # one stop). So take them all first, then close with no await in between: the window
        # left is the microseconds between the last accept() and close().
        loop = asyncio.get_running_loop()
        handoffs = [
            loop.create_task(loop.connect_accepted_socket(self._protocol, conn))
            for server in self.servers
            for listener in server.sockets
            for conn in take_accept_queue(listener)
        ]
        if handoffs:
            _log.info("took %d waiting connection(s) before closing the listener", len(handoffs))
        await super().shutdown(sockets)
        await asyncio.gather(*handoffs, return_exceptions=True)

    def _protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn's own ``create_protocol`` makes it."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and not self._announced:
            self._announced = True
            _log.info(
                "stopping: /readyz answers 503, still serving for %ss, then draining for up to %ss",
                self._delay_s,
                self.config.timeout_graceful_shutdown,
            )
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


def take_accept_queue(listener: Any) -> list[socket.socket]:
    """Accept every connection waiting in ``listener``'s queue now, without blocking."""
    own = socket.fromfd(listener.fileno(), listener.family, listener.type)  # a dup of the fd
    taken: list[socket.socket] = []
    try:
        own.setblocking(False)
        while True:
            try:
                conn, _ = own.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ECONNABORTED, EMFILE, ...: take no more, close as before
                _log.warning("could not take a waiting connection before closing", exc_info=True)
                break
            conn.setblocking(False)
            taken.append(conn)
    finally:
        own.close()
    return taken


def shared_listener(host: str, port: int) -> socket.socket:
    """A bound TCP socket with ``SO_REUSEPORT`` (uvicorn listens on it).

    uvicorn has no option for it (its ``Config.bind_socket`` sets ``SO_REUSEADDR`` only), so
    the gateway binds the socket and hands it to ``Server.run(sockets=...)``. Every process that
    binds the port this way, as the same user, joins one group and the kernel spreads new
    connections over the group's listeners. A listener that closes drops the connections still in
    its own accept queue (unless the host sets ``net.ipv4.tcp_migrate_req=1``, Linux 5.14+), so a
    stopping gateway first keeps accepting for ``GATEWAY_SHUTDOWN_DELAY_S``, then takes what is
    left in its queue just before closing (``_Server.shutdown``).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.openapi:
        sys.stdout.write(openapi_text())
        return
    settings = load_settings("portico-gateway", "GATEWAY_", get_settings)
    configure_logging(level=settings.log_level, service="gateway", fmt=settings.log_format)
    setup_telemetry_or_exit("portico-gateway", "gateway")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep ours: JSON lines (or text) on stdout, secrets redacted
        access_log=False,  # the gateway logs one access line per request itself
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),  # uvicorn takes an int
        server_header=False,
        # The client address behind a trusted proxy (ingress, Istio sidecar at 127.0.0.6): what
        # per-address rate limits and login throttling key on.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # httptools with bounds on head size, read time and connections (portico_gateway.edge)
        http=protocol_for(
            EdgeLimits(
                max_header_bytes=settings.max_header_bytes,
                header_timeout_s=settings.header_timeout_s,
                body_timeout_s=settings.body_timeout_s,
                max_connections=settings.max_connections,
            )
        ),
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )
    server = _Server(config, app=app, delay_s=settings.shutdown_delay_s)
    if settings.reuse_port:
        try:
            listener = shared_listener(settings.host, settings.port)
        except OSError as exc:
            sys.exit(f"portico-gateway: cannot bind {settings.host}:{settings.port}: {exc}")
        with listener:
            server.run(sockets=[listener])
    else:
        server.run()
    if server.force_exit:
        _log.warning("stopped by a second signal: in-flight requests were cut off")
        sys.exit(FORCED_EXIT_CODE)


if __name__ == "__main__":
    main()
