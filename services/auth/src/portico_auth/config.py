"""Settings of the auth service, read from ``AUTH_*`` environment variables.

Nested groups use ``__``: ``AUTH_POSTGRES__DSN``, ``AUTH_VALKEY__URL``,
``AUTH_THROTTLE__ACCOUNT_LIMIT``, ``AUTH_ARGON2__MEMORY_COST_KIB``. Lists
(``AUTH_SIGNING_KEY_FILES``, ``AUTH_ADMIN_EMAILS``, ``AUTH_FORWARDER_KEYS``) take a JSON list or a
comma-separated one.
Nothing here is built at import time: ``__main__`` calls ``get_settings()``, tests build
``AuthSettings(...)`` themselves.

Signing keys: ``AUTH_SIGNING_KEY_FILES`` lists PEM (PKCS#8) Ed25519 private keys; every one is
published in the JWKS, the one whose kid is ``AUTH_ACTIVE_KID`` signs (the first file's when
unset). ``AUTH_ENVIRONMENT=production`` refuses to start without key files; ``dev`` generates
an ephemeral key then, with a warning (see :mod:`portico_auth.keys`).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from portico_common import service_settings
from portico_common.forwarding import check_key
from portico_common.outbox import OutboxSettings
from portico_common.service_settings import Port, PostgresSettings, ServiceSettings

__all__ = [
    "Argon2Settings",
    "AuthSettings",
    "PostgresSettings",
    "SignUpSettings",
    "ThrottleSettings",
    "UserDeletionSettings",
    "ValkeySettings",
    "get_settings",
]

#: Longest access-token lifetime this service will issue (15 minutes).
MAX_ACCESS_TOKEN_TTL_S = 900


class ValkeySettings(service_settings.ValkeySettings):
    """Valkey holds the sessions and the throttling counters (key layout: ``sessions.py``)."""

    key_prefix: str = "portico:auth:v1:"


class ThrottleSettings(BaseModel):
    """Attempts allowed per fixed window (see :mod:`portico_auth.throttle`)."""

    #: Logins per account from one client address: what stops one guesser.
    account_client_limit: int = Field(default=10, ge=1)
    #: Logins per account from all addresses: a ceiling far above what one client may try, so
    #: that an attacker's failures from one address cannot lock the owner out.
    account_limit: int = Field(default=100, ge=1)
    #: Logins per client address, across accounts.
    address_limit: int = Field(default=50, ge=1)
    #: Sign-ups per client address.
    signup_address_limit: int = Field(default=20, ge=1)
    window_s: float = Field(default=900.0, gt=0)


class Argon2Settings(BaseModel):
    """argon2id cost parameters (defaults: RFC 9106's second recommended option)."""

    time_cost: int = Field(default=3, ge=1)
    memory_cost_kib: int = Field(default=65_536, ge=8)
    parallelism: int = Field(default=4, ge=1)
    #: Hashes computed at once (each takes ``memory_cost_kib`` of memory in a worker thread).
    max_concurrent: int = Field(default=4, ge=1)


class SignUpSettings(BaseModel):
    """How sign-ups left half-done (pending) are driven to an end."""

    #: A pending credential older than this is reconciled (its client is presumed gone).
    pending_timeout_s: float = Field(default=60.0, gt=0)
    #: How often the reconciler looks for such rows.
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    #: Deadline of each call to the users service.
    users_timeout_s: float = Field(default=5.0, gt=0)


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, stable for its lifetime."""
    return f"{socket.gethostname()}-{os.getpid()}"


class UserDeletionSettings(BaseModel):
    """The consumer that ends a deleted user's sessions (``portico_auth.deletions``): a member
    of its own consumer group on the shared event stream (the stream is ``outbox.stream``)."""

    #: Run the consumer in this process (several replicas share the group's entries).
    enabled: bool = True
    #: Consumer group; created (``MKSTREAM``, from the stream's first entry) at start.
    group: str = Field(default="auth-sessions", min_length=1)
    #: This consumer's name in the group; unique per process.
    name: str = Field(default_factory=default_consumer_name, min_length=1)
    #: ``XREADGROUP … BLOCK``: how long one read waits for new entries.
    block_ms: int = Field(default=1000, ge=1, le=60_000)
    #: Entries read (and taken over) per round.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    #: Entries left pending this long (their consumer died or failed) are taken over.
    claim_idle_ms: int = Field(default=30_000, ge=1)
    #: Longest pause between retries while Valkey or PostgreSQL fails.
    max_backoff_s: float = Field(default=5.0, gt=0)


class AuthSettings(ServiceSettings, env_prefix="AUTH_"):
    """Everything the auth service needs to start (its variables: ``AUTH_*``)."""

    #: gRPC address of the users service (portico.users.v1.UserService).
    users_target: str = "127.0.0.1:50051"
    #: The auth latency SLO's threshold: password hashing (argon2id) is slow on purpose.
    trace_slow_s: float = Field(default=0.5, ge=0)
    #: ``production`` refuses to start without signing key files; ``dev`` makes a throwaway one.
    environment: Literal["dev", "production"] = "dev"
    signing_key_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    #: kid (RFC 7638 thumbprint) of the key that signs; the first file's key when empty.
    active_kid: str = ""
    issuer: str = "portico"
    audience: str = "portico-api"
    access_token_ttl_s: int = Field(default=MAX_ACCESS_TOKEN_TTL_S, ge=1, le=MAX_ACCESS_TOKEN_TTL_S)
    #: Lifetime of a refresh token, and of an idle session (each refresh starts it anew).
    refresh_token_ttl_s: int = Field(default=14 * 24 * 3600, ge=60)
    #: Absolute lifetime of a session, however often it is refreshed: then it ends.
    session_absolute_ttl_s: int = Field(default=30 * 24 * 3600, ge=1)
    #: Emails (case-insensitive) whose tokens carry the "admin" role.
    admin_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Keys that prove a caller is the gateway, whose ``x-forwarded-for`` alone is believed for
    #: the throttled client address (``portico_common.forwarding``); several while one rotates.
    #: Empty: nobody's is (every caller is throttled on its peer address); production needs one.
    forwarder_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    valkey: ValkeySettings = ValkeySettings()
    throttle: ThrottleSettings = ThrottleSettings()
    argon2: Argon2Settings = Argon2Settings()
    signup: SignUpSettings = SignUpSettings()
    #: Events: the outbox relay and the stream it publishes to (``AUTH_OUTBOX__*``).
    outbox: OutboxSettings = OutboxSettings()
    #: Its ports, where it listens unless told otherwise.
    grpc_port: Port = 50052
    metrics_port: Port = 9102
    #: The consumer of ``user.deleted`` events that ends the deleted user's sessions.
    user_deletions: UserDeletionSettings = Field(default_factory=UserDeletionSettings)

    @field_validator("signing_key_files", "admin_emails", "forwarder_keys", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string (empty items dropped)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("admin_emails")
    @classmethod
    def _lower_emails(cls, value: list[str]) -> list[str]:
        return [email.strip().lower() for email in value]

    @field_validator("forwarder_keys")
    @classmethod
    def _long_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        return [check_key(key) for key in value]

    @model_validator(mode="after")
    def _production_knows_the_gateway(self) -> AuthSettings:
        # Without a key every REST client would be throttled as the gateway's one address.
        if self.environment == "production" and not self.forwarder_keys:
            raise ValueError(
                "production needs forwarder_keys (AUTH_FORWARDER_KEYS): without the gateway's "
                "key, every REST client shares the gateway's login throttle"
            )
        return self


@functools.cache
def get_settings() -> AuthSettings:
    """The process's settings, read from the environment once."""
    return AuthSettings()
