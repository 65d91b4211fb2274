"""The local API's broadcaster: every client gets every event, and none can hold up the others.

The 2016 broadcast handed each event to each subscriber over a rendezvous channel, so one slow
subscriber held up all of them, the interpreter included (reference 11.6 item 55, test 10.12).
"""

from __future__ import annotations

import logging

import anyio
import pytest

from sota_client.gateways._broadcast import MAX_PACED_DOWNLOADS, Broadcaster, Subscription
from swlm_sdk.protocol import (
    Authenticated,
    DownloadComplete,
    DownloadFailed,
    DownloadingUpdate,
    DownloadProgress,
    Event,
    Package,
    UnknownEvent,
    encode_event,
)

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def publish_uncancellable(broadcaster: Broadcaster, event: Event) -> None:
    """Publish inside a cancelled scope: it only completes if publish never waits."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        await broadcaster.publish(event)
    assert not scope.cancelled_caught


async def test_every_subscriber_gets_every_event_as_its_json() -> None:
    broadcaster = Broadcaster()
    events = [Authenticated(), DownloadingUpdate("u1"), DownloadProgress("u1", 10, None)]
    async with broadcaster.subscribe() as first, broadcaster.subscribe() as second:
        for event in events:
            await broadcaster.publish(event)
        for subscription in (first, second):
            with anyio.fail_after(5):
                got = [await subscription.__anext__() for _ in events]
            assert got == [encode_event(event) for event in events]
            assert got[2] == b'{"variant":"DownloadProgress","fields":["u1",10,null]}'


async def test_download_complete_goes_out_with_its_update_metadata() -> None:
    """The websocket and /events carry the metadata as the sockets do: after the 0.1 fields."""
    broadcaster = Broadcaster()
    event = DownloadComplete(
        "u1", "/p/u1", "", sha256="ab" * 32, size=3, package=Package("fw", "1.0")
    )
    async with broadcaster.subscribe() as subscription:
        await broadcaster.publish(event)
        with anyio.fail_after(5):
            got = await subscription.__anext__()
    assert got == (
        b'{"variant":"DownloadComplete","fields":[{"update_id":"u1","update_image":"/p/u1",'
        b'"signature":"","sha256":"' + b"ab" * 32 + b'","size":3,'
        b'"package":{"name":"fw","version":"1.0"}}]}'
    )


async def test_a_subscriber_that_never_reads_delays_neither_publish_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broadcaster = Broadcaster(queue_size=4)
    caplog.set_level(logging.DEBUG, logger="sota_client.gateways._broadcast")
    async with (
        broadcaster.subscribe(peer="websocket 127.0.0.1:5000") as stuck,
        broadcaster.subscribe(peer="reader") as reader,
    ):
        for n in range(20):
            await publish_uncancellable(broadcaster, DownloadingUpdate(str(n)))
            with anyio.fail_after(5):
                assert await reader.__anext__() == encode_event(DownloadingUpdate(str(n)))
        assert stuck.dropped.is_set()
        assert not reader.dropped.is_set()
        assert [item async for item in stuck] == []  # ended at once, queued events dropped too
        assert broadcaster.subscribers == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Dropped the local API client websocket 127.0.0.1:5000" in warnings[0].getMessage()
    assert "4 events unread" in warnings[0].getMessage()


async def test_a_full_queue_is_kept_until_one_more_event() -> None:
    broadcaster = Broadcaster(queue_size=3)
    async with broadcaster.subscribe() as subscription:
        for n in range(3):
            await broadcaster.publish(DownloadingUpdate(str(n)))
        assert not subscription.dropped.is_set()
        await broadcaster.publish(DownloadingUpdate("3"))
        assert subscription.dropped.is_set()


async def test_leaving_unsubscribes() -> None:
    broadcaster = Broadcaster(queue_size=1)
    async with broadcaster.subscribe():
        assert broadcaster.subscribers == 1
    assert broadcaster.subscribers == 0
    for _ in range(3):  # nobody is there to fill up or to drop
        await publish_uncancellable(broadcaster, Authenticated())


async def test_an_event_that_cannot_be_encoded_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broadcaster = Broadcaster()
    async with broadcaster.subscribe() as subscription:
        await publish_uncancellable(broadcaster, UnknownEvent(event="Odd", data=[object()]))
        await broadcaster.publish(Authenticated())
        with anyio.fail_after(5):
            assert await subscription.__anext__() == b'"Authenticated"'
    assert "Couldn't encode" in caplog.text


def test_the_queue_holds_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="queue_size must be at least 1"):
        Broadcaster(queue_size=0)


# -- download progress ------------------------------------------------------------------------


async def received(subscription: Subscription, broadcaster: Broadcaster) -> list[bytes]:
    """What the subscription holds now: a marker event ends the read."""
    await broadcaster.publish(Authenticated())
    items: list[bytes] = []
    with anyio.fail_after(5):
        async for item in subscription:
            if item == b'"Authenticated"':
                return items
            items.append(item)
    raise AssertionError("the subscription ended")


def progress(update_id: str, received: int, total: int | None) -> bytes:
    return encode_event(DownloadProgress(update_id, received, total))


async def test_progress_is_published_about_once_a_second_and_always_at_the_end() -> None:
    clock = Clock()
    broadcaster = Broadcaster(clock=clock)
    async with broadcaster.subscribe() as subscription:
        broadcaster.progress("u1", 0, 1000)  # the first one: a client sees the download start
        clock.now += 0.5
        broadcaster.progress("u1", 100, 1000)  # too soon
        broadcaster.progress("u2", 5, None)  # another update has its own pace
        clock.now += 0.5
        broadcaster.progress("u1", 200, 1000)  # a second after the last one sent
        clock.now += 0.1
        broadcaster.progress("u1", 1000, 1000)  # the last one, however soon
        broadcaster.progress("u2", 6, None)  # too soon, and the size is unknown: never "last"
        assert await received(subscription, broadcaster) == [
            progress("u1", 0, 1000),
            progress("u2", 5, None),
            progress("u1", 200, 1000),
            progress("u1", 1000, 1000),
        ]


async def test_a_finished_download_starts_a_new_pace() -> None:
    clock = Clock()
    broadcaster = Broadcaster(clock=clock)
    async with broadcaster.subscribe() as subscription:
        broadcaster.progress("u1", 10, 100)
        broadcaster.progress("u1", 100, 100)
        broadcaster.progress("u1", 0, 100)  # downloaded again at once: its first report
        broadcaster.progress("u2", 1, None)
        await broadcaster.publish(DownloadComplete("u2", "/img"))
        broadcaster.progress("u2", 0, None)  # a retry after it completed
        broadcaster.progress("u3", 1, None)
        await broadcaster.publish(DownloadFailed("u3", "IO error"))
        broadcaster.progress("u3", 0, None)
        assert await received(subscription, broadcaster) == [
            progress("u1", 10, 100),
            progress("u1", 100, 100),
            progress("u1", 0, 100),
            progress("u2", 1, None),
            encode_event(DownloadComplete("u2", "/img")),
            progress("u2", 0, None),
            progress("u3", 1, None),
            encode_event(DownloadFailed("u3", "IO error")),
            progress("u3", 0, None),
        ]


async def test_the_paced_downloads_are_bounded() -> None:
    clock = Clock()
    broadcaster = Broadcaster(clock=clock, queue_size=4 * MAX_PACED_DOWNLOADS)
    async with broadcaster.subscribe() as subscription:
        for n in range(MAX_PACED_DOWNLOADS + 1):
            broadcaster.progress(f"u{n}", 1, None)
        broadcaster.progress("u0", 2, None)  # forgotten, the oldest: sent early
        broadcaster.progress(f"u{MAX_PACED_DOWNLOADS}", 2, None)  # the newest: still paced
        sent = await received(subscription, broadcaster)
    assert len(sent) == MAX_PACED_DOWNLOADS + 2
    assert sent[-1] == progress("u0", 2, None)
