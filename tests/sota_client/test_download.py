"""Downloads via CoreBackend from a real HTTP server: bytes, sha256, resume, bounds, failures."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sota_client import _backend, _download
from sota_client._backend import AuthSettings, CoreBackend
from sota_client._download import (
    CHECKPOINT_MIN,
    DEFAULT_MAX_DOWNLOAD_SIZE,
    Checkpoint,
    DownloadResult,
    Fetch,
    checkpoint_due,
)
from sota_client._errors import AuthError, DownloadError, DownloadErrorKind, InvalidIdError
from swlm_sdk import Backoff

from ._http_server import Exchange, Handler, ScriptedServer, answer, serve_bytes

pytestmark = pytest.mark.anyio

DEVICE = "dev"
IMAGE = random.Random(2016).randbytes(3 * CHECKPOINT_MIN + 12345)
SHA256 = hashlib.sha256(IMAGE).hexdigest()
DOWNLOAD = f"/api/v1/mydevice/{DEVICE}/updates/u1/download"
MiB = 1 << 20


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.lowlevel.checkpoint()


class Journal:
    """Stands in for the daemon's journal: keeps the latest checkpoint, offers it as ``resume``."""

    def __init__(self, resume: Checkpoint | None = None) -> None:
        self.resume = resume
        self.checkpoints: list[Checkpoint] = []
        self.threads: set[int] = set()

    def __call__(self, checkpoint: Checkpoint) -> None:
        self.resume = checkpoint
        self.checkpoints.append(checkpoint)
        self.threads.add(threading.get_ident())


def checkpoint_of(data: bytes) -> Checkpoint:
    return Checkpoint(len(data), hashlib.sha256(data).hexdigest())


def planted(directory: Path, data: bytes) -> Journal:
    """A ``.part`` the daemon wrote before a restart, with the checkpoint it recorded."""
    (directory / "u1.part").write_bytes(data)
    return Journal(checkpoint_of(data))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
def sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``.part`` size after every write (the writes are real; this only watches them)."""
    seen: list[int] = []
    write_all = _download._write_all

    def watched(fd: int, data: memoryview) -> None:
        write_all(fd, data)
        seen.append(os.fstat(fd).st_size)

    monkeypatch.setattr(_download, "_write_all", watched)
    return seen


def serve(data: bytes = IMAGE, **options: Any) -> Handler:
    return lambda exchange: serve_bytes(exchange, data, **options)


def close_delimited(
    body: bytes, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Handler:
    """A response without Content-Length or chunking: its end is the connection's end."""

    def handler(exchange: Exchange) -> None:
        exchange.head(status, list(headers))
        exchange.write(body)
        exchange.drop()

    return handler


async def download(
    server: ScriptedServer,
    directory: Path,
    *,
    sleeps: Sleeps | None = None,
    update_id: str = "u1",
    auth: bool = False,
    journal: Journal | None = None,
    max_size: int | None = None,
    **options: Any,
) -> DownloadResult:
    """Download through CoreBackend, its call of download_update given ``max_size`` and the
    journal's latest checkpoint as ``resume`` on every call (also the one after re-authenticating),
    as the daemon must wire them; the values CoreBackend passes itself, if any, are replaced."""
    settings = AuthSettings(server.url, "id", "secret") if auth else None
    backoff = Backoff(sleep=sleeps or Sleeps())
    real = _download.download_update

    async def download_update(
        fetch: Fetch, dest_dir: str | os.PathLike[str], update_id: str, **kwargs: Any
    ) -> DownloadResult:
        if max_size is not None:
            kwargs["max_size"] = max_size
        if journal is not None:
            kwargs.update(resume=journal.resume, checkpoint=journal)
        return await real(fetch, dest_dir, update_id, **kwargs)

    with mock.patch.object(_backend, "download_update", download_update):
        async with CoreBackend(
            server.url,
            DEVICE,
            auth=settings,
            backoff=backoff,
            download_retries=options.pop("retries", 5),
        ) as core:
            return await core.download(update_id, str(directory), **options)


def ranges(server: ScriptedServer) -> list[str | None]:
    return [request.header("Range") for request in server.requests_to(DOWNLOAD)]


