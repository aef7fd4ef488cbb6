"""Each drill gets a stack of its own (fresh data folder, free ports), stopped by pid afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.stack import DrillStack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DrillStack]:
    started = DrillStack(tmp_path / "stack")
    try:
        await started.start()
        yield started
    finally:
        await started.stop()
