"""The events outbox wakes only when there is work: a new event, a retry that falls due, or a new
socket file, seen through inotify or, without it, by looks at growing intervals.

No test here waits for a timer: the timers are set far beyond the test's deadline (so only
inotify can be what delivered), recorded through the outbox's ``sleep``, or run on trio's
virtual clock.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio.testing

from sota_client._store import Journal, UpdateState
from sota_client.gateways import EventOutbox
from sota_client.gateways._unix import file_identity
from sota_client.gateways._watch import FileWatch, Identity, inotify_available
from swlm_sdk.protocol import DownloadComplete, DownloadFailed

from .test_events_gateway import FAILED_BYTES, EventsSocket, emit, ignore

pytestmark = pytest.mark.anyio

needs_inotify = pytest.mark.skipif(not inotify_available(), reason="no inotify here")

NEVER = 3600.0 * 24  # a timer that no test outlives
FAILED = DownloadFailed("7", "boom")  # FAILED_BYTES on the wire

#: trio's virtual clock: time jumps ahead whenever every task waits, so an hour passes at once
#: and a loop that wakes on a timer would run thousands of times. asyncio has no such clock.
virtual_time = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(
            ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}),
            id="trio-virtual-time",
        )
    ],
)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "state" / "sota.db") as opened:
        yield opened


class CountingJournal:
    """The journal, counting the calls the outbox makes."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        self.calls += 1
        return getattr(self._journal, name)