async def test_exact_bytes_and_sha256(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, serve())
    seen: list[tuple[int, int | None]] = []
    result = await download(server, tmp_path, progress=lambda got, total: seen.append((got, total)))
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)
    assert (tmp_path / "u1").read_bytes() == IMAGE
    assert sorted(os.listdir(tmp_path)) == ["u1"]  # no .part left
    # At most one call per MiB, growing, ending with the whole size.
    assert len(seen) <= len(IMAGE) // CHECKPOINT_MIN + 1
    assert [got for got, _ in seen] == sorted(got for got, _ in seen)
    assert seen[-1] == (len(IMAGE), len(IMAGE))
    assert ranges(server) == [None]


async def test_relative_dir_gives_an_absolute_path(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", DOWNLOAD, serve(b"tiny"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "packages").mkdir()
    result = await download(server, Path("packages"))
    assert result.path == str(tmp_path / "packages" / "u1")


async def test_empty_image(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, serve(b""))
    result = await download(server, tmp_path)
    assert result.size == 0
    assert result.sha256 == hashlib.sha256(b"").hexdigest()
    assert (tmp_path / "u1").read_bytes() == b""


async def test_chunked_image(server: ScriptedServer, tmp_path: Path) -> None:
    """2016 saved an empty file for a chunked download (bug 37)."""
    data = IMAGE[:300_000]
    server.route("GET", DOWNLOAD, serve(data, chunked=True))
    seen: list[int | None] = []
    result = await download(server, tmp_path, progress=lambda got, total: seen.append(total))
    assert (tmp_path / "u1").read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert seen == [None]


@pytest.mark.parametrize("planted_as", ["file", "symlink", "hard link"])
async def test_whatever_is_at_the_image_path_is_replaced(
    server: ScriptedServer, tmp_path: Path, planted_as: str
) -> None:
    """The final rename replaces the name: a link planted there is never written through."""
    packages = tmp_path / "packages"
    packages.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"an older image")
    if planted_as == "file":
        (packages / "u1").write_bytes(b"an older image")
    elif planted_as == "symlink":
        (packages / "u1").symlink_to(outside)
    else:
        (packages / "u1").hardlink_to(outside)
    server.route("GET", DOWNLOAD, serve())
    await download(server, packages)
    assert not (packages / "u1").is_symlink()
    assert (packages / "u1").read_bytes() == IMAGE
    assert outside.read_bytes() == b"an older image"
    assert outside.stat().st_nlink == 1


# -- resuming ----------------------------------------------------------------------------


async def test_resume_with_range_after_a_dropped_connection(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cut = CHECKPOINT_MIN + 1000
    server.route("GET", DOWNLOAD, serve(cut_after=cut), serve())
    sleeps = Sleeps()
    result = await download(server, tmp_path, sleeps=sleeps)
    assert result.sha256 == SHA256
    assert (tmp_path / "u1").read_bytes() == IMAGE
    assert ranges(server) == [None, f"bytes={cut}-"]
    assert sleeps.delays == [1.0]


async def test_resume_a_part_file_left_by_a_restart(server: ScriptedServer, tmp_path: Path) -> None:
    have = 2 * CHECKPOINT_MIN + 7
    journal = planted(tmp_path, IMAGE[:have])
    server.route("GET", DOWNLOAD, serve())
    seen: list[tuple[int, int | None]] = []
    result = await download(
        server, tmp_path, journal=journal, progress=lambda got, total: seen.append((got, total))
    )
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)
    assert ranges(server) == [f"bytes={have}-"]
    assert seen[-1] == (len(IMAGE), len(IMAGE))
    assert not (tmp_path / "u1.part").exists()
    # The next checkpoints count on from the resumed size.
    assert [c.size for c in journal.checkpoints] == [checkpoint_due(have)]


async def test_resume_cuts_the_bytes_after_the_checkpoint(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """After a power cut the bytes past the last checkpoint may be garbage: they are dropped."""
    have = CHECKPOINT_MIN
    journal = Journal(checkpoint_of(IMAGE[:have]))
    (tmp_path / "u1.part").write_bytes(IMAGE[:have] + b"\0" * len(IMAGE))
    server.route("GET", DOWNLOAD, serve())
    result = await download(server, tmp_path, journal=journal)
    assert ranges(server) == [f"bytes={have}-"]
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)
    assert (tmp_path / "u1").read_bytes() == IMAGE


