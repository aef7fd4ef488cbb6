"""The command line: --help lists every setting; keygen writes a key file once."""

from __future__ import annotations

from pathlib import Path

import pytest

from portico_auth.__main__ import main
from portico_auth.keys import load_key_file


def test_help_lists_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in (
        "AUTH_GRPC_PORT",
        "AUTH_POSTGRES__DSN",
        "AUTH_SIGNING_KEY_FILES",
        "AUTH_ACTIVE_KID",
        "AUTH_ENVIRONMENT",
        "AUTH_THROTTLE__ACCOUNT_LIMIT",
        "AUTH_USERS_TARGET",
        "keygen",
    ):
        assert name in out


def test_keygen_writes_a_key_and_prints_its_kid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "signing-key.pem"

    main(["keygen", str(path)])

    assert capsys.readouterr().out.strip() == load_key_file(path).kid
    with pytest.raises(SystemExit, match="exists"):
        main(["keygen", str(path)])


def test_missing_settings_name_the_variable() -> None:
    from portico_auth.config import get_settings

    get_settings.cache_clear()
    with pytest.raises(SystemExit, match="AUTH_POSTGRES__DSN"):
        main([])
