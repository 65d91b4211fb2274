"""Update reports that reach Core exactly once, even across Core outages, token trouble and kills.

A report is written to the journal before it is sent and leaves the queue only when Core
accepts it, so it is never lost (2016 lost it on any error, bug 27); failed sends are retried
with backoff, also after a restart. Core gets it once: a report Core already accepted is
answered from the journal, and a POST whose answer never came back (a kill, a timeout) is
checked against Core's update list before it is sent again. Only Core's own permanent refusal
of the report sets it aside; an entry that keeps failing unexpectedly is set aside too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import msgspec

from swlm_sdk import Backoff
from swlm_sdk._killpoints import kill_point
from swlm_sdk.protocol import (
    ErrorEvent,
    Event,
    UpdateReport,
    UpdateReportSent,
    UpdateRequest,
    UpdateRequestStatus,
)

from ._errors import AuthError, HttpStatusError, InternalError, SotaError, TransportError
from ._ids import id_problem
from ._store import Admission, Journal, PendingReport, UpdateState
from ._supervisor import Strikes

__all__ = ["ReportSender", "is_permanent_refusal"]

logger = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()
_RETRYABLE_4XX = frozenset({401, 403, 408, 429})
_UNFINISHED = frozenset({UpdateRequestStatus.PENDING, UpdateRequestStatus.IN_FLIGHT})


class _Backend(Protocol):
    async def send_update_report(self, report: UpdateReport) -> None: ...
    async def get_update_requests(self) -> Sequence[UpdateRequest]: ...


def is_permanent_refusal(exc: BaseException) -> bool:
    """Core's report endpoint itself refused the report for good (a 4xx it will repeat).

    401/403 (token), 408 (timeout) and 429 (rate limit) are not refusals of the report; the
    auth server's failures are ``TokenError``, never an ``HttpStatusError``.
    """
    return (
        isinstance(exc, HttpStatusError)
        and 400 <= exc.status < 500
        and exc.status not in _RETRYABLE_4XX
    )


def encode_report(report: UpdateReport) -> bytes:
    """The journal form of a report (also what "the same report" is compared by)."""
    return _ENCODER.encode(report)


class ReportSender:
    """Sends update reports through the journal, and retries the ones Core did not take."""

    def __init__(
        self,
        backend: _Backend,
        journal: Journal,
        *,
        backoff: float = 5.0,
        max_backoff: float = 600.0,
        clock: Callable[[], float] = time.time,
        ask_core_when_in_doubt: bool = True,
    ) -> None:
        """:param ask_core_when_in_doubt: check Core's update list before sending again a
        report whose POST may have arrived. Off when reports go over RVI: the node cannot be
        asked, and Core's HTTP API may be out of reach; the report is then sent again."""
        self._backend = backend
        self._ask_core = ask_core_when_in_doubt
        self._journal = journal
        self._backoff = Backoff(backoff, max_backoff)
        self._clock = clock
        self._wake = anyio.Event()
        self._locks: dict[str, anyio.Lock] = {}  # one send of an update's report at a time
        self._strikes = Strikes()

    def wake(self) -> None:
        """Look at the queue now: a report was queued without :meth:`send`."""
        self._wake.set()

    async def send(self, report: UpdateReport) -> Event:
        """Queue ``report`` and send it now; on failure it stays queued for the retry loop.

        :raises AuthError: Core refused the token even after re-authenticating; the report is
            kept and sent again later.
        """
        update_id = report.update_id
        admission = self._journal.add_report(update_id, encode_report(report))
        if admission is Admission.ALREADY_REPORTED:
            logger.info("Update %s was already reported to Core; not sending it again", update_id)
            return UpdateReportSent()
        if admission is Admission.CONFLICT:
            logger.warning(
                "A different report for update %s was refused: Core has its report already",
                update_id,
            )
            return ErrorEvent(
                f"Update {update_id} was already reported to Core with another result; "
                "Core keeps the first report it accepted"
            )
        try:
            event, _ = await self._settle(update_id)
            return event
        finally:
            self._wake.set()  # the retry loop may have skipped it meanwhile

    async def _settle(self, update_id: str) -> tuple[Event, bool]:
        """Bring the queued report of ``update_id`` to Core, one caller at a time.

        :returns: the outcome, and whether it is final (accepted, or set aside).
        """
        lock = self._locks.setdefault(update_id, anyio.Lock())
        try:
            async with lock:
                state = self._journal.update_state(update_id)
                if state is UpdateState.REPORTED:
                    return UpdateReportSent(), True  # sent by whoever held the lock before
                pending = self._journal.pending_report(update_id)
                if pending is None:
                    return ErrorEvent(f"No report is queued for update {update_id}"), False
                return await self._attempt(pending)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(update_id, None)

    async def _attempt(self, pending: PendingReport) -> tuple[Event, bool]:
        update_id = pending.update_id
        problem = id_problem(update_id)
        if problem is not None:
            return self._set_aside(pending, f"its update id is unusable: {problem}")
        try:
            report = msgspec.json.decode(pending.payload, type=UpdateReport)
        except msgspec.DecodeError as exc:
            return self._set_aside(pending, f"it cannot be read back: {exc}")
        if pending.in_doubt and self._ask_core:
            try:
                if await self._core_has_it(update_id):
                    return UpdateReportSent(), True
            except AuthError as exc:
                self._failed(pending, exc, in_doubt=True)
                raise
            except SotaError as exc:
                return self._failed(pending, exc, in_doubt=True), False
        self._journal.report_sending(update_id)
        try:
            await self._backend.send_update_report(report)
        except AuthError as exc:
            self._failed(pending, exc, in_doubt=False)
            raise
        except SotaError as exc:
            if is_permanent_refusal(exc):
                return self._set_aside(pending, f"Core refused it: {exc}")
            if isinstance(exc, InternalError):
                return self._unexpected(pending, exc)
            # A transport failure after the request went out may hide an acceptance.
            in_doubt = isinstance(exc, TransportError) and exc.maybe_delivered
            return self._failed(pending, exc, in_doubt=in_doubt), False
        except Exception as exc:  # a bug; still an Error event, never a dead loop
            logger.exception("Sending the report for %s failed unexpectedly", update_id)
            return self._unexpected(pending, InternalError("the report sender", exc))
        kill_point("report.accepted")  # Core has it and the journal does not know yet
        self._journal.report_accepted(update_id)
        self._strikes.clear(update_id)
        logger.info("Update report sent for %s", update_id)
        return UpdateReportSent(), True

    async def _core_has_it(self, update_id: str) -> bool:
        """After a POST whose answer was lost: does Core still wait for this report?

        Core lists only updates that are pending or in flight; one it no longer lists has
        its report (the POST did arrive), so sending it again would report it twice.
        """
        requests = await self._backend.get_update_requests()
        if any(r.request_id == update_id and r.status in _UNFINISHED for r in requests):
            logger.info("Core has no report for %s yet; sending it again", update_id)
            return False
        logger.info(
            "Core no longer lists update %s: its report arrived before the daemon stopped; "
            "not sending it again",
            update_id,
        )
        self._journal.report_accepted(update_id)
        return True

    def _failed(self, pending: PendingReport, exc: SotaError, *, in_doubt: bool) -> Event:
        delay = self._backoff.delay(pending.attempts + 1)
        self._journal.report_failed(
            pending.update_id, self._clock() + delay, str(exc), in_doubt=in_doubt
        )
        self._wake.set()
        logger.log(
            logging.WARNING if pending.attempts == 0 else logging.INFO,
            "Report for %s not sent (%s); trying again in %.0f s",
            pending.update_id,
            exc,
            delay,
        )
        return ErrorEvent(f"{exc} (the report is kept and will be sent again)")

    def _unexpected(self, pending: PendingReport, exc: InternalError) -> tuple[Event, bool]:
        if self._strikes.strike(pending.update_id, str(exc)):
            return self._set_aside(pending, f"it failed the same way again and again: {exc}")
        return self._failed(pending, exc, in_doubt=False), False

    def _set_aside(self, pending: PendingReport, why: str) -> tuple[Event, bool]:
        update_id = pending.update_id
        self._journal.set_aside(update_id, why)
        self._strikes.clear(update_id)
        logger.error(
            "The report for update %s is set aside and will not be sent again: %s. It stays "
            "in the journal; fix the cause and send the report again",
            update_id,
            why,
        )
        return ErrorEvent(f"The report for update {update_id} is set aside: {why}"), True

    async def run(self, publish: Callable[[Event], Awaitable[None]]) -> None:
        """Retry kept reports when they fall due, for ever; ``publish`` gets final outcomes."""
        while True:
            self._wake = anyio.Event()
            skipped = False
            for pending in self._journal.due_reports(self._clock(), 32):
                lock = self._locks.get(pending.update_id)
                if lock is not None and lock.locked():
                    skipped = True  # a slow Core must not get it twice at once
                    continue
                try:
                    event, final = await self._settle(pending.update_id)
                except AuthError:
                    continue
                if final:
                    await publish(event)
            due = self._journal.next_report_due()
            wait = 3600.0 if due is None else max(0.0, due - self._clock())
            if skipped:
                wait = max(wait, self._backoff.initial_delay)  # send() wakes us when done
            with anyio.move_on_after(wait):
                await self._wake.wait()
