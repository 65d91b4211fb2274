"""The App checks an image against the size and SHA-256 its DownloadComplete announced, before
the install handler; a mismatch is VALIDATION_FAILED and the handler is never called."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import swlm_sdk._app
import swlm_sdk._image
from swlm_sdk import DownloadComplete, Package, ResultCode
from swlm_sdk._image import image_problem
from swlm_sdk.app import App, Journal
from swlm_sdk.protocol import SendInstalledPackages, SendUpdateReport, UpdateReport
from swlm_sdk.testing import FakeDaemon

from .conftest import FAST
from .test_app import make_app
from .test_killpoints import INSTALL, swlm

pytestmark = pytest.mark.anyio

IMAGE = b"firmware 1.4.2\n" * 10_000


def announced(path: Path, data: bytes = IMAGE, **changes: Any) -> DownloadComplete:
    """The event the daemon makes for ``path`` holding ``data`` (then ``changes``)."""
    fields: dict[str, Any] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "package": Package("fw", "1.4.2"),
    }
    fields.update(changes)
    return DownloadComplete("u1", str(path), "", **fields)


async def serve_one(fake: FakeDaemon, app: App, event: DownloadComplete) -> list[DownloadComplete]:
    """Serve, deliver ``event``, wait for its report; the events the handler was called with."""
    calls: list[DownloadComplete] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> None:
        calls.append(event)

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake.deliver(event)
        await fake.wait_for(SendUpdateReport)
        app.stop()
    return calls


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


async def test_a_matching_image_is_installed(fake_daemon: FakeDaemon, sock_dir: Path) -> None:
    image = sock_dir / "u1"
    image.write_bytes(IMAGE)
    event = announced(image)
    calls = await serve_one(fake_daemon, make_app(fake_daemon, sock_dir / "state"), event)
    assert calls == [event]
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.OK)]


async def test_an_image_changed_after_the_event_is_validation_failed_without_the_handler(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = sock_dir / "u1"
    image.write_bytes(IMAGE)
    event = announced(image)
    corrupt = IMAGE[:-1] + b"?"  # the same size: only the hash can tell
    image.write_bytes(corrupt)
    caplog.set_level(logging.INFO, logger="swlm_sdk")
    calls = await serve_one(fake_daemon, make_app(fake_daemon, sock_dir / "state"), event)
    assert calls == []
    text = (
        f"the image {image} has SHA-256 {hashlib.sha256(corrupt).hexdigest()}, "
        f"not the announced {event.sha256}"
    )
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.VALIDATION_FAILED, text)]
    assert errors(caplog) == [f"update u1: {text}; reporting VALIDATION_FAILED without installing"]


async def test_an_image_of_another_size_is_validation_failed_without_hashing(
    fake_daemon: FakeDaemon,
    sock_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The size is compared first: the announced SHA-256 is right, the size is not."""
    image = sock_dir / "u1"
    image.write_bytes(IMAGE)
    event = announced(image, size=len(IMAGE) + 1)
    monkeypatch.setattr(swlm_sdk._image, "hashlib", None)  # hashing would fail
    calls = await serve_one(fake_daemon, make_app(fake_daemon, sock_dir / "state"), event)
    assert calls == []
    text = f"the image {image} has {len(IMAGE)} bytes, not the announced {len(IMAGE) + 1}"
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.VALIDATION_FAILED, text)]
    assert len(errors(caplog)) == 1


async def test_a_missing_image_is_validation_failed(
    fake_daemon: FakeDaemon, sock_dir: Path
) -> None:
    event = announced(sock_dir / "gone")
    calls = await serve_one(fake_daemon, make_app(fake_daemon, sock_dir / "state"), event)
    assert calls == []
    (report,) = fake_daemon.reports
    result = report.operation_results[0]
    assert result.result_code is ResultCode.VALIDATION_FAILED
    assert result.result_text == (
        f"the image {sock_dir / 'gone'} cannot be opened to check it: No such file or directory"
    )


async def test_an_event_without_sha256_and_size_skips_the_check(
    fake_daemon: FakeDaemon, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2016 daemon's event (or device.event_metadata = false): the handler decides."""

    def never(event: DownloadComplete) -> str | None:
        raise AssertionError("no check without an announced size or SHA-256")

    monkeypatch.setattr(swlm_sdk._app, "image_problem", never)
    event = DownloadComplete("u1", str(sock_dir / "not-there"), "", package=Package("fw", "1"))
    calls = await serve_one(fake_daemon, make_app(fake_daemon, sock_dir / "state"), event)
    assert calls == [event]
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.OK)]


