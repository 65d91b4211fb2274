"""The events half of the Unix-socket gateway: journal outbox -> the SWLM's events socket.

``DownloadComplete`` and ``DownloadFailed`` envelopes wait in the journal's outbox and are
delivered one connection per event, until one is accepted, in order and across restarts. The
interpreter writes each envelope in the same journal transaction as the state change that
caused it (:meth:`EventOutbox.entry_for` says which events and in which form); this class only
delivers them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio

from swlm_sdk import Backoff
from swlm_sdk._killpoints import kill_point
from swlm_sdk.protocol import DownloadComplete, DownloadFailed, ErrorEvent, Event, encode_envelope

from .._supervisor import Strikes
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
    @property
    def name(self) -> str: ...
    @property
    def update_id(self) -> str | None: ...


class _Journal(Protocol):
    def due_events(self, now: float, limit: int) -> Sequence[_OutboxEvent]: ...
    def pending_events(self) -> int: ...
    def event_delivered(self, event_id: int, *, holder: str | None = None) -> None: ...
    def event_failed(self, event_id: int, next_attempt_at: float, error: str) -> None: ...
    def set_aside_event(self, event_id: int, error: str) -> None: ...
    def delivered_downloads(self, holder: str | None = None) -> list[tuple[str, str]]: ...
    def hand_over_again(self, update_id: str, name: str, payload: bytes) -> None: ...
    def setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str) -> None: ...


_LISTENER_KEY = "events_socket_listener"


class EventOutbox:
    """Delivers ``DownloadComplete``/``DownloadFailed`` envelopes to the SWLM's events socket.

    If nobody listens, the envelope stays in the journal and is tried again with backoff, and
    at once when the socket file appears or changes (an SWLM starting up).

    The 0.1 protocol has no acknowledgement: an SWLM killed after reading an event but before
    saving it would lose it. So when the socket file is a different one than at the last
    delivery (the SWLM restarted, even across a restart of the daemon), every update handed
    over and not reported yet is handed over again; an SWLM built with ``swlm_sdk`` recognises
    the ones it already has.
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
        self._strikes = Strikes()
        self._listener: str | None = None  # the socket file we last delivered to
        self.holder = f"the SWLM at {path}"

    @staticmethod
    def entry_for(event: Event) -> tuple[str, bytes] | None:
        """The outbox entry (name, 0.1 envelope) of an event the SWLM must get, else None."""
        if isinstance(event, DownloadComplete | DownloadFailed):
            return event.name, encode_envelope(event)
        return None

    async def publish(self, event: Event) -> None:
        """A subscriber: wake the deliverer when an outbox event was written."""
        if self.entry_for(event) is not None:
            self._wake.set()

    async def run(self, publish: Callable[[Event], Awaitable[None]]) -> None:
        """Deliver kept envelopes in order, for ever; ``publish`` hears of set-aside events."""
        self._listener = self._journal.setting(_LISTENER_KEY)
        while True:
            self._wake = anyio.Event()
            self._notice_restarted_listener()
            failed = await self._deliver_due(publish)
            if failed is not None:
                await self._wait_for_listener(failed)
            elif not self._journal.pending_events():
                with anyio.move_on_after(self._watch_interval):
                    await self._wake.wait()

    def _notice_restarted_listener(self) -> None:
        """Hand over again what an SWLM that restarted may have lost (see the class)."""
        identity = file_identity(self.path)
        if identity is None or self._listener is None or _text(identity) == self._listener:
            return
        self._listener = None
        again = self._journal.delivered_downloads(self.holder)
        if again:
            logger.info(
                "The SWLM at %s restarted: handing over again %d update(s) it has not reported",
                self.path,
                len(again),
            )
        for update_id, image in again:
            entry = self.entry_for(DownloadComplete(update_id, image, ""))
            assert entry is not None
            self._journal.hand_over_again(update_id, *entry)

    def _delivered_to(self, identity: tuple[int, int, int] | None) -> None:
        if identity is not None and _text(identity) != self._listener:
            self._listener = _text(identity)
            self._journal.set_setting(_LISTENER_KEY, self._listener)

    async def _deliver_due(self, publish: Callable[[Event], Awaitable[None]]) -> float | None:
        """Deliver kept envelopes in order; return the retry time of the first failure, if any.

        Every kept envelope is tried, whatever retry time the journal holds: the head of the
        queue sets the pace, so a new event never overtakes an older one.
        """
        for item in self._journal.due_events(math.inf, 64):
            identity = file_identity(self.path)
            try:
                await self._deliver(item.payload)
            except Exception as exc:
                if not isinstance(exc, OSError | TimeoutError | anyio.BrokenResourceError):
                    # Not a listener that is away: a bug. Three times alike: set it aside.
                    logger.exception("Delivering event %d failed unexpectedly", item.id)
                    if self._strikes.strike(item.id, repr(exc)):
                        why = f"{type(exc).__name__}: {exc}"
                        self._journal.set_aside_event(item.id, why)
                        logger.error(
                            "Event %d is set aside: it failed the same way three times (%s); "
                            "it stays in the journal and the events after it go on",
                            item.id,
                            why,
                        )
                        await publish(
                            ErrorEvent(f"Event {item.id} for the SWLM is set aside: {why}")
                        )
                        continue
                delay = self._backoff.delay(item.attempts + 1)
                next_at = self._clock() + delay
                self._journal.event_failed(item.id, next_at, str(exc))
                logger.log(
                    logging.WARNING if item.attempts == 0 else logging.DEBUG,
                    "couldn't deliver an event to %s (%s); kept, next try in %.0f s",
                    self.path,
                    exc,
                    delay,
                )
                return next_at
            kill_point("events.delivered")  # the SWLM has it and the journal does not know yet
            self._journal.event_delivered(item.id, holder=self.holder)
            self._delivered_to(identity)
            self._strikes.clear(item.id)
            about = "" if item.update_id is None else f" for update {item.update_id}"
            logger.info("Delivered %s%s to the SWLM at %s", item.name, about, self.path)
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


def _text(identity: tuple[int, int, int]) -> str:
    return ":".join(str(part) for part in identity)
