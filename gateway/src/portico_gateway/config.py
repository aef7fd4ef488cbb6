"""Settings of the gateway, read from ``GATEWAY_*`` environment variables.

Nothing is built at import time: ``__main__`` calls :func:`get_settings`, tests build
``GatewaySettings(...)`` themselves and pass it to ``create_app``.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from portico_common.forwarding import check_key
from portico_common.valkey import ValkeyUrl

_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


class GatewaySettings(BaseSettings):
    """Everything the gateway needs to start."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port.")
    reuse_port: bool = Field(
        default=False,
        description="Bind with SO_REUSEPORT, so another gateway can listen on the same port: "
        "a rolling restart on one host (start the new one, then SIGTERM the old one) refuses no "
        "connection, and one gateway per core can share a port.",
    )
    users_target: str = Field(
        default="127.0.0.1:50051", description="gRPC address of the users service."
    )
    auth_target: str = Field(
        default="127.0.0.1:50052", description="gRPC address of the auth service."
    )
    audit_target: str = Field(
        default="127.0.0.1:50053", description="gRPC address of the audit service."
    )
    valkey_url: ValkeyUrl = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Valkey for sessions (token checks), rate limits and idempotency keys: "
        "one server, or the primary through Sentinel (valkey+sentinel://…).",
    )
    valkey_cache_url: ValkeyUrl | None = Field(
        default=None,
        description="The users cache's Valkey (the cache instance, USERS_VALKEY__CACHE_URL's "
        "server), read by the edge path as a read-only ACL user; unset: the cache is on "
        "valkey_url.",
    )
    edge_reads: bool = Field(
        default=True,
        description="Answer cacheable reads (portico.edge.v1.cacheable: GetUser, GetCurrentUser) "
        "from the owner's Valkey cache after the access check; false: every read calls the "
        "service.",
    )
    edge_cache_key_prefix: str = Field(
        default="portico:users:v1:",
        description="Key prefix of the owner's cache entries; must equal the users service's "
        "USERS_VALKEY__KEY_PREFIX.",
    )
    valkey_timeout_s: float = Field(
        default=0.25, gt=0, description="Socket and connect timeout of each Valkey command."
    )
    environment: Literal["dev", "production"] = Field(
        default="dev",
        description="production: /docs and /openapi.json need an admin token; dev: open.",
    )
    token_issuer: str = Field(default="portico", description="Required `iss` of access tokens.")
    token_audience: str = Field(
        default="portico-api", description="Required `aud` of access tokens."
    )
    session_key_prefix: str = Field(
        default="portico:auth:v1:",
        description="Sessions as the auth service keeps them: `EXISTS <prefix>session:<sid>`.",
    )
    jwks_max_age_s: float = Field(
        default=300.0, gt=0, description="How long fetched signing keys are used before a refetch."
    )
    rate_limit_address_per_minute: int = Field(
        default=600, ge=0, description="Requests per minute per client address; 0 turns it off."
    )
    rate_limit_address_burst: int = Field(
        default=100, ge=1, description="Requests a client address may send at once."
    )
    rate_limit_user_per_minute: int = Field(
        default=300, ge=0, description="Requests per minute per signed-in user; 0 turns it off."
    )
    rate_limit_user_burst: int = Field(
        default=50, ge=1, description="Requests a signed-in user may send at once."
    )
    rate_limit_warning_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="While Valkey fails (limits fail open), at most one warning per this period.",
    )
    idempotency_ttl_s: int = Field(
        default=86_400, ge=1, description="How long a stored Idempotency-Key response is replayed."
    )
    idempotency_lock_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a claimed Idempotency-Key blocks duplicates if its request never "
        "finishes (a crashed gateway); must exceed rpc_timeout_s.",
    )
    idempotency_wait_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a concurrent duplicate waits for the first answer before a 409.",
    )
    hsts_max_age_s: int = Field(
        default=0, ge=0, description="Strict-Transport-Security max-age; 0 sends no HSTS header."
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Exact origins allowed by CORS (JSON list or comma-separated); empty: no CORS.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description=(
            "Comma-separated proxy addresses (or CIDRs) whose X-Forwarded-For is believed for the"
            " client address (rate limits, login throttling); set it to the ingress or mesh"
            " proxy's, never '*'."
        ),
    )
    forwarder_key: SecretStr = Field(
        default=SecretStr(""),
        description="The secret (at least 32 characters) that proves to the auth service that a "
        "call comes from the gateway, so that it believes the client address the gateway sends "
        "(login and sign-up throttles); one of AUTH_FORWARDER_KEYS. Sent to the auth service only. "
        "Empty: not sent (the auth service then throttles every REST client as the gateway's "
        "address); production needs one.",
    )
    rpc_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline of each upstream call (a client may shorten it)."
    )
    retry_max_attempts: int = Field(
        default=3,
        ge=1,
        le=5,
        description="Attempts in all of an idempotent (GET-bound) upstream call on UNAVAILABLE, "
        "within its one deadline; 1 turns gateway retries off (where the mesh retries).",
    )
    retry_initial_backoff_s: float = Field(
        default=0.05,
        gt=0,
        description="Backoff before the first retry; gRPC waits a random time between 0 and it.",
    )
    retry_max_backoff_s: float = Field(
        default=0.5, gt=0, description="Cap of the backoff, which doubles after each retry."
    )
    retry_budget_max_tokens: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Retry budget per upstream: each UNAVAILABLE attempt costs a token; nothing is "
        "retried while at most half of these are left.",
    )
    retry_budget_token_ratio: float = Field(
        default=0.1,
        gt=0,
        description="Tokens a successful call gives back to the retry budget (3 decimals).",
    )
    readiness_timeout_s: float = Field(
        default=1.0, gt=0, description="How long /readyz waits for each upstream's health check."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Larger request bodies are refused with 413."
    )
    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        description="Request headers larger than this in all (name, value and line overhead) are "
        "refused with 431; an incomplete head may add 8 KiB for the request line before the "
        "connection refuses it.",
    )
    max_header_count: int = Field(
        default=100, ge=10, description="Requests with more headers are refused with 431."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's head must arrive within this time of the connection opening (or "
        "of its first byte); otherwise 408 and the connection closes.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request's body must arrive within this time of its head; otherwise 408 "
        "and the connection closes.",
    )
    keep_alive_timeout_s: int = Field(
        default=5,
        ge=1,
        description="An idle kept-alive connection is closed after this many seconds.",
    )
    max_connections: int = Field(
        default=1000,
        ge=0,
        description="Open connections per process; requests on the ones beyond get 503 and the "
        "connection closes; 0 turns the limit off.",
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Retry-After sent with 503 when an upstream is unavailable."
    )
    trace_slow_s: float = Field(
        default=0.25,
        ge=0,
        description="A request slower than this (seconds) whose trace head sampling dropped "
        "still gets its span (tail capture; the latency SLO's threshold); 0: only 5xx answers.",
    )
    shutdown_delay_s: float = Field(
        default=1.0,
        ge=0,
        description="On SIGTERM, how long to keep serving with /readyz answering 503 (so probes "
        "and balancers notice) before refusing new connections.",
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="Then, how long in-flight requests may finish."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line (collectors); text: for humans."
    )

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string (empty items dropped)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        """Only exact ``scheme://host[:port]`` origins: never ``*`` (requests carry credentials)."""
        origins = []
        for origin in value:
            if origin.strip() == "*":
                raise ValueError("'*' is not allowed: requests carry Authorization; list origins")
            if not _ORIGIN.fullmatch(origin.strip()):
                raise ValueError(f"not an origin (scheme://host[:port], no path): {origin!r}")
            origins.append(origin.strip().lower())
        return origins

    @field_validator("forwarder_key")
    @classmethod
    def _long_key(cls, value: SecretStr) -> SecretStr:
        return check_key(value) if value.get_secret_value() else value

    @model_validator(mode="after")
    def _production_proves_itself(self) -> GatewaySettings:
        if self.environment == "production" and not self.forwarder_key.get_secret_value():
            raise ValueError(
                "production needs forwarder_key (GATEWAY_FORWARDER_KEY): without it, the auth "
                "service throttles every REST client as the gateway's one address"
            )
        return self

    @model_validator(mode="after")
    def _lock_outlives_requests(self) -> GatewaySettings:
        if self.idempotency_lock_ttl_s <= self.rpc_timeout_s:
            raise ValueError("idempotency_lock_ttl_s must exceed rpc_timeout_s")
        return self


@functools.cache
def get_settings() -> GatewaySettings:
    """The process's settings, read from the environment once."""
    return GatewaySettings()
