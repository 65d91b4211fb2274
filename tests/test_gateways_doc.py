"""docs/gateways.md stays true: each documented exchange is sent to the real gateway as is."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import wsproto
import wsproto.events as ws

from sota_client.gateways._broadcast import Broadcaster
from sota_client.gateways._http import HttpGateway
from sota_client.gateways._websocket import WebsocketGateway
from swlm_sdk.protocol import (
    Command,
    DownloadComplete,
    ErrorEvent,
    Event,
    GetUpdateRequests,
    NoUpdateRequests,
    Package,
    StartDownload,
)

pytestmark = pytest.mark.anyio

DOC = Path(__file__).parents[1] / "docs" / "gateways.md"
SHA256 = "8f990ba0b577b51cf009ea049368c16bbda1b21e1b93be07a824758bb253c39b"


def exchanges(kind: str) -> list[tuple[str, ...]]:
    text = DOC.read_text()
    if kind == "http":
        pattern = r"<!-- exchange: http -->\n```http\n(.*?)```\n```http\n(.*?)```"
    else:
        pattern = r"<!-- exchange: websocket -->\n```text\n(.*?)```"
    found = [
        match if isinstance(match, tuple) else (match,)
        for match in re.findall(pattern, text, re.DOTALL)
    ]
    assert found, f"no {kind} exchange in {DOC.name}"
    return found


def wire(block: str) -> bytes:
    """A documented message as sent: CRLF after the start line and headers, the body as is."""
    head, _, body = block.partition("\n\n")
    return head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.removesuffix("\n").encode()


async def execute(command: Command) -> Event | None:
    """The daemon's answers in the doc's examples."""
    if isinstance(command, GetUpdateRequests):
        return NoUpdateRequests()
    if isinstance(command, StartDownload):
        path = f"/var/lib/sota/packages/{command.update_id}"
        if command.update_id == "u2":  # the update metadata of a listed update
            return DownloadComplete(
                "u2", path, "", sha256=SHA256, size=1048576, package=Package("fw", "1.4.2")
            )
        return DownloadComplete(command.update_id, path, "")
    return ErrorEvent("not in the doc")


@asynccontextmanager
async def serving(gateway: HttpGateway | WebsocketGateway) -> AsyncIterator[int]:
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.serve)
        yield gateway.port
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("exchange", exchanges("http"), ids=lambda e: e[0].split("\n")[-2][:30])
async def test_each_http_exchange_is_what_the_gateway_does(exchange: tuple[str, str]) -> None:
    request, response = exchange
    expected = wire(response)
    gateway = HttpGateway("127.0.0.1:0", execute, status=lambda: b"{}")
    async with serving(gateway) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(wire(request).replace(b"127.0.0.1:8888", f"127.0.0.1:{port}".encode()))
        received = b""
        with anyio.fail_after(10):
            while len(received) < len(expected):
                received += await stream.receive()
    assert received == expected


async def test_the_websocket_exchange_is_what_the_gateway_does() -> None:
    ((script,),) = exchanges("websocket")
    lines = script.strip().split("\n")
    gateway = WebsocketGateway("127.0.0.1:0", execute, Broadcaster(), allowed_origins=())
    async with serving(gateway) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send(client.send(ws.Request(host=f"127.0.0.1:{port}", target="/")))
        pending: list[ws.Event] = []

        async def next_event() -> ws.Event:
            while not pending:
                client.receive_data(await stream.receive())
                pending.extend(client.events())
            return pending.pop(0)

        with anyio.fail_after(10):
            assert isinstance(await next_event(), ws.AcceptConnection)
            for line in lines:
                direction, text = line[:1], line[2:]
                if direction == ">":
                    await stream.send(client.send(ws.TextMessage(data=text)))
                else:
                    event = await next_event()
                    assert isinstance(event, ws.TextMessage)
                    assert event.data == text


def blocks(marker: str) -> list[str]:
    """The code blocks after ``<!-- marker -->`` (and the one after that, for a pair)."""
    pattern = rf"<!-- {re.escape(marker)} -->\n```\w+\n(.*?)```(?:\n```\w+\n(.*?)```)?"
    found = re.findall(pattern, DOC.read_text(), re.DOTALL)
    assert found, f"no {marker} block in {DOC.name}"
    return [part for match in found for part in match if part]


def test_the_documented_introspection_is_what_the_dbus_gateway_answers() -> None:
    from sota_client._config_schema import DBusConfig
    from sota_client.gateways._dbus import DBusGateway

    (documented,) = blocks("dbus: introspection")
    gateway = DBusGateway(DBusConfig(), None, execute=execute, submit=lambda c: None)  # type: ignore[arg-type]
    answered = gateway._introspection("/org/genivi/SotaClient")
    assert answered.split("\n", 2)[2] == documented


def test_the_documented_edge_messages_are_accepted() -> None:
    from sota_client.gateways._rvi_rpc import Message, ServicesAvailable, parse_edge_request

    parsed = [parse_edge_request(block.encode()) for block in blocks("rvi: edge")]
    assert [p.service if isinstance(p, Message) else "services_available" for p in parsed] == [
        "/sota/notify",
        "/sota/start",
        "/sota/chunk",
        "/sota/finish",
        "/sota/getpackages",
        "services_available",
    ]
    assert isinstance(parsed[-1], ServicesAvailable)


def test_the_documented_edge_error_is_the_answer() -> None:
    from sota_client.gateways._rvi_rpc import RpcError, encode_error, parse_edge_request

    request, answer = blocks("rvi: error")
    with pytest.raises(RpcError) as caught:
        parse_edge_request(request.encode())
    assert encode_error(caught.value).decode() == answer.strip()


def test_the_documented_messages_to_the_node_are_what_the_daemon_sends() -> None:
    from sota_client.gateways._rvi_rpc import encode_message, encode_register, update_report
    from swlm_sdk.protocol import OperationResult, ResultCode, UpdateReport

    (register,) = blocks("rvi: register")
    assert encode_register(1796180000000000000, "http://127.0.0.1:9080", "/sota/start") == (
        register.strip().encode()
    )
    (message,) = blocks("rvi: message")
    report = UpdateReport(
        "d5b6fb49-7aa8-4a9f-bc25-b6be0c4f5f5e",
        (
            OperationResult(
                "0c24f1ca-2a9e-4c0f-a730-fd29f759db89", ResultCode.INSTALL_FAILED, "rpm failed"
            ),
        ),
    )
    body = update_report("123e4567-e89b-12d3-a456-426655440000", report)
    sent = encode_message(1796180000000000000, "genivi.org/backend/sota/report", body, 1796180060)
    assert sent == message.strip().encode()
