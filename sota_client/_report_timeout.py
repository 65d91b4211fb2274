"""``device.report_timeout``: an update handed to an SWLM that never reports is not stuck for ever.

An SWLM that crashed for good, lost the event or was never there would otherwise leave an update
``delivered`` and Core showing it in flight for ever. Once an update has waited longer than the
timeout for its report, this logs one warning with its id and age and queues a ``GENERAL_ERROR``
report saying so, in one journal transaction that checks the update is still waiting (a report
the SWLM sends at the last moment wins). The report sender then takes it to Core.

Between two looks it sleeps until the next deadline, at most :data:`MAX_CHECK_INTERVAL`; with
nothing handed over it sleeps until the journal says an update was (no wake-up while idle).

Waits are measured on the monotonic clock while the daemon runs, so a wall clock set at boot
(a device without a battery-backed clock) cannot time out every update at once; the time an
update already waited before a restart is credited from the journal, at most the whole timeout.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable

import anyio

from swlm_sdk.protocol import ResultCode, UpdateReport

from ._reports import encode_report
from ._status import age_text
from ._store import Journal

__all__ = ["MAX_CHECK_INTERVAL", "ReportTimeout"]

logger = logging.getLogger(__name__)

MAX_CHECK_INTERVAL = 60.0
"""Longest sleep between two looks at the journal, in seconds."""


class ReportTimeout:
    """Reports handed-over updates as failed when no report came within ``seconds``."""

    def __init__(
        self,
        journal: Journal,
        seconds: float,
        *,
        queued: Callable[[], None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """:param queued: called after a report was queued (wakes the report sender)."""
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"a report timeout must be a positive number of seconds: {seconds}")
        self.seconds = seconds
        self._journal = journal
        self._queued = queued
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        #: ``(update_id, since)`` -> the monotonic time its report is due.
        self._deadlines: dict[tuple[str, float], float] = {}
        self._handed_over = anyio.Event()

    async def run(self) -> None:
        """Check, sleep until the next deadline (at most :data:`MAX_CHECK_INTERVAL`) or, with
        none, until an update is handed over; repeat."""
        loop_thread = threading.get_ident()

        def wake() -> None:
            # Called in the thread that wrote the journal; only the event loop's may set the
            # event (the daemon hands updates over there).
            if threading.get_ident() == loop_thread:
                self._handed_over.set()

        self._journal.handed_over_listeners.append(wake)
        try:
            while True:
                self._handed_over = anyio.Event()
                delay = self.check()
                if self._deadlines:
                    await _first(self._handed_over.wait, functools.partial(self._sleep, delay))
                else:
                    await self._handed_over.wait()
        finally:
            self._journal.handed_over_listeners.remove(wake)

    def check(self) -> float:
        """Report every update whose time is up; return the seconds until the next look."""
        now, wall = self._monotonic(), self._clock()
        waiting = {(r.update_id, r.since): r for r in self._journal.handed_over()}
        self._deadlines = {key: due for key, due in self._deadlines.items() if key in waiting}
        for key, record in waiting.items():
            if key not in self._deadlines:
                waited = min(max(wall - record.since, 0.0), self.seconds)
                self._deadlines[key] = now + self.seconds - waited
            if self._deadlines[key] <= now:
                self._time_out(record.update_id, record.since, record.holder, wall)
                del self._deadlines[key]
        soonest = min(self._deadlines.values(), default=math.inf) - now
        return max(0.0, min(soonest, self.seconds, MAX_CHECK_INTERVAL))

    def _time_out(self, update_id: str, since: float, holder: str, wall: float) -> None:
        text = (
            f"No report arrived within {self.seconds:g} s (device.report_timeout) after the "
            f"update was handed to {holder}"
        )
        report = UpdateReport.single(update_id, ResultCode.GENERAL_ERROR, text)
        if not self._journal.report_overdue(update_id, since, encode_report(report)):
            return  # reported meanwhile
        logger.warning(
            "Update %s was handed to %s %s ago and no report came within %g s "
            "(device.report_timeout); reporting it to Core as failed (GENERAL_ERROR). Check "
            "that the SWLM runs and listens, or raise device.report_timeout",
            update_id,
            holder,
            age_text(wall - since),
            self.seconds,
        )
        self._queued()


async def _first(*waits: Callable[[], Awaitable[object]]) -> None:
    """Wait until the first of ``waits`` ends; cancel the others."""

    async def then_stop(wait: Callable[[], Awaitable[object]]) -> None:
        await wait()
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for wait in waits:
            tg.start_soon(then_stop, wait)
