"""The poller: waits for idle (PRO-1654), backs off while Core fails, says so once."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest

from sota_client._activity import Activity
from sota_client._poller import MAX_BACKOFF, Poller
from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    Event,
    GetUpdateRequests,
    NotAuthenticated,
    NoUpdateRequests,
)

from .daemon_fixtures import Sleeps

pytestmark = pytest.mark.anyio

FAIL = ErrorEvent("HTTP client error: Response Code: 500 Internal Server Error")


class FakeInterpreter:
    """Answers each poll with the next scripted event; records what was busy at the time."""

    def __init__(self, answers: Iterator[Event]) -> None:
        self.activity = Activity()
        self.answers = answers
        self.polls = 0
        self.busy_at_poll: list[int] = []

    async def execute(self, command: Command, *, quiet: bool = False) -> Event | None:
        assert isinstance(command, GetUpdateRequests)
        assert quiet  # the poller logs its own failures, with the wait that follows
        self.polls += 1
        self.busy_at_poll.append(self.activity.busy)
        return next(self.answers)


def script(*events: Event) -> Iterator[Event]:
    yield from events
    while True:
        yield NoUpdateRequests()


async def run_polls(poller: Poller, sleeps: Sleeps, count: int) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await sleeps.wait_for_count(count)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()


async def test_failed_polls_back_off_and_a_success_resets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    interpreter = FakeInterpreter(script(FAIL, FAIL, NotAuthenticated(), FAIL))
    sleeps = Sleeps(free=7)
    poller = Poller(interpreter, 10, sleep=sleeps)
    with caplog.at_level(logging.INFO):
        await run_polls(poller, sleeps, 8)
    assert sleeps.delays == [10.0, 10.0, 20.0, 40.0, 80.0, 10.0, 10.0, 10.0]
    assert caplog.text.count("Polling Core for updates failed") == 1
    assert caplog.text.count("Polling Core works again after 4 failed polls") == 1


async def test_the_backoff_is_capped() -> None:
    interpreter = FakeInterpreter(iter([FAIL] * 100))
    sleeps = Sleeps(free=20)
    await run_polls(Poller(interpreter, 1, sleep=sleeps), sleeps, 20)
    assert max(sleeps.delays) == MAX_BACKOFF
    assert sleeps.delays[:10] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]


async def test_polling_sec_zero_means_the_shortest_interval_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """2016 polled in a tight loop with 0 (38,958 requests a minute when Core failed)."""
    interpreter = FakeInterpreter(script())
    sleeps = Sleeps(free=3)
    with caplog.at_level(logging.WARNING):
        poller = Poller(interpreter, 0, sleep=sleeps)
    assert "core.polling_sec = 0: polling every 1 s instead" in caplog.text
    await run_polls(poller, sleeps, 3)
    assert sleeps.delays == [1.0, 1.0, 1.0, 1.0]


async def test_a_poll_waits_until_follow_up_work_is_done() -> None:
    """Polling while an update was processed made 2016 install it twice (PRO-1654)."""
    interpreter = FakeInterpreter(script())
    sleeps = Sleeps(free=100)
    poller = Poller(interpreter, 10, sleep=sleeps)
    interpreter.activity.begin()  # a download is running
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        assert interpreter.polls == 0  # not while it runs,
        assert sleeps.delays == []  # and the interval counts from when it is done
        interpreter.activity.end()
        await sleeps.wait_for_count(2)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert interpreter.polls >= 1
    assert set(interpreter.busy_at_poll) == {0}


async def test_work_that_starts_during_the_wait_is_waited_for_too() -> None:
    interpreter = FakeInterpreter(script())
    started = anyio.Event()

    async def sleep(delay: float) -> None:
        interpreter.activity.begin()  # work scheduled while the poller slept
        started.set()

    poller = Poller(interpreter, 10, sleep=sleep)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await started.wait()
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        assert interpreter.polls == 0
        tg.cancel_scope.cancel()
