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
    StartDownload,
)

pytestmark = pytest.mark.anyio

DOC = Path(__file__).parents[1] / "docs" / "gateways.md"


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
