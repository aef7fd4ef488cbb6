"""Settings every process shares: ``OTEL_*`` telemetry, ``PORTICO_METRICS_*`` and the
session store's fail mode ``PORTICO_SESSION_STORE_*``, each read in one place.

The OpenTelemetry SDK reads some of these by itself too (the OTLP exporter its endpoint, headers
and TLS options; ``Resource`` ``OTEL_RESOURCE_ATTRIBUTES``); the ones below are the ones Portico
acts on, validated at start-up so a typo stops the process instead of silently dropping traces.
Nothing is built at import time: each process's ``__main__`` calls :func:`get_telemetry_settings`.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


class TelemetrySettings(BaseSettings):
    """OpenTelemetry configuration (standard names, no Portico prefix)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    service_name: str = Field(
        default="", description="service.name of this process's spans (default: its component)."
    )
    exporter_otlp_endpoint: str = Field(
        default="",
        description="OTLP/gRPC collector, e.g. http://otel-collector:4317; unset = no exporter.",
    )
    traces_sampler: Sampler = Field(default="parentbased_always_on", description="Head sampler.")
    traces_sampler_arg: float = Field(
        default=1.0, ge=0, le=1, description="Ratio for the *traceidratio samplers."
    )
    propagators: str = Field(
        default="tracecontext,baggage,b3multi",
        description="Comma-separated: tracecontext, baggage, b3, b3multi, none.",
    )
    sdk_disabled: bool = Field(default=False, description="true: no spans are recorded at all.")


class MetricsSettings(BaseSettings):
    """Portico's own switch for its request metrics (Prometheus; not an ``OTEL_*`` variable)."""

    model_config = SettingsConfigDict(env_prefix="PORTICO_METRICS_", extra="ignore")

    enabled: bool = Field(
        default=True,
        description=(
            "false: no RED histograms or in-flight gauges per request or call (the access log,"
            " cache and pool metrics stay); for pricing metrics, not for production."
        ),
    )


class SessionStoreSettings(BaseSettings):
    """What a token verifier does when the session store (Valkey) cannot be asked.

    See :class:`portico_common.tokens.SessionStorePolicy` and SECURITY.md ("Revocable sessions").
    """

    model_config = SettingsConfigDict(env_prefix="PORTICO_SESSION_STORE_", extra="ignore")

    fail_mode: Literal["degraded", "closed"] = Field(
        default="degraded",
        description=(
            "degraded: while the store is unreachable, read-only calls accept a validly signed"
            " token unless this process saw its session end, and state-changing calls accept it"
            " only if this process saw its session alive within write_grace_s; closed: refuse"
            " every token-bearing call with 503 / UNAVAILABLE."
        ),
    )
    write_grace_s: float = Field(
        default=60.0,
        ge=0,
        le=900,
        description="How recently a session must have been seen alive for a write (degraded).",
    )
    cache_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description=(
            "Remember a session Valkey said is alive for this long, while subscribed to the"
            " auth service's sessions-ended channel (a revocation still lands in milliseconds;"
            " this bounds it if the subscription dies silently); 0: EXISTS on every call."
        ),
    )


@functools.cache
def get_session_store_settings() -> SessionStoreSettings:
    """The process's session-store fail mode, read from the environment once."""
    return SessionStoreSettings()


@functools.cache
def get_metrics_settings() -> MetricsSettings:
    """The process's metrics switch, read from the environment once."""
    return MetricsSettings()


@functools.cache
def get_telemetry_settings() -> TelemetrySettings:
    """The process's telemetry settings, read from the environment once."""
    return TelemetrySettings()
