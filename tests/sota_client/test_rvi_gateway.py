"""The RVI gateway against a fake RVI node, with the interpreter, the journal and the simulator:
registration, the edge server's answers, pushed transfers, reports and the installed software."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sota_client._reports import ReportSender
from sota_client._store import UpdateState
from sota_client.gateways._rvi import RviBackend, RviGateway
from sota_client.gateways._rvi_rpc import MAX_REQUEST_BYTES, SERVICES
from sota_client.sim import CoreSimulator
from swlm_sdk import Backoff
from swlm_sdk.protocol import (
    DownloadComplete,
    DownloadFailed,
    ErrorEvent,
    Event,
    InstalledFirmware,
    InstalledPackage,
    InstalledSoftware,
    InstalledSoftwareNeeded,
    InstalledSoftwareSent,
    ResultCode,
    SendUpdateReport,
    StartDownload,
    UpdateAvailable,
    UpdateReport,
    UpdateReportSent,
)

from .daemon_fixtures import DEVICE, Changes, Daemon, running_daemon
from .rvi_node import (
    BACKEND_SERVICES,
    CHUNK_SIZE,
    NODE_PREFIX,
    Answer,
    Backend,
    Failure,
    RviNode,
    chunks_of,
    sha1,
)

pytestmark = pytest.mark.anyio

FAST = Backoff(0.01, 0.05)  # registration retries
UPDATE = "7f3c9b2e-5a41-4d6e-9c0b-2f8e1d4a6b73"
# Four and a half 2016 chunks: the last one is short.
IMAGE = bytes(range(256)) * (CHUNK_SIZE * 9 // 2 // 256)
#: What DownloadComplete tells of the joined image (RVI names no package).
IMAGE_METADATA: dict[str, Any] = {"sha256": hashlib.sha256(IMAGE).hexdigest(), "size": len(IMAGE)}
SOFTWARE = InstalledSoftware(
    packages=(InstalledPackage("bluez-5.41", "bluez", "Bluetooth stack", 7),),
    firmwares=(InstalledFirmware("ecu1", "1.2.3", 9),),
)
RVI_LOGGER = "sota_client.gateways._rvi"


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        yield simulator


class LogRecords(logging.Handler):
    """The RVI gateway's log records, at DEBUG too, to wait for and to count by level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changes = Changes()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changes.changed()

    def levels(self, text: str) -> list[int]:
        return [r.levelno for r in self.records if text in r.getMessage()]

    async def wait_for_count(self, text: str, count: int) -> None:
        await self.changes.wait_until(lambda: len(self.levels(text)) >= count)


@pytest.fixture
def rvi_log() -> Iterator[LogRecords]:
    logger = logging.getLogger(RVI_LOGGER)
    handler = LogRecords()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@dataclass
class FakeSoftware:
    """The SWLM's answer to "what is installed" (``installed_software``); counts its calls."""

    software: InstalledSoftware = SOFTWARE
    error: Exception | None = None  # raised instead of answering
    calls: int = 0
    changes: Changes = field(default_factory=Changes)

    async def __call__(self) -> InstalledSoftware:
        self.calls += 1
        self.changes.changed()
        if self.error is not None:
            raise self.error
        return self.software


@dataclass
class Rig:
    """The daemon's parts with the RVI gateway wired in as ``_daemon`` does it."""

    d: Daemon
    gateway: RviGateway
    node: RviNode
    backend: Backend
    software: FakeSoftware
    storage_dir: Path

    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"


