"""``portico-gateway`` start-up: a bad ``GATEWAY_*`` value stops it with the variable's name."""

from __future__ import annotations

import pytest

from portico_gateway.__main__ import main
from portico_gateway.config import get_settings


@pytest.mark.parametrize(
    ("name", "value"), [("GATEWAY_REUSE_PORT", "maybe"), ("GATEWAY_PORT", "99999")]
)
def test_a_bad_setting_stops_start_up_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match=rf"^portico-gateway: invalid .*settings: {name} "):
            main([])
    finally:
        get_settings.cache_clear()
