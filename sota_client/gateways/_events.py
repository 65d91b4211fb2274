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
from functools import partial
from typing import Protocol

import anyio
import anyio.lowlevel

from swlm_sdk import Backoff
from swlm_sdk._killpoints import kill_point
from swlm_sdk._wire import stream_failure
from swlm_sdk.protocol import DownloadComplete, DownloadFailed, ErrorEvent, Event, encode_envelope

from .._handover import as_configured, kept_download_complete
from .._store import DownloadRecord, UpdateRecord
from .._supervisor import Strikes
from ._unix import file_identity
from ._watch import FileWatch, Identity

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
    def due_events(self, now: float, limit: int, channel: str = ...) -> Sequence[_OutboxEvent]: ...
    def pending_events(self, channel: str | None = ...) -> int: ...
    def event_delivered(self, event_id: int, *, holder: str | None = None) -> None: ...
    def event_failed(self, event_id: int, next_attempt_at: float, error: str) -> None: ...
    def set_aside_event(self, event_id: int, error: str) -> None: ...
    def delivered_downloads(self, holder: str | None = None) -> list[tuple[str, str]]: ...
    def hand_over_again(self, update_id: str, name: str, payload: bytes) -> None: ...
    def setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str) -> None: ...
    def update(self, update_id: str) -> UpdateRecord | None: ...
    def download(self, update_id: str) -> DownloadRecord | None: ...


_LISTENER_KEY = "events_socket_listener"
_CHANNEL = "socket"  # the journal's outbox channel of this gateway
_BATCH = 64
_STARTING_FIRST = 0.01
"""Seconds before a new socket file that refused is tried again (its SWLM bound it and does not
listen yet); the wait doubles, :data:`_STARTING_TRIES` times, before the usual backoff."""
_STARTING_TRIES = 8


class EventOutbox:
    """Delivers ``DownloadComplete``/``DownloadFailed`` envelopes to the SWLM's events socket.

    If nobody listens, the envelope stays in the journal and is tried again with backoff, and
    at once when the socket file appears or changes (an SWLM starting up). Otherwise it sleeps
    until there is work: a new event (:meth:`publish`), a retry that falls due, or, while
    updates it handed over wait for their reports, a new socket file. The file is watched with
    inotify, else looked at after ``watch_interval`` seconds, then less and less often, at
    most ``max_watch_interval`` seconds apart (:class:`FileWatch`).

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
        max_watch_interval: float = 30.0,
        inotify: bool = True,
        event_metadata: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """:param inotify: False to watch the socket file with the timed looks only.
        :param event_metadata: ``device.event_metadata``: False delivers every
            ``DownloadComplete`` with the three 0.1 fields only, also one kept before.
        :param sleep: every timed wait (tests record them)."""
        self.path = path
        self._journal = journal
        self._timeout = timeout
        self._backoff = Backoff(backoff, max_backoff)
        self._watch_interval = watch_interval
        self._max_watch_interval = max_watch_interval
        self._inotify = inotify
        self._metadata = event_metadata
        self._clock = clock
        self._sleep = sleep
        self._wake = anyio.Event()
        self._strikes = Strikes()
        self._listener: str | None = None  # the socket file we last delivered to
        self._appeared: Identity | None = None  # the socket file the watch saw appear
        self._starting_tries = 0  # since then, while it refuses connections
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
        watch = FileWatch(
            self.path,
            first_check=self._watch_interval,
            longest_check=self._max_watch_interval,
            inotify=self._inotify,
            sleep=self._sleep,
        )
        with watch:
            while True:
                self._wake = anyio.Event()
                self._notice_restarted_listener()
                failed = await self._deliver_due(publish)
                if failed is not None:
                    await self._wait_for_listener(watch, *failed)
                elif self._journal.pending_events(_CHANNEL):
                    await anyio.lowlevel.checkpoint()  # more than one batch
                elif self._listener is not None and self._journal.delivered_downloads(self.holder):
                    # Handed over, not reported: an SWLM that restarts gets them again.
                    delivered_to = _identity(self._listener) or file_identity(self.path)
                    await self._until_woken(partial(self._new_listener, watch, delivered_to))
                else:
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
            event = kept_download_complete(self._journal, update_id, image, metadata=self._metadata)
            entry = self.entry_for(event)
            assert entry is not None
            self._journal.hand_over_again(update_id, *entry)

    def _delivered_to(self, identity: tuple[int, int, int] | None) -> None:
        if identity is not None and _text(identity) != self._listener:
            self._listener = _text(identity)
            self._journal.set_setting(_LISTENER_KEY, self._listener)

    async def _deliver_due(
        self, publish: Callable[[Event], Awaitable[None]]
    ) -> tuple[float, Identity | None] | None:
        """Deliver kept envelopes in order; for the first failure, if any, return its retry time
        and the socket file tried then.

        Every kept envelope is tried, whatever retry time the journal holds: the head of the
        queue sets the pace, so a new event never overtakes an older one.
        """
        for item in self._journal.due_events(math.inf, _BATCH, _CHANNEL):
            identity = file_identity(self.path)
            try:
                await self._deliver(as_configured(item.payload, metadata=self._metadata))
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
                if self._starting_up(exc):
                    delay = _STARTING_FIRST * 2**self._starting_tries
                    self._starting_tries += 1
                    logger.debug(
                        "%s does not listen yet (%s); next try in %g s", self.path, exc, delay
                    )
                    return self._clock() + delay, identity  # not the SWLM's chance yet: no attempt
                delay = self._backoff.delay(item.attempts + 1)
                next_at = self._clock() + delay
                why = (
                    f"the SWLM read no event within {self._timeout:g} s"
                    if isinstance(exc, TimeoutError)
                    else stream_failure(exc)
                )
                self._journal.event_failed(item.id, next_at, why)
                logger.log(
                    logging.WARNING if item.attempts == 0 else logging.DEBUG,
                    "couldn't deliver an event to %s (%s); kept, next try in %.0f s",
                    self.path,
                    why,
                    delay,
                )
                return next_at, identity
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

    async def _wait_for_listener(
        self, watch: FileWatch, retry_at: float, tried: Identity | None
    ) -> None:
        """Sleep until the retry time, a new event, or a socket file other than ``tried``."""
        delay = retry_at - self._clock()
        if delay > 0:
            await self._until_woken(
                partial(self._new_listener, watch, tried), partial(self._sleep, delay)
            )

    async def _new_listener(self, watch: FileWatch, since: Identity | None) -> None:
        """Wait for a socket file other than ``since`` (it may be there already)."""
        self._appeared = await watch.changed(since)
        self._starting_tries = 0

    def _starting_up(self, exc: Exception) -> bool:
        """Whether the socket file that just appeared refused: between ``bind`` and ``listen``."""
        return (
            isinstance(exc, ConnectionRefusedError)
            and self._appeared is not None
            and self._starting_tries < _STARTING_TRIES
            and file_identity(self.path) == self._appeared
        )

    async def _until_woken(self, *waits: Callable[[], Awaitable[object]]) -> None:
        """Wait until :meth:`publish` wakes us or the first of ``waits`` ends."""

        async def until(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for wait in (self._wake.wait, *waits):
                tg.start_soon(until, wait)


def _text(identity: Identity) -> str:
    return ":".join(str(part) for part in identity)


def _identity(text: str | None) -> Identity | None:
    """The identity that :func:`_text` wrote (None for none, or for text it did not write)."""
    try:
        dev, ino, ctime = (int(part) for part in (text or "").split(":"))
    except ValueError:
        return None
    return dev, ino, ctime
