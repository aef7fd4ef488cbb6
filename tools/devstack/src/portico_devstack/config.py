"""Settings of the local stack launcher: prefix ``PORTICO_DEV_``, plus DATABASE_URL, VALKEY_URL."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DevSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PORTICO_DEV_", extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Embedded backends' data (kept).")
    host: str = Field(default="127.0.0.1", description="Address every process binds (loopback).")
    gateway_port: int = Field(default=8000, ge=0, le=65535)
    users_port: int = Field(default=50051, ge=0, le=65535)
    auth_port: int = Field(default=50052, ge=0, le=65535)
    audit_port: int = Field(default=50053, ge=0, le=65535)
    users_metrics_port: int = Field(default=9101, ge=0, le=65535, description="0 = none")
    auth_metrics_port: int = Field(default=9102, ge=0, le=65535, description="0 = none")
    audit_metrics_port: int = Field(default=9103, ge=0, le=65535, description="0 = none")
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="Children's log format unless USERS_/AUTH_/GATEWAY_LOG_FORMAT is set.",
    )
    valkey_port: int = Field(
        default=0, ge=0, le=65535, description="Embedded Valkey; 0 = free port"
    )
    admin_email: str = Field(
        default="admin@example.com",
        description="Gets the admin role once signed up (AUTH_ADMIN_EMAILS, unless that is set).",
    )
    observe: bool = Field(
        default=False,
        description=(
            "Also run a local Prometheus (Debian's `prometheus`) scraping every process, with "
            "the repo's recording rules and alerts (`make run OBSERVE=1`); skipped, with a "
            "message, when none is installed."
        ),
    )
    prometheus_port: int = Field(
        default=9090, ge=0, le=65535, description="Local Prometheus (OBSERVE); 0 or taken = free"
    )
    prometheus_binary: str = Field(
        default="prometheus", description="The Prometheus server OBSERVE runs (on PATH, or a path)"
    )
    images: str | None = Field(
        default=None,
        description=(
            "Run the migrations, the three services and the gateway from their container images "
            "(podman, host network, read-only, no capabilities) instead of this virtualenv: an "
            "image reference with `{name}` for gateway|users|auth|audit|migrations, e.g. "
            "`localhost/portico/{name}:local` (what `make images` builds and checks this way)."
        ),
    )
    podman: str = Field(default="podman", description="The podman binary IMAGES runs")
    ready_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=20.0, gt=0, description="Per child, after SIGTERM.")
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "PORTICO_DEV_DATABASE_URL"),
        description="Use this PostgreSQL instead of the embedded one.",
    )
    valkey_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VALKEY_URL", "PORTICO_DEV_VALKEY_URL"),
        description="Use this Valkey instead of the embedded one.",
    )


@functools.cache
def get_settings() -> DevSettings:
    return DevSettings()


def child_environment() -> dict[str, str]:
    """The environment children inherit (their own USERS_*/GATEWAY_* settings pass through)."""
    return dict(os.environ)
