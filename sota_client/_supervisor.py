"""Keeps the daemon's background loops alive, and sets aside the entry that keeps failing one.

A loop that raises (a bug, a library error nobody converted) is logged and started again with
backoff; it never ends the task group, and so never the daemon. Within a loop, a journal entry
that fails the same unexpected way three times is set aside by its owner instead of being
retried for ever (a crash loop in slow motion).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from swlm_sdk import Backoff

__all__ = ["STRIKES_TO_SET_ASIDE", "Strikes", "supervise"]

logger = logging.getLogger(__name__)

STRIKES_TO_SET_ASIDE = 3

_RESTART_BACKOFF = Backoff(initial_delay=1.0, max_delay=60.0)


async def supervise(
    name: str,
    loop: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff = _RESTART_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``loop`` for ever: restart it with backoff whenever it raises or returns.

    The failure count starts over once the loop has run for longer than the longest wait, so
    a loop that fails once a day always restarts after the shortest wait. Cancellation (the
    daemon stopping) passes through.
    """
    failures = 0
    while True:
        started = clock()
        try:
            await loop()
        except Exception as exc:
            problem = f"failed: {type(exc).__name__}: {exc}"
            error: BaseException | None = exc
        else:
            problem, error = "returned", None
        failures = 1 if clock() - started > backoff.max_delay else failures + 1
        delay = backoff.delay(failures)
        logger.error(
            "The %s loop %s; restarting it in %.0f s",
            name,
            problem,
            delay,
            exc_info=error if failures == 1 else None,
        )
        await backoff.wait(failures)


class Strikes:
    """Counts consecutive identical unexpected failures of each journal entry."""

    def __init__(self, limit: int = STRIKES_TO_SET_ASIDE) -> None:
        self.limit = limit
        self._last: dict[object, tuple[str, int]] = {}

    def strike(self, key: object, error: str) -> bool:
        """Record a failure of ``key``; True once it failed the same way ``limit`` times."""
        previous, count = self._last.get(key, ("", 0))
        count = count + 1 if previous == error else 1
        if count >= self.limit:
            self._last.pop(key, None)
            return True
        self._last[key] = (error, count)
        return False

    def clear(self, key: object) -> None:
        """``key`` succeeded (or went away): its count starts over."""
        self._last.pop(key, None)
