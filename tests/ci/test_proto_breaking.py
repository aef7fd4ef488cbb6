"""The API compatibility gate (proto/breaking.py, `make proto-breaking` in `make test`): the tree
passes against the committed last-release image, and deliberately breaking copies fail it, for
gRPC/wire breaks (buf breaking) and for REST breaks (google.api.http bindings); additions and a
v2 package side by side pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ci.conftest import ROOT

PROTO = ROOT / "proto"
USERS = Path("portico/users/v1/users.proto")
BUF = Path(os.environ.get("BUF", ROOT / ".tools" / "node_modules" / ".bin" / "buf")).resolve()


def check(*args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run `make lint` (it installs buf)")
    return subprocess.run(
        [sys.executable, str(PROTO / "breaking.py"), "check", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BUF": str(BUF)},
    )


def edited(tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    root = tmp_path / "proto"
    shutil.copytree(PROTO / "portico", root / "portico")
    edit(root)
    return root


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_tree_is_compatible_with_the_last_release() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no breaking change against baseline.binpb" in result.stdout


@pytest.mark.parametrize(
    ("name", "edit", "rule"),
    [
        (
            "delete a field",
            lambda r: replace(r / USERS, "  string etag = 6;\n", ""),
            "FIELD_NO_DELETE",
        ),
        (
            "change a field's type",
            lambda r: replace(r / USERS, "  string display_name = 3;", "  bytes display_name = 3;"),
            "FIELD_SAME_TYPE",
        ),
        (
            "rename a field (its JSON name changes too)",
            lambda r: replace(r / USERS, "  string display_name = 3;", "  string name = 3;"),
            "FIELD_SAME_NAME",
        ),
        (
            "renumber a field",
            lambda r: replace(r / USERS, "  string etag = 6;", "  string etag = 7;"),
            "FIELD_NO_DELETE",
        ),
        (
            "remove an RPC",
            lambda r: replace(
                r / USERS,
                "  rpc DeleteUser(DeleteUserRequest) returns (DeleteUserResponse) {",
                "  rpc RemoveUser(DeleteUserRequest) returns (DeleteUserResponse) {",
            ),
            "RPC_NO_DELETE",
        ),
        (
            "change a REST path",
            lambda r: replace(r / USERS, 'get: "/v1/users/{id}"', 'get: "/v1/people/{id}"'),
            "REST: portico.users.v1.UserService.GetUser was GET /v1/users/{id}",
        ),
        (
            "change a REST verb",
            lambda r: replace(r / USERS, 'patch: "/v1/users/{id}"', 'put: "/v1/users/{id}"'),
            "REST: portico.users.v1.UserService.UpdateUser was PATCH",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_a_breaking_change_fails(
    tmp_path: Path, name: str, edit: Callable[[Path], None], rule: str
) -> None:
    result = check("--proto-root", str(edited(tmp_path, edit)))
    assert result.returncode == 1, f"{name}: {result.stdout}{result.stderr}"
    assert rule in result.stdout, result.stdout
    assert "docs/api-versioning.md" in result.stderr


def test_additions_and_a_v2_side_by_side_pass(tmp_path: Path) -> None:
    def add(root: Path) -> None:
        replace(
            root / USERS, "  string etag = 6;\n}", "  string etag = 6;\n  string locale = 7;\n}"
        )
        v2 = root / "portico" / "users" / "v2"
        v2.mkdir()
        text = (root / USERS).read_text().replace("portico.users.v1", "portico.users.v2")
        (v2 / "users.proto").write_text(text.replace('"/v1/', '"/v2/'))

    result = check("--proto-root", str(edited(tmp_path, add)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_against_a_git_ref() -> None:
    result = check("--against-ref", "HEAD")
    assert result.returncode == 0, result.stdout + result.stderr
    assert check("--against-ref", "no-such-ref").returncode != 0
