"""Settings of the gateway, read from ``GATEWAY_*`` environment variables.

Nothing is built at import time: ``__main__`` calls :func:`get_settings`, tests build
``GatewaySettings(...)`` themselves and pass it to ``create_app``.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Everything the gateway needs to start."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port.")
    users_target: str = Field(
        default="127.0.0.1:50051", description="gRPC address of the users service."
    )
    auth_target: str = Field(
        default="127.0.0.1:50052", description="gRPC address of the auth service."
    )
    rpc_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline of each upstream call (a client may shorten it)."
    )
    readiness_timeout_s: float = Field(
        default=1.0, gt=0, description="How long /readyz waits for each upstream's health check."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Larger request bodies are refused with 413."
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Retry-After sent with 503 when an upstream is unavailable."
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="On SIGTERM, how long in-flight requests may finish."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line (collectors); text: for humans."
    )


@functools.cache
def get_settings() -> GatewaySettings:
    """The process's settings, read from the environment once."""
    return GatewaySettings()
