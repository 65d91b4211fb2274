"""A fake RVI node (``rvi_core``) answering the daemon as the real one did, and the 2016 SOTA
server's side of the edge: the exact messages recorded in gateways-observed.md."""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import h11
import httpx
from anyio.abc import SocketStream, TaskGroup

from .daemon_fixtures import Changes, free_port

__all__ = [
    "BACKEND_SERVICES",
    "CHUNK_SIZE",
    "NODE_PREFIX",
    "Answer",
    "Backend",
    "Call",
    "Failure",
    "RviNode",
    "chunks_of",
    "sha1",
]

NODE_PREFIX = "genivi.org/node/default_id"
"""What the node puts before a local service name when it registers it."""

BACKEND_SERVICES = {
    "start": "genivi.org/backend/sota/start",
    "ack": "genivi.org/backend/sota/ack",
    "report": "genivi.org/backend/sota/report",
    "packages": "genivi.org/backend/sota/packages",
}
"""The backend's services, as its ``/sota/notify`` announces them."""

CHUNK_SIZE = 64 * 1024
"""The 2016 server's chunk size."""

Reaction = Callable[[Any], Coroutine[Any, Any, None]]
Plan = Callable[["Backend", str, bytes], Awaitable[list["Answer"]]]


class Failure(enum.Enum):
    """How the node fails every call while :attr:`RviNode.failure` is set."""

    HTTP_500 = "HTTP 500"
    HTTP_400 = "HTTP 400"
    ERROR_OBJECT = "a JSON-RPC error object"


@dataclass(frozen=True)
class Call:
    """One JSON-RPC call the node received, and whether it answered it with success."""

    request: Any  # the decoded JSON (a string when the body was not JSON)
    accepted: bool
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased

    @property
    def method(self) -> str | None:
        method = self.request.get("method") if isinstance(self.request, dict) else None
        return method if isinstance(method, str) else None

    @property
    def params(self) -> dict[str, Any]:
        params = self.request.get("params") if isinstance(self.request, dict) else None
        return params if isinstance(params, dict) else {}


def sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def chunks_of(image: bytes) -> dict[int, bytes]:
    """The 2016 server's chunks of an image, numbered from 1."""
    pieces = [image[at : at + CHUNK_SIZE] for at in range(0, len(image), CHUNK_SIZE)] or [b""]
    return {index: piece for index, piece in enumerate(pieces, start=1)}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class RviNode:
    """``async with node.running():`` serves HTTP/1.1 JSON-RPC on ``node.url`` as ``rvi_core``.

    Every call is kept in :attr:`calls`. The port is fixed at construction, so a node that is
    not running refuses connections there and can come up later on the same address.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.calls: list[Call] = []
        self.failure: Failure | None = None
        self.changes = Changes()
        self.pushed: dict[str, list[Answer]] = {}  # update id -> the edge's answers to its push
        self._reactions: dict[str, Reaction] = {}
        self._tg: TaskGroup | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RviNode]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(listener.serve, self._serve_connection, tg)
            try:
                yield self
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    # -- what the node received ---------------------------------------------------------------

    def registrations(self, *, accepted: bool = True) -> list[dict[str, Any]]:
        """The params of the ``register_service`` calls (those answered with success)."""
        return [
            call.params
            for call in self.calls
            if call.method == "register_service" and (call.accepted or not accepted)
        ]

    def messages(self, service: str | None = None, *, accepted: bool = True) -> list[Call]:
        """The ``message`` calls to ``service`` (any when None); only those answered with
        success unless ``accepted`` is false."""
        return [
            call
            for call in self.calls
            if call.method == "message"
            and (service is None or call.params.get("service_name") == service)
            and (call.accepted or not accepted)
        ]

    def bodies(self, service: str) -> list[Any]:
        """``parameters[0]`` of each accepted message to ``service``: what the backend got."""
        return [call.params["parameters"][0] for call in self.messages(service)]

    async def wait_for(self, predicate: Callable[[], object], within: float = 10.0) -> None:
        await self.changes.wait_until(predicate, within)

    # -- playing the backend ------------------------------------------------------------------

    def on_message(self, service: str, reaction: Reaction) -> None:
        """Run ``reaction(parameters[0])`` in the node's task group for each accepted message
        to ``service`` (as the backend behind the node acts on what it is sent)."""
        self._reactions[service] = reaction

    def push_on_start(
        self, backend: Backend, images: Mapping[str, bytes], plan: Plan | None = None
    ) -> None:
        """On each ``DownloadStarted`` at the backend's ``start``, push that update's image to
        the edge as the 2016 server did (or as ``plan`` says); the edge's answers go into
        :attr:`pushed`."""
        push = plan or (lambda peer, update_id, image: peer.push(update_id, image))

        async def started(body: Any) -> None:
            update_id = body["update_id"]
            if update_id in images:
                self.pushed[update_id] = await push(backend, update_id, images[update_id])
                self.changes.changed()

        self.on_message(BACKEND_SERVICES["start"], started)

    # -- serving --------------------------------------------------------------------------------

    async def _serve_connection(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while (request := await _read_request(conn, stream)) is not None:
                    status, reply = self._answer(*request)
                    head = h11.Response(
                        status_code=status,
                        headers=[
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(reply))),
                        ],
                    )
                    data = conn.send(head) or b""
                    data += conn.send(h11.Data(data=reply)) or b""
                    data += conn.send(h11.EndOfMessage()) or b""
                    await stream.send(data)
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError):
                return

    def _answer(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            request: Any = json.loads(body)
        except ValueError:
            request = body.decode("latin-1")
        failure = self.failure
        call = Call(request, failure is None, headers)
        request_id = request.get("id") if isinstance(request, dict) else None
        if failure is Failure.HTTP_500:
            answer: tuple[int, bytes] = (500, b'{"error":"internal server error"}')
        elif failure is Failure.HTTP_400:
            answer = (400, b'{"error":"bad request"}')
        elif failure is Failure.ERROR_OBJECT:
            error = {"code": -32000, "message": "Service unavailable", "data": "no route"}
            answer = (200, _json({"jsonrpc": "2.0", "id": request_id, "error": error}))
        elif call.method == "register_service":
            service = call.params.get("service")
            result = {"status": 0, "service": f"{NODE_PREFIX}{service}", "method": call.method}
            answer = (200, _json({"jsonrpc": "2.0", "id": request_id, "result": result}))
        elif call.method == "message":
            result = {"status": 0, "transaction_id": -1, "method": "message"}
            answer = (200, _json({"jsonrpc": "2.0", "id": request_id, "result": result}))
            reaction = self._reactions.get(call.params.get("service_name", ""))
            parameters = call.params.get("parameters")
            if reaction is not None and isinstance(parameters, list) and parameters:
                assert self._tg is not None
                self._tg.start_soon(reaction, parameters[0])
        else:
            call = Call(request, False, headers)
            error = {"code": -32601, "message": "Method not found"}
            answer = (200, _json({"jsonrpc": "2.0", "id": request_id, "error": error}))
        self.calls.append(call)
        self.changes.changed()
        return answer


async def _read_request(
    conn: h11.Connection, stream: SocketStream
) -> tuple[bytes, dict[str, str]] | None:
    """The body and headers of the next request, or None once the peer closed."""
    body = bytearray()
    headers: dict[str, str] = {}
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            headers = {name.decode(): value.decode("latin-1") for name, value in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body), headers
        elif isinstance(event, h11.ConnectionClosed):
            return None


# -- the backend's side of the edge -------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The edge server's answer: its status and its decoded JSON (the text if not JSON)."""

    status: int
    body: Any
    content_type: str | None = None

    @property
    def error_code(self) -> int | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, int) else None
        return None

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.body, dict) and "result" in self.body


