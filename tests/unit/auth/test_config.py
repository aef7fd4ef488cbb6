"""Settings come from AUTH_* variables; lists take JSON or commas; the token lifetime is capped."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from portico_auth.config import AuthSettings


def test_settings_read_variables_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_POSTGRES__DSN", "postgresql://u:hunter2@db/portico")
    monkeypatch.setenv("AUTH_SIGNING_KEY_FILES", "/keys/a.pem, /keys/b.pem")
    monkeypatch.setenv("AUTH_ADMIN_EMAILS", '["Root@Example.com"]')
    monkeypatch.setenv("AUTH_THROTTLE__ACCOUNT_LIMIT", "3")
    monkeypatch.setenv("AUTH_ENVIRONMENT", "production")
    monkeypatch.setenv("AUTH_FORWARDER_KEYS", f"{'old-key-' * 4}, {'new-key-' * 4}")

    settings = AuthSettings()

    assert settings.signing_key_files == [Path("/keys/a.pem"), Path("/keys/b.pem")]
    assert settings.admin_emails == ["root@example.com"]
    assert settings.throttle.account_limit == 3
    assert (settings.grpc_port, settings.users_target) == (50052, "127.0.0.1:50051")
    assert (settings.issuer, settings.audience) == ("portico", "portico-api")
    assert settings.valkey.key_prefix == "portico:auth:v1:"
    assert [k.get_secret_value() for k in settings.forwarder_keys] == [
        "old-key-" * 4,
        "new-key-" * 4,
    ]
    assert "hunter2" not in repr(settings)
    assert "old-key-" not in repr(settings)


def test_production_needs_forwarder_keys_and_keys_are_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTH_POSTGRES__DSN", "postgresql://db/portico")
    monkeypatch.setenv("AUTH_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="AUTH_FORWARDER_KEYS"):
        AuthSettings()
    monkeypatch.setenv("AUTH_FORWARDER_KEYS", "short")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        AuthSettings()


def test_access_tokens_live_at_most_fifteen_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_POSTGRES__DSN", "postgresql://db/portico")
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL_S", "901")
    with pytest.raises(ValidationError, match="access_token_ttl_s"):
        AuthSettings()
