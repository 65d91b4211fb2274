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

from sota_client._store import Journal
from sota_client.gateways import EventOutbox
from swlm_sdk import EventListener
from swlm_sdk.protocol import (
    DownloadComplete,
    DownloadFailed,
    ErrorEvent,
    InstallComplete,
    ResultCode,
    UpdateReport,
)
from tests.conftest import LogWaiter

from .daemon_fixtures import (
    Changes,
)

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


def outbox(path: Path, journal: Journal, *, timeout: float = 10.0) -> EventOutbox:
    return EventOutbox(
        str(path), journal, timeout=timeout, backoff=0.02, max_backoff=0.2, watch_interval=0.02
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
        tg.start_soon(box.run)
        await box.publish(COMPLETE)
        await box.publish(FAILED)
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
        tg.start_soon(box.run)
        await box.publish(InstallComplete(report))
        await box.publish(ErrorEvent("nothing for the SWLM"))
        assert journal.pending_events() == 0
        await box.publish(FAILED)
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    # In order, so an earlier connection would have come first.
    assert swlm.payloads == [FAILED_BYTES]


async def test_an_sdk_listener_decodes_the_envelope(sock_dir: Path, journal: Journal) -> None:
    box = outbox(sock_dir / "ev.sock", journal)
    async with EventListener(sock_dir / "ev.sock") as events, anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        await box.publish(COMPLETE)
        with anyio.fail_after(10):
            assert await anext(events) == COMPLETE
        tg.cancel_scope.cancel()


async def test_events_wait_for_a_listener_and_arrive_in_order(
    sock_dir: Path, journal: Journal, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """2016 dropped an event when nobody listened (bug 46)."""
    failed = log_waiter("couldn't deliver an event")
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = outbox(swlm.path, journal)
    events = [DownloadFailed(str(i), f"reason {i}") for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        for event in events:
            await box.publish(event)
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
            tg.start_soon(box.run)
            await box.publish(COMPLETE)
            await box.publish(FAILED)
            await failed.wait()
            tg.cancel_scope.cancel()
    with Journal.open(path) as journal:  # the daemon starts again
        assert journal.pending_events() == 2
        box = outbox(swlm.path, journal)
        async with anyio.create_task_group() as tg:
            await tg.start(swlm.serve)
            tg.start_soon(box.run)
            await swlm.wait_for(2)
            tg.cancel_scope.cancel()
        assert swlm.payloads == [COMPLETE_BYTES, FAILED_BYTES]
        assert journal.pending_events() == 0


async def test_a_listener_that_never_reads_does_not_stall_publish(
    sock_dir: Path, journal: Journal, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """2016 delivered on the broadcast path, so a stuck SWLM stalled the client (bug 47)."""
    timed_out = log_waiter("couldn't deliver an event")
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
        tg.start_soon(box.run)
        await box.publish(huge)
        with anyio.fail_after(10):
            for i in range(200):
                await box.publish(DownloadFailed(str(i), "boom"))
        await timed_out.wait()  # the first delivery gave up; it is kept
        assert journal.pending_events() == 201
        assert journal.due_events(math.inf, 1)[0].attempts >= 1
        tg.cancel_scope.cancel()
    assert held
