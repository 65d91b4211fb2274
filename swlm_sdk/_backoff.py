"""Exponential backoff: the one retry-timing rule of the SDK and of the daemon.

The daemon imports it from here too, so an SWLM and the daemon wait alike, and a wait after any
number of failures (a report retried for weeks) never overflows a float.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import msgspec

__all__ = ["Backoff"]


class Backoff(msgspec.Struct, frozen=True):
    """Waits of ``initial_delay``, then ``multiplier`` times more after each failure, capped at
    ``max_delay`` seconds.

    ``sleep`` is injectable so tests can record the waits instead of sleeping.
    """

    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    def __repr__(self) -> str:  # the delays; ``sleep`` is a test's hook
        return (
            f"Backoff(initial_delay={self.initial_delay!r}, max_delay={self.max_delay!r}, "
            f"multiplier={self.multiplier!r})"
        )

    def __post_init__(self) -> None:
        if not 0 <= self.initial_delay <= self.max_delay:
            raise ValueError(
                f"backoff delays must satisfy 0 <= initial_delay <= max_delay, got "
                f"{self.initial_delay!r} and {self.max_delay!r}"
            )
        if self.multiplier < 1:
            raise ValueError(f"the backoff multiplier must be at least 1, got {self.multiplier!r}")

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th consecutive failure (1 for the first)."""
        exponent = min(max(failures, 1) - 1, 1024)
        try:
            grown = self.initial_delay * self.multiplier**exponent
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, grown)

    async def wait(self, failures: int) -> None:
        """Sleep for :meth:`delay` of ``failures``."""
        await self.sleep(self.delay(failures))