async def test_a_failed_check_is_reported_once_and_not_run_again_on_a_redelivery(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    event = announced(sock_dir / "gone")
    app = make_app(fake_daemon, sock_dir / "state")
    app.on_download_complete(lambda event: None)
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(event)
        await fake_daemon.wait_for(SendUpdateReport)
        await fake_daemon.deliver(event)  # the daemon hands it over again
        await fake_daemon.deliver(DownloadComplete("u2", "/img"))
        await fake_daemon.wait_for(SendUpdateReport, count=2)
        app.stop()
    assert [r.update_id for r in fake_daemon.reports] == ["u1", "u2"]
    assert len(errors(caplog)) == 1


async def test_a_stop_during_the_check_leaves_no_trace_and_the_redelivery_installs(
    fake_daemon: FakeDaemon, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While it hashes, the journal has nothing for the update: stopped (or killed) then,
    the SWLM has installed nothing and reported nothing, and checks again next time."""
    image = sock_dir / "u1"
    image.write_bytes(IMAGE)
    event = announced(image)
    hashing = threading.Event()
    release = threading.Event()

    def slow(event: DownloadComplete) -> str | None:
        hashing.set()
        release.wait(30)
        return image_problem(event)

    monkeypatch.setattr(swlm_sdk._app, "image_problem", slow)
    state = sock_dir / "state"
    app = make_app(fake_daemon, state, shutdown_grace=0.0)
    calls: list[DownloadComplete] = []
    app.on_download_complete(calls.append)
    try:
        async with anyio.create_task_group() as group:
            await group.start(app.serve)
            await fake_daemon.deliver(event)
            with anyio.fail_after(10):
                await anyio.to_thread.run_sync(hashing.wait)
            assert app.journal.get("u1") is None  # nothing recorded while checking
            app.stop()  # returns without waiting for the abandoned check
    finally:
        release.set()
    assert calls == []
    assert fake_daemon.reports == []
    journal = Journal(state)
    await journal.open()
    assert journal.get("u1") is None

    monkeypatch.setattr(swlm_sdk._app, "image_problem", image_problem)
    again = App(
        state,
        commands_socket=fake_daemon.commands_socket,
        events_socket=fake_daemon.events_socket,
        report_retry=FAST,
    )
    assert await serve_one(fake_daemon, again, event) == [event]
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.OK)]


async def test_a_kill_after_the_check_loses_nothing(
    fake_daemon: FakeDaemon, sock_dir: Path, anyio_backend: str
) -> None:
    """A real SWLM process killed right after the check: the update is neither installed nor
    lost; the daemon's next delivery checks it again and installs it, reported once."""
    image = sock_dir / "u1"
    image.write_bytes(IMAGE)
    event = announced(image)
    state = sock_dir / "state"
    async with swlm(fake_daemon, state, anyio_backend, SOTA_KILL_AT="swlm.image.checked") as p:
        await fake_daemon.deliver(event)
        with anyio.fail_after(30):
            assert await p.wait() == -signal.SIGKILL
    assert fake_daemon.reports == []
    journal = Journal(state)
    await journal.open()
    assert journal.entries() == {}  # not "installing": no INTERRUPTED report at the restart

    lists = len(fake_daemon.package_lists)  # the killed one's, at its start-up
    trace = sock_dir / "trace"
    async with swlm(fake_daemon, state, anyio_backend, SOTA_KILL_TRACE=str(trace)) as p:
        await fake_daemon.wait_for(SendInstalledPackages, count=lists + 1)  # at start-up
        await fake_daemon.deliver(event)  # the SWLM's new socket: the daemon hands it over
        # After the report, once "sent" is saved.
        await fake_daemon.wait_for(SendInstalledPackages, count=lists + 2)
        p.terminate()
        with anyio.fail_after(30):
            assert await p.wait() == 0
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.OK)]
    assert trace.read_text().splitlines() == ["swlm.image.checked", *INSTALL]


# -- image_problem, the blocking check ----------------------------------------------------


def test_the_check_reads_in_chunks_and_accepts_uppercase_hex(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # 2.5 MiB: three chunks
    path = tmp_path / "image"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    event = DownloadComplete("u1", str(path), "", sha256=digest.upper(), size=len(data))
    assert image_problem(event) is None
    assert image_problem(DownloadComplete("u1", str(path), "", sha256=digest)) is None
    assert image_problem(DownloadComplete("u1", str(path), "", size=len(data))) is None
    assert image_problem(DownloadComplete("u1", str(path), "", size=1)) == (
        f"the image {path} has {len(data)} bytes, not the announced 1"
    )


def test_a_directory_or_a_fifo_is_no_image(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        problem = image_problem(DownloadComplete("u1", str(path), "", sha256="00" * 32))
        assert problem == f"the image {path} is not a regular file"
