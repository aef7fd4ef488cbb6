"""``portico-dev --images``: how a component's container is started (make images runs it)."""

from __future__ import annotations

from pathlib import Path

from portico_devstack.launcher import Containers, _socket_dsn


def test_settings_are_passed_by_name_so_no_secret_is_on_the_command_line() -> None:
    env = {
        "USERS_POSTGRES__DSN": "postgresql://portico_users_app:s3cret@/portico?host=/run/postgresql",
        "USERS_VALKEY__URL": "redis://users:pw@127.0.0.1:6379/0",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/root",  # the launcher's own environment stays out
        "PATH": "/usr/bin",
    }
    argv = Containers("localhost/portico/{name}:local").argv("users", env)
    assert "s3cret" not in " ".join(argv)
    assert "pw@" not in " ".join(argv)
    passed = {a.removeprefix("--env=") for a in argv if a.startswith("--env=")}
    assert passed == {"USERS_POSTGRES__DSN", "USERS_VALKEY__URL", "PYTHONUNBUFFERED"}
    assert argv[-1] == "localhost/portico/users:local"


def test_containers_run_hardened_on_the_host_network_and_are_removed() -> None:
    argv = Containers("registry.example/{name}@sha256:abc").argv(
        "auth", {}, mounts={Path("/data/key.pem"): "/run/portico/key.pem"}, args=["up"]
    )
    for flag in ("--rm", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"):
        assert flag in argv
    assert "--network=host" in argv
    assert "--volume=/data/key.pem:/run/portico/key.pem:ro" in argv
    assert argv[-2:] == ["registry.example/auth@sha256:abc", "up"]
    assert not any(a.startswith(("--user", "--privileged", "--cap-add")) for a in argv)


def test_a_socket_dsn_moves_only_the_socket_folder() -> None:
    dsn = "postgresql://portico_users_app:p%40ss@/portico?host=/tmp/my%20data/postgres&port=5432"
    assert _socket_dsn(dsn, "/run/postgresql") == (
        "postgresql://portico_users_app:p%40ss@/portico?host=/run/postgresql&port=5432"
    )