class Backend:
    """The 2016 SOTA server behind the node: POSTs to the daemon's edge what the node delivered
    (``id`` 1, no ``timeout``, service names stripped of the node's prefix)."""

    def __init__(self, client: httpx.AsyncClient, edge_url: str) -> None:
        self.client = client
        self.edge_url = edge_url

    @classmethod
    @asynccontextmanager
    async def at(cls, edge_url: str) -> AsyncIterator[Backend]:
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            yield cls(client, edge_url)

    async def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> Answer:
        """Any body, as is, with ``Content-Type: application/json`` unless ``headers`` say."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        response = await self.client.post(self.edge_url, content=body, headers=sent)
        try:
            decoded: Any = response.json()
        except ValueError:
            decoded = response.text
        return Answer(response.status_code, decoded, response.headers.get("content-type"))

    async def message(self, service: str, parameter: Any) -> Answer:
        params = {"service_name": service, "parameters": [parameter]}
        return await self.post(
            _json({"jsonrpc": "2.0", "id": 1, "method": "message", "params": params})
        )

    async def services_available(self) -> Answer:
        params = {"services": [f"{NODE_PREFIX}/backend/sota/start"]}
        return await self.post(
            _json({"jsonrpc": "2.0", "id": 1, "method": "services_available", "params": params})
        )

    async def notify(
        self,
        update_id: str,
        *,
        description: str = "an update",
        request_confirmation: bool = False,
        size: int = 90,
    ) -> Answer:
        offer = {
            "update_id": update_id,
            "signature": "signature",
            "description": description,
            "request_confirmation": request_confirmation,
            "size": size,
        }
        parameter = {"update_available": offer, "services": BACKEND_SERVICES}
        return await self.message("/sota/notify", parameter)

    async def start(self, update_id: str, checksum: str, chunkscount: int) -> Answer:
        parameter = {"update_id": update_id, "checksum": checksum, "chunkscount": chunkscount}
        return await self.message("/sota/start", parameter)

    async def chunk(self, update_id: str, index: int, data: bytes) -> Answer:
        encoded = base64.b64encode(data).decode()
        return await self.message(
            "/sota/chunk", {"update_id": update_id, "bytes": encoded, "index": index}
        )

    async def finish(self, update_id: str, signature: str = "sig") -> Answer:
        return await self.message("/sota/finish", {"update_id": update_id, "signature": signature})

    async def getpackages(self) -> Answer:
        return await self.message("/sota/getpackages", None)

    async def abort(self) -> Answer:
        return await self.message("/sota/abort", None)

    async def push(
        self,
        update_id: str,
        image: bytes,
        *,
        order: Sequence[int] | None = None,
        checksum: str | None = None,
        finish: bool = True,
    ) -> list[Answer]:
        """start, the chunks (in ``order``, which may repeat or leave out indices), finish;
        returns the edge's answers in that order."""
        chunks = chunks_of(image)
        answers = [await self.start(update_id, checksum or sha1(image), len(chunks))]
        for index in order if order is not None else sorted(chunks):
            answers.append(await self.chunk(update_id, index, chunks[index]))
        if finish:
            answers.append(await self.finish(update_id))
        return answers
