"""The events half of the Unix-socket gateway: journal outbox -> the SWLM's events socket.

``DownloadComplete`` and ``DownloadFailed`` envelopes wait in the journal's outbox and are
delivered one connection per event, until one is accepted, in order and across restarts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio

from swlm_sdk import Backoff
from swlm_sdk.protocol import DownloadComplete, DownloadFailed, Event, encode_envelope

from ._unix import file_identity

__all__ = ["EventOutbox"]

logger = logging.getLogger(__name__)


class _OutboxEvent(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def attempts(self) -> int: ...


class _Journal(Protocol):
    def add_event(self, name: str, payload: bytes) -> int: ...
    def due_events(self, now: float, limit: int) -> Sequence[_OutboxEvent]: ...
    def pending_events(self) -> int: ...
    def event_delivered(self, event_id: int) -> None: ...
    def event_failed(self, event_id: int, next_attempt_at: float, error: str) -> None: ...


class EventOutbox:
    """Delivers ``DownloadComplete``/``DownloadFailed`` envelopes to the SWLM's events socket.

    If nobody listens, the envelope stays in the journal and is tried again with backoff, and
    at once when the socket file appears or changes (an SWLM starting up).
    """

    def __init__(
        self,
        path: str,
        journal: _Journal,
        *,
        timeout: float = 10.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        watch_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._journal = journal
        self._timeout = timeout
        self._backoff = Backoff(backoff, max_backoff)
        self._watch_interval = watch_interval
        self._clock = clock
        self._wake = anyio.Event()

    async def publish(self, event: Event) -> None:
        """Keep the two socket events in the journal and wake the deliverer."""
        if isinstance(event, DownloadComplete | DownloadFailed):
            self._journal.add_event(event.name, encode_envelope(event))
            self._wake.set()

    async def run(self) -> None:
        """Deliver kept envelopes in order, for ever."""
        while True:
            self._wake = anyio.Event()
            failed = await self._deliver_due()
            if failed is not None:
                await self._wait_for_listener(failed)
            elif not self._journal.pending_events():
                await self._wake.wait()

    async def _deliver_due(self) -> float | None:
        """Deliver kept envelopes in order; return the retry time of the first failure, if any.

        Every kept envelope is tried, whatever retry time the journal holds: the head of the
        queue sets the pace, so a new event never overtakes an older one.
        """
        for item in self._journal.due_events(math.inf, 64):
            try:
                await self._deliver(item.payload)
            except (OSError, TimeoutError, anyio.BrokenResourceError) as exc:
                delay = self._backoff.delay(item.attempts + 1)
                next_at = self._clock() + delay
                self._journal.event_failed(item.id, next_at, str(exc))
                logger.log(
                    logging.INFO if item.attempts == 0 else logging.DEBUG,
                    "couldn't deliver an event to %s (%s); kept, next try in %.0f s",
                    self.path,
                    exc,
                    delay,
                )
                return next_at
            self._journal.event_delivered(item.id)
            logger.info("Delivered an event to %s", self.path)
        return None

    async def _deliver(self, payload: bytes) -> None:
        with anyio.fail_after(self._timeout):
            stream = await anyio.connect_unix(self.path)
            async with stream:
                await stream.send(payload)
                await stream.send_eof()

    async def _wait_for_listener(self, retry_at: float) -> None:
        """Sleep until the retry time, a new event, or a change of the socket file."""
        seen = file_identity(self.path)
        while self._clock() < retry_at and not self._wake.is_set():
            with anyio.move_on_after(min(self._watch_interval, retry_at - self._clock())):
                await self._wake.wait()
            if file_identity(self.path) != seen:
                return
