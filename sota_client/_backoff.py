"""Exponential backoff, one rule for every retry in the daemon (token, download, report, event).

The exponent is bounded, so a retry that goes on for days never overflows a float.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["DEFAULT_BACKOFF", "Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base``, ``2*base``, ``4*base`` ... capped at ``cap`` seconds.

    ``sleep`` is injectable so tests can record the waits instead of sleeping.
    """

    base: float = 1.0
    cap: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th consecutive failure (1 for the first)."""
        return min(self.cap, self.base * 2.0 ** min(max(failures, 1) - 1, 62))

    async def wait(self, failures: int) -> None:
        await self.sleep(self.delay(failures))


DEFAULT_BACKOFF = Backoff()
