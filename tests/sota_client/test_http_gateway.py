"""The HTTP gateway over real TCP sockets: the 2016 contract (reference 8.2, 10.9) and additions.

A JSON command on any path and method gets 200 and its final event's JSON, byte for byte; bad
input gets its status and an ``Error`` event saying why; a page of another origin, a rebound
host name or a command that is not ``application/json`` is refused (cross-site request forgery);
``/``, ``/status`` and ``/events`` serve the HMI. No input can stop the server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sota_client.gateways._http import PAGE_POLICY, HttpGateway
from sota_client.gateways._socket import Execute
from swlm_sdk.protocol import (
    Authenticate,
    ClientCredentials,
    Command,
    ErrorEvent,
    Event,
    FoundSystemInfo,
    GetUpdateRequests,
    InstalledSoftware,
    ListInstalledPackages,
    ListSystemInfo,
    OperationResult,
    Package,
    ProtocolError,
    ResultCode,
    SendInstalledPackages,
    SendInstalledSoftware,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
    UpdateReport,
    decode_json_command,
)
from tests.sota_client.test_local_http import Reader, Response, connected, request

pytestmark = pytest.mark.anyio

JSON = (("Content-Type", "application/json"),)
STATUS = b'{"state":"idle"}'
PAGE = b"<!doctype html><title>HMI</title>"


def command(body: bytes, target: str = "/", method: str = "POST", *extra: tuple[str, str]) -> bytes:
    return request(method, target, body, (*JSON, *extra))


def dl(update_id: str) -> bytes:
    return b'{"variant":"StartDownload","fields":["%s"]}' % update_id.encode()


def error(text: str) -> bytes:
    return json.dumps({"variant": "Error", "fields": [text]}, separators=(",", ":")).encode()


async def echo(cmd: Command) -> Event | None:
    """The reference test's fake interpreter: StartDownload(id) -> FoundSystemInfo(id)."""
    if isinstance(cmd, Shutdown):
        return None
    if isinstance(cmd, StartDownload):
        return FoundSystemInfo(cmd.update_id)
    return ErrorEvent(f"unexpected {cmd.name}")


class Barrier:
    """Holds every command until ``parties`` of them run at once: proves they are concurrent."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_here = anyio.Event()

    async def execute(self, cmd: Command) -> Event | None:
        assert isinstance(cmd, StartDownload)
        self.arrived += 1
        if self.arrived == self.parties:
            self.all_here.set()
        await self.all_here.wait()
        return FoundSystemInfo(cmd.update_id)


class FakeEvents:
    """The broadcaster's side: event lines the test sends reach the subscriber."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[bytes](16)
        self.subscribed = anyio.Event()
        self.left = anyio.Event()

    def __enter__(self) -> FakeEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.send.close()
        self.receive.close()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[bytes]]:
        self.subscribed.set()
        try:
            yield self.receive
        finally:
            self.left.set()


@asynccontextmanager
async def serving(execute: Execute = echo, **kwargs: Any) -> AsyncIterator[HttpGateway]:
    kwargs.setdefault("status", lambda: STATUS)
    gateway = HttpGateway("127.0.0.1:0", execute, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.serve)
        yield gateway
        tg.cancel_scope.cancel()


async def exchange(port: int, data: bytes) -> Response:
    async with connected(port) as reader:
        await reader.stream.send(data)
        return await reader.response()


# -- the 2016 contract ---------------------------------------------------------------------------


async def test_a_command_gets_the_final_event_byte_for_byte() -> None:
    async with serving() as gateway, connected(gateway.port) as reader:
        await reader.stream.send(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8888\r\nContent-Type: application/json\r\n"
            b'Content-Length: 42\r\n\r\n{"variant":"StartDownload","fields":["1"]}'
        )
        response = await reader.response()
    assert response.raw == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: 44\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"\r\n"
        b'{"variant":"FoundSystemInfo","fields":["1"]}'
    )


async def test_reference_ten_concurrent_clients() -> None:
    """Reference 10.9: 10 concurrent POSTs of StartDownload(i), each gets FoundSystemInfo(i)."""
    await concurrent_clients(10)


async def test_a_hundred_concurrent_clients() -> None:
    await concurrent_clients(100, max_connections=100)