async def test_server_ignoring_range_starts_over(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, b"stale bytes of another build")
    server.route("GET", DOWNLOAD, serve(honor_range=False))
    result = await download(server, tmp_path, journal=journal)
    assert result.sha256 == SHA256
    assert (tmp_path / "u1").read_bytes() == IMAGE
    assert ranges(server) == ["bytes=28-"]
    assert [c.size for c in journal.checkpoints] == [MiB, 2 * MiB, 3 * MiB]  # counted from 0


async def test_416_with_the_same_size_is_complete(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, IMAGE)  # complete, but the rename never happened
    server.route("GET", DOWNLOAD, serve())
    result = await download(server, tmp_path, journal=journal)
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)
    assert ranges(server) == [f"bytes={len(IMAGE)}-"]


async def test_part_larger_than_the_image(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, IMAGE + b"junk")
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=journal)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1: the partial file {tmp_path}/u1.part has "
        f"{len(IMAGE) + 4} bytes, more than the {len(IMAGE)} bytes of the update"
    )
    assert os.listdir(tmp_path) == []  # removed: the next attempt starts clean


async def test_range_total_smaller_than_the_part(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, IMAGE[:100])
    server.route("GET", DOWNLOAD, _partial(b"", "bytes 100-99/50"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=journal)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert str(caught.value) == (
        f"Download error: update u1: the partial file {tmp_path}/u1.part has "
        "100 bytes, more than the 50 bytes of the update"
    )
    assert os.listdir(tmp_path) == []


async def test_416_without_a_size_starts_over(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, b"whatever")
    server.route("GET", DOWNLOAD, answer(416), serve())
    result = await download(server, tmp_path, journal=journal)
    assert result.sha256 == SHA256
    assert ranges(server) == ["bytes=8-", None]


async def test_cancelled_download_keeps_its_part(server: ScriptedServer, tmp_path: Path) -> None:
    release = threading.Event()

    def stall_midway(exchange: Exchange) -> None:
        exchange.head(200, [("Content-Length", str(len(IMAGE)))])
        exchange.write(IMAGE[: 2 * CHECKPOINT_MIN])
        release.wait(30)

    server.route("GET", DOWNLOAD, stall_midway, serve())
    journal = Journal()
    try:
        with anyio.CancelScope() as scope:

            def progress(got: int, total: int | None) -> None:
                scope.cancel()

            await download(server, tmp_path, journal=journal, progress=progress)
    finally:
        release.set()
    assert scope.cancelled_caught
    assert journal.resume == checkpoint_of(IMAGE[:CHECKPOINT_MIN])
    assert (tmp_path / "u1.part").stat().st_size >= CHECKPOINT_MIN
    assert not (tmp_path / "u1").exists()
    await download(server, tmp_path, journal=journal)  # and the restart resumes it
    assert ranges(server)[-1] == f"bytes={CHECKPOINT_MIN}-"
    assert (tmp_path / "u1").read_bytes() == IMAGE


# -- checkpoints -------------------------------------------------------------------------


def _rule_holds(last: int, size: int) -> bool:
    return size - last >= min(max(size // 8, MiB), 64 * MiB)


@given(st.integers(min_value=0, max_value=1 << 40))
def test_checkpoint_due_is_the_first_size_the_rule_allows(last: int) -> None:
    due = checkpoint_due(last)
    assert _rule_holds(last, due)
    assert not _rule_holds(last, due - 1)


def test_checkpoint_gaps() -> None:
    assert checkpoint_due(0) == MiB
    assert checkpoint_due(7 * MiB) == 8 * MiB
    # Then an eighth of the new size: the first s with s - s // 8 >= last, about last * 8 / 7.
    assert checkpoint_due(8 * MiB) == 9_586_980
    assert checkpoint_due(64 * MiB) == 76_695_844
    assert checkpoint_due(1 << 30) == (1 << 30) + 64 * MiB


async def test_checkpoints_fall_on_the_same_offsets_every_run(
    server: ScriptedServer, tmp_path: Path
) -> None:
    image = random.Random(7).randbytes(12 * MiB)
    server.route("GET", DOWNLOAD, serve(image))
    journal = Journal()
    await download(server, tmp_path, journal=journal)
    expected = [checkpoint_due(0)]
    while checkpoint_due(expected[-1]) < len(image):
        expected.append(checkpoint_due(expected[-1]))
    assert expected == [n * MiB for n in range(1, 9)] + [9_586_980, 10_956_548, 12_521_769]
    assert journal.checkpoints == [checkpoint_of(image[:size]) for size in expected]
    assert journal.threads == {threading.get_ident()}  # in the caller's thread


async def test_every_checkpoint_is_on_disk_before_it_is_taken(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint promises its bytes survive a power cut: they are synced first, while the
    next batch is already being received."""
    synced: list[int] = []  # the file's size at each fdatasync
    fdatasync = os.fdatasync

    def watched(fd: int) -> None:
        fdatasync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fdatasync", watched)
    server.route("GET", DOWNLOAD, serve())
    taken: list[tuple[int, list[int]]] = []

    class Watching(Journal):
        def __call__(self, checkpoint: Checkpoint) -> None:
            super().__call__(checkpoint)
            taken.append((checkpoint.size, list(synced)))

    await download(server, tmp_path, journal=Watching())
    assert [size for size, _ in taken] == [MiB, 2 * MiB, 3 * MiB]
    for size, synced_before in taken:
        assert size in synced_before


async def test_checkpoint_when_the_transfer_breaks_off(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cut = CHECKPOINT_MIN + 1000
    server.route("GET", DOWNLOAD, serve(cut_after=cut), serve())
    journal = Journal()
    await download(server, tmp_path, journal=journal)
    sizes = [MiB, cut, checkpoint_due(cut), checkpoint_due(checkpoint_due(cut))]
    assert journal.checkpoints == [checkpoint_of(IMAGE[:size]) for size in sizes]


# -- what is resumed: only a .part the daemon wrote ----------------------------------------

WARNING = "the download of update u1 starts over"


def _removed(caplog: pytest.LogCaptureFixture, part: Path, why: str) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"Removed {part} ({why}); {WARNING}"
    ]


async def _starts_over(server: ScriptedServer, directory: Path, journal: Journal) -> None:
    server.route("GET", DOWNLOAD, serve())
    result = await download(server, directory, journal=journal)
    assert result == DownloadResult(str(directory / "u1"), len(IMAGE), SHA256)
    assert (directory / "u1").read_bytes() == IMAGE
    assert ranges(server) == [None]
    assert os.listdir(directory) == ["u1"]


async def test_no_checkpoint_starts_over(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "u1.part").write_bytes(IMAGE[:1000])
    await _starts_over(server, tmp_path, Journal())
    _removed(caplog, tmp_path / "u1.part", "there is no checkpoint to resume from")


async def test_part_shorter_than_its_checkpoint_starts_over(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "u1.part").write_bytes(IMAGE[:1000])
    await _starts_over(server, tmp_path, Journal(checkpoint_of(IMAGE[:2000])))
    _removed(
        caplog, tmp_path / "u1.part", "it has 1000 bytes, fewer than the 2000 of its checkpoint"
    )


async def test_part_not_matching_its_checkpoint_starts_over(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "u1.part").write_bytes(b"X" + IMAGE[1:2000])
    await _starts_over(server, tmp_path, Journal(checkpoint_of(IMAGE[:1000])))
    _removed(caplog, tmp_path / "u1.part", "its first 1000 bytes do not match its checkpoint")


async def test_hard_link_to_an_outside_file_is_not_resumed(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack measured on main: the outside file grew from 24 to 200,000 bytes."""
    image = IMAGE[:200_000]
    packages = tmp_path / "packages"
    packages.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(image[:24])  # even bytes that match the checkpoint do not make it ours
    (packages / "u1.part").hardlink_to(outside)
    server.route("GET", DOWNLOAD, serve(image))
    result = await download(server, packages, journal=Journal(checkpoint_of(image[:24])))
    assert outside.read_bytes() == image[:24]
    assert outside.stat().st_nlink == 1
    assert (packages / "u1").read_bytes() == image
    assert result.sha256 == hashlib.sha256(image).hexdigest()
    assert ranges(server) == [None]
    _removed(caplog, packages / "u1.part", "it has 2 hard links")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
async def test_part_owned_by_another_user_is_not_resumed(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = planted(tmp_path, IMAGE[:1000])
    os.chown(tmp_path / "u1.part", 65534, 65534)
    await _starts_over(server, tmp_path, journal)
    _removed(
        caplog,
        tmp_path / "u1.part",
        f"it is owned by uid 65534, not by the daemon's uid {os.geteuid()}",
    )


async def test_symlink_at_part_is_removed_not_followed(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Main refused it but left it in place, so that update failed for ever."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "u1.part").symlink_to(victim)
    await _starts_over(server, packages, Journal(checkpoint_of(b"precious")))
    assert victim.read_bytes() == b"precious"
    _removed(caplog, packages / "u1.part", "it is a symbolic link")


async def test_fifo_at_part_is_removed_without_opening_it(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(tmp_path / "u1.part")
    await _starts_over(server, tmp_path, Journal(checkpoint_of(b"")))
    _removed(caplog, tmp_path / "u1.part", "it is not a regular file")


async def test_directory_at_part_is_an_error(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1.part").mkdir()
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=Journal(checkpoint_of(b"")))
    assert caught.value.kind is DownloadErrorKind.IO
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1: {tmp_path}/u1.part is a directory, not a partial "
        "download; remove it"
    )
    assert (tmp_path / "u1.part").is_dir()
    assert server.requests == []


@pytest.mark.parametrize("swapped_in", ["symlink", "hard link"])
async def test_part_swapped_after_the_check_is_not_resumed(
    server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    swapped_in: str,
) -> None:
    """Another user replaces our ``.part`` between the check of its name and its opening."""
    packages = tmp_path / "packages"
    packages.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(IMAGE[:1000])
    journal = planted(packages, IMAGE[:1000])
    part = packages / "u1.part"
    not_ours = _download._not_ours
    checks: list[os.stat_result] = []

    def then_swap(info: os.stat_result) -> str | None:
        checks.append(info)
        problem = not_ours(info)
        if len(checks) == 1:  # right after the check of the name, before the open
            part.unlink()
            if swapped_in == "symlink":
                part.symlink_to(outside)
            else:
                part.hardlink_to(outside)
        return problem

    monkeypatch.setattr(_download, "_not_ours", then_swap)
    await _starts_over(server, packages, journal)
    assert outside.read_bytes() == IMAGE[:1000]
    why = "it is a symbolic link" if swapped_in == "symlink" else "it has 2 hard links"
    assert f"Removed {part} ({why}); {WARNING}" in caplog.messages


async def test_part_planted_after_its_removal_is_never_opened(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The new ``.part`` is created with O_EXCL: a link planted in that moment fails it."""
    packages = tmp_path / "packages"
    packages.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    (packages / "u1.part").write_bytes(b"no checkpoint")

    class PlantOnRemoval(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Removed"):
                (packages / "u1.part").hardlink_to(outside)

    handler = PlantOnRemoval()
    logging.getLogger("sota_client").addHandler(handler)
    try:
        server.route("GET", DOWNLOAD, serve())
        with pytest.raises(DownloadError) as caught:
            await download(server, packages, journal=Journal())
    finally:
        logging.getLogger("sota_client").removeHandler(handler)
    assert str(caught.value) == (
        f"IO error: File exists (os error {errno.EEXIST}): opening {packages}/u1.part"
    )
    assert outside.read_bytes() == b"precious"
    assert server.requests == []


# -- bounds ------------------------------------------------------------------------------


async def test_announced_size_over_max_size_fails_before_any_write(
    server: ScriptedServer, tmp_path: Path, sizes: list[int]
) -> None:
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, max_size=len(IMAGE) - 1)
    assert caught.value.kind is DownloadErrorKind.TOO_LARGE
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1 is {len(IMAGE)} bytes, more than "
        f"device.max_download_size ({len(IMAGE) - 1})"
    )
    assert sizes == []
    assert os.listdir(tmp_path) == []
    assert len(server.requests) == 1


async def test_range_total_over_max_size_fails_before_any_write(
    server: ScriptedServer, tmp_path: Path, sizes: list[int]
) -> None:
    journal = planted(tmp_path, IMAGE[:1000])
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=journal, max_size=len(IMAGE) - 1)
    assert caught.value.kind is DownloadErrorKind.TOO_LARGE
    assert ranges(server) == ["bytes=1000-"]
    assert sizes == []
    assert os.listdir(tmp_path) == []  # the partial file is removed


async def test_announced_size_equal_to_max_size_is_fine(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.route("GET", DOWNLOAD, serve())
    result = await download(server, tmp_path, max_size=len(IMAGE))
    assert result.sha256 == SHA256


LIMIT = CHECKPOINT_MIN + CHECKPOINT_MIN // 2  # a MiB is written (a checkpoint offset) before it

UNANNOUNCED = {
    "chunked": lambda body: serve(body, chunked=True),
    "close-delimited": close_delimited,
}


@pytest.mark.parametrize("framing", UNANNOUNCED)
async def test_unannounced_body_stops_at_max_size(
    server: ScriptedServer, tmp_path: Path, sizes: list[int], framing: str
) -> None:
    """A chunked body once wrote 3.5 GB in 20 s; a close-delimited one was taken as complete."""
    server.route("GET", DOWNLOAD, UNANNOUNCED[framing](IMAGE))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, max_size=LIMIT)
    assert caught.value.kind is DownloadErrorKind.TOO_LARGE
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1 sent more than device.max_download_size "
        f"({LIMIT}) bytes without announcing its size"
    )
    assert sizes[0] == CHECKPOINT_MIN  # a checkpoint offset, then never past the bound
    assert max(sizes) <= LIMIT
    assert os.listdir(tmp_path) == []
    assert len(server.requests) == 1


@pytest.mark.parametrize("framing", UNANNOUNCED)
async def test_unannounced_body_of_exactly_max_size_is_fine(
    server: ScriptedServer, tmp_path: Path, framing: str
) -> None:
    server.route("GET", DOWNLOAD, UNANNOUNCED[framing](IMAGE))
    result = await download(server, tmp_path, max_size=len(IMAGE))
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)


async def test_more_bytes_than_announced(
    server: ScriptedServer, tmp_path: Path, sizes: list[int]
) -> None:
    body = IMAGE[: 2 * CHECKPOINT_MIN]
    server.route("GET", DOWNLOAD, _partial(body, f"bytes 0-99/{LIMIT}"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert str(caught.value) == (
        f"Download error: update u1: the server sent more than the announced {LIMIT} bytes"
    )
    assert sizes[0] == CHECKPOINT_MIN  # a checkpoint offset, then never past the announced size
    assert max(sizes) <= LIMIT
    assert os.listdir(tmp_path) == []


async def test_body_shorter_than_its_content_length_is_not_complete(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.route("GET", DOWNLOAD, serve(cut_after=100), serve(cut_after=0))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, retries=1)
    assert caught.value.kind is DownloadErrorKind.TRUNCATED
    assert not (tmp_path / "u1").exists()


async def test_body_shorter_than_its_range_total_is_not_complete(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """A close-delimited 206 ends cleanly; only the Content-Range total shows what is missing."""
    total = len(IMAGE)
    server.route(
        "GET",
        DOWNLOAD,
        close_delimited(IMAGE[:100], 206, (("Content-Range", f"bytes 0-{total - 1}/{total}"),)),
        close_delimited(b"", 206, (("Content-Range", f"bytes 100-{total - 1}/{total}"),)),
    )
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, retries=2)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1 stayed incomplete at 100 of {total} bytes after 3 requests"
    )
    assert ranges(server) == [None, "bytes=100-", "bytes=100-", "bytes=100-"]
    assert os.listdir(tmp_path) == []


# -- free space --------------------------------------------------------------------------


class Disk:
    """A simulated small disk: the free bytes it reports, and the directories probed."""

    def __init__(self) -> None:
        self.free = 0
        self.probed: list[str] = []

    def __call__(self, directory: str) -> int:
        self.probed.append(directory)
        return self.free


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    small = Disk()
    monkeypatch.setattr(_download, "_free_bytes", small)
    return small


@pytest.mark.parametrize("resumed", [0, 1000])
async def test_free_space_is_checked_before_any_write(
    server: ScriptedServer, tmp_path: Path, sizes: list[int], disk: Disk, resumed: int
) -> None:
    journal = planted(tmp_path, IMAGE[:resumed]) if resumed else Journal()
    disk.free = len(IMAGE) - resumed - 1
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=journal)
    assert caught.value.kind is DownloadErrorKind.DISK_FULL
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1 needs {len(IMAGE) - resumed} more bytes, "
        f"only {len(IMAGE) - resumed - 1} are free in {tmp_path}"
    )
    assert disk.probed == [str(tmp_path)]
    assert sizes == []
    assert os.listdir(tmp_path) == []  # the partial file is removed


@pytest.mark.parametrize("resumed", [0, 1000])
async def test_free_space_for_exactly_the_missing_bytes_is_enough(
    server: ScriptedServer, tmp_path: Path, disk: Disk, resumed: int
) -> None:
    journal = planted(tmp_path, IMAGE[:resumed]) if resumed else Journal()
    disk.free = len(IMAGE) - resumed
    server.route("GET", DOWNLOAD, serve())
    result = await download(server, tmp_path, journal=journal)
    assert result.sha256 == SHA256
    assert disk.probed == [str(tmp_path)]


def test_the_free_space_probe_reads_the_file_system(tmp_path: Path) -> None:
    info = os.statvfs(tmp_path)
    assert _download._free_bytes(str(tmp_path)) == info.f_bavail * info.f_frsize > 0


def test_the_default_bound_is_4_gib() -> None:
    assert DEFAULT_MAX_DOWNLOAD_SIZE == 4 << 30 == 4294967296


# -- failures ----------------------------------------------------------------------------


async def test_truncated_after_the_retries(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, serve(cut_after=100), serve(cut_after=0))
    sleeps = Sleeps()
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, sleeps=sleeps, retries=2)
    error = caught.value
    assert error.kind is DownloadErrorKind.TRUNCATED
    assert error.transient
    assert str(error).startswith(
        f"Download error: update u1 broke off at 100 of {len(IMAGE)} bytes: "
        f"HTTP transport error: GET {server.url}{DOWNLOAD}: "
    )
    assert ranges(server) == [None, "bytes=100-", "bytes=100-", "bytes=100-"]
    assert sleeps.delays == [1.0, 1.0, 2.0]  # progress resets the count
    assert (tmp_path / "u1.part").read_bytes() == IMAGE[:100]  # kept for a later resume


async def test_unreachable_server(tmp_path: Path) -> None:
    with ScriptedServer() as gone:
        pass
    sleeps = Sleeps()
    with pytest.raises(DownloadError) as caught:
        await download(gone, tmp_path, sleeps=sleeps, retries=3)
    assert caught.value.kind is DownloadErrorKind.NETWORK
    assert caught.value.transient
    assert str(caught.value).startswith(
        f"HTTP transport error: GET {gone.url}{DOWNLOAD}: could not connect: "
    )
    assert sleeps.delays == [1.0, 2.0, 4.0]
    assert isinstance(caught.value.__cause__, Exception)


async def test_404_is_the_2016_download_failed_text(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, b"partial")
    body = b'{"code":"missing_package","description":"package not found"}'
    server.route("GET", DOWNLOAD, answer(404, body, "application/json"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=journal)
    assert caught.value.kind is DownloadErrorKind.HTTP
    assert not caught.value.transient
    assert str(caught.value) == (
        "HTTP client error: Response Code: 404 Not Found, Body:\n" + body.decode()
    )
    assert os.listdir(tmp_path) == []
    assert ranges(server) == ["bytes=7-"]


async def test_server_errors_are_retried(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, answer(503, b"busy"), serve())
    sleeps = Sleeps()
    result = await download(server, tmp_path, sleeps=sleeps)
    assert result.sha256 == SHA256
    assert sleeps.delays == [1.0]


async def test_server_errors_after_the_retries(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, answer(500, b"boom"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, retries=1)
    assert caught.value.kind is DownloadErrorKind.HTTP
    assert caught.value.transient
    assert str(caught.value) == (
        "HTTP client error: Response Code: 500 Internal Server Error, Body:\nboom"
    )


async def test_401_reauthenticates_and_resumes(server: ScriptedServer, tmp_path: Path) -> None:
    cut = CHECKPOINT_MIN
    token = b'{"access_token":"%s","token_type":"bearer","expires_in":3600,"scope":""}'
    server.route(
        "POST",
        "/token",
        answer(200, token % b"t1", "application/json"),
        answer(200, token % b"t2", "application/json"),
    )
    server.route("GET", DOWNLOAD, serve(cut_after=cut), answer(401), serve())
    result = await download(server, tmp_path, auth=True, journal=Journal())
    assert result.sha256 == SHA256
    requests = server.requests_to(DOWNLOAD)
    assert [(r.header("Authorization"), r.header("Range")) for r in requests] == [
        ("Bearer t1", None),
        ("Bearer t1", f"bytes={cut}-"),
        ("Bearer t2", f"bytes={cut}-"),
    ]


async def test_refused_even_after_reauthentication(server: ScriptedServer, tmp_path: Path) -> None:
    token = b'{"access_token":"t","token_type":"bearer","expires_in":3600,"scope":""}'
    server.route("POST", "/token", answer(200, token, "application/json"))
    server.route("GET", DOWNLOAD, serve(cut_after=10), answer(403))
    journal = Journal()
    with pytest.raises(AuthError):
        await download(server, tmp_path, auth=True, journal=journal)
    assert (tmp_path / "u1.part").read_bytes() == IMAGE[:10]  # kept: the data is good
    assert journal.resume == checkpoint_of(IMAGE[:10])  # and resumable


async def test_disk_full(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from the write (a real full file system needs root to set up)."""
    written: list[int] = []

    def full(fd: int, data: memoryview) -> None:
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(len(data))
        os.write(fd, data)

    monkeypatch.setattr(_download, "_write_all", full)
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.DISK_FULL
    assert not caught.value.transient
    assert str(caught.value) == (
        f"IO error: No space left on device (os error 28): writing {tmp_path}/u1.part"
    )
    assert os.listdir(tmp_path) == []  # the partial file is removed to free the space
    assert len(server.requests) == 1


async def test_missing_directory(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path / "nope")
    assert caught.value.kind is DownloadErrorKind.IO
    assert str(caught.value) == (
        f"IO error: No such file or directory (os error 2): opening {tmp_path}/nope/u1.part"
    )
    assert server.requests == []


BAD_IDS = [
    "",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\0b",
    "a\nb",
    ".hidden",
    "u1.part",
    "x" * 251,
    "é" * 126,
    "\udcff",
]


@pytest.mark.parametrize("update_id", BAD_IDS)
async def test_unsafe_ids_are_rejected_before_any_request(
    server: ScriptedServer, tmp_path: Path, update_id: str
) -> None:
    with pytest.raises(InvalidIdError) as caught:
        await download(server, tmp_path, update_id=update_id)
    assert not caught.value.transient
    assert str(caught.value).startswith("Invalid update id ")
    assert server.requests == []
    assert os.listdir(tmp_path) == []


async def test_range_answer_at_the_wrong_offset(server: ScriptedServer, tmp_path: Path) -> None:
    journal = planted(tmp_path, IMAGE[:10])
    server.route("GET", DOWNLOAD, _partial(IMAGE[5:], f"bytes 5-{len(IMAGE) - 1}/{len(IMAGE)}"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path, journal=journal)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert str(caught.value) == (
        "Download error: update u1: the server sent bytes from 5 when asked for bytes=10-"
    )


def _partial(body: bytes, content_range: str) -> Handler:
    return lambda exchange: exchange.respond(206, body, [("Content-Range", content_range)])


async def test_bad_redirect_is_a_download_failure_after_retries(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """A broken redirect is the server's misconfiguration: retried (it may be fixed), then
    a failure."""
    server.route("GET", DOWNLOAD, answer(302))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.HTTP
    assert caught.value.transient
    assert str(caught.value) == (
        "Http client error: redirect missing Location header "
        f"(302 Found from GET {server.url}{DOWNLOAD})"
    )
    assert len(server.requests) == 6  # the first try and five retries
