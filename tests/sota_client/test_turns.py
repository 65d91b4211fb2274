"""Download slots served in ticket order (installPos order), whatever order tasks start in."""

from __future__ import annotations

import anyio
import pytest

from sota_client._turns import Turns

pytestmark = pytest.mark.anyio


async def test_tickets_are_served_in_order_even_when_tasks_arrive_reversed() -> None:
    turns = Turns(1)
    tickets = [turns.ticket() for _ in range(5)]
    served: list[int] = []
    release = anyio.Event()

    async def download(ticket: int) -> None:
        async with turns.turn(ticket):
            served.append(ticket)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for ticket in reversed(tickets):
            tg.start_soon(download, ticket)
            await anyio.wait_all_tasks_blocked()
        assert served == [tickets[0]]  # one slot: the oldest ticket, though it came last
        release.set()
    assert served == tickets


async def test_no_more_than_the_slots_at_once() -> None:
    turns = Turns(2)
    running = peak = 0

    async def download() -> None:
        nonlocal running, peak
        async with turns.turn():
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.01)
            running -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(download)
    assert peak == 2
    assert turns.waiting == 0


async def test_a_cancelled_ticket_lets_the_next_one_go() -> None:
    turns = Turns(1)
    first, second = turns.ticket(), turns.ticket()
    served: list[int] = []

    async def download(ticket: int) -> None:
        async with turns.turn(ticket):
            served.append(ticket)

    async with anyio.create_task_group() as tg:
        tg.start_soon(download, second)
        await anyio.wait_all_tasks_blocked()
        assert served == []  # the first ticket is ahead of it
        turns.cancel(first)
    assert served == [second]
    turns.cancel(first)  # twice: ignored


async def test_a_waiter_cancelled_in_the_queue_gives_its_place_up() -> None:
    turns = Turns(1)
    hold = anyio.Event()
    order: list[str] = []

    async def holder() -> None:
        async with turns.turn():
            await hold.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.01):
            async with turns.turn():
                order.append("never")
        assert turns.waiting == 0

        async def later() -> None:
            async with turns.turn():
                order.append("later")

        tg.start_soon(later)
        await anyio.wait_all_tasks_blocked()
        hold.set()
    assert order == ["later"]


def test_a_ticket_is_used_once() -> None:
    turns = Turns(1)
    ticket = turns.ticket()
    turns.cancel(ticket)

    async def use() -> None:
        async with turns.turn(ticket):
            pass

    with pytest.raises(ValueError, match="already used or cancelled"):
        anyio.run(use)


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Turns(0)