async def concurrent_clients(count: int, **kwargs: Any) -> None:
    barrier = Barrier(count)
    replies: dict[int, Response] = {}

    async def client(i: int) -> None:
        replies[i] = await exchange(gateway.port, command(dl(str(i))))

    async with serving(barrier.execute, **kwargs) as gateway:
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(client, i)
    assert {i: (r.status, r.body) for i, r in replies.items()} == {
        i: (200, b'{"variant":"FoundSystemInfo","fields":["%d"]}' % i) for i in range(count)
    }


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", "/"), ("PUT", "/any/path?q=1"), ("GET", "/api"), ("DELETE", "/"), ("PATCH", "/x")],
)
async def test_any_method_and_path_take_a_command(method: str, target: str) -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, command(dl("7"), target, method))
    assert (response.status, response.body) == (
        200,
        b'{"variant":"FoundSystemInfo","fields":["7"]}',
    )


async def test_a_command_body_wins_over_the_added_routes() -> None:
    """A 2016 peer could send its command anywhere, /status and /events included."""
    async with serving() as gateway:
        for target in ("/", "/status", "/events"):
            response = await exchange(gateway.port, command(dl("8"), target, "GET"))
            assert response.body == b'{"variant":"FoundSystemInfo","fields":["8"]}'


async def test_even_an_error_event_is_a_200() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, command(b'"ListSystemInfo"'))
    assert (response.status, response.body) == (200, error("unexpected ListSystemInfo"))


async def test_commands_on_one_connection_are_answered_in_order() -> None:
    async with serving() as gateway, connected(gateway.port) as reader:
        await reader.stream.send(command(dl("a")) + command(dl("b")))
        assert (await reader.response()).body == b'{"variant":"FoundSystemInfo","fields":["a"]}'
        assert (await reader.response()).body == b'{"variant":"FoundSystemInfo","fields":["b"]}'
        await reader.stream.send(command(dl("c")))
        assert (await reader.response()).body == b'{"variant":"FoundSystemInfo","fields":["c"]}'


async def test_shutdown_gets_an_empty_200_and_the_connection_ends() -> None:
    """2016 exited without answering; the peer now gets an empty answer, as on the socket."""
    async with serving() as gateway, connected(gateway.port) as reader:
        await reader.stream.send(command(b'"Shutdown"'))
        response = await reader.response()
        assert (response.status, response.body) == (200, b"")
        assert response.header("connection") == "close"
        assert await reader.at_eof() == b""


async def test_a_failing_execute_is_a_500_and_the_gateway_goes_on() -> None:
    async def execute(cmd: Command) -> Event | None:
        if isinstance(cmd, StartDownload) and cmd.update_id == "boom":
            raise RuntimeError("interpreter bug")
        return await echo(cmd)

    async with serving(execute) as gateway, connected(gateway.port) as reader:
        await reader.stream.send(command(dl("boom")))
        response = await reader.response()
        assert (response.status, response.body) == (
            500,
            error("Internal Server Error: the command failed unexpectedly; see the daemon's log"),
        )
        await reader.stream.send(command(dl("2")))  # the same connection still works
        assert (await reader.response()).status == 200


# -- bad input -----------------------------------------------------------------------------------

