"""``DownloadComplete``'s update metadata (sha256, size, package) and ``device.event_metadata``:
through the whole daemon (config, interpreter, journal outbox, events socket, commands socket),
and the rules of ``sota_client._handover`` one by one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from sota_client import _daemon
from sota_client._config import Config, parse_config
from sota_client._handover import as_configured, download_complete, kept_download_complete
from sota_client._store import Journal
from sota_client.sim import CoreSimulator
from swlm_sdk import send_raw
from swlm_sdk.protocol import (
    DownloadComplete,
    DownloadFailed,
    Package,
    StartDownload,
    encode_envelope,
    encode_event,
)
from tests.conftest import LogWaiter

from .daemon_fixtures import DEVICE, running_daemon
from .test_events_gateway import EventsSocket

pytestmark = pytest.mark.anyio

IMAGE = b"firmware 1.4.2\n" * 4096
SHA256 = hashlib.sha256(IMAGE).hexdigest()


def metadata_json(*, package: bool = True) -> bytes:
    """The fields the daemon adds after the 0.1 ones, as JSON (a leading comma)."""
    text = f',"sha256":"{SHA256}","size":{len(IMAGE)}'
    if package:
        text += ',"package":{"name":"fw","version":"1.4.2"}'
    return text.encode()


def data_0_1(update_id: str, image: Path) -> bytes:
    return f'{{"update_id":"{update_id}","update_image":"{image}","signature":""'.encode()


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        simulator.add_package("fw", "1.4.2", data=IMAGE)
        yield simulator


def daemon_config(
    sim: CoreSimulator, sock_dir: Path, tmp_path: Path, metadata: bool | None
) -> Config:
    key = "" if metadata is None else f"event_metadata = {'true' if metadata else 'false'}"
    return parse_config(
        f"""
        [core]
        server = "{sim.url}"
        polling = false
        [device]
        packages_dir = "{tmp_path / "packages"}"
        state_dir = "{tmp_path / "state"}"
        certificates_path = "{tmp_path / "no-ca.pem"}"
        system_info = ""
        {key}
        [gateway]
        socket = true
        [network]
        socket_commands_path = "{sock_dir / "cmd.sock"}"
        socket_events_path = "{sock_dir / "ev.sock"}"
        """
    )


@pytest.mark.parametrize("metadata", [None, True, False], ids=["default", "on", "off"])
async def test_the_daemon_hands_an_update_over_with_the_metadata_the_key_allows(
    sim: CoreSimulator,
    sock_dir: Path,
    tmp_path: Path,
    log_waiter: Callable[[str], LogWaiter],
    metadata: bool | None,
) -> None:
    """The whole daemon from its config: the envelope on the events socket, and the commands
    socket's reply to ``dl`` for the same update (handed over again from the journal)."""
    config = daemon_config(sim, sock_dir, tmp_path, metadata)
    assert config.device.event_metadata is (metadata is not False)  # default: on
    update_id = sim.queue_update(DEVICE, "fw", "1.4.2")
    image = tmp_path / "packages" / update_id
    extra = b"" if metadata is False else metadata_json()
    swlm = EventsSocket(sock_dir / "ev.sock")
    commands = sock_dir / "cmd.sock"
    serving = log_waiter("Sending events to")  # logged once the commands socket listens
    async with anyio.create_task_group() as outer:
        await outer.start(swlm.serve)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_daemon._main, config)
            await serving.wait(within=20)
            await send_raw("GetUpdateRequests", commands_socket=commands)
            with anyio.fail_after(20):
                await swlm.wait_for(1)
            reply = await send_raw(f"dl {update_id}", commands_socket=commands)
            with anyio.fail_after(20):
                await swlm.wait_for(2)
            assert await send_raw("Shutdown", commands_socket=commands) == b""
        outer.cancel_scope.cancel()
    envelope = (
        b'{"version":"0.1","event":"DownloadComplete","data":'
        + data_0_1(update_id, image)
        + extra
        + b"}}"
    )
    assert swlm.payloads == [envelope, envelope]
    assert reply == (
        b'{"variant":"DownloadComplete","fields":[' + data_0_1(update_id, image) + extra + b"}]}"
    )
    assert image.read_bytes() == IMAGE


