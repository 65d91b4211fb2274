"""Events to every local-API client (websocket, HTTP ``/events``), never held up by a slow one.

Each client has its own bounded queue, filled without waiting: a client that lets its queue
fill up is dropped, so the interpreter and the other clients go on at their own pace (the 2016
broadcast used rendezvous channels, and one slow subscriber held up all, reference 11.6 item 55).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from swlm_sdk.protocol import (
    DownloadComplete,
    DownloadFailed,
    DownloadProgress,
    Event,
    encode_event,
)

__all__ = ["Broadcaster", "Subscription"]

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between two DownloadProgress events of one update
# Downloads whose progress is being paced; past it the oldest is forgotten (it may then send
# one event early). Far above the daemon's concurrent downloads.
MAX_PACED_DOWNLOADS = 64


class Subscription:
    """One client's events, each one event's JSON; the iteration ends when it is dropped.

    ``dropped`` is set at once, so that a gateway whose send to this client is stuck can
    abandon it instead of waiting for the iteration to end.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._receive = receive
        self.dropped = anyio.Event()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        if self.dropped.is_set():  # the events still queued would only go to a dead end
            raise StopAsyncIteration
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


class _Subscriber:
    def __init__(self, send: MemoryObjectSendStream[bytes], subscription: Subscription) -> None:
        self.send = send
        self.subscription = subscription


class Broadcaster:
    """Fans every published event out to the subscribed clients, as event JSON (reference 3.2).

    A client whose ``queue_size`` events are all still unread is dropped: its iteration ends
    and one WARN line names it. ``clock`` paces :meth:`progress` (the event loop's by default).
    """

    def __init__(
        self, *, queue_size: int = 256, clock: Callable[[], float] = anyio.current_time
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self._queue_size = queue_size
        self._clock = clock
        self._subscribers: dict[_Subscriber, str | None] = {}  # -> the client, for the log
        self._last_progress: dict[str, float] = {}  # update id -> when, oldest first

    @property
    def subscribers(self) -> int:
        """How many clients are subscribed now."""
        return len(self._subscribers)

    async def publish(self, event: Event) -> None:
        """An interpreter subscriber: never waits and never raises."""
        if isinstance(event, DownloadComplete | DownloadFailed):
            self._last_progress.pop(event.update_id, None)
        self._send(event)

    def progress(self, update_id: str, received: int, total: int | None) -> None:
        """A download's progress callback: publish ``DownloadProgress`` about once a second.

        The first report of a download and the last one (``received == total``) are always
        published, so a client sees the start and the end. Called on the event loop's thread.
        """
        now = self._clock()
        last = self._last_progress.get(update_id)
        final = received == total
        if last is not None and now - last < PROGRESS_INTERVAL and not final:
            return
        self._last_progress.pop(update_id, None)  # re-inserted last: the dict stays oldest first
        if not final:
            self._last_progress[update_id] = now
            if len(self._last_progress) > MAX_PACED_DOWNLOADS:
                del self._last_progress[next(iter(self._last_progress))]
        self._send(DownloadProgress(update_id, received, total))

    @asynccontextmanager
    async def subscribe(self, *, peer: str | None = None) -> AsyncIterator[Subscription]:
        """Receive every event published from now on, until dropped or the block ends.

        ``peer`` names the client in the log line that says it was dropped.
        """
        send, receive = anyio.create_memory_object_stream[bytes](self._queue_size)
        subscriber = _Subscriber(send, Subscription(receive))
        self._subscribers[subscriber] = peer
        try:
            with send, receive:
                yield subscriber.subscription
        finally:
            self._subscribers.pop(subscriber, None)

    def _send(self, event: Event) -> None:
        if not self._subscribers:
            return
        try:
            data = encode_event(event)
        except Exception:  # a bug must not reach the interpreter, which published it
            logger.exception("Couldn't encode %r for the local API clients", event)
            return
        for subscriber, peer in list(self._subscribers.items()):
            try:
                subscriber.send.send_nowait(data)
            except anyio.WouldBlock:
                self._drop(subscriber, peer)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.pop(subscriber, None)  # it is leaving anyway

    def _drop(self, subscriber: _Subscriber, peer: str | None) -> None:
        del self._subscribers[subscriber]
        subscriber.subscription.dropped.set()
        subscriber.send.close()
        logger.warning(
            "Dropped the local API client %s: it left %d events unread (the limit); a client "
            "must read its events as they come",
            peer or "(unnamed)",
            self._queue_size,
        )
