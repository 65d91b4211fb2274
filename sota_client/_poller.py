"""Polls Core for updates: every ``polling_sec`` once the daemon is idle, backing off while
Core fails.

Polling while an update is still being processed made the 2016 client download and install it
twice (PRO-1654), so each poll waits until every follow-up is done. A failing Core (every poll
answered 500, say) is asked exponentially less often, up to every :data:`MAX_BACKOFF` seconds,
and the log says once that polls fail and once that they work again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from swlm_sdk import Backoff
from swlm_sdk.protocol import Command, ErrorEvent, Event, GetUpdateRequests, NotAuthenticated

from . import _systemd
from ._activity import Activity

__all__ = ["MAX_BACKOFF", "MIN_INTERVAL", "Poller"]

logger = logging.getLogger(__name__)

MIN_INTERVAL = 1.0
"""The shortest time between polls; ``polling_sec = 0`` means this, with a warning."""

MAX_BACKOFF = 300.0
"""The longest wait between failed polls (or ``polling_sec``, if that is longer)."""


class _Interpreter(Protocol):
    @property
    def activity(self) -> Activity: ...
    async def execute(self, command: Command) -> Event | None: ...


class Poller:
    """Sends ``GetUpdateRequests`` for ever; :meth:`run` is a background loop."""

    def __init__(
        self,
        interpreter: _Interpreter,
        seconds: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if seconds < MIN_INTERVAL:
            logger.warning(
                "core.polling_sec = %g: polling every %g s instead, the shortest interval",
                seconds,
                MIN_INTERVAL,
            )
        self.interval = max(float(seconds), MIN_INTERVAL)
        self._interpreter = interpreter
        self._backoff = Backoff(self.interval, max(self.interval, MAX_BACKOFF), sleep=sleep)
        self._sleep = sleep
        self.failures = 0

    async def run(self) -> None:
        logger.info("Polling for new updates every %g seconds.", self.interval)
        activity = self._interpreter.activity
        while True:
            await activity.wait_idle()
            await self._sleep(self.wait())
            await activity.wait_idle()
            await self.poll()

    def wait(self) -> float:
        """Seconds until the next poll: the interval, or the backoff after failures."""
        return self._backoff.delay(self.failures) if self.failures else self.interval

    async def poll(self) -> None:
        """One poll, and what it says about Core."""
        _systemd.notify("STATUS=Polling Core for updates")
        event = await self._interpreter.execute(GetUpdateRequests())
        if isinstance(event, ErrorEvent | NotAuthenticated):
            self.failures += 1
            if self.failures == 1:
                why = event.text if isinstance(event, ErrorEvent) else "not authenticated"
                logger.warning(
                    "Polling Core for updates failed (%s); trying again after %g s, then less "
                    "and less often (at most every %g s) until it works",
                    why,
                    self.wait(),
                    self._backoff.max_delay,
                )
            _systemd.notify("STATUS=Core is failing: polling with backoff")
            return
        if self.failures:
            logger.warning("Polling Core works again after %d failed polls", self.failures)
            self.failures = 0
        _systemd.notify("STATUS=Running")