CODES = "Authenticate, GetUpdateRequests, ListInstalledPackages, ListSystemInfo, SendSystemInfo, "
CODES += "Shutdown, StartDownload, StartInstall, SendInstalledPackages, SendInstalledSoftware, "
CODES += "SendUpdateReport"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        pytest.param(
            b"",
            "no command in the request body; send one such as "
            '{"variant":"GetUpdateRequests","fields":[]}',
            id="empty",
        ),
        pytest.param(
            b"dl 1",
            "command is not valid JSON: JSON is malformed: invalid character (byte 0)",
            id="text-grammar",
        ),
        pytest.param(
            b'"Start\xffDownload"',
            "command is not valid JSON: Invalid UTF-8 encoded string",
            id="not-utf8",
        ),
        pytest.param(
            b"42",
            'a command must be a JSON string such as "GetUpdateRequests" or an object such as '
            '{"variant":"GetUpdateRequests","fields":[]}',
            id="number",
        ),
        pytest.param(
            b'{"fields":[]}',
            'a command object needs a string "variant", as in '
            '{"variant":"GetUpdateRequests","fields":[]}',
            id="no-variant",
        ),
        pytest.param(
            b'"Foo"', f"unknown command 'Foo'; the commands are {CODES}", id="unknown-name"
        ),
        pytest.param(
            b'"dl"', f"unknown command 'dl'; the commands are {CODES}", id="alias-is-not-json"
        ),
        pytest.param(
            b'{"variant":"StartDownload"}',
            'command StartDownload needs "fields": [<its argument>]',
            id="no-fields",
        ),
        pytest.param(
            b'{"variant":"StartDownload","fields":"1"}',
            'command StartDownload: "fields" must be a list',
            id="fields-not-a-list",
        ),
        pytest.param(
            b'{"variant":"StartDownload","fields":[]}',
            "command StartDownload takes 1 field, got 0",
            id="too-few",
        ),
        pytest.param(
            b'{"variant":"StartInstall","fields":["1","2"]}',
            "command StartInstall takes 1 field, got 2",
            id="too-many",
        ),
        pytest.param(
            b'{"variant":"StartDownload","fields":[1]}',
            "command StartDownload: Expected `str`, got `int`",
            id="wrong-type",
        ),
        pytest.param(
            b'{"variant":"StartDownload","fields":[["1"]]}',
            "command StartDownload: Expected `str`, got `array`",
            id="2016-websocket-test-form",
        ),
        pytest.param(
            b'{"variant":"Shutdown","fields":[1]}',
            "command Shutdown takes no fields, got 1",
            id="unit-with-fields",
        ),
        pytest.param(
            b'{"variant":"StartDownload","fields":["../etc/passwd"]}',
            "Invalid update id '../etc/passwd': it starts with '.'",
            id="id-with-dots",
        ),
        pytest.param(
            b'{"variant":"StartInstall","fields":["a/b"]}',
            "Invalid update id 'a/b': it contains '/'",
            id="id-with-slash",
        ),
        pytest.param(
            b'{"variant":"SendUpdateReport","fields":[{"update_id":"","operation_results":[]}]}',
            "Invalid update id '': it is empty",
            id="report-id-empty",
        ),
        pytest.param(
            b'{"variant":"SendUpdateReport","fields":[{"update_id":"u1","operation_results":'
            b'[{"id":"u1","result_code":"NOPE","result_text":""}]}]}',
            "unknown result code 'NOPE': expected 0-19 or a name such as OK, INSTALL_FAILED or "
            "GENERAL_ERROR",
            id="bad-result-code",
        ),
        pytest.param(
            b'{"variant":"SendInstalledPackages","fields":[[{"name":"gcc"}]]}',
            "command SendInstalledPackages: Object missing required field `version` - at `$[0]`",
            id="package-without-version",
        ),
    ],
)
async def test_malformed_commands_get_a_400_saying_why(body: bytes, text: str) -> None:
    async with serving() as gateway, connected(gateway.port) as reader:
        await reader.stream.send(command(body))
        response = await reader.response()
        assert (response.status, response.body) == (400, error(f"Bad Request: {text}"))
        assert response.header("content-type") == "application/json; charset=utf-8"
        # Bad input costs nothing: the connection takes the next command.
        await reader.stream.send(command(dl("1")))
        assert (await reader.response()).status == 200


async def test_a_get_without_a_body_elsewhere_is_a_400_as_in_2016() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, request("GET", "/favicon.ico"))
    assert response.status == 400


async def test_an_oversized_command_is_a_413_in_the_error_form() -> None:
    async with serving(max_body=100) as gateway, connected(gateway.port) as reader:
        await reader.stream.send(command(b'"' + b"x" * 200 + b'"'))
        response = await reader.response()
        assert (response.status, response.body) == (
            413,
            error("Request Entity Too Large: request body of 202 bytes: the limit is 100 bytes"),
        )
        assert await reader.at_eof() == b""


async def test_a_slow_command_is_a_408_in_the_error_form() -> None:
    async with serving(read_timeout=0.05) as gateway, connected(gateway.port) as reader:
        await reader.stream.send(command(dl("1"))[:-5])  # the body never ends
        response = await reader.response()
        assert (response.status, response.body) == (
            408,
            error("Request Timeout: no complete request within 0.05 s"),
        )


async def test_malformed_http_is_a_400_in_the_error_form() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, b"\x16\x03\x01 TLS hello\r\n\r\n")
    assert response.status == 400
    assert response.body.startswith(b'{"variant":"Error","fields":["Bad Request: malformed HTTP')


