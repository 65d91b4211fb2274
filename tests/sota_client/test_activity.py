"""Activity: the exact "idle" the poller waits for before asking Core again (PRO-1654)."""

from __future__ import annotations

import anyio
import pytest

from sota_client._activity import Activity


class Waiter:
    """Runs ``wait_idle`` in a task and says whether it has returned."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity
        self.returned = anyio.Event()

    async def run(self) -> None:
        await self.activity.wait_idle()
        self.returned.set()

    async def wait(self) -> None:
        with anyio.fail_after(10):
            await self.returned.wait()


def test_starts_idle() -> None:
    activity = Activity()
    assert activity.busy == 0


def test_end_without_begin_raises() -> None:
    activity = Activity()
    with pytest.raises(RuntimeError, match=r"Activity.end\(\) without begin\(\)"):
        activity.end()
    activity.begin()
    activity.end()
    with pytest.raises(RuntimeError):
        activity.end()
    assert activity.busy == 0


def test_working_counts_the_block_even_when_it_fails() -> None:
    activity = Activity()
    with activity.working():
        assert activity.busy == 1
        with activity.working():
            assert activity.busy == 2
        assert activity.busy == 1
    assert activity.busy == 0
    with pytest.raises(ValueError, match="boom"), activity.working():
        raise ValueError("boom")
    assert activity.busy == 0


@pytest.mark.anyio
async def test_wait_idle_returns_at_once_when_idle() -> None:
    with anyio.fail_after(10):
        await Activity().wait_idle()


@pytest.mark.anyio
async def test_wait_idle_waits_for_the_last_end() -> None:
    activity = Activity()
    activity.begin()
    activity.begin()
    waiter = Waiter(activity)
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        assert not waiter.returned.is_set()
        activity.end()
        await anyio.wait_all_tasks_blocked()
        assert not waiter.returned.is_set()
        activity.end()
        await waiter.wait()
    assert activity.busy == 0


@pytest.mark.anyio
async def test_work_that_begins_before_the_waiter_wakes_keeps_it_waiting() -> None:
    """A follow-up is counted before the work that caused it ends: idle never flickers."""
    activity = Activity()
    activity.begin()
    waiter = Waiter(activity)
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        activity.end()
        activity.begin()  # before the waiter ran
        await anyio.wait_all_tasks_blocked()
        assert not waiter.returned.is_set()
        activity.end()
        await waiter.wait()


@pytest.mark.anyio
async def test_idle_can_be_awaited_again_after_new_work() -> None:
    activity = Activity()
    for _ in range(3):
        with activity.working():
            waiter = Waiter(activity)
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.run)
                await anyio.wait_all_tasks_blocked()
                assert not waiter.returned.is_set()
                tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            await activity.wait_idle()
