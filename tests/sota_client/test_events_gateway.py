"""The events half of the socket gateway over real sockets: the journal's outbox -> the SWLM.

The outbox keeps every envelope until an SWLM takes it (2016 dropped them, bug 46) and never
stalls (bug 47).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream, TaskStatus

from sota_client._store import Journal, UpdateState
from sota_client.gateways import EventOutbox
from swlm_sdk import EventListener
from swlm_sdk.protocol import (
    DownloadComplete,
    DownloadFailed,
    ErrorEvent,
    Event,
    InstallComplete,
    Package,
    ResultCode,
    UpdateReport,
)
from tests.conftest import LogWaiter

from .daemon_fixtures import Changes, Recorder

pytestmark = pytest.mark.anyio


async def read_all(stream: SocketStream) -> bytes:
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return bytes(data)


# -- events: the outbox ----------------------------------------------------------------------


class EventsSocket:
    """The SWLM's end of the events socket: one payload per connection, read to end of file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.payloads: list[bytes] = []
        self._changes = Changes()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_unix_listener(self.path)
        task_status.started()
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            self.payloads.append(await read_all(stream))
            self._changes.changed()

    async def wait_for(self, count: int) -> None:
        await self._changes.wait_until(lambda: len(self.payloads) >= count)


COMPLETE = DownloadComplete(update_id="1", update_image="/foo/bar", signature="abc")
COMPLETE_BYTES = (
    b'{"version":"0.1","event":"DownloadComplete",'
    b'"data":{"update_id":"1","update_image":"/foo/bar","signature":"abc"}}'
)
FAILED = DownloadFailed("7", "boom")
FAILED_BYTES = (
    b'{"version":"0.1","event":"DownloadFailed","data":{"update_id":"7","reason":"boom"}}'
)


async def emit(box: EventOutbox, journal: Journal, event: Event) -> None:
    """What the interpreter does: the outbox entry goes into the journal, then the wake-up."""
    entry = box.entry_for(event)
    if entry is not None:
        journal.add_event(*entry)
    await box.publish(event)


async def ignore(event: Event) -> None:
    pass


def outbox(
    path: Path, journal: Journal, *, timeout: float = 10.0, event_metadata: bool = True
) -> EventOutbox:
    return EventOutbox(
        str(path),
        journal,
        timeout=timeout,
        backoff=0.02,
        max_backoff=0.2,
        watch_interval=0.02,
        event_metadata=event_metadata,
    )


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "state" / "sota.db") as opened:
        yield opened


async def test_download_events_arrive_byte_exact_one_connection_each(
    sock_dir: Path, journal: Journal
) -> None:
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal)
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        tg.start_soon(box.run, ignore)
        await emit(box, journal, COMPLETE)
        await emit(box, journal, FAILED)
        await swlm.wait_for(2)
        tg.cancel_scope.cancel()
    assert swlm.payloads == [COMPLETE_BYTES, FAILED_BYTES]
    assert journal.pending_events() == 0


async def test_other_events_make_no_connection(sock_dir: Path, journal: Journal) -> None:
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal)
    report = UpdateReport.single("7", ResultCode.OK, "")
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        tg.start_soon(box.run, ignore)
        await emit(box, journal, InstallComplete(report))
        await emit(box, journal, ErrorEvent("nothing for the SWLM"))
        assert journal.pending_events() == 0
        await emit(box, journal, FAILED)
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    # In order, so an earlier connection would have come first.
    assert swlm.payloads == [FAILED_BYTES]


async def test_an_sdk_listener_decodes_the_envelope(sock_dir: Path, journal: Journal) -> None:
    box = outbox(sock_dir / "ev.sock", journal)
    async with EventListener(sock_dir / "ev.sock") as events, anyio.create_task_group() as tg:
        tg.start_soon(box.run, ignore)
        await emit(box, journal, COMPLETE)
        with anyio.fail_after(10):
            assert await anext(events) == COMPLETE
        tg.cancel_scope.cancel()