# -- guards for the browser --------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_command_needs_the_json_content_type(content_type: str | None) -> None:
    """A page of any origin can POST these types without asking (a "simple" request)."""
    headers = (("Content-Type", content_type),) if content_type else ()
    async with serving() as gateway:
        response = await exchange(gateway.port, request("POST", "/", dl("1"), headers))
    shown = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
    assert (response.status, response.body) == (
        415,
        error(
            f"Unsupported Media Type: a command needs Content-Type: application/json, not {shown}"
        ),
    )


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json ;x=1"]
)
async def test_json_content_types_with_parameters_are_accepted(content_type: str) -> None:
    async with serving() as gateway:
        response = await exchange(
            gateway.port, request("POST", "/", dl("1"), (("Content-Type", content_type),))
        )
    assert response.status == 200


async def test_a_page_of_another_origin_is_refused() -> None:
    async with serving() as gateway:
        response = await exchange(
            gateway.port, command(dl("1"), "/", "POST", ("Origin", "http://evil.example"))
        )
    assert (response.status, response.body) == (
        403,
        error(
            "Forbidden: the web page at http://evil.example may not use the local API; allow it "
            "in network.local_api_origins"
        ),
    )


async def test_the_gateways_own_pages_and_the_allowed_origins_may_use_it() -> None:
    async with serving(allowed_origins=["http://hmi.example:8080"]) as gateway:
        for origin in (
            f"http://127.0.0.1:{gateway.port}",
            f"http://localhost:{gateway.port}",
            "http://hmi.example:8080",
        ):
            response = await exchange(
                gateway.port, command(dl("1"), "/", "POST", ("Origin", origin))
            )
            assert response.status == 200, origin
        assert gateway.origins[:2] == (
            f"http://127.0.0.1:{gateway.port}",
            f"http://localhost:{gateway.port}",
        )


async def test_reads_are_refused_to_other_origins_too() -> None:
    async with serving(hmi_page=PAGE) as gateway:
        for target in ("/", "/status"):
            response = await exchange(
                gateway.port, request("GET", target, headers=(("Origin", "http://evil.example"),))
            )
            assert response.status == 403


async def test_a_rebound_host_name_is_refused() -> None:
    """DNS rebinding: a page whose name now points at 127.0.0.1 reads with its own name."""
    async with serving() as gateway:
        data = b"GET /status HTTP/1.1\r\nHost: evil.example:8888\r\n\r\n"
        response = await exchange(gateway.port, data)
    assert (response.status, response.body) == (
        403,
        error(
            "Forbidden: Host 'evil.example:8888' is not this device; use its IP address or "
            "localhost"
        ),
    )


# -- the added routes ------------------------------------------------------------------------------


async def test_the_hmi_page_is_served_with_a_strict_policy() -> None:
    async with serving(hmi_page=PAGE) as gateway, connected(gateway.port) as reader:
        await reader.stream.send(request("GET", "/"))
        page = await reader.response()
        await reader.stream.send(request("HEAD", "/"))
        head = await reader.response(head_only=True)
    assert (page.status, page.body) == (200, PAGE)
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert page.header("x-content-type-options") == "nosniff"
    assert page.header("content-security-policy") == PAGE_POLICY
    assert "frame-ancestors 'none'" in PAGE_POLICY
    assert head.status == 200
    assert head.header("content-length") == str(len(PAGE))


async def test_no_hmi_page_is_a_404() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, request("GET", "/"))
    assert (response.status, response.body) == (
        404,
        error("Not Found: this daemon serves no HMI page"),
    )


async def test_status_is_the_status_json() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, request("GET", "/status?fresh=1"))
    assert (response.status, response.body) == (200, STATUS)
    assert response.header("content-type") == "application/json; charset=utf-8"
    assert response.header("cache-control") == "no-store"


async def test_a_failing_status_is_a_500() -> None:
    def status() -> bytes:
        raise OSError("journal gone")

    async with serving(status=status) as gateway:
        response = await exchange(gateway.port, request("GET", "/status"))
    assert (response.status, response.body) == (
        500,
        error("Internal Server Error: the status could not be read; see the daemon's log"),
    )


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("DELETE", "/status", "GET, HEAD"),
        ("POST", "/status", "GET, HEAD"),
        ("PUT", "/events", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD, POST"),
    ],
)
async def test_other_methods_on_the_routes_are_a_405(method: str, target: str, allow: str) -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, request(method, target, length=False))
    assert (response.status, response.header("allow")) == (405, allow)
    assert response.body == error(f"Method Not Allowed: {target} takes {allow}")


async def test_a_post_to_the_root_without_a_body_is_a_400_as_in_2016() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, request("POST", "/", headers=JSON))
    assert response.status == 400


# -- server-sent events ----------------------------------------------------------------------------