@pytest.mark.parametrize("metadata", [True, False], ids=["on", "off"])
async def test_an_update_core_never_listed_has_no_package(
    sim: CoreSimulator, tmp_path: Path, metadata: bool
) -> None:
    """``dl <id>`` of an update the daemon never saw in Core's list: the size and hash only."""
    update_id = sim.queue_update(DEVICE, "fw", "1.4.2")
    async with running_daemon(tmp_path, sim, event_outbox=True, event_metadata=metadata) as d:
        event = await d.execute(StartDownload(update_id))
        (kept,) = d.journal.events()
    image = d.image(update_id)
    extra = metadata_json(package=False) if metadata else b""
    assert isinstance(event, DownloadComplete)
    assert encode_event(event) == (
        b'{"variant":"DownloadComplete","fields":[' + data_0_1(update_id, image) + extra + b"}]}"
    )
    assert kept.payload == (
        b'{"version":"0.1","event":"DownloadComplete","data":'
        + data_0_1(update_id, image)
        + extra
        + b"}}"
    )


# -- the rules, one by one ------------------------------------------------------------------


def test_download_complete_with_and_without_the_key() -> None:
    made = download_complete(
        "u1", "/p/u1", size=3, sha256="ab" * 32, package=("fw", "1.0"), metadata=True
    )
    assert made == DownloadComplete(
        "u1", "/p/u1", "", sha256="ab" * 32, size=3, package=Package("fw", "1.0")
    )
    off = download_complete(
        "u1", "/p/u1", size=3, sha256="ab" * 32, package=("fw", "1.0"), metadata=False
    )
    assert off == DownloadComplete("u1", "/p/u1", "")


def test_kept_download_complete_takes_what_the_journal_recorded(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "sota.db") as journal:
        journal.begin_download("u1", "/p/u1")
        journal.download_checkpoint("u1", 2, "cd" * 32)
        # Still downloading: a checkpoint is no image's size and hash.
        assert kept_download_complete(journal, "u1", "/p/u1", metadata=True) == (
            DownloadComplete("u1", "/p/u1", "")
        )
        journal.name_package("u1", "fw", "1.0")
        journal.finish_download("u1", 3, "ab" * 32)
        assert kept_download_complete(journal, "u1", "/p/u1", metadata=True) == (
            DownloadComplete(
                "u1", "/p/u1", "", sha256="ab" * 32, size=3, package=Package("fw", "1.0")
            )
        )
        assert kept_download_complete(journal, "u1", "/p/u1", metadata=False) == (
            DownloadComplete("u1", "/p/u1", "")
        )
        assert kept_download_complete(journal, "u2", "/p/u2", metadata=True) == (
            DownloadComplete("u2", "/p/u2", "")
        )


FULL = encode_envelope(
    DownloadComplete("u1", "/p/u1", "", sha256="ab" * 32, size=3, package=Package("fw", "1"))
)
PLAIN = encode_envelope(DownloadComplete("u1", "/p/u1", ""))
FAILED = encode_envelope(DownloadFailed("u1", "boom"))


@pytest.mark.parametrize(
    ("payload", "on", "off"),
    [
        (FULL, FULL, PLAIN),
        (PLAIN, PLAIN, PLAIN),
        (FAILED, FAILED, FAILED),
        (b"not an envelope", b"not an envelope", b"not an envelope"),
        # Not the daemon's own bytes (spaces): delivered as kept unless there is metadata.
        (b'{"version": "0.1", "event": "DownloadComplete", "data": {"update_id": "u1", '
         b'"update_image": "/p/u1"}}',) * 3,
    ],
    ids=["with-metadata", "0.1", "failed", "unreadable", "foreign-bytes"],
)  # fmt: skip
def test_as_configured_strips_the_fields_only_when_off(
    payload: bytes, on: bytes, off: bytes
) -> None:
    assert as_configured(payload, metadata=True) == on
    assert as_configured(payload, metadata=False) == off
