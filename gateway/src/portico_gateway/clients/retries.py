"""Retries of idempotent upstream calls, done by gRPC itself from the channel's service config.

Only RPCs whose every ``google.api.http`` rule is a ``get`` are retried (derived from the protos,
so a new read RPC is retried and a new write never is); POST, PATCH and DELETE RPCs are sent once.
The policy (gRFC A6, "client retries") is the ``grpc.service_config`` channel option:

* ``retryPolicy``: at most ``maxAttempts`` attempts in all, only on ``UNAVAILABLE`` (nothing was
  done, or the server says it may be tried again) and ``CANCELLED`` (a stopping server cancels
  the calls it received but had not started, grpc/grpc#41785; the gateway itself never cancels
  a call it still answers); before retry *n* gRPC waits a random time
  between 0 and ``min(initialBackoff * backoffMultiplier**(n-1), maxBackoff)`` (full jitter);
* ``retryThrottling``, the retry budget, per channel: tokens start at ``maxTokens``; each attempt
  answered with a retryable code costs 1, each success gives back ``tokenRatio``, and no call is
  retried while the tokens are at or below ``maxTokens / 2``, so retries cannot multiply the load
  of an outage.

The call's deadline bounds all its attempts and backoffs together. ``maxAttempts`` 1 sends no
policy: where the mesh retries (Istio's VirtualServices), the gateway must not retry as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from portico_common.access import is_read_only
from portico_gateway.config import GatewaySettings

#: Each backoff is this many times the previous one, up to ``retry_max_backoff_s``.
BACKOFF_MULTIPLIER = 2
RETRYABLE_CODES = ("UNAVAILABLE", "CANCELLED")


def idempotent_methods(service: ServiceDescriptor) -> list[MethodDescriptor]:
    """The RPCs of ``service`` whose HTTP rules (additional bindings too) are all ``get``."""
    return [method for method in service.methods if is_read_only(method)]


def _duration(seconds: float) -> str:
    """A protobuf JSON duration (``"0.05s"``)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def service_config(
    services: Iterable[ServiceDescriptor], settings: GatewaySettings
) -> dict[str, Any]:
    """The service config retrying the idempotent RPCs of ``services`` (none with 1 attempt)."""
    if settings.retry_max_attempts <= 1:
        return {}
    names = [
        {"service": service.full_name, "method": method.name}
        for service in services
        for method in idempotent_methods(service)
    ]
    if not names:
        return {}
    return {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": settings.retry_max_attempts,
                    "initialBackoff": _duration(settings.retry_initial_backoff_s),
                    "maxBackoff": _duration(settings.retry_max_backoff_s),
                    "backoffMultiplier": BACKOFF_MULTIPLIER,
                    "retryableStatusCodes": list(RETRYABLE_CODES),
                },
            }
        ],
        "retryThrottling": {
            "maxTokens": settings.retry_budget_max_tokens,
            "tokenRatio": settings.retry_budget_token_ratio,
        },
    }


def channel_options(
    services: Iterable[ServiceDescriptor], settings: GatewaySettings
) -> tuple[tuple[str, Any], ...]:
    """``grpc.service_config`` for a channel to ``services``, or nothing when nothing retries."""
    config = service_config(services, settings)
    return (("grpc.service_config", json.dumps(config)),) if config else ()