async def read_chunk(reader: Reader) -> bytes:
    size = int((await reader.until(b"\r\n"))[:-2], 16)
    data = await reader.exactly(size)
    assert await reader.exactly(2) == b"\r\n"
    return data


async def test_events_reach_a_subscriber_with_keep_alives() -> None:
    with FakeEvents() as events:
        async with (
            serving(events=events.subscribe, keepalive_interval=0.01) as gateway,
            connected(gateway.port) as reader,
        ):
            await reader.stream.send(request("GET", "/events"))
            status, headers, _ = await reader.head()
            assert status == 200
            assert ("content-type", "text/event-stream") in headers
            assert ("transfer-encoding", "chunked") in headers
            assert ("cache-control", "no-store") in headers
            await events.send.send(b'"Authenticated"')
            await events.send.send(b'{"variant":"DownloadingUpdate","fields":["1"]}\n')
            seen: list[bytes] = []
            while (
                len([c for c in seen if c.startswith(b"data:")]) < 2
                or b": keep-alive\n\n" not in seen
            ):
                seen.append(await read_chunk(reader))
            assert [c for c in seen if c.startswith(b"data:")] == [
                b'data: "Authenticated"\n\n',
                b'data: {"variant":"DownloadingUpdate","fields":["1"]}\n\n',
            ]
            assert set(seen) <= {
                b": keep-alive\n\n",
                b'data: "Authenticated"\n\n',
                b'data: {"variant":"DownloadingUpdate","fields":["1"]}\n\n',
            }
            # The broadcaster drops the subscriber: the stream ends, and so does the connection.
            events.send.close()
            while (chunk := await read_chunk(reader)) != b"":
                assert chunk == b": keep-alive\n\n"
            assert await reader.at_eof() == b""


async def test_a_subscriber_that_leaves_is_unsubscribed() -> None:
    with FakeEvents() as events:
        async with serving(events=events.subscribe) as gateway:
            async with connected(gateway.port) as reader:
                await reader.stream.send(request("GET", "/events"))
                assert (await reader.head())[0] == 200
            with anyio.fail_after(10):
                await events.left.wait()
            assert (await exchange(gateway.port, command(dl("1")))).status == 200


async def test_no_events_is_a_404() -> None:
    async with serving() as gateway:
        response = await exchange(gateway.port, request("GET", "/events"))
    assert response.status == 404


async def test_a_head_of_events_does_not_subscribe() -> None:
    with FakeEvents() as events:
        async with serving(events=events.subscribe) as gateway:
            response = await exchange(gateway.port, request("HEAD", "/events"))
        assert response.status == 200
        assert response.header("content-type") == "text/event-stream"
        assert not events.subscribed.is_set()


# -- connections -------------------------------------------------------------------------------


async def test_idle_peers_cannot_exhaust_the_connections() -> None:
    async with serving(max_connections=4) as gateway:
        async with (
            connected(gateway.port),
            connected(gateway.port),
            connected(gateway.port),
            connected(gateway.port),
        ):
            response = await exchange(gateway.port, command(dl("1")))
    assert (response.status, response.body) == (
        200,
        b'{"variant":"FoundSystemInfo","fields":["1"]}',
    )


async def test_a_full_gateway_answers_503_in_the_error_form() -> None:
    release = anyio.Event()
    running = Barrier(2)

    async def execute(cmd: Command) -> Event | None:
        await running.execute(cmd)
        await release.wait()
        return await echo(cmd)

    async with serving(execute, max_connections=2) as gateway:
        async with connected(gateway.port) as one, connected(gateway.port) as two:
            for reader in (one, two):
                await reader.stream.send(command(dl("1")))
            with anyio.fail_after(10):
                await running.all_here.wait()
            async with connected(gateway.port) as third:
                response = await third.response()
            release.set()
            for reader in (one, two):
                assert (await reader.response()).status == 200
    assert (response.status, response.body) == (
        503,
        error("Service Unavailable: too many connections to the http gateway; try again"),
    )


