"""The events-socket listener: safe creation, 2016 delivery, filtering, hostile peers, bursts."""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import anyio
import pytest

from swlm_sdk import (
    DownloadComplete,
    DownloadFailed,
    EventListener,
    ListenerError,
    TransportError,
    UnknownEvent,
)
from swlm_sdk.protocol import Event
from swlm_sdk.testing import FakeDaemon

from .conftest import deliver_2016

pytestmark = pytest.mark.anyio

DC = DownloadComplete("u1", "/var/sota/packages/u1", "abc")
ENVELOPE = (
    b'{"version":"0.1","event":"DownloadComplete","data":'
    b'{"update_id":"u1","update_image":"/var/sota/packages/u1","signature":"abc"}}'
)


async def test_2016_delivery_is_read_byte_for_byte(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    async with EventListener(path) as listener:
        await anyio.to_thread.run_sync(deliver_2016, str(path), ENVELOPE)
        assert await anext(listener) == DC


async def test_socket_mode_and_unlink_on_close(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    async with EventListener(path) as listener:
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert listener.path == str(path)
    assert not path.exists()
    async with EventListener(path, mode=0o600):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


async def test_stale_socket_is_replaced(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sock_dir / "ev.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # a socket file nobody listens on: what a crash leaves
    with caplog.at_level(logging.INFO, logger="swlm_sdk.listener"):
        async with EventListener(path) as listener:
            await anyio.to_thread.run_sync(deliver_2016, str(path), ENVELOPE)
            assert await anext(listener) == DC
    assert "removed stale events socket" in caplog.text


async def test_live_socket_is_not_stolen(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    async with EventListener(path):
        with pytest.raises(ListenerError, match="another process is listening on"):
            async with EventListener(path):
                pass
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # the first one still owns it


@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
async def test_other_files_are_never_removed(sock_dir: Path, kind: str) -> None:
    path = sock_dir / "ev.sock"
    if kind == "file":
        path.write_text("precious")
    elif kind == "dir":
        path.mkdir()
    else:
        target = sock_dir / "target"
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(target))
        path.symlink_to(target)
    with pytest.raises(ListenerError, match="refusing to replace it"):
        async with EventListener(path):
            pass
    assert path.exists() or path.is_symlink()
    if kind == "file":
        assert path.read_text() == "precious"


async def test_missing_directory_is_a_clear_error(sock_dir: Path) -> None:
    with pytest.raises(ListenerError, match="cannot create events socket"):
        async with EventListener(sock_dir / "no" / "such" / "ev.sock"):
            pass


async def test_filter_by_kind_and_name(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir) as fake:
        async with EventListener(fake.events_socket, kinds=[DownloadComplete]) as listener:
            await fake.deliver(DownloadFailed("u0", "boom"))
            await fake.deliver(b'{"version":"0.2","event":"DownloadStarted","data":{}}')
            await fake.deliver(DC)
            assert await anext(listener) == DC
        async with EventListener(fake.events_socket, kinds=["DownloadFailed"]) as listener:
            await fake.deliver(DC)
            await fake.deliver(DownloadFailed("u0", "boom"))
            assert await anext(listener) == DownloadFailed("u0", "boom")


async def test_unknown_events_pass_when_asked(sock_dir: Path) -> None:
    new = b'{"version":"0.2","event":"DownloadStarted","data":{"update_id":"u1"}}'
    async with FakeDaemon(sock_dir) as fake:
        async with EventListener(fake.events_socket) as listener:
            await fake.deliver(new)
            assert await anext(listener) == UnknownEvent(
                "DownloadStarted", {"update_id": "u1"}, "0.2"
            )
        kinds: list[type[Event]] = [DownloadComplete, UnknownEvent]
        async with EventListener(fake.events_socket, kinds=kinds) as listener:
            await fake.deliver(DownloadFailed("u0", "x"))
            await fake.deliver(new)
            assert isinstance(await anext(listener), UnknownEvent)
        async with EventListener(fake.events_socket, kinds=["DownloadStarted"]) as listener:
            await fake.deliver(new)
            assert isinstance(await anext(listener), UnknownEvent)


def test_bad_kinds_are_rejected() -> None:
    with pytest.raises(TypeError, match="kinds must be"):
        EventListener("/tmp/x.sock", kinds=[int])  # type: ignore[list-item]


async def test_garbage_and_oversized_input_is_skipped(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeDaemon(sock_dir) as fake:
        async with EventListener(fake.events_socket, max_size=64 * 1024) as listener:
            with caplog.at_level(logging.WARNING, logger="swlm_sdk.listener"):
                await fake.deliver(b"\x00\xff garbage")
                await fake.deliver(b'{"version":"0.1","event":"DownloadComplete","data":{}}')
                await fake.deliver(b"[" * 100_000)
                with pytest.raises(TransportError, match="reset while writing"):
                    await fake.deliver(b"x" * (10 << 20))  # the listener hangs up on it
                await fake.deliver(DC)
                assert await anext(listener) == DC
    assert "bad event" in caplog.text
    assert "larger than 65536 bytes" in caplog.text
    assert "update_id" in caplog.text  # the envelope error names the missing field


async def test_a_peer_that_never_closes_does_not_stall_others(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeDaemon(sock_dir) as fake:
        async with EventListener(fake.events_socket, read_timeout=0.3) as listener:
            with caplog.at_level(logging.WARNING, logger="swlm_sdk.listener"):
                stalled = await anyio.connect_unix(fake.events_socket)
                async with stalled:
                    await stalled.send(b'{"version":"0.1",')  # ...and never half-closes
                    await fake.deliver(DC)
                    assert await anext(listener) == DC
                    # It is cut off after the read timeout: the listener closes it.
                    with anyio.fail_after(10), pytest.raises(anyio.EndOfStream):
                        await stalled.receive()
    assert "no complete event within 0.3 s" in caplog.text


async def test_a_burst_of_1000_events_arrives_without_loss(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir) as fake:
        got: list[Event] = []
        async with EventListener(fake.events_socket, buffer=16, max_connections=8) as listener:

            async def send_all(start: int) -> None:
                for i in range(start, 1000, 4):
                    await fake.deliver(DownloadComplete(f"u{i}", f"/img/{i}"))

            async with anyio.create_task_group() as group:
                for start in range(4):
                    group.start_soon(send_all, start)
                async for event in listener:
                    got.append(event)
                    if len(got) == 1000:
                        break
    ids = sorted(int(e.update_id[1:]) for e in got if isinstance(e, DownloadComplete))
    assert ids == list(range(1000))


async def test_iteration_ends_when_closed(sock_dir: Path) -> None:
    listener = EventListener(sock_dir / "ev.sock")
    async with listener:
        pass
    with pytest.raises(StopAsyncIteration):
        await anext(listener)


async def test_config_gives_the_events_socket(sock_dir: Path) -> None:
    config = sock_dir / "sota.toml"
    config.write_text(f'[network]\nsocket_events_path = "{sock_dir}/from-config.sock"\n')
    async with EventListener(config=config) as listener:
        assert listener.path == f"{sock_dir}/from-config.sock"
        assert stat.S_ISSOCK(os.lstat(listener.path).st_mode)
