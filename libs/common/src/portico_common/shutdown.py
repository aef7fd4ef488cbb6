"""How a grpc.aio service process stops: on the first SIGTERM/SIGINT gracefully, on a second now.

:func:`stop_on_signals` is the tail of each service's ``serve()``: it waits for SIGTERM or
SIGINT, then awaits the graceful ``stop()`` (health NOT_SERVING, the shutdown delay, the drain
within the grace period, background tasks and resources closed). The signal handlers stay
installed meanwhile, so a second signal does not kill the process mid-drain with the default
action: it awaits ``force()`` (which cancels the in-flight calls at once, e.g.
``grpc.aio.Server.stop(None)``), abandons the rest of the graceful stop and exits with
:data:`FORCED_EXIT_CODE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

_log = logging.getLogger(__name__)

#: Exit status of a process stopped by a second signal (a drained one exits 0).
FORCED_EXIT_CODE = 1
#: How long ``force()`` may take before the process exits anyway.
FORCE_TIMEOUT_S = 2.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def stop_on_signals(
    *,
    stop: Callable[[], Awaitable[None]],
    force: Callable[[], Awaitable[object]],
    announce: Callable[[], None] = lambda: None,
) -> None:
    """Wait for SIGTERM/SIGINT, ``announce()``, await ``stop()``; a second signal forces.

    Returns once ``stop()`` has finished; raises ``SystemExit(FORCED_EXIT_CODE)`` after a second
    signal. If this coroutine is cancelled before any signal, it still stops gracefully.
    """
    loop = asyncio.get_running_loop()
    first, second = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (second if first.is_set() else first).set()

    for signum in SIGNALS:
        loop.add_signal_handler(signum, on_signal)
    try:
        try:
            await first.wait()
        except asyncio.CancelledError:
            await stop()
            raise
        announce()
        stopping = asyncio.ensure_future(stop())
        forced = asyncio.ensure_future(second.wait())
        try:
            await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if stopping.done():
            stopping.result()  # re-raises what the graceful stop raised
            return
        _log.warning("second signal: cancelling in-flight calls and exiting now")
        try:
            await asyncio.wait_for(force(), FORCE_TIMEOUT_S)
        except TimeoutError:
            _log.warning("forced stop did not finish within %ss; exiting anyway", FORCE_TIMEOUT_S)
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stopping
        raise SystemExit(FORCED_EXIT_CODE)
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