# -- the JSON form of commands (reference 2.5) -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"variant":"GetUpdateRequests","fields":[]}', GetUpdateRequests()),
        ('"GetUpdateRequests"', GetUpdateRequests()),
        ('{"variant":"ListInstalledPackages"}', ListInstalledPackages()),
        ('"ListSystemInfo"', ListSystemInfo()),
        ('"SendSystemInfo"', SendSystemInfo()),
        ('{"variant":"Shutdown","fields":[],"extra":1}', Shutdown()),
        ('{"variant":"StartDownload","fields":["f4e2-uuid"]}', StartDownload("f4e2-uuid")),
        ('{"variant":"StartInstall","fields":["1"]}', StartInstall("1")),
        ('{"variant":"Authenticate","fields":[null]}', Authenticate()),
        ('{"variant":"Authenticate","fields":[]}', Authenticate()),
        ('"Authenticate"', Authenticate()),
        (
            '{"variant":"Authenticate","fields":[{"client_id":"u","client_secret":"p"}]}',
            Authenticate(ClientCredentials("u", "p")),
        ),
        (
            '{"variant":"SendInstalledPackages","fields":[[{"name":"gcc","version":"7.63"}]]}',
            SendInstalledPackages((Package("gcc", "7.63"),)),
        ),
        (
            '{"variant":"SendUpdateReport","fields":[{"update_id":"u1","operation_results":'
            '[{"id":"u1","result_code":"OK","result_text":""}]}]}',
            SendUpdateReport(UpdateReport("u1", (OperationResult("u1", ResultCode.OK, ""),))),
        ),
        (
            '{"variant":"SendUpdateReport","fields":[{"operation_results":'
            '[{"result_text":"no","result_code":4,"id":"x"}],"update_id":"u1"}]}',
            SendUpdateReport(
                UpdateReport("u1", (OperationResult("x", ResultCode.INSTALL_FAILED, "no"),))
            ),
        ),
        (
            '{"variant":"SendInstalledSoftware","fields":[{"packages":[],"firmwares":[]}]}',
            SendInstalledSoftware(InstalledSoftware()),
        ),
    ],
)
def test_the_2016_json_forms_decode(text: str, expected: Command) -> None:
    assert decode_json_command(text) == expected
    assert decode_json_command(text.encode()) == expected


def test_deep_nesting_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_json_command("[" * 100_000 + "]" * 100_000)


# -- fuzzing: no input stops the server -----------------------------------------------------------

VALID = command(dl("1"))
ANSWER = b'{"variant":"FoundSystemInfo","fields":["1"]}'


@pytest.fixture(scope="module")
def fuzzed_port(anyio_backend: str) -> Iterator[int]:
    """One gateway, in a thread, for every example of a fuzz run."""
    with FakeEvents() as events:
        with anyio.from_thread.start_blocking_portal(anyio_backend) as portal:
            gateway = HttpGateway(
                "127.0.0.1:0",
                echo,
                status=lambda: STATUS,
                events=events.subscribe,
                hmi_page=PAGE,
                max_body=4096,
                read_timeout=5.0,
            )
            future, _ = portal.start_task(gateway.serve)
            yield gateway.port
            future.cancel()


def poke(port: int, data: bytes) -> None:
    """Send ``data``, end the input, and read whatever comes until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:  # a timeout is a failure: the server neither answered nor closed
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except ConnectionError:  # it closed while we still sent: fine
            pass


def still_answers(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(VALID)
        sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\n" + ANSWER)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([VALID, request("GET", "/events"), request("GET", "/")])))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["replace", "insert", "delete", "cut", "repeat"])):
            case "replace" if at < len(data):
                data[at] = draw(st.integers(0, 255))
            case "insert":
                data[at:at] = draw(st.sampled_from([b"\r\n", b":", b" ", b"\x00", b"\xff", b"9"]))
            case "delete":
                del data[at : at + draw(st.integers(1, 8))]
            case "cut":
                del data[at:]
            case "repeat":
                data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 50))
    return bytes(data)


HEADERS = st.sampled_from(
    [
        b"Content-Length: 5\r\n",
        b"Content-Length: 99999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
        b"Origin: http://evil.example\r\n",
        b"Content-Type: application/json\r\n",
        b"Host: 127.0.0.1\r\n",
    ]
)


@st.composite
def assembled_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"OPTIONS"]))
    target = draw(st.sampled_from([b"/", b"/status", b"/events", b"*", b"http://x/", b"/%00"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "]))
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(draw(st.lists(HEADERS, max_size=5)))
    body = draw(st.sampled_from([b"", dl("1"), b"5\r\nhello\r\n0\r\n\r\n", b'"Shutdown"']))
    return head + b"\r\n" + body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(st.binary(max_size=2048), mutated_requests(), assembled_requests()),
    keep=st.booleans(),
)
def test_no_bytes_stop_the_server(fuzzed_port: int, data: bytes, keep: bool) -> None:
    poke(fuzzed_port, data + (VALID if keep else b""))
    still_answers(fuzzed_port)
