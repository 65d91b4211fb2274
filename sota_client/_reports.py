"""Update reports that reach Core even when Core, the network or the token is down for a while.

A report is written to the journal before it is sent and removed only when Core accepts it, so a
report is never lost (2016 lost it on any error, bug 27); failed sends are retried with backoff,
also after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import msgspec

from swlm_sdk import Backoff
from swlm_sdk.protocol import ErrorEvent, Event, UpdateReport, UpdateReportSent

from ._errors import AuthError, BackendError

__all__ = ["ReportSender"]

logger = logging.getLogger(__name__)


class _Backend(Protocol):
    async def send_update_report(self, report: UpdateReport) -> None: ...


class _PendingReport(Protocol):
    @property
    def update_id(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def attempts(self) -> int: ...


class _Journal(Protocol):
    def add_report(self, update_id: str, payload: bytes) -> None: ...
    def due_reports(self, now: float, limit: int) -> Sequence[_PendingReport]: ...
    def next_report_due(self) -> float | None: ...
    def report_accepted(self, update_id: str) -> None: ...
    def mark_update(self, update_id: str, state: str) -> None: ...
    def report_failed(self, update_id: str, next_attempt_at: float, error: str) -> None: ...


class ReportSender:
    """Sends update reports through the journal, and retries the ones Core did not take."""

    def __init__(
        self,
        backend: _Backend,
        journal: _Journal,
        *,
        backoff: float = 5.0,
        max_backoff: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._journal = journal
        self._backoff = Backoff(backoff, max_backoff)
        self._clock = clock
        self._wake = anyio.Event()
        self._sending: set[str] = set()  # sent right now by send(): not for the retry loop

    async def send(self, report: UpdateReport) -> Event:
        """Send a report now; on failure keep it for the retry loop and say so.

        :raises AuthError: Core refused the token even after re-authenticating; the report is
            kept and sent again later.
        """
        self._journal.add_report(report.update_id, msgspec.json.encode(report))
        self._sending.add(report.update_id)
        try:
            return await self._attempt(report, attempts=0)
        finally:
            self._sending.discard(report.update_id)
            self._wake.set()  # the retry loop may have skipped it meanwhile

    async def _attempt(self, report: UpdateReport, attempts: int) -> Event:
        try:
            await self._backend.send_update_report(report)
        except BackendError as exc:
            if not (exc.transient or isinstance(exc, AuthError)):
                logger.error("Core refused the report for %s: %s", report.update_id, exc)
                self._journal.report_accepted(report.update_id)  # retrying cannot help
                return ErrorEvent(str(exc))
            delay = self._backoff.delay(attempts + 1)
            self._journal.report_failed(report.update_id, self._clock() + delay, str(exc))
            self._wake.set()
            logger.warning(
                "Report for %s not sent (%s); trying again in %.0f s", report.update_id, exc, delay
            )
            if isinstance(exc, AuthError):
                raise
            return ErrorEvent(f"{exc} (the report is kept and will be sent again)")
        self._journal.report_accepted(report.update_id)
        self._journal.mark_update(report.update_id, "reported")
        logger.info("Update report sent for %s", report.update_id)
        return UpdateReportSent()

    async def run(self, publish: Callable[[Event], Awaitable[None]]) -> None:
        """Retry kept reports when they fall due, for ever; ``publish`` gets their outcomes."""
        while True:
            skipped: set[str] = set()
            for pending in self._journal.due_reports(self._clock(), 32):
                if pending.update_id in self._sending:
                    skipped.add(pending.update_id)  # a slow Core must not get it twice at once
                    continue
                try:
                    report = msgspec.json.decode(pending.payload, type=UpdateReport)
                except msgspec.DecodeError as exc:
                    logger.error("Dropping unreadable kept report %s: %s", pending.update_id, exc)
                    self._journal.report_accepted(pending.update_id)
                    continue
                try:
                    event = await self._attempt(report, pending.attempts + 1)
                except AuthError:
                    continue
                if isinstance(event, UpdateReportSent):
                    await publish(event)
            self._wake = anyio.Event()
            due = self._journal.next_report_due()
            wait = 3600.0 if due is None else max(0.0, due - self._clock())
            if skipped & self._sending:
                wait = max(
                    wait, self._backoff.initial_delay
                )  # still due, but send() wakes us when done
            with anyio.move_on_after(wait):
                await self._wake.wait()
