"""Counts the daemon's work in flight, so the poller can wait until every follow-up is done.

The 2016 client approximated this with a WaitGroup and 100 ms pauses; here follow-up work is
counted when it is scheduled, before the work that caused it ends, so idle is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["Activity"]


class Activity:
    """A counter of running work with an awaitable "idle" state."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def busy(self) -> int:
        """How many pieces of work are running or scheduled."""
        return self._count

    def begin(self) -> None:
        """Count one more piece of work (call before scheduling it)."""
        if self._count == 0:
            self._idle = anyio.Event()
        self._count += 1

    def end(self) -> None:
        """One piece of work finished."""
        if self._count <= 0:
            raise RuntimeError("Activity.end() without begin()")
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    @contextmanager
    def working(self) -> Iterator[None]:
        """Count the work inside the ``with`` block."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    async def wait_idle(self) -> None:
        """Return once no work is running or scheduled."""
        while self._count:
            await self._idle.wait()
