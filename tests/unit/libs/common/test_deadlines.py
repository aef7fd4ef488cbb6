"""A database call's budget: the configured limit, or the caller's deadline when it ends sooner."""

from __future__ import annotations

import time

import pytest

from portico_common.deadlines import CALL_DEADLINE, call_time_left
from portico_common.errors import DeadlineExceeded
from portico_common.postgres import Deadline


def test_without_a_call_deadline_the_limit_applies() -> None:
    assert call_time_left() is None
    assert 9.0 < Deadline(10.0).left() <= 10.0


def test_the_callers_deadline_wins_when_it_ends_sooner() -> None:
    token = CALL_DEADLINE.set(time.monotonic() + 0.5)
    try:
        assert 0.0 < Deadline(10.0).left() <= 0.5
        assert 0.0 < Deadline(0.1).left() <= 0.1  # and the limit when it is the shorter
    finally:
        CALL_DEADLINE.reset(token)


def test_an_explicit_time_left_is_taken_as_given() -> None:
    token = CALL_DEADLINE.set(time.monotonic() + 0.5)
    try:
        assert 2.0 < Deadline(10.0, time_left=3.0).left() <= 3.0
    finally:
        CALL_DEADLINE.reset(token)


def test_a_spent_deadline_is_deadline_exceeded() -> None:
    token = CALL_DEADLINE.set(time.monotonic() - 1.0)
    try:
        with pytest.raises(DeadlineExceeded):
            Deadline(10.0).left()
    finally:
        CALL_DEADLINE.reset(token)
