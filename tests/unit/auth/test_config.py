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

    settings = AuthSettings()

    assert settings.signing_key_files == [Path("/keys/a.pem"), Path("/keys/b.pem")]
    assert settings.admin_emails == ["root@example.com"]
    assert settings.throttle.account_limit == 3
    assert (settings.grpc_port, settings.users_target) == (50052, "127.0.0.1:50051")
    assert (settings.issuer, settings.audience) == ("portico", "portico-api")
    assert settings.valkey.key_prefix == "portico:auth:v1:"
    assert "hunter2" not in repr(settings)


def test_access_tokens_live_at_most_fifteen_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_POSTGRES__DSN", "postgresql://db/portico")
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL_S", "901")
    with pytest.raises(ValidationError, match="access_token_ttl_s"):
        AuthSettings()
