"""A fixed number of slots, handed out strictly in the order tickets were taken.

Downloads take a ticket when they are scheduled (in Core's ``installPos`` order) and wait for
their turn; tasks themselves may start in any order (trio shuffles them), so a plain semaphore
would not keep that order.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["Turns"]


class Turns:
    """``slots`` at a time; the oldest outstanding ticket goes first."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"need at least one slot, got {slots}")
        self._free = slots
        self._numbers = itertools.count()
        self._waiting: dict[int, anyio.Event] = {}  # insertion order is ticket order

    @property
    def waiting(self) -> int:
        """Tickets taken and not yet served or cancelled."""
        return len(self._waiting)

    def ticket(self) -> int:
        """Take a place in the queue now; pass it to :meth:`turn` later (or :meth:`cancel`)."""
        number = next(self._numbers)
        self._waiting[number] = anyio.Event()
        return number

    def cancel(self, ticket: int) -> None:
        """Give up a place that will not be used; a served or cancelled ticket is ignored."""
        if self._waiting.pop(ticket, None) is not None:
            self._wake_head()

    @asynccontextmanager
    async def turn(self, ticket: int | None = None) -> AsyncIterator[None]:
        """Hold a slot, once every older ticket has had its turn (a new ticket if None)."""
        if ticket is None:
            ticket = self.ticket()
        elif ticket not in self._waiting:
            raise ValueError(f"ticket {ticket} was already used or cancelled")
        try:
            while not (self._free and next(iter(self._waiting)) == ticket):
                await self._waiting[ticket].wait()
                self._waiting[ticket] = anyio.Event()
        except BaseException:
            self.cancel(ticket)
            raise
        del self._waiting[ticket]
        self._free -= 1
        self._wake_head()
        try:
            yield
        finally:
            self._free += 1
            self._wake_head()

    def _wake_head(self) -> None:
        if self._free and self._waiting:
            self._waiting[next(iter(self._waiting))].set()
