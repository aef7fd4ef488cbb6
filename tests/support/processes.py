"""Service processes for the integration tier's stop tests: spawn, read log lines, wait for exit."""

from __future__ import annotations

import asyncio
import os
import socket
import sys


async def spawn(module: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``python -m module`` with only ``env`` (plus PATH); stdout and stderr in one pipe."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_until(process: asyncio.subprocess.Process, text: str, within_s: float) -> str:
    """The first output line containing ``text`` (fails if the process exits first)."""
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(within_s):
        while text not in (line := (await process.stdout.readline()).decode()):
            assert line, f"exited early: {''.join(seen)}"
            seen.append(line)
    return line


async def exit_of(process: asyncio.subprocess.Process, within_s: float) -> tuple[int, str]:
    """The exit code and the rest of the output, once the process has exited (within a bound)."""
    assert process.stdout is not None
    async with asyncio.timeout(within_s):
        rest = (await process.stdout.read()).decode()
        return await process.wait(), rest


def kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL ``process`` if it still runs (a failed test must not leave it behind)."""
    if process.returncode is None:
        process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
