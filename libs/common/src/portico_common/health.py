"""The health probe: ``grpc.health.v1`` says SERVING only while PostgreSQL answers.

A background task asks PostgreSQL (``ping``) every ``interval_s`` and sets the status of the
overall server ("") and of each of the service's own names on every change. Shared by the users
and auth services; what each deliberately does not probe (Valkey) is said where it is built.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from opentelemetry.instrumentation.utils import suppress_instrumentation

_log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth:
    """Keeps ``health`` in step with ``ping`` (which raises when PostgreSQL does not answer)."""

    def __init__(
        self,
        health: health_aio.HealthServicer,
        ping: Callable[[], Awaitable[None]],
        *,
        interval_s: float,
        services: tuple[str, ...],
    ) -> None:
        """``services``: the full names whose status follows PostgreSQL ("" is always added)."""
        self._health = health
        self._services = ("", *services)
        self._ping = ping
        self._interval_s = interval_s
        self._serving: bool | None = None

    async def probe(self) -> bool:
        """Ask PostgreSQL once and publish the answer; True when it answered."""
        try:
            with suppress_instrumentation():  # a probe every few seconds is not a trace
                await self._ping()
        except Exception as exc:
            serving = False
            if self._serving is not False:
                _log.warning("%s; health NOT_SERVING", exc)
        else:
            serving = True
            if self._serving is not True:
                _log.info("PostgreSQL answers; health SERVING")
        if serving != self._serving:
            self._serving = serving
            for service in self._services:
                await self._health.set(service, SERVING if serving else NOT_SERVING)
        return serving

    async def run(self) -> None:
        """Probe forever, every ``interval_s`` (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.probe()
