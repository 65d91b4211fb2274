"""Background loops never end the daemon; an entry that keeps failing one is set aside."""

from __future__ import annotations

import logging
from functools import partial

import anyio
import pytest

from sota_client._supervisor import Strikes, supervise
from swlm_sdk import Backoff

from .daemon_fixtures import Sleeps

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_failing_loop_is_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 4:
            raise RuntimeError(f"bug {len(runs)}")
        await anyio.sleep_forever()

    sleeps = Sleeps(free=10)
    with caplog.at_level(logging.ERROR):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                partial(supervise, "test", loop, backoff=Backoff(1.0, 60.0, sleep=sleeps))
            )
            await sleeps.wait_for_count(3)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert runs == [0, 1, 2, 3]
    assert sleeps.delays == [1.0, 2.0, 4.0]
    assert caplog.text.count("The test loop failed: RuntimeError: bug") == 3
    assert caplog.text.count("Traceback") == 1  # the traceback once, not at every restart


async def test_a_loop_that_returns_is_restarted_too() -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs > 2:
            await anyio.sleep_forever()

    sleeps = Sleeps(free=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(supervise, "test", loop, backoff=Backoff(1.0, 60.0, sleep=sleeps)))
        await sleeps.wait_for_count(2)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert runs == 3


async def test_a_loop_that_ran_long_restarts_after_the_shortest_wait() -> None:
    clock = Clock()
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        clock.now += 1000.0 if runs == 3 else 0.0  # the third run lasted a long time
        if runs < 5:
            raise RuntimeError("again")
        await anyio.sleep_forever()

    sleeps = Sleeps(free=10)
    async with anyio.create_task_group() as tg:
        backoff = Backoff(1.0, 60.0, sleep=sleeps)
        tg.start_soon(partial(supervise, "test", loop, backoff=backoff, clock=clock))
        await sleeps.wait_for_count(4)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert sleeps.delays == [1.0, 2.0, 1.0, 2.0]


async def test_cancellation_passes_through() -> None:
    async def loop() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05) as scope:
        await supervise("test", loop)
    assert scope.cancelled_caught


def test_three_identical_strikes_set_an_entry_aside() -> None:
    strikes = Strikes()
    assert not strikes.strike("a", "boom")
    assert not strikes.strike("a", "boom")
    assert not strikes.strike("b", "boom")  # each entry counts alone
    assert strikes.strike("a", "boom")
    assert not strikes.strike("a", "boom")  # counted anew after it was set aside


def test_a_different_failure_or_a_success_starts_the_count_over() -> None:
    strikes = Strikes()
    strikes.strike("a", "boom")
    strikes.strike("a", "boom")
    assert not strikes.strike("a", "bang")
    assert not strikes.strike("a", "bang")
    strikes.clear("a")
    assert not strikes.strike("a", "bang")
    assert not strikes.strike("a", "bang")
    assert strikes.strike("a", "bang")
