"""Background tasks stop within their budget, even when a cancellation is absorbed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from portico_common.tasks import stop_task, stop_tasks


async def _retry_loop_that_absorbs_one_cancellation(attempts: list[int]) -> None:
    """A retry loop whose first cancellation comes back as a failure, as a library's timeout
    racing the cancellation does on Python 3.11: it is caught like any failure and retried."""
    absorbed = False
    while True:
        attempts.append(1)
        try:
            await asyncio.sleep(3600)  # a connect that never answers
        except asyncio.CancelledError:
            if absorbed:
                raise
            absorbed = True  # turned into "TimeoutError" by the library: the loop goes on
        await asyncio.sleep(0.01)  # backoff, then try again


async def test_a_retry_loop_that_absorbed_a_cancellation_still_stops() -> None:
    attempts: list[int] = []
    task = asyncio.create_task(_retry_loop_that_absorbs_one_cancellation(attempts))
    await asyncio.sleep(0.05)
    assert await stop_task(task, budget_s=30.0)
    assert task.cancelled()
    assert len(attempts) >= 2  # it did go round again after the first cancellation


async def test_a_plain_cancel_and_await_would_wait_on_that_loop_forever() -> None:
    """The control: the old way (cancel once, then await) does not end such a task."""
    task = asyncio.create_task(_retry_loop_that_absorbs_one_cancellation([]))
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert not done
    task.cancel()  # clean up: the second cancellation ends it
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_that_never_stops_is_left_behind_after_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="portico_common.tasks"):
        assert not await stop_tasks([task], budget_s=0.5)
    assert "stubborn-loop did not stop within 0.5s" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()


async def test_tasks_stop_together_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failing = asyncio.create_task(fails(), name="failing")
    sleepers = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="portico_common.tasks"):
        assert await stop_tasks([failing, *sleepers], budget_s=10.0)
    assert all(task.cancelled() for task in sleepers)
    assert "failing had failed: RuntimeError('boom')" in caplog.text