@asynccontextmanager
async def rvi_rig(
    tmp_path: Path,
    sim: CoreSimulator,
    node: RviNode,
    *,
    idle_timeout: float | None = None,
    wait_registered: bool = True,
) -> AsyncIterator[Rig]:
    """The gateway serving with the interpreter on top; registered unless told not to wait.

    The fixture's own report sender (over HTTP to Core) is left idle: nothing wakes it, and
    reports queued here go to the RVI one (each test checks Core got none).
    """
    storage_dir = tmp_path / "rvi"
    async with running_daemon(tmp_path, sim) as d:
        gateway = RviGateway(
            node_url=node.url,
            edge_address="127.0.0.1:0",
            storage_dir=str(storage_dir),
            packages_dir=str(d.packages_dir),
            device=DEVICE,
            journal=d.journal,
            post=d.backend.post_json,
            idle_timeout=idle_timeout,
            backoff=FAST,
        )
        rvi = RviBackend(d.backend, gateway)
        d.services.backend = rvi
        reports = ReportSender(
            rvi, d.journal, ask_core_when_in_doubt=False, backoff=0.05, max_backoff=0.2
        )
        d.services.reports = d.reports = reports
        software = FakeSoftware()
        serve = functools.partial(
            gateway.serve,
            execute=d.interpreter.execute,
            submit=d.interpreter.submit,
            publish=d.interpreter.publish,
            installed_software=software,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(reports.run, d.interpreter.publish)
            with anyio.fail_after(10):
                await tg.start(serve)
            async with Backend.at(f"http://127.0.0.1:{gateway.port}") as backend:
                if wait_registered:
                    with anyio.fail_after(10):
                        await gateway.registered.wait()
                yield Rig(d, gateway, node, backend, software, storage_dir)
            tg.cancel_scope.cancel()
    assert sim.reports(DEVICE) == []  # in RVI mode nothing reaches Core's report endpoint


def ack(chunks: list[int], update_id: str = UPDATE) -> dict[str, Any]:
    return {"device": DEVICE, "update_id": update_id, "chunks": chunks}


def report_body(update_id: str, code: int, text: str) -> dict[str, Any]:
    results = [{"id": update_id, "result_code": code, "result_text": text}]
    return {
        "device": DEVICE,
        "update_report": {"update_id": update_id, "operation_results": results},
    }


async def download(rig: Rig, update_id: str = UPDATE) -> Event | None:
    with anyio.fail_after(20):
        return await rig.d.interpreter.execute(StartDownload(update_id))


def is_error(answer: Answer, code: int) -> bool:
    body = answer.body
    return (
        isinstance(body, dict)
        and body.get("jsonrpc") == "2.0"
        and answer.error_code == code
        and isinstance(body["error"].get("message"), str)
    )


# -- registration -------------------------------------------------------------------------------


async def test_the_six_services_are_registered_in_the_2016_order_at_the_edge_url(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        registrations = node.registrations()
        calls = [c for c in node.calls if c.method == "register_service"]
        local = rig.gateway.local
    assert [r["service"] for r in registrations] == [
        "/sota/notify",
        "/sota/start",
        "/sota/chunk",
        "/sota/abort",
        "/sota/finish",
        "/sota/getpackages",
    ]
    assert {r["network_address"] for r in registrations} == {rig.edge_url()}
    assert all(c.request["jsonrpc"] == "2.0" and isinstance(c.request["id"], int) for c in calls)
    assert {c.headers["content-type"] for c in calls} == {"application/json"}
    # The names the node returned (its reply's extra "method" field ignored) are kept.
    assert local is not None
    assert local.start == f"{NODE_PREFIX}/sota/start"
    assert local.getpackages == f"{NODE_PREFIX}/sota/getpackages"


async def test_a_node_down_at_start_up_holds_nothing_up_and_is_registered_with_once_up(
    tmp_path: Path, sim: CoreSimulator, rvi_log: LogRecords
) -> None:
    """2016 panicked when the node was away; now serve is ready at once, warns once, retries."""
    node = RviNode()
    async with rvi_rig(tmp_path, sim, node, wait_registered=False) as rig:
        assert not rig.gateway.registered.is_set()  # serve reported ready without the node
        assert (await rig.backend.services_available()).ok  # and the edge already answers
        await rvi_log.wait_for_count("couldn't register", 3)
        async with node.running():
            with anyio.fail_after(10):
                await rig.gateway.registered.wait()
    levels = rvi_log.levels("couldn't register")
    assert levels.count(logging.WARNING) == 1
    assert levels[0] == logging.WARNING
    assert set(levels[1:]) == {logging.DEBUG}
    assert [r["service"] for r in node.registrations()] == list(SERVICES)


@pytest.mark.parametrize("failure", [Failure.HTTP_500, Failure.ERROR_OBJECT])
async def test_a_node_refusing_registration_is_asked_again_until_it_takes_it(
    tmp_path: Path, sim: CoreSimulator, rvi_log: LogRecords, failure: Failure
) -> None:
    node = RviNode()
    node.failure = failure
    async with node.running(), rvi_rig(tmp_path, sim, node, wait_registered=False) as rig:
        await node.wait_for(lambda: len(node.registrations(accepted=False)) >= 3)
        assert not rig.gateway.registered.is_set()
        node.failure = None
        with anyio.fail_after(10):
            await rig.gateway.registered.wait()
    assert [r["service"] for r in node.registrations()] == list(SERVICES)
    assert rvi_log.levels("couldn't register").count(logging.WARNING) == 1


# -- the edge server ----------------------------------------------------------------------------


async def test_services_available_as_the_node_sends_it_is_answered_with_a_null_result(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        body = (
            b'{"jsonrpc":"2.0","id":1,"method":"services_available","params":{"services":'
            b'["genivi.org/node/default_id/backend/sota/start"]}}'
        )
        response = await rig.backend.client.post(
            rig.edge_url(), content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b'{"jsonrpc":"2.0","id":1,"result":null}'


@pytest.mark.parametrize("request_id", [-5, 0, 2**40, 2**64 - 1])
async def test_any_integer_id_is_echoed(
    tmp_path: Path, sim: CoreSimulator, request_id: int
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        available = {"jsonrpc": "2.0", "id": request_id, "method": "services_available"}
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "message",
            "params": {"service_name": "/sota/getpackages", "parameters": [None]},
        }
        assert (await rig.backend.notify(UPDATE)).ok
        answers = [await rig.backend.post(json.dumps(m).encode()) for m in (available, message)]
        await rig.d.recorder.wait_for(lambda events: InstalledSoftwareSent() in events)
    for answer in answers:
        assert answer.status == 200
        assert answer.body == {"jsonrpc": "2.0", "id": request_id, "result": None}


def _message(service: str, parameters: Any) -> bytes:
    params = {"service_name": service, "parameters": parameters}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "message", "params": params}).encode()


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        # The RVI Python tools of the time: parameters as one object of strings.
        (
            _message("/sota/start", {"update_id": "u1", "chunkscount": "1"}),
            -32602,
            "not an array",
        ),
        (_message("/sota/start", []), -32602, "empty array"),
        (b'{"jsonrpc":"2.0","id":1,"method":"register_service"}', -32601, "unknown method"),
        (_message("/sota/reboot", [None]), -32600, "unknown service: /sota/reboot"),
        (b'{"jsonrpc":"2.0","id":1}', -32600, "expected method"),
        (b'{"jsonrpc":"2.0","id":"1","method":"message"}', -32700, "expected id"),
        (b"not json", -32700, "not JSON"),
        (b"\xff\xfe", -32700, "not UTF-8"),
    ],
    ids=["params-object", "params-empty", "method", "service", "no-method", "id", "json", "utf8"],
)
async def test_bad_requests_get_the_2016_error_codes(
    tmp_path: Path, sim: CoreSimulator, body: bytes, code: int, words: str
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        answer = await rig.backend.post(body)
        after = await rig.backend.services_available()
    assert answer.status == 400
    assert is_error(answer, code), answer
    assert words in answer.body["error"]["data"]
    assert after.ok


async def test_a_web_page_is_refused_with_403(tmp_path: Path, sim: CoreSimulator) -> None:
    """A page in a browser on the device must not push updates: browsers send ``Origin``."""
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        answer = await rig.backend.post(
            _message("/sota/getpackages", [None]), {"Origin": "http://evil.example"}
        )
        after = await rig.backend.services_available()
    assert answer.status == 403
    assert is_error(answer, -32600)
    assert rig.software.calls == 0
    assert after.ok


async def _raw_exchange(port: int, data: bytes) -> tuple[int, Any]:
    """Send ``data`` as is and read the answer until the server closes."""
    received = bytearray()
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(data)
            try:
                while True:
                    received += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_bound_is_refused_and_the_server_goes_on(
    tmp_path: Path, sim: CoreSimulator, framing: str
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{rig.gateway.port}\r\n"
        head += "Content-Type: application/json\r\n"
        if framing == "content-length":
            # Announced only: the answer must come without reading (or waiting for) the body.
            head += f"Content-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n"
            data = head.encode() + b'{"jsonrpc":'
        else:
            size = MAX_REQUEST_BYTES + 1
            head += "Transfer-Encoding: chunked\r\n\r\n"
            data = head.encode() + f"{size:x}\r\n".encode() + b" " * size + b"\r\n0\r\n\r\n"
        status, body = await _raw_exchange(rig.gateway.port, data)
        after = await rig.backend.services_available()
    assert status == 413
    assert body["jsonrpc"] == "2.0"
    assert isinstance(body["error"]["code"], int)
    assert after.ok


# -- transfers ----------------------------------------------------------------------------------


async def test_a_download_is_a_transfer_pushed_in_chunks_numbered_from_1(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    order = [3, 1, 4, 2, 2, 5]  # out of order, chunk 2 sent twice
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        node.push_on_start(rig.backend, {UPDATE: IMAGE}, lambda b, u, i: b.push(u, i, order=order))
        notified = await rig.backend.notify(UPDATE, description="libats", size=len(IMAGE))
        assert notified.ok
        await rig.d.recorder.wait_for(
            lambda events: any(isinstance(e, UpdateAvailable) for e in events)
        )
        before = int(time.time())
        event = await download(rig)
        after = time.time()
        image = rig.d.image(UPDATE)
        assert event == DownloadComplete(UPDATE, str(image), "", **IMAGE_METADATA)
        assert image.read_bytes() == IMAGE
        assert rig.d.journal.update_state(UPDATE) is UpdateState.DOWNLOADED
        await node.wait_for(lambda: UPDATE in node.pushed)
        (started,) = node.messages(BACKEND_SERVICES["start"])
        acks = node.bodies(BACKEND_SERVICES["ack"])
        answers = node.pushed[UPDATE]
        leftovers = list((rig.storage_dir / "downloads").iterdir())
    assert rig.d.recorder.of(UpdateAvailable) == [
        UpdateAvailable(UPDATE, "signature", "libats", False, len(IMAGE))
    ]
    assert len(chunks_of(IMAGE)) == 5
    assert started.params["service_name"] == BACKEND_SERVICES["start"]
    assert before + 60 <= started.params["timeout"] <= after + 60
    (body,) = started.params["parameters"]
    assert body == {
        "device": DEVICE,
        "update_id": UPDATE,
        "services": {
            name: f"{NODE_PREFIX}/sota/{name}"
            for name in ("start", "abort", "chunk", "finish", "getpackages")
        },
    }
    assert list(body["services"]) == ["start", "abort", "chunk", "finish", "getpackages"]
    assert acks == [
        ack([]),
        ack([3]),
        ack([1, 3]),
        ack([1, 3, 4]),
        ack([1, 2, 3, 4]),
        ack([1, 2, 3, 4]),
        ack([1, 2, 3, 4, 5]),
    ]
    assert [a.status for a in answers] == [200] * len(answers)
    assert all(a.body == {"jsonrpc": "2.0", "id": 1, "result": None} for a in answers)
    assert leftovers == []  # the chunk files are gone


@pytest.mark.parametrize(
    ("push", "words"),
    [
        (lambda b, u, i: b.push(u, i, checksum=sha1(b"something else")), "checksum mismatch"),
        (lambda b, u, i: b.push(u, i, order=[1, 2, 4, 5]), "1 of 5 chunks are missing"),
    ],
    ids=["sha1-mismatch", "missing-chunk"],
)
async def test_a_bad_transfer_fails_the_download_and_reports_it_over_rvi(
    tmp_path: Path, sim: CoreSimulator, push: Any, words: str
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        node.push_on_start(rig.backend, {UPDATE: IMAGE}, push)
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
        assert isinstance(event, DownloadFailed), event
        assert words in event.reason
        await node.wait_for(lambda: UPDATE in node.pushed)
        finished = node.pushed[UPDATE][-1]
        await node.wait_for(lambda: node.bodies(BACKEND_SERVICES["report"]))
        await rig.d.idle()
        (report,) = node.bodies(BACKEND_SERVICES["report"])
        state = rig.d.journal.update_state(UPDATE)
    assert finished.status == 400
    assert is_error(finished, -32100)
    assert words in finished.body["error"]["data"]
    assert report == report_body(UPDATE, ResultCode.GENERAL_ERROR, event.reason)
    assert state is UpdateState.REPORTED
    assert not rig.d.image(UPDATE).exists()


async def test_a_transfer_that_stops_sending_chunks_fails_after_the_idle_timeout(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    async def stall(backend: Backend, update_id: str, image: bytes) -> list[Answer]:
        chunks = chunks_of(image)
        return [
            await backend.start(update_id, sha1(image), len(chunks)),
            await backend.chunk(update_id, 1, chunks[1]),
        ]

    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node, idle_timeout=0.5) as rig:
        node.push_on_start(rig.backend, {UPDATE: IMAGE}, stall)
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
        pushed = node.pushed[UPDATE]
        leftovers = list((rig.storage_dir / "downloads").iterdir())
    assert isinstance(event, DownloadFailed), event
    assert "no chunk" in event.reason
    assert "0.5 s" in event.reason
    assert all(a.ok for a in pushed)
    assert leftovers == []


async def test_a_transfer_that_never_starts_fails_after_the_idle_timeout(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """The backend takes the DownloadStarted and sends nothing: the download must not hold the
    queue for ever (2016 waited without end)."""
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node, idle_timeout=0.5) as rig:
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
    assert isinstance(event, DownloadFailed), event
    assert "no chunk" in event.reason
    assert len(node.bodies(BACKEND_SERVICES["start"])) == 1


async def test_an_abort_with_null_ends_the_transfer_in_progress(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    async def abort_midway(backend: Backend, update_id: str, image: bytes) -> list[Answer]:
        answers = await backend.push(update_id, image, order=[1, 2], finish=False)
        return [*answers, await backend.abort()]

    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        node.push_on_start(rig.backend, {UPDATE: IMAGE}, abort_midway)
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
        await node.wait_for(lambda: UPDATE in node.pushed)
        aborted = node.pushed[UPDATE][-1]
        leftovers = list((rig.storage_dir / "downloads").iterdir())
    assert isinstance(event, DownloadFailed), event
    assert "aborted" in event.reason
    assert aborted.body == {"jsonrpc": "2.0", "id": 1, "result": None}
    assert leftovers == []


async def test_an_abort_before_the_first_chunk_ends_the_waiting_download(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """The backend gives up on an update it was asked for (``abort`` with ``null``, meaning
    every transfer) before it started one: the download waiting for it must end then, not
    hold the download queue until the idle timeout."""

    async def refuse(backend: Backend, update_id: str, image: bytes) -> list[Answer]:
        return [await backend.abort()]

    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node, idle_timeout=2) as rig:
        node.push_on_start(rig.backend, {UPDATE: IMAGE}, refuse)
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
        await node.wait_for(lambda: UPDATE in node.pushed)
    assert node.pushed[UPDATE][0].ok
    assert isinstance(event, DownloadFailed), event
    assert "aborted" in event.reason, event.reason


async def test_a_transfer_dropped_for_crossing_a_bound_ends_the_waiting_download(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """More chunks than ``/sota/start`` announced drop the transfer: the download waiting for
    it must fail then, saying why, not wait out the idle timeout for chunks that cannot come."""

    async def too_many(backend: Backend, update_id: str, image: bytes) -> list[Answer]:
        chunks = chunks_of(image)
        answers = [await backend.start(update_id, sha1(image), 2)]
        for index in (1, 2, 3):
            answers.append(await backend.chunk(update_id, index, chunks[index]))
        return answers

    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node, idle_timeout=2) as rig:
        node.push_on_start(rig.backend, {UPDATE: IMAGE}, too_many)
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
        await node.wait_for(lambda: UPDATE in node.pushed)
        refused = node.pushed[UPDATE][-1]
    assert is_error(refused, -32100)
    assert "more than the 2 announced" in refused.body["error"]["data"]
    assert isinstance(event, DownloadFailed), event
    assert "more than the 2 announced" in event.reason, event.reason


async def test_a_transfer_nobody_asked_for_is_taken_all_the_same(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """After a restart the backend may push an update the daemon no longer waits for."""
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        assert (await rig.backend.notify(UPDATE)).ok
        answers = await rig.backend.push(UPDATE, IMAGE)
        complete = DownloadComplete(UPDATE, str(rig.d.image(UPDATE)), "", **IMAGE_METADATA)
        await rig.d.recorder.wait_for(lambda events: complete in events)
        await rig.d.idle()
        state = rig.d.journal.update_state(UPDATE)
        image = rig.d.image(UPDATE).read_bytes()
    assert all(a.ok for a in answers)
    assert image == IMAGE
    assert state is UpdateState.DOWNLOADED
    assert node.messages(BACKEND_SERVICES["start"]) == []  # nothing asked for it


async def test_chunks_before_any_notify_are_refused_with_32100(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """The acknowledgement has nowhere to go: as in 2016, the edge says it couldn't handle it."""
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        answer = await rig.backend.start(UPDATE, sha1(IMAGE), 5)
    assert answer.status == 400
    assert is_error(answer, -32100)
    assert "/sota/notify" in answer.body["error"]["data"]


# -- reports and the installed software ---------------------------------------------------------


def _report(update_id: str = UPDATE) -> UpdateReport:
    return UpdateReport.single(update_id, ResultCode.INSTALL_FAILED, "rpm failed")


async def test_a_report_goes_to_the_backends_report_service(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        assert (await rig.backend.notify(UPDATE)).ok
        before = int(time.time())
        event = await rig.d.execute(SendUpdateReport(_report()))
        after = time.time()
        (sent,) = node.messages(BACKEND_SERVICES["report"])
        state = rig.d.journal.update_state(UPDATE)
    assert event == UpdateReportSent()
    assert sent.request["jsonrpc"] == "2.0"
    assert sent.headers["content-type"] == "application/json"
    assert isinstance(sent.request["id"], int)
    assert sent.params["service_name"] == BACKEND_SERVICES["report"]
    assert sent.params["parameters"] == [report_body(UPDATE, 4, "rpm failed")]
    assert before + 60 <= sent.params["timeout"] <= after + 60
    assert state is UpdateState.REPORTED


async def test_a_report_before_any_notify_is_kept_and_sent_once_the_backend_is_known(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        event = await rig.d.execute(SendUpdateReport(_report()))
        assert isinstance(event, ErrorEvent), event
        assert "no /sota/notify came" in event.text
        assert rig.d.journal.update_state(UPDATE) is UpdateState.REPORT_PENDING
        assert (await rig.backend.notify(UPDATE)).ok
        await node.wait_for(lambda: node.messages(BACKEND_SERVICES["report"]))
        await rig.d.recorder.wait_for(lambda events: UpdateReportSent() in events)
        state = rig.d.journal.update_state(UPDATE)
        bodies = node.bodies(BACKEND_SERVICES["report"])
    assert bodies == [report_body(UPDATE, 4, "rpm failed")]
    assert state is UpdateState.REPORTED


@pytest.mark.parametrize("failure", [Failure.HTTP_500, Failure.ERROR_OBJECT, Failure.HTTP_400])
async def test_a_report_the_node_refuses_is_kept_and_retried_until_it_takes_it(
    tmp_path: Path, sim: CoreSimulator, failure: Failure
) -> None:
    """The node is a relay, not Core: whatever it answers, the report is not Core's refusal
    and must not be set aside."""
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        assert (await rig.backend.notify(UPDATE)).ok
        node.failure = failure
        event = await rig.d.execute(SendUpdateReport(_report()))
        assert isinstance(event, ErrorEvent), event
        assert "kept and will be sent again" in event.text
        assert rig.d.journal.update_state(UPDATE) is UpdateState.REPORT_PENDING
        service = BACKEND_SERVICES["report"]
        await node.wait_for(lambda: len(node.messages(service, accepted=False)) >= 3)
        node.failure = None
        await node.wait_for(lambda: node.messages(service))
        await rig.d.recorder.wait_for(lambda events: UpdateReportSent() in events)
        await rig.d.idle()
        accepted = node.bodies(service)
        state = rig.d.journal.update_state(UPDATE)
    assert accepted == [report_body(UPDATE, 4, "rpm failed")]  # exactly one
    assert state is UpdateState.REPORTED


async def test_a_report_while_the_node_is_down_is_sent_when_it_is_back(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with rvi_rig(tmp_path, sim, node, wait_registered=False) as rig:
        async with node.running():
            with anyio.fail_after(10):
                await rig.gateway.registered.wait()
            assert (await rig.backend.notify(UPDATE)).ok
        event = await rig.d.execute(SendUpdateReport(_report()))  # connection refused
        assert isinstance(event, ErrorEvent), event
        assert rig.d.journal.update_state(UPDATE) is UpdateState.REPORT_PENDING
        async with node.running():
            await rig.d.recorder.wait_for(lambda events: UpdateReportSent() in events)
            bodies = node.bodies(BACKEND_SERVICES["report"])
        state = rig.d.journal.update_state(UPDATE)
    assert bodies == [report_body(UPDATE, 4, "rpm failed")]
    assert state is UpdateState.REPORTED


async def test_getpackages_sends_the_installed_software_in_the_servers_form(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        assert (await rig.backend.notify(UPDATE)).ok
        answer = await rig.backend.getpackages()
        await node.wait_for(lambda: node.messages(BACKEND_SERVICES["packages"]))
        await rig.d.recorder.wait_for(lambda events: InstalledSoftwareSent() in events)
        (sent,) = node.messages(BACKEND_SERVICES["packages"])
    assert answer.body == {"jsonrpc": "2.0", "id": 1, "result": None}
    assert rig.software.calls == 1
    assert InstalledSoftwareNeeded() in rig.d.recorder.events
    assert sent.params["parameters"] == [
        {
            "device": DEVICE,
            "installed_software": {
                "packages": [
                    {
                        "package_id": "bluez-5.41",
                        "name": "bluez",
                        "description": "Bluetooth stack",
                        "last_modified": 7,
                    }
                ],
                "firmwares": [{"module": "ecu1", "firmware_id": "1.2.3", "last_modified": 9}],
            },
        }
    ]


async def test_a_failing_installed_software_is_logged_and_the_gateway_goes_on(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """What the SWLM (or the package manager) does wrong must not stop the gateway, let alone
    the daemon whose task group it runs in."""

    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        assert (await rig.backend.notify(UPDATE)).ok
        rig.software.error = RuntimeError("the SWLM's answer could not be converted")
        assert (await rig.backend.getpackages()).ok
        await rig.software.changes.wait_until(lambda: rig.software.calls)
        after = await rig.backend.services_available()
        node.push_on_start(rig.backend, {UPDATE: IMAGE})
        event = await download(rig)
        await node.wait_for(lambda: UPDATE in node.pushed)
    assert after.ok
    assert event == DownloadComplete(UPDATE, str(rig.d.image(UPDATE)), "", **IMAGE_METADATA)
    assert node.messages(BACKEND_SERVICES["packages"]) == []


async def test_the_backends_services_survive_a_restart(tmp_path: Path, sim: CoreSimulator) -> None:
    """The node delivers ``/sota/notify`` once: a restarted daemon still knows where reports go."""
    node = RviNode()
    async with node.running():
        async with rvi_rig(tmp_path, sim, node) as rig:
            assert (await rig.backend.notify(UPDATE)).ok
        async with rvi_rig(tmp_path, sim, node) as rig:
            event = await rig.d.execute(SendUpdateReport(_report()))
    assert event == UpdateReportSent()
    assert node.bodies(BACKEND_SERVICES["report"]) == [report_body(UPDATE, 4, "rpm failed")]


# -- fuzz ---------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_IDS = st.sampled_from(["u1", UPDATE, "", "../etc", ".x", "a/b", "ü" * 3]) | st.text(max_size=8)
_CHECKSUMS = st.sampled_from([sha1(b""), sha1(b"x"), "0" * 40, "A" * 40]) | st.text(max_size=41)
_B64 = st.binary(max_size=12).map(lambda data: base64.b64encode(data).decode())
_PARAMETER = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {
            "update_id": st.sampled_from(["u1", "u2"]),
            "checksum": _CHECKSUMS,
            "chunkscount": st.integers(-1, 3),
        }
    ),
    st.fixed_dictionaries(
        {
            "update_id": st.sampled_from(["u1", "u2"]),
            "bytes": _B64 | st.text(max_size=8),
            "index": st.integers(-1, 4),
        }
    ),
    st.fixed_dictionaries({"update_id": st.sampled_from(["u1", "u2"]), "signature": st.text()}),
    st.fixed_dictionaries(
        {"update_id": _IDS, "checksum": st.text(max_size=41), "chunkscount": st.integers()}
    ),
    st.fixed_dictionaries({"update_id": _IDS, "bytes": st.text(max_size=16), "index": _JSON}),
    st.fixed_dictionaries({"update_id": _IDS, "signature": _JSON}),
    st.fixed_dictionaries(
        {"update_available": st.dictionaries(st.text(max_size=8), _JSON), "services": _JSON}
    ),
)
_MESSAGE = st.fixed_dictionaries(
    {
        "jsonrpc": st.just("2.0"),
        "id": st.integers() | _JSON,
        "method": st.sampled_from(["message", "services_available"]) | st.text(max_size=8),
        "params": st.fixed_dictionaries(
            {
                "service_name": st.sampled_from(SERVICES) | st.text(max_size=12),
                "parameters": st.lists(_PARAMETER, max_size=2) | _JSON,
            }
        )
        | _JSON,
    }
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda value: json.dumps(value).encode()),
    _MESSAGE.map(lambda value: json.dumps(value).encode()),
)


async def test_hostile_bodies_always_get_a_json_rpc_answer_and_the_server_goes_on(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        edge = rig.edge_url()
        seen: list[tuple[bytes, int, bytes]] = []

        def fuzz() -> None:
            with httpx.Client(trust_env=False, timeout=10.0) as client:

                @settings(
                    max_examples=100,
                    deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow],
                )
                @given(body=_BODIES)
                def check(body: bytes) -> None:
                    response = client.post(
                        edge, content=body, headers={"Content-Type": "application/json"}
                    )
                    seen.append((body, response.status_code, response.content))
                    status = response.status_code
                    assert status == 200 or 400 <= status < 500, (body, response.content)
                    answer = response.json()
                    assert answer["jsonrpc"] == "2.0"
                    if status == 200:
                        assert answer["result"] is None
                    else:
                        assert isinstance(answer["error"]["code"], int)
                        assert isinstance(answer["error"]["message"], str)

                check()

        with anyio.fail_after(60):
            await anyio.to_thread.run_sync(fuzz)
        after = await rig.backend.services_available()
        await rig.d.idle()
    assert after.ok
    assert len(seen) >= 10


async def test_the_fuzz_does_not_stop_a_transfer_afterwards(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """After hostile messages to every service, a real transfer still completes."""
    node = RviNode()
    async with node.running(), rvi_rig(tmp_path, sim, node) as rig:
        hostile: list[Callable[[], Any]] = [
            lambda: rig.backend.message("/sota/chunk", {"update_id": UPDATE, "bytes": "!"}),
            lambda: rig.backend.message("/sota/finish", {"update_id": UPDATE, "signature": 1}),
            lambda: rig.backend.message("/sota/start", {"update_id": UPDATE, "checksum": "x"}),
            lambda: rig.backend.message("/sota/abort", {"update_id": "../x"}),
            lambda: rig.backend.message("/sota/notify", {"services": {}}),
        ]
        for send in hostile:
            answer = await send()
            assert 400 <= answer.status < 500, answer
            assert answer.error_code is not None, answer
        node.push_on_start(rig.backend, {UPDATE: IMAGE})
        assert (await rig.backend.notify(UPDATE)).ok
        event = await download(rig)
        await node.wait_for(lambda: UPDATE in node.pushed)
    assert event == DownloadComplete(UPDATE, str(rig.d.image(UPDATE)), "", **IMAGE_METADATA)
    assert all(a.ok for a in node.pushed[UPDATE])