async def test_events_wait_for_a_listener_and_arrive_in_order(
    sock_dir: Path, journal: Journal, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """2016 dropped an event when nobody listened (bug 46)."""
    swlm = EventsSocket(sock_dir / "ev.sock")
    failed = log_waiter(f"couldn't deliver an event to {swlm.path} (No such file or directory)")
    box = outbox(swlm.path, journal)
    events = [DownloadFailed(str(i), f"reason {i}") for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run, ignore)
        for event in events:
            await emit(box, journal, event)
        await failed.wait()
        assert journal.pending_events() == 3
        await tg.start(swlm.serve)  # the SWLM starts: its socket file appears
        await swlm.wait_for(3)
        tg.cancel_scope.cancel()
    assert swlm.payloads == [
        b'{"version":"0.1","event":"DownloadFailed","data":{"update_id":"%d","reason":'
        b'"reason %d"}}' % (i, i)
        for i in range(3)
    ]
    assert journal.pending_events() == 0


async def test_kept_events_are_delivered_after_a_restart(
    sock_dir: Path, tmp_path: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    failed = log_waiter("couldn't deliver an event")
    path = tmp_path / "state" / "sota.db"
    swlm = EventsSocket(sock_dir / "ev.sock")
    with Journal.open(path) as journal:
        box = outbox(swlm.path, journal)
        async with anyio.create_task_group() as tg:
            tg.start_soon(box.run, ignore)
            await emit(box, journal, COMPLETE)
            await emit(box, journal, FAILED)
            await failed.wait()
            tg.cancel_scope.cancel()
    with Journal.open(path) as journal:  # the daemon starts again
        assert journal.pending_events() == 2
        box = outbox(swlm.path, journal)
        async with anyio.create_task_group() as tg:
            await tg.start(swlm.serve)
            tg.start_soon(box.run, ignore)
            await swlm.wait_for(2)
            tg.cancel_scope.cancel()
        assert swlm.payloads == [COMPLETE_BYTES, FAILED_BYTES]
        assert journal.pending_events() == 0


async def test_a_listener_that_never_reads_does_not_stall_publish(
    sock_dir: Path, journal: Journal, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """2016 delivered on the broadcast path, so a stuck SWLM stalled the client (bug 47)."""
    timed_out = log_waiter("(the SWLM read no event within 0.2 s); kept")
    path = sock_dir / "ev.sock"
    held: list[SocketStream] = []

    async def accept_and_never_read(stream: SocketStream) -> None:
        held.append(stream)
        async with stream:
            await anyio.sleep_forever()

    huge = DownloadFailed("big", "x" * (8 << 20))  # far more than the socket buffers hold
    box = outbox(path, journal, timeout=0.2)
    async with await anyio.create_unix_listener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, accept_and_never_read)
        tg.start_soon(box.run, ignore)
        await emit(box, journal, huge)
        with anyio.fail_after(10):
            for i in range(200):
                await emit(box, journal, DownloadFailed(str(i), "boom"))
        await timed_out.wait()  # the first delivery gave up; it is kept
        assert journal.pending_events() == 201
        assert journal.due_events(math.inf, 1)[0].attempts >= 1
        tg.cancel_scope.cancel()
    assert held


async def test_a_delivered_download_complete_marks_its_update_delivered(
    sock_dir: Path, journal: Journal
) -> None:
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal)
    journal.begin_download("1", "/foo/bar")
    entry = box.entry_for(COMPLETE)
    assert entry is not None
    journal.finish_download("1", 3, "ab" * 32, event=entry)
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        tg.start_soon(box.run, ignore)
        await box.publish(COMPLETE)
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    assert journal.update_state("1") is UpdateState.DELIVERED


async def test_an_event_that_keeps_hitting_a_bug_is_set_aside_and_the_rest_go_on(
    sock_dir: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal)
    real = box._deliver
    tries: list[bytes] = []

    async def deliver(payload: bytes) -> None:
        tries.append(payload)
        if payload == COMPLETE_BYTES:
            raise RuntimeError("a bug")
        await real(payload)

    monkeypatch.setattr(box, "_deliver", deliver)
    published = Recorder()
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        tg.start_soon(box.run, published)
        await emit(box, journal, COMPLETE)
        await emit(box, journal, FAILED)
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    assert swlm.payloads == [FAILED_BYTES]
    assert tries.count(COMPLETE_BYTES) == 3
    assert published.events == [
        ErrorEvent("Event 1 for the SWLM is set aside: RuntimeError: a bug")
    ]
    assert journal.pending_events() == 0  # set aside: kept in the journal, not retried


HANDED_OVER_0_1 = (
    b'{"version":"0.1","event":"DownloadComplete",'
    b'"data":{"update_id":"1","update_image":"/foo/bar","signature":""}}'
)
#: Update 1 as the daemon hands it over: its image is 3 bytes of SHA-256 "abab...", and Core's
#: update list named its package.
HANDED_OVER = HANDED_OVER_0_1[:-2] + (
    b',"sha256":"' + b"ab" * 32 + b'","size":3,"package":{"name":"fw","version":"1.0"}}}'
)


async def deliver_once(
    sock_dir: Path, journal: Journal, *, event_metadata: bool = True
) -> EventsSocket:
    """Update 1 is downloaded and its DownloadComplete delivered: it is DELIVERED."""
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal, event_metadata=event_metadata)
    journal.begin_download("1", "/foo/bar")
    journal.name_package("1", "fw", "1.0")
    complete = DownloadComplete(
        "1", "/foo/bar", "", sha256="ab" * 32, size=3, package=Package("fw", "1.0")
    )
    entry = box.entry_for(complete)
    assert entry is not None
    journal.finish_download("1", 3, "ab" * 32, event=entry)
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        tg.start_soon(box.run, ignore)
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    assert journal.update_state("1") is UpdateState.DELIVERED
    return swlm


