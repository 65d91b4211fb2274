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
from ._errors import one_line

__all__ = ["MAX_BACKOFF", "MIN_INTERVAL", "Poller"]

logger = logging.getLogger(__name__)

MIN_INTERVAL = 1.0
"""The shortest time between polls; ``polling_sec = 0`` means this, with a warning."""

MAX_BACKOFF = 300.0
"""The longest wait between failed polls (or ``polling_sec``, if that is longer)."""


class _Interpreter(Protocol):
    @property
    def activity(self) -> Activity: ...
    async def execute(self, command: Command, *, quiet: bool = False) -> Event | None: ...


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
        self._failure: str | None = None  # why the last poll failed, until it is logged

    async def run(self) -> None:
        logger.info("Polling for new updates every %g seconds.", self.interval)
        activity = self._interpreter.activity
        while True:
            await activity.wait_idle()
            delay = self.wait()
            self._log_failure(delay)
            await self._sleep(delay)
            await activity.wait_idle()
            await self.poll()

    def _log_failure(self, delay: float) -> None:
        """Say why the last poll failed, with the wait that follows now (WARN the first time).

        Logged just before the sleep, not at the failure: what the failure causes (a token
        request after its own backoff) runs first, and the wait stated must be the real one.
        """
        if self._failure is None:
            return
        if self.failures == 1:
            logger.warning(
                "Polling Core for updates failed: %s. Next poll in %g s, then less and less "
                "often (at most every %g s) until it works",
                one_line(self._failure),
                delay,
                self._backoff.max_delay,
            )
        else:
            logger.debug(
                "Polling Core failed again (%d times): %s; next poll in %g s",
                self.failures,
                one_line(self._failure),
                delay,
            )
        self._failure = None

    def wait(self) -> float:
        """Seconds until the next poll: the interval, or the backoff after failures."""
        return self._backoff.delay(self.failures) if self.failures else self.interval

    async def poll(self) -> None:
        """One poll, and what it says about Core (in ``systemctl status`` when that changes)."""
        event = await self._interpreter.execute(GetUpdateRequests(), quiet=True)
        if isinstance(event, ErrorEvent | NotAuthenticated):
            self.failures += 1
            self._failure = event.text if isinstance(event, ErrorEvent) else "not authenticated"
            _systemd.notify("STATUS=Core is failing: polling with backoff")
            return
        if self.failures:
            logger.warning("Polling Core works again after %d failed polls", self.failures)
            self.failures = 0
        _systemd.notify("STATUS=Running")
