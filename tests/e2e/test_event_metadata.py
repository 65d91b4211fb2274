"""The update metadata in ``DownloadComplete`` against SWLMs written for 2016: the daemon runs as
a real process against the Core simulator, the SWLM is a raw-socket 0.1 peer.

One SWLM reads only the three 0.1 fields, as the 2016 documentation told SWLM authors to; it
works with the metadata on (the default). The other refuses any field it does not know; it
works with ``device.event_metadata = false``, which gives it the 0.1 bytes exactly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import SocketStream, TaskStatus

from sota_client.sim import CoreSimulator
from swlm_sdk import Package

from .harness import DEVICE, DaemonProcess, MakeDaemon

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

IMAGE = b"firmware 1.4.2\n" * 20_000
FIELDS_0_1 = {"update_id", "update_image", "signature"}


async def read_to_eof(stream: SocketStream) -> bytes:
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return bytes(data)


class Swlm2016:
    """A 0.1 SWLM with no SDK: it listens on the events socket, installs each
    ``DownloadComplete`` by reading ``update_image``, and reports with a text command on the
    commands socket (connect, write, half-close, read the reply to end of file).

    ``strict``: refuse an envelope whose ``data`` holds a field 0.1 did not have (a peer that
    validates against the 0.1 schema); it is then neither installed nor reported.
    """

    def __init__(self, daemon: DaemonProcess, *, strict: bool) -> None:
        self.events_socket = daemon.events_socket
        self.commands_socket = daemon.commands_socket
        self.strict = strict
        self.received: list[bytes] = []
        self.refused: list[str] = []
        self.installed: list[bytes] = []
        self.replies: list[bytes] = []
        self.handled = 0
        self._handled = anyio.Event()

    async def wait_handled(self, count: int) -> None:
        """Wait until ``count`` envelopes were handled (installed and reported, or refused)."""
        with anyio.fail_after(60):
            while self.handled < count:
                await self._handled.wait()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_unix_listener(self.events_socket)
        task_status.started()
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            payload = await read_to_eof(stream)
        self.received.append(payload)
        try:
            await self._take(payload)
        finally:
            self.handled += 1
            self._handled.set()
            self._handled = anyio.Event()

    async def _take(self, payload: bytes) -> None:
        envelope: dict[str, Any] = json.loads(payload)
        if envelope["version"] != "0.1" or envelope["event"] != "DownloadComplete":
            return
        data = envelope["data"]
        if self.strict and set(data) != FIELDS_0_1:
            self.refused.append(f"unknown fields {sorted(set(data) - FIELDS_0_1)}")
            return
        # Only what 0.1 had: rustc-serialize's decoder of the 2016 struct read these three.
        update_id, image, _signature = data["update_id"], data["update_image"], data["signature"]
        self.installed.append(await anyio.Path(image).read_bytes())
        await self._command(f"SendUpdateReport {update_id} 0")
        await self._command("SendInstalledPackages fw 1.4.2")

    async def _command(self, text: str) -> None:
        stream = await anyio.connect_unix(self.commands_socket)
        async with stream:
            await stream.send(text.encode())
            await stream.send_eof()
            self.replies.append(await read_to_eof(stream))


def reported(sim: CoreSimulator, request_id: str) -> list[Any]:
    return [msgspec.json.decode(r.body) for r in sim.reports(DEVICE) if r.path.endswith(request_id)]


async def one_update(sim: CoreSimulator, daemon: DaemonProcess, swlm: Swlm2016) -> str:
    """Start the daemon with the SWLM listening; one update from Core to its report."""
    sim.add_package("fw", "1.4.2", data=IMAGE)
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        await anyio.to_thread.run_sync(daemon.start)
        request_id = sim.queue_update(DEVICE, "fw", "1.4.2")
        with anyio.fail_after(60):
            await sim.wait_for_async(lambda: reported(sim, request_id))
            await sim.wait_for_async(lambda: sim.installed(DEVICE))
        await swlm.wait_handled(1)  # and it has read the daemon's replies
        tg.cancel_scope.cancel()
    assert daemon.stop() == 0
    return request_id


def envelope_0_1(request_id: str, daemon: DaemonProcess) -> bytes:
    image = daemon.packages_dir / request_id
    return (
        b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"'
        + request_id.encode()
        + b'","update_image":"'
        + str(image).encode()
        + b'","signature":""}}'
    )


async def test_a_2016_swlm_reading_only_the_0_1_fields_works_with_the_metadata(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url)  # device.event_metadata: the default, on
    swlm = Swlm2016(daemon, strict=False)
    request_id = await one_update(sim, daemon, swlm)
    (payload,) = swlm.received
    # It did get the fields (after the 0.1 ones), and never noticed them.
    plain = envelope_0_1(request_id, daemon)
    assert (
        payload
        == plain[:-2]
        + (
            f',"sha256":"{hashlib.sha256(IMAGE).hexdigest()}","size":{len(IMAGE)},'
            '"package":{"name":"fw","version":"1.4.2"}}}'
        ).encode()
    )
    assert swlm.installed == [IMAGE]
    assert swlm.replies == [b'"UpdateReportSent"', b'"InstalledPackagesSent"']
    assert reported(sim, request_id) == [[{"id": request_id, "result_code": 0, "result_text": ""}]]
    assert sim.status(DEVICE, request_id) == "Finished"
    assert sim.installed(DEVICE) == [Package("fw", "1.4.2")]


async def test_an_swlm_refusing_unknown_fields_works_with_event_metadata_off(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url, device={"event_metadata": False})
    swlm = Swlm2016(daemon, strict=True)
    request_id = await one_update(sim, daemon, swlm)
    assert swlm.received == [envelope_0_1(request_id, daemon)]  # byte for byte 0.1
    assert swlm.refused == []
    assert swlm.installed == [IMAGE]
    assert reported(sim, request_id) == [[{"id": request_id, "result_code": 0, "result_text": ""}]]
    assert sim.status(DEVICE, request_id) == "Finished"


async def test_the_strict_swlm_refuses_the_metadata_which_is_why_the_key_exists(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    """The same SWLM with the default: it refuses the envelope and never reports."""
    sim.add_package("fw", "1.4.2", data=IMAGE)
    daemon = make_daemon(sim.url)
    swlm = Swlm2016(daemon, strict=True)
    async with anyio.create_task_group() as tg:
        await tg.start(swlm.serve)
        await anyio.to_thread.run_sync(daemon.start)
        sim.queue_update(DEVICE, "fw", "1.4.2")
        await swlm.wait_handled(1)
        tg.cancel_scope.cancel()
    assert swlm.refused == ["unknown fields ['package', 'sha256', 'size']"]
    assert sim.reports(DEVICE) == []
    assert daemon.stop() == 0
