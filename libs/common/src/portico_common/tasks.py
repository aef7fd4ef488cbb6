"""How a service stops its background tasks: within a budget, whatever they are awaiting.

Every service process runs loops beside its server (the health probe, the outbox relay, the
audit consumer, the sign-up reconciler). A stop cancels them and waits, but one ``cancel()`` is
not always enough on Python 3.11: a cancellation that arrives while a library's own timeout
fires (``asyncio.wait_for`` in 3.11, the connect of a database or Valkey client) can come back
as a ``TimeoutError``, which a retry loop catches like any failure and goes round again: the
stop then waits on a retry loop forever, and the pool it was about to close keeps reconnecting
to a database that may be gone (seen in CI: a test's teardown hung until pytest-timeout).

:func:`stop_tasks` therefore cancels again every :data:`RECANCEL_S` until the tasks end (the
next ``await`` of the loop, its backoff sleep at the latest, takes the new cancellation), and
gives up after ``budget_s``, logging which task was left behind, so that the rest of the stop
(draining calls, closing pools) always runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

_log = logging.getLogger(__name__)

#: Default time a stop waits for its background tasks, all of them together.
STOP_BUDGET_S = 5.0
#: Interval between repeated cancellations of a task that absorbed one.
RECANCEL_S = 0.2


async def stop_tasks(
    tasks: Iterable[asyncio.Task[None]], *, budget_s: float = STOP_BUDGET_S
) -> bool:
    """Cancel ``tasks`` and wait for them, at most ``budget_s`` in all; True if all ended.

    A task that ends with an exception other than its cancellation has it logged (it has no one
    else to tell). A task still running at the deadline is logged and left behind.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    finished = [task for task in tasks if task.done()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            for task in pending:
                _log.warning(
                    "background task %s did not stop within %.1fs; leaving it behind",
                    task.get_name(),
                    budget_s,
                )
            break
        done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, remaining))
        finished += done
    for task in finished:
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.warning("background task %s had failed: %r", task.get_name(), exc)
    return not pending


async def stop_task(task: asyncio.Task[None], *, budget_s: float = STOP_BUDGET_S) -> bool:
    """:func:`stop_tasks` for one task."""
    return await stop_tasks([task], budget_s=budget_s)
