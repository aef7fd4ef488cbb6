"""Settings come from USERS_* variables, nested with __, and keep the DSN secret."""

from __future__ import annotations

import pytest

from portico_users.config import UsersSettings, get_settings


def test_settings_read_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERS_POSTGRES__DSN", "postgresql://u:hunter2@db/users")
    monkeypatch.setenv("USERS_POSTGRES__POOL_MAX", "4")
    monkeypatch.setenv("USERS_VALKEY__URL", "redis://cache:6379/1")
    monkeypatch.setenv("USERS_VALKEY__CACHE_TTL_S", "30")
    monkeypatch.setenv("USERS_GRPC_PORT", "0")

    settings = UsersSettings()

    assert settings.postgres.dsn.get_secret_value() == "postgresql://u:hunter2@db/users"
    assert settings.postgres.pool_max == 4
    assert settings.valkey.url.get_secret_value() == "redis://cache:6379/1"
    assert settings.valkey.cache_ttl_s == 30
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 0)
    assert "hunter2" not in repr(settings)


def test_a_missing_dsn_fails_at_startup() -> None:
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="postgres"):
        get_settings()


def test_a_bad_session_store_setting_stops_start_up_with_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from portico_common.config import get_session_store_settings
    from portico_users.__main__ import main
    from portico_users.config import get_settings

    monkeypatch.setenv("USERS_POSTGRES__DSN", "postgresql://u@127.0.0.1:1/x")
    monkeypatch.setenv("PORTICO_SESSION_STORE_FAIL_MODE", "open")
    get_settings.cache_clear()
    get_session_store_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match=r"PORTICO_SESSION_STORE_(?s:.*)fail_mode"):
            main([])
    finally:
        get_settings.cache_clear()
        get_session_store_settings.cache_clear()
