"""images/python-runtime.sh, run for real outside a container: what it leaves in DEST and in the
virtualenv, and that the interpreter it assembles imports from the bytecode-only stdlib zip.

The images themselves are built, measured and started by ``make images``; this is the quick
check of the script's contract (the Dockerfiles' build stage runs it on Debian 12, like CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.k8s.conftest import ROOT

SCRIPT = ROOT / "images" / "python-runtime.sh"
DEBIAN_PYTHON = Path("/usr/bin/python3.11")

pytestmark = pytest.mark.skipif(
    not DEBIAN_PYTHON.exists() or shutil.which("strip") is None,
    reason="needs Debian 12's /usr/bin/python3.11 and binutils (the images' build stage)",
)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """DEST and VENV after the script: a venv with a pure module, a stub, a C source and an
    extension module (copied from this interpreter's lib-dynload)."""
    work = tmp_path_factory.mktemp("runtime")
    venv = work / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VALUE = 42\n")
    (site / "pkg" / "__init__.pyi").write_text("VALUE: int\n")
    (site / "pkg" / "speedups.c").write_text("/* source of an extension */\n")
    (venv / "bin").mkdir()
    (venv / "bin" / "tool").write_text("#!/app/.venv/bin/python\nimport pkg\n")
    dynload = Path("/usr/lib/python3.11/lib-dynload")
    (extension,) = dynload.glob("_json.cpython-311-*.so")
    shutil.copy(extension, site / "pkg" / extension.name)
    dest = work / "dest"
    subprocess.run([str(SCRIPT), str(dest), str(venv)], check=True, capture_output=True)
    return dest, venv


def test_stdlib_is_a_zip_of_bytecode_without_the_pruned_parts(runtime: tuple[Path, Path]) -> None:
    dest, _ = runtime
    stdlib = dest / "usr" / "lib" / "python3.11"
    assert [p.name for p in stdlib.iterdir()] == ["lib-dynload"], "only extension modules stay"
    names = zipfile.ZipFile(dest / "usr" / "lib" / "python311.zip").namelist()
    assert "os.pyc" in names
    assert "asyncio/__init__.pyc" in names
    assert not [n for n in names if n.endswith(".py")], "bytecode only"
    for pruned in ("test/", "sqlite3/", "tkinter/", "ensurepip/", "pydoc_data/", "lib2to3/"):
        assert not [n for n in names if n.startswith(pruned)], pruned
    assert not list((stdlib / "lib-dynload").glob("_test*"))
    assert (dest / "usr" / "bin" / "python3.11").is_file()


def test_the_assembled_interpreter_imports_from_the_zip(runtime: tuple[Path, Path]) -> None:
    dest, _ = runtime
    python = dest / "usr" / "bin" / "python3.11"
    env = {"PYTHONHOME": str(dest / "usr"), "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.defpath}
    code = "import asyncio, json, ssl, email.utils; print(email.utils.__file__)"
    result = subprocess.run([str(python), "-s", "-c", code], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == f"{dest}/usr/lib/python311.zip/email/utils.pyc"
    # What was pruned is gone: the image's import check would name it.
    pruned = subprocess.run([str(python), "-s", "-c", "import sqlite3"], env=env)
    assert pruned.returncode != 0


def test_shared_libraries_are_the_ldd_closure(runtime: tuple[Path, Path]) -> None:
    dest, _ = runtime
    libs = {p.name for p in (dest / "lib" / "x86_64-linux-gnu").iterdir()}
    assert {"libc.so.6", "libm.so.6", "libssl.so.3", "libcrypto.so.3", "libz.so.1"} <= libs
    assert not {"libsqlite3.so.0", "libdb-5.3.so", "libreadline.so.8"} & libs, "pruned modules'"
    assert (dest / "lib64" / "ld-linux-x86-64.so.2").is_file()
    assert not (dest / "usr" / "lib" / "x86_64-linux-gnu" / "gconv").exists()


def test_the_packages_shipped_are_recorded_for_scanners(runtime: tuple[Path, Path]) -> None:
    dest, _ = runtime
    status = dest / "var" / "lib" / "dpkg" / "status.d"
    recorded = {p.name for p in status.iterdir()}
    expected = {"libc6", "libssl3", "python3.11-minimal", "libpython3.11-stdlib", "zlib1g"}
    assert expected <= recorded
    assert "libsqlite3-0" not in recorded, "only what is shipped"
    entry = (status / "libssl3").read_text()
    assert entry.startswith("Package: libssl3\n")
    assert "\nVersion: 3." in entry


def test_venv_is_bytecode_only_without_build_leftovers(runtime: tuple[Path, Path]) -> None:
    _, venv = runtime
    package = venv / "lib" / "python3.11" / "site-packages" / "pkg"
    assert sorted(p.suffix for p in package.iterdir()) == [".pyc", ".so"]
    assert (package / "__init__.pyc").read_bytes()[4:8] == (1).to_bytes(4, "little"), (
        "flags 0b01: hash-based, source unchecked (reproducible)"
    )
    assert (venv / "bin" / "tool").read_text().startswith("#!"), "console scripts stay"