async def test_an_swlm_that_restarts_gets_again_what_it_has_not_reported(
    sock_dir: Path, tmp_path: Path
) -> None:
    """No acknowledgement in 0.1: an SWLM killed right after reading an event lost it."""
    path = tmp_path / "state" / "sota.db"
    with Journal.open(path) as journal:
        first = await deliver_once(sock_dir, journal)
        (sock_dir / "ev.sock").unlink()
    with Journal.open(path) as journal:  # the daemon restarts too (a power cut)
        swlm = EventsSocket(sock_dir / "ev.sock")  # the SWLM's new socket
        box = outbox(swlm.path, journal)
        async with anyio.create_task_group() as tg:
            await tg.start(swlm.serve)
            tg.start_soon(box.run, ignore)
            await swlm.wait_for(1)
            tg.cancel_scope.cancel()
        assert first.payloads == swlm.payloads == [HANDED_OVER]
        assert journal.update_state("1") is UpdateState.DELIVERED


async def test_with_event_metadata_off_every_delivery_is_the_0_1_bytes(
    sock_dir: Path, tmp_path: Path
) -> None:
    """The key turned off after an envelope with the fields was kept, then an SWLM restart:
    the kept one and the one handed over again go out as 0.1 wrote them."""
    path = tmp_path / "state" / "sota.db"
    with Journal.open(path) as journal:
        first = await deliver_once(sock_dir, journal, event_metadata=False)
        (sock_dir / "ev.sock").unlink()
    with Journal.open(path) as journal:
        swlm = EventsSocket(sock_dir / "ev.sock")
        box = outbox(swlm.path, journal, event_metadata=False)
        async with anyio.create_task_group() as tg:
            await tg.start(swlm.serve)
            tg.start_soon(box.run, ignore)
            await swlm.wait_for(1)
            tg.cancel_scope.cancel()
    assert first.payloads == swlm.payloads == [HANDED_OVER_0_1]


async def test_an_envelope_kept_without_the_fields_is_delivered_as_kept(
    sock_dir: Path, journal: Journal
) -> None:
    """A journal from before the addition: its envelope goes out byte for byte."""
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal)
    journal.begin_download("1", "/foo/bar")
    journal.finish_download("1", 3, "ab" * 32, event=("DownloadComplete", HANDED_OVER_0_1))
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        tg.start_soon(box.run, ignore)
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    assert swlm.payloads == [HANDED_OVER_0_1]


async def test_a_daemon_restart_alone_hands_nothing_over_again(
    sock_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "sota.db"
    swlm = EventsSocket(sock_dir / "ev.sock")
    async with anyio.create_task_group() as outer:
        await outer.start(swlm.serve)  # the SWLM runs all along
        for run in range(2):  # the daemon, then the daemon again
            with Journal.open(path) as journal:
                box = outbox(swlm.path, journal)
                if run == 0:
                    entry = box.entry_for(DownloadComplete("1", "/foo/bar", ""))
                    assert entry is not None
                    journal.begin_download("1", "/foo/bar")
                    journal.finish_download("1", 3, "ab" * 32, event=entry)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(box.run, ignore)
                    await swlm.wait_for(1)
                    await anyio.wait_all_tasks_blocked()
                    tg.cancel_scope.cancel()
                assert journal.update_state("1") is UpdateState.DELIVERED
        outer.cancel_scope.cancel()
    assert swlm.payloads == [HANDED_OVER_0_1]
