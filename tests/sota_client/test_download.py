"""Downloads through CoreBackend from a real HTTP server: bytes, sha256, resume, failures."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from sota_client import _download
from sota_client._backend import AuthSettings, CoreBackend
from sota_client._download import BATCH_BYTES, DownloadResult
from sota_client._errors import AuthError, DownloadError, DownloadErrorKind, InvalidIdError
from swlm_sdk import Backoff

from ._http_server import Exchange, Handler, ScriptedServer, answer, serve_bytes

pytestmark = pytest.mark.anyio

DEVICE = "dev"
IMAGE = random.Random(2016).randbytes(3 * BATCH_BYTES + 12345)
SHA256 = hashlib.sha256(IMAGE).hexdigest()
DOWNLOAD = f"/api/v1/mydevice/{DEVICE}/updates/u1/download"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


def serve(data: bytes = IMAGE, **options: Any) -> Handler:
    return lambda exchange: serve_bytes(exchange, data, **options)


async def download(
    server: ScriptedServer,
    directory: Path,
    *,
    sleeps: Sleeps | None = None,
    update_id: str = "u1",
    auth: bool = False,
    **options: Any,
) -> DownloadResult:
    settings = AuthSettings(server.url, "id", "secret") if auth else None
    backoff = Backoff(sleep=sleeps or Sleeps())
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
    assert len(seen) <= len(IMAGE) // BATCH_BYTES + 1
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


async def test_existing_image_is_replaced(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1").write_bytes(b"an older image")
    server.route("GET", DOWNLOAD, serve())
    await download(server, tmp_path)
    assert (tmp_path / "u1").read_bytes() == IMAGE


# -- resuming ----------------------------------------------------------------------------


async def test_resume_with_range_after_a_dropped_connection(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cut = BATCH_BYTES + 1000
    server.route("GET", DOWNLOAD, serve(cut_after=cut), serve())
    sleeps = Sleeps()
    result = await download(server, tmp_path, sleeps=sleeps)
    assert result.sha256 == SHA256
    assert (tmp_path / "u1").read_bytes() == IMAGE
    assert ranges(server) == [None, f"bytes={cut}-"]
    assert sleeps.delays == [1.0]


async def test_resume_a_part_file_left_by_a_restart(server: ScriptedServer, tmp_path: Path) -> None:
    have = 2 * BATCH_BYTES + 7
    (tmp_path / "u1.part").write_bytes(IMAGE[:have])
    server.route("GET", DOWNLOAD, serve())
    seen: list[tuple[int, int | None]] = []
    result = await download(server, tmp_path, progress=lambda got, total: seen.append((got, total)))
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)
    assert ranges(server) == [f"bytes={have}-"]
    assert seen[-1] == (len(IMAGE), len(IMAGE))
    assert not (tmp_path / "u1.part").exists()


async def test_server_ignoring_range_starts_over(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1.part").write_bytes(b"stale bytes of another build")
    server.route("GET", DOWNLOAD, serve(honor_range=False))
    result = await download(server, tmp_path)
    assert result.sha256 == SHA256
    assert (tmp_path / "u1").read_bytes() == IMAGE
    assert ranges(server) == ["bytes=28-"]


async def test_416_with_the_same_size_is_complete(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1.part").write_bytes(IMAGE)  # complete, but the rename never happened
    server.route("GET", DOWNLOAD, serve())
    result = await download(server, tmp_path)
    assert result == DownloadResult(str(tmp_path / "u1"), len(IMAGE), SHA256)
    assert ranges(server) == [f"bytes={len(IMAGE)}-"]


async def test_part_larger_than_the_image(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1.part").write_bytes(IMAGE + b"junk")
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert not caught.value.transient
    assert str(caught.value) == (
        f"Download error: update u1: the partial file {tmp_path}/u1.part has "
        f"{len(IMAGE) + 4} bytes, more than the {len(IMAGE)} bytes of the update"
    )
    assert os.listdir(tmp_path) == []  # removed: the next attempt starts clean


async def test_416_without_a_size_starts_over(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1.part").write_bytes(b"whatever")
    server.route("GET", DOWNLOAD, answer(416), serve())
    result = await download(server, tmp_path)
    assert result.sha256 == SHA256
    assert ranges(server) == ["bytes=8-", None]


async def test_cancelled_download_keeps_its_part(server: ScriptedServer, tmp_path: Path) -> None:
    release = threading.Event()

    def stall_midway(exchange: Exchange) -> None:
        exchange.head(200, [("Content-Length", str(len(IMAGE)))])
        exchange.write(IMAGE[: 2 * BATCH_BYTES])
        release.wait(30)

    server.route("GET", DOWNLOAD, stall_midway, serve())
    try:
        with anyio.CancelScope() as scope:

            def progress(got: int, total: int | None) -> None:
                scope.cancel()

            await download(server, tmp_path, progress=progress)
    finally:
        release.set()
    assert scope.cancelled_caught
    have = (tmp_path / "u1.part").stat().st_size
    assert have >= BATCH_BYTES
    assert not (tmp_path / "u1").exists()
    await download(server, tmp_path)  # and the restart resumes it
    assert ranges(server)[-1] == f"bytes={have}-"
    assert (tmp_path / "u1").read_bytes() == IMAGE


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
    (tmp_path / "u1.part").write_bytes(b"partial")
    body = b'{"code":"missing_package","description":"package not found"}'
    server.route("GET", DOWNLOAD, answer(404, body, "application/json"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.HTTP
    assert not caught.value.transient
    assert str(caught.value) == (
        "HTTP client error: Response Code: 404 Not Found, Body:\n" + body.decode()
    )
    assert os.listdir(tmp_path) == []
    assert len(server.requests) == 1


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
    cut = BATCH_BYTES
    token = b'{"access_token":"%s","token_type":"bearer","expires_in":3600,"scope":""}'
    server.route(
        "POST",
        "/token",
        answer(200, token % b"t1", "application/json"),
        answer(200, token % b"t2", "application/json"),
    )
    server.route("GET", DOWNLOAD, serve(cut_after=cut), answer(401), serve())
    result = await download(server, tmp_path, auth=True)
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
    with pytest.raises(AuthError):
        await download(server, tmp_path, auth=True)
    assert (tmp_path / "u1.part").read_bytes() == IMAGE[:10]  # kept: the data is good


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


async def test_symlinked_part_file_is_refused(server: ScriptedServer, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "u1.part").symlink_to(victim)
    server.route("GET", DOWNLOAD, serve())
    with pytest.raises(DownloadError) as caught:
        await download(server, packages)
    assert "Too many levels of symbolic links (os error 40)" in str(caught.value)
    assert victim.read_bytes() == b"precious"
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


async def test_more_bytes_than_announced(server: ScriptedServer, tmp_path: Path) -> None:
    body = IMAGE[: 2 * BATCH_BYTES]
    server.route("GET", DOWNLOAD, _partial(body, f"bytes 0-99/{BATCH_BYTES}"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert str(caught.value) == (
        f"Download error: update u1: the server sent more than the announced {BATCH_BYTES} bytes"
    )
    assert os.listdir(tmp_path) == []


async def test_range_answer_at_the_wrong_offset(server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "u1.part").write_bytes(IMAGE[:10])
    server.route("GET", DOWNLOAD, _partial(IMAGE[5:], f"bytes 5-{len(IMAGE) - 1}/{len(IMAGE)}"))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.SIZE_MISMATCH
    assert str(caught.value) == (
        "Download error: update u1: the server sent bytes from 5 when asked for bytes=10-"
    )


def _partial(body: bytes, content_range: str) -> Handler:
    return lambda exchange: exchange.respond(206, body, [("Content-Range", content_range)])


async def test_bad_redirect_is_a_download_failure(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("GET", DOWNLOAD, answer(302))
    with pytest.raises(DownloadError) as caught:
        await download(server, tmp_path)
    assert caught.value.kind is DownloadErrorKind.HTTP
    assert str(caught.value) == (
        "Http client error: redirect missing Location header "
        f"(302 Found from GET {server.url}{DOWNLOAD})"
    )
    assert os.listdir(tmp_path) == []