class Sleeps:
    """The outbox's ``sleep``, as a clock the test moves: each timed wait is recorded and
    ends when the test lets it; those of ``NEVER`` never end."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._waiting: list[anyio.Event] = []
        self._asked = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        if seconds >= NEVER / 2:
            await anyio.sleep_forever()
        self.delays.append(seconds)
        done = anyio.Event()
        self._waiting.append(done)
        self._asked.set()
        await done.wait()

    async def next(self) -> anyio.Event:
        """Wait for the next timed wait; set what it returns to end it."""
        with anyio.fail_after(10):
            while not self._waiting:
                self._asked = anyio.Event()
                await self._asked.wait()
        return self._waiting.pop(0)


def waits_forever(path: Path, journal: Any, **options: Any) -> EventOutbox:
    """An outbox whose retries and fallback looks come after the test has ended."""
    settings: dict[str, Any] = dict(
        backoff=NEVER, max_backoff=NEVER, watch_interval=NEVER, max_watch_interval=NEVER
    )
    settings.update(options)
    return EventOutbox(str(path), journal, **settings)


# -- the outbox ------------------------------------------------------------------------------


@needs_inotify
async def test_a_listener_that_appears_gets_the_event_at_once_through_inotify(
    sock_dir: Path, journal: Journal, log_waiter: Any
) -> None:
    """The retry and the fallback look are a day away: only inotify can deliver this."""
    failed = log_waiter("couldn't deliver an event")
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = waits_forever(swlm.path, journal)
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run, ignore)
        await emit(box, journal, FAILED)
        await failed.wait()
        await tg.start(swlm.serve)  # bind(): the socket file appears
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    assert journal.pending_events() == 0


@needs_inotify
async def test_a_socket_that_is_bound_before_it_listens_gets_the_event_soon(
    sock_dir: Path, journal: Journal, log_waiter: Any
) -> None:
    """An SWLM binds, then listens: inotify wakes the outbox in between, and the refusal then
    is tried again soon, not at the backoff (a day here)."""
    failed = log_waiter("couldn't deliver an event")
    starting = log_waiter("does not listen yet")
    delivered = log_waiter("Delivered DownloadFailed")
    path = sock_dir / "ev.sock"
    box = waits_forever(path, journal)
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run, ignore)
        await emit(box, journal, FAILED)
        await failed.wait()
        with bind(path) as sock:
            await starting.wait()  # woken by the new file; refused
            sock.listen()
            sock.setblocking(False)
            with anyio.fail_after(10):
                await anyio.wait_readable(sock)
                conn, _ = sock.accept()
                with conn:
                    data = b""
                    while True:
                        await anyio.wait_readable(conn)
                        if not (chunk := conn.recv(65536)):
                            break
                        data += chunk
        await delivered.wait()
        tg.cancel_scope.cancel()
    assert data == FAILED_BYTES
    assert failed.count == 1  # the refusals while it started are no failed attempts
    assert journal.pending_events() == 0


@needs_inotify
async def test_an_swlm_that_restarts_while_the_daemon_runs_gets_its_update_again(
    sock_dir: Path, journal: Journal
) -> None:
    """Handed over and not reported: a new socket file means the SWLM may have lost it."""
    swlm = EventsSocket(sock_dir / "ev.sock")
    box = waits_forever(swlm.path, journal)
    # As the daemon makes it: the image's size and hash, as the journal records them.
    entry = box.entry_for(DownloadComplete("1", "/foo/bar", "", sha256="ab" * 32, size=3))
    assert entry is not None
    journal.begin_download("1", "/foo/bar")
    journal.finish_download("1", 3, "ab" * 32, event=entry)
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as first:
            await first.start(swlm.serve)
            tg.start_soon(box.run, ignore)
            await swlm.wait_for(1)
            first.cancel_scope.cancel()  # the SWLM stops, without reporting
        assert journal.update_state("1") is UpdateState.DELIVERED
        swlm.path.unlink()
        await tg.start(swlm.serve)  # and starts again: a new socket file
        await swlm.wait_for(2)
        tg.cancel_scope.cancel()
    assert swlm.payloads[0] == swlm.payloads[1]
    assert journal.update_state("1") is UpdateState.DELIVERED


async def test_without_inotify_the_socket_is_looked_for_at_growing_intervals(
    sock_dir: Path, journal: Journal
) -> None:
    swlm = EventsSocket(sock_dir / "ev.sock")
    sleeps = Sleeps()
    box = waits_forever(
        swlm.path, journal, watch_interval=1.0, max_watch_interval=30.0, inotify=False,
        sleep=sleeps,
    )  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run, ignore)
        await emit(box, journal, FAILED)
        for _ in range(6):
            (await sleeps.next()).set()
        last = await sleeps.next()
        await tg.start(swlm.serve)  # during the seventh wait
        last.set()
        await swlm.wait_for(1)
        tg.cancel_scope.cancel()
    assert sleeps.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert journal.pending_events() == 0


@virtual_time
async def test_an_idle_outbox_never_wakes(sock_dir: Path, journal: Journal) -> None:
    """Nothing waits for the SWLM: no timer, no look at the journal, for an hour."""
    counting = CountingJournal(journal)
    box = EventOutbox(str(sock_dir / "ev.sock"), counting)
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run, ignore)
        await anyio.wait_all_tasks_blocked()
        before = counting.calls
        await anyio.sleep(3600)
        assert counting.calls == before
        tg.cancel_scope.cancel()


@virtual_time
@needs_inotify
async def test_an_outbox_waiting_for_a_report_never_wakes_either(
    sock_dir: Path, journal: Journal
) -> None:
    """Handed over, not reported: inotify watches for the SWLM's restart; no timer for an hour."""
    path = sock_dir / "ev.sock"
    counting = CountingJournal(journal)
    box = EventOutbox(str(path), counting)
    entry = box.entry_for(DownloadComplete("1", "/foo/bar", ""))
    assert entry is not None
    journal.begin_download("1", "/foo/bar")
    journal.finish_download("1", 3, "ab" * 32, event=entry)
    (event,) = journal.events()
    journal.event_delivered(event.id, holder=box.holder)
    with bind(path):
        identity = file_identity(str(path))
        assert identity is not None
        journal.set_setting("events_socket_listener", ":".join(map(str, identity)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(box.run, ignore)
            await anyio.wait_all_tasks_blocked()
            before = counting.calls
            await anyio.sleep(3600)
            assert counting.calls == before
            tg.cancel_scope.cancel()
    assert journal.update_state("1") is UpdateState.DELIVERED


# -- the watch itself --------------------------------------------------------------------------


def bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


class Waiter:
    """``watch.changed(seen)`` in a task of its own; ``done`` is set when it returns."""

    def __init__(self, watch: FileWatch, seen: Identity | None) -> None:
        self.watch = watch
        self.seen = seen
        self.got: Identity | None = None
        self.done = anyio.Event()

    async def run(self) -> None:
        self.got = await self.watch.changed(self.seen)
        self.done.set()

    async def wait(self) -> Identity | None:
        with anyio.fail_after(10):
            await self.done.wait()
        return self.got


@needs_inotify
async def test_the_watch_sees_a_socket_appear_and_not_its_neighbours(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    with FileWatch(str(path), first_check=NEVER, longest_check=NEVER) as watch:
        waiter = Waiter(watch, None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            assert watch.watching
            with bind(sock_dir / "other.sock"):  # a neighbour: no wake-up for us
                await anyio.wait_all_tasks_blocked()
                assert not waiter.done.is_set()
                with bind(path):
                    assert await waiter.wait() == file_identity(str(path))


@needs_inotify
async def test_the_watch_ignores_a_file_going_away_and_sees_the_next_one(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    with bind(path):
        seen = file_identity(str(path))
    with FileWatch(str(path), first_check=NEVER, longest_check=NEVER) as watch:
        waiter = Waiter(watch, seen)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            path.unlink()
            await anyio.wait_all_tasks_blocked()
            assert not waiter.done.is_set()  # gone is not new
            with bind(path):
                got = await waiter.wait()
                assert got == file_identity(str(path))
                assert got != seen


async def test_the_watch_waits_for_a_directory_that_does_not_exist_yet(sock_dir: Path) -> None:
    """/run/sota made later (RuntimeDirectory=, or by the SWLM): looks at growing intervals
    until it is there, then inotify where there is one."""
    directory = sock_dir / "later"
    path = directory / "ev.sock"
    sleeps = Sleeps()
    with FileWatch(str(path), first_check=1.0, longest_check=4.0, sleep=sleeps) as watch:
        waiter = Waiter(watch, None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            for _ in range(3):
                (await sleeps.next()).set()
            last = await sleeps.next()
            directory.mkdir()
            last.set()
            await anyio.wait_all_tasks_blocked()
            assert watch.watching == inotify_available()  # inotify from now on, if there is one
            with bind(path):
                if not watch.watching:
                    (await sleeps.next()).set()
                assert await waiter.wait() == file_identity(str(path))
    assert sleeps.delays[:4] == [1.0, 2.0, 4.0, 4.0]


def test_without_inotify_the_watch_says_so_once(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="sota_client.gateways._watch")
    with FileWatch(str(sock_dir / "ev.sock"), inotify=False) as watch:
        assert not watch._watch()
        assert not watch._watch()
    assert [r.getMessage() for r in caplog.records] == [
        f"Watching for {sock_dir / 'ev.sock'} without inotify (inotify is off): looking after"
        " 1 s, then less and less often, at most 30 s apart"
    ]
