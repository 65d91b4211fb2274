"""The anyio D-Bus connection against a real dbus-daemon (and a fake bus for broken streams).

Every test runs on asyncio and on trio; waits are events under deadlines, never sleeps.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from jeepney import (
    DBusAddress,
    DBusNameFlags,
    HeaderFields,
    MatchRule,
    MessageFlag,
    MessageType,
    Parser,
    new_error,
    new_method_call,
    new_method_return,
    new_signal,
)
from jeepney.low_level import Message

from sota_client.gateways._dbus_connection import (
    MAX_MESSAGE_BYTES,
    SYSTEM_BUS_DEFAULT,
    DBusConnection,
    DBusError,
    bus_address,
)
from tests.sota_client.dbus_fixtures import Bus, bus_env, dbus_bus, start_bus

__all__ = ["dbus_bus"]  # the fixture, imported by name

SERVICE = "org.example.SotaTest"
PATH = "/org/example/SotaTest"
INTERFACE = "org.example.SotaTest1"
TARGET = DBusAddress(PATH, bus_name=SERVICE, interface=INTERFACE)
DISCONNECTED = "org.freedesktop.DBus.Error.Disconnected"
LOGGER = "sota_client.gateways._dbus_connection"

Handler = Callable[[Message], Awaitable[Message | None]]


def to(owner: DBusConnection, method: str, signature: str | None = None, body: Any = ()) -> Any:
    """A call of ``method`` on the test interface, addressed to ``owner``'s unique name."""
    address = DBusAddress(PATH, bus_name=owner.unique_name, interface=INTERFACE)
    return new_method_call(address, method, signature, body)


async def echo(message: Message) -> Message:
    """Answers Echo(s, aa{sv}) with the string reversed and every dict's keys."""
    member = message.header.fields[HeaderFields.member]
    if member == "Fail":
        return new_error(message, "org.example.Error.Nope", "s", ("no way: tried",))
    if member == "Crash":
        raise RuntimeError("handler bug")
    if member == "BadReply":
        return new_method_return(message, "u", ("not a number",))
    text, dicts = message.body
    keys = [sorted(item) for item in dicts]
    return new_method_return(message, "saas", (text[::-1], keys))


@asynccontextmanager
async def pair(
    bus: Bus, handler: Handler | None = echo, max_handlers: int = 16
) -> AsyncIterator[tuple[DBusConnection, DBusConnection]]:
    """A serving connection (with ``handler``) and a client connection on ``bus``."""
    async with (
        DBusConnection.open(bus.address, method_handler=handler, max_handlers=max_handlers) as a,
        DBusConnection.open(bus.address) as b,
    ):
        yield a, b


class Gate:
    """A handler that stays inside its call until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.calls = 0

    async def __call__(self, message: Message) -> Message:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return new_method_return(message, "s", ("done",))


# -- calls -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_call_reaches_the_other_connection_and_returns_its_reply(dbus_bus: Bus) -> None:
    seen: list[Message] = []

    async def handler(message: Message) -> Message | None:
        seen.append(message)
        return await echo(message)

    with anyio.fail_after(10):
        async with pair(dbus_bus, handler) as (server, client):
            assert server.unique_name.startswith(":")
            assert client.unique_name.startswith(":")
            assert server.unique_name != client.unique_name
            dicts = [{"b": ("s", "x"), "a": ("u", 7)}, {}]
            reply = await client.call(to(server, "Echo", "saa{sv}", ("héllo", dicts)), timeout=5)
    assert reply.header.message_type is MessageType.method_return
    assert reply.body == ("olléh", [["a", "b"], []])
    assert seen[0].header.fields[HeaderFields.sender] == client.unique_name
    assert seen[0].body == ("héllo", dicts)


@pytest.mark.anyio
async def test_concurrent_large_calls_never_interleave(dbus_bus: Bus) -> None:
    results: dict[int, Any] = {}

    async with pair(dbus_bus) as (server, client):

        async def one(n: int) -> None:
            text = str(n) * 100_000
            reply = await client.call(to(server, "Echo", "saa{sv}", (text, [])), timeout=10)
            results[n] = reply.body[0]

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(one, n)
    assert results == {n: (str(n) * 100_000)[::-1] for n in range(20)}


@pytest.mark.anyio
async def test_an_error_reply_raises_dbus_error_with_its_name_and_text(dbus_bus: Bus) -> None:
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (server, client):
            with pytest.raises(DBusError) as caught:
                await client.call(to(server, "Fail"), timeout=5)
    assert caught.value.name == "org.example.Error.Nope"
    assert caught.value.text == "no way: tried"
    assert str(caught.value) == (
        f"D-Bus call {INTERFACE}.Fail failed: org.example.Error.Nope: no way: tried"
    )
    assert not caught.value.transient


@pytest.mark.anyio
async def test_no_reply_within_the_timeout_raises_no_reply(dbus_bus: Bus) -> None:
    gate = Gate()
    with anyio.fail_after(10):
        async with pair(dbus_bus, gate) as (server, client):
            with pytest.raises(DBusError) as caught:
                await client.call(to(server, "Wait"), timeout=0.3)
            assert gate.entered.is_set()
            # The connection is still fine afterwards, and the late reply is dropped.
            gate.release.set()
            reply = await client.call(to(server, "Wait"), timeout=5)
            assert reply.body == ("done",)
    assert caught.value.name == "org.freedesktop.DBus.Error.NoReply"
    assert caught.value.transient
    assert "no reply within 0.3 s" in str(caught.value)


@pytest.mark.anyio
async def test_a_call_to_a_name_nobody_owns_raises_service_unknown(dbus_bus: Bus) -> None:
    with anyio.fail_after(10):
        async with DBusConnection.open(dbus_bus.address) as client:
            with pytest.raises(DBusError) as caught:
                await client.call(new_method_call(TARGET, "Echo"), timeout=5)
    assert caught.value.name == "org.freedesktop.DBus.Error.ServiceUnknown"
    assert SERVICE in caught.value.text
    assert str(caught.value).startswith(
        f"D-Bus call {INTERFACE}.Echo failed: org.freedesktop.DBus.Error.ServiceUnknown: "
    )


@pytest.mark.anyio
async def test_a_call_by_well_known_name_reaches_its_owner(dbus_bus: Bus) -> None:
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (server, client):
            assert await server.request_name(SERVICE, 0) == 1
            reply = await client.call(
                new_method_call(TARGET, "Echo", "saa{sv}", ("ab", [])), timeout=5
            )
    assert reply.body == ("ba", [])
    assert reply.header.fields[HeaderFields.sender] == server.unique_name


@pytest.mark.anyio
async def test_ping_is_answered_by_the_connection_and_unknown_methods_are_refused(
    dbus_bus: Bus,
) -> None:
    with anyio.fail_after(10):
        async with pair(dbus_bus, handler=None) as (server, client):
            peer = DBusAddress(
                "/", bus_name=server.unique_name, interface="org.freedesktop.DBus.Peer"
            )
            reply = await client.call(new_method_call(peer, "Ping"), timeout=5)
            with pytest.raises(DBusError) as caught:
                await client.call(to(server, "Echo"), timeout=5)
    assert reply.header.message_type is MessageType.method_return
    assert reply.body == ()
    assert caught.value.name == "org.freedesktop.DBus.Error.UnknownMethod"
    assert f"{INTERFACE}.Echo" in caught.value.text


@pytest.mark.anyio
async def test_call_refuses_messages_that_get_no_reply(dbus_bus: Bus) -> None:
    async with DBusConnection.open(dbus_bus.address) as client:
        signal = new_signal(DBusAddress(PATH, interface=INTERFACE), "Changed")
        with pytest.raises(ValueError, match="method call"):
            await client.call(signal, timeout=1)
        quiet = new_method_call(TARGET, "Echo")
        quiet.header.flags |= MessageFlag.no_reply_expected
        with pytest.raises(ValueError, match="NO_REPLY_EXPECTED"):
            await client.call(quiet, timeout=1)


@pytest.mark.anyio
async def test_a_message_that_cannot_be_encoded_raises_dbus_error(dbus_bus: Bus) -> None:
    async with DBusConnection.open(dbus_bus.address) as client:
        with pytest.raises(DBusError) as caught:
            await client.call(to(client, "Echo", "u", ("not a number",)), timeout=1)
        assert caught.value.name == "org.freedesktop.DBus.Error.Failed"
        # Nothing half-written: the connection still works.
        assert await client.name_has_owner(client.unique_name) == client.unique_name


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_name_owner_queue_and_refusal(dbus_bus: Bus) -> None:
    with anyio.fail_after(10):
        async with (
            DBusConnection.open(dbus_bus.address) as first,
            DBusConnection.open(dbus_bus.address) as second,
            DBusConnection.open(dbus_bus.address) as third,
        ):
            assert await first.request_name(SERVICE, 0) == 1
            assert await first.request_name(SERVICE, 0) == 4
            assert await second.request_name(SERVICE, 0) == 2
            assert await third.request_name(SERVICE, DBusNameFlags.do_not_queue) == 3


@pytest.mark.anyio
async def test_name_has_owner_is_none_then_the_owners_unique_name(dbus_bus: Bus) -> None:
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (server, client):
            assert await client.name_has_owner(SERVICE) is None
            await server.request_name(SERVICE, 0)
            assert await client.name_has_owner(SERVICE) == server.unique_name
            assert await client.name_has_owner("org.freedesktop.DBus") == "org.freedesktop.DBus"


# -- signals -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_add_match_sees_a_name_appear(dbus_bus: Bus) -> None:
    changes: list[tuple[str, str, str]] = []
    appeared = anyio.Event()

    def on_owner_changed(message: Message) -> None:
        changes.append(message.body)
        appeared.set()

    rule = MatchRule(
        type="signal",
        sender="org.freedesktop.DBus",
        interface="org.freedesktop.DBus",
        member="NameOwnerChanged",
    )
    rule.add_arg_condition(0, SERVICE)
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (server, watcher):
            await watcher.add_match(rule, on_owner_changed)
            await server.request_name(SERVICE, 0)
            await appeared.wait()
    assert changes == [(SERVICE, "", server.unique_name)]


@pytest.mark.anyio
async def test_signals_reach_only_matching_handlers_and_a_failing_handler_is_contained(
    dbus_bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Any] = []
    other: list[Any] = []
    done = anyio.Event()

    def broken(message: Message) -> None:
        raise RuntimeError("signal handler bug")

    def collect(message: Message) -> None:
        got.append(message.body)
        if message.body == ("last",):
            done.set()

    emitter = DBusAddress(PATH, interface=INTERFACE)
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (sender, receiver):
            rule = MatchRule(type="signal", interface=INTERFACE, member="Changed")
            await receiver.add_match(rule, broken)
            await receiver.add_match(rule, collect)
            await receiver.add_match(
                MatchRule(type="signal", interface=INTERFACE, member="Other"), other.append
            )
            await sender.send(new_signal(emitter, "Changed", "s", ("first",)))
            await sender.send(new_signal(emitter, "Changed", "s", ("last",)))
            await done.wait()
    assert got == [("first",), ("last",)]
    assert other == []
    failures = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "signal handler" in failures[0].getMessage()


@pytest.mark.anyio
async def test_add_match_refuses_a_well_known_sender(dbus_bus: Bus) -> None:
    async with DBusConnection.open(dbus_bus.address) as client:
        with pytest.raises(ValueError, match="unique name"):
            await client.add_match(MatchRule(type="signal", sender=SERVICE), lambda m: None)


# -- incoming calls ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_calls_beyond_the_handler_limit_get_limits_exceeded(dbus_bus: Bus) -> None:
    gate = Gate()
    replies: list[Any] = []
    with anyio.fail_after(10):
        async with pair(dbus_bus, gate, max_handlers=1) as (server, client):

            async def first() -> None:
                replies.append((await client.call(to(server, "Wait"), timeout=5)).body)

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await gate.entered.wait()
                with pytest.raises(DBusError) as caught:
                    await client.call(to(server, "Wait"), timeout=5)
                gate.release.set()
            # The slot is free again once the first call has been answered.
            assert (await client.call(to(server, "Wait"), timeout=5)).body == ("done",)
    assert caught.value.name == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert replies == [("done",)]
    assert gate.calls == 2


@pytest.mark.anyio
async def test_a_slow_handler_does_not_stop_other_calls(dbus_bus: Bus) -> None:
    gate = Gate()

    async def handler(message: Message) -> Message | None:
        if message.header.fields[HeaderFields.member] == "Wait":
            return await gate(message)
        return await echo(message)

    with anyio.fail_after(10):
        async with pair(dbus_bus, handler) as (server, client):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(client.call, to(server, "Wait"), timeout=5))
                await gate.entered.wait()
                reply = await client.call(to(server, "Echo", "saa{sv}", ("x", [])), timeout=5)
                assert reply.body == ("x", [])
                gate.release.set()


@pytest.mark.anyio
async def test_a_handler_that_raises_gives_failed_and_serving_goes_on(
    dbus_bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (server, client):
            with pytest.raises(DBusError) as caught:
                await client.call(to(server, "Crash"), timeout=5)
            reply = await client.call(to(server, "Echo", "saa{sv}", ("ok", [])), timeout=5)
    assert caught.value.name == "org.freedesktop.DBus.Error.Failed"
    assert caught.value.text == f"{INTERFACE}.Crash failed unexpectedly"
    assert "handler bug" not in caught.value.text  # internals stay in the log
    assert reply.body == ("ko", [])
    logged = [r for r in caplog.records if r.name == LOGGER and r.exc_info]
    assert len(logged) == 1
    assert f"{INTERFACE}.Crash" in logged[0].getMessage()


@pytest.mark.anyio
async def test_a_reply_that_cannot_be_encoded_gives_failed(
    dbus_bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(10):
        async with pair(dbus_bus) as (server, client):
            with pytest.raises(DBusError) as caught:
                await client.call(to(server, "BadReply"), timeout=5)
            reply = await client.call(to(server, "Echo", "saa{sv}", ("ok", [])), timeout=5)
    assert caught.value.name == "org.freedesktop.DBus.Error.Failed"
    assert reply.body == ("ko", [])
    assert any(r.name == LOGGER and r.exc_info for r in caplog.records)


@pytest.mark.anyio
async def test_send_delivers_a_fire_and_forget_call(dbus_bus: Bus) -> None:
    got: list[Message] = []
    arrived = anyio.Event()

    async def handler(message: Message) -> Message | None:
        got.append(message)
        arrived.set()
        return await echo(message)  # dropped: the caller wants no reply

    with anyio.fail_after(10):
        async with pair(dbus_bus, handler) as (server, client):
            call = to(server, "Echo", "saa{sv}", ("quiet", []))
            call.header.flags |= MessageFlag.no_reply_expected
            await client.send(call)
            await arrived.wait()
            # Still serving, and the dropped reply did not confuse the next call.
            reply = await client.call(to(server, "Echo", "saa{sv}", ("loud", [])), timeout=5)
    assert got[0].body == ("quiet", [])
    assert got[0].header.flags & MessageFlag.no_reply_expected
    assert reply.body == ("duol", [])


@pytest.mark.anyio
async def test_a_handler_may_send_nothing(dbus_bus: Bus) -> None:
    async def silent(message: Message) -> Message | None:
        return None

    with anyio.fail_after(10):
        async with pair(dbus_bus, silent) as (server, client):
            with pytest.raises(DBusError) as caught:
                await client.call(to(server, "Echo"), timeout=0.3)
    assert caught.value.name == "org.freedesktop.DBus.Error.NoReply"


# -- the bus going away --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_killing_the_bus_fails_pending_calls_with_disconnected(dbus_bus: Bus) -> None:
    gate = Gate()
    with anyio.fail_after(10):
        async with pair(dbus_bus, gate) as (server, client):

            async def pending() -> None:
                with pytest.raises(DBusError) as caught:
                    await client.call(to(server, "Wait"), timeout=30)
                assert caught.value.name == DISCONNECTED
                assert caught.value.transient

            async with anyio.create_task_group() as tg:
                tg.start_soon(pending)
                await gate.entered.wait()
                dbus_bus.process.kill()
                await client.closed()
            assert client.is_closed
            await server.closed()
            with pytest.raises(DBusError) as later:
                await client.call(to(server, "Wait"), timeout=30)
            assert later.value.name == DISCONNECTED
            with pytest.raises(DBusError) as sent:
                await client.send(new_signal(DBusAddress(PATH, interface=INTERFACE), "Changed"))
            assert sent.value.name == DISCONNECTED

        # The client sees its own socket close before the dying bus has closed its listening
        # one; only once the process is gone is a new connection certain to be refused.
        await anyio.to_thread.run_sync(dbus_bus.process.wait, 5)
        with anyio.fail_after(2):
            with pytest.raises(DBusError) as refused:
                async with DBusConnection.open(dbus_bus.address):
                    pass
    assert refused.value.name == DISCONNECTED
    assert "couldn't connect to the D-Bus bus at" in str(refused.value)


@pytest.mark.anyio
async def test_open_of_a_missing_socket_fails_quickly(sock_dir: Path) -> None:
    address = f"unix:path={sock_dir}/nobody"
    with anyio.fail_after(2):
        with pytest.raises(DBusError) as caught:
            async with DBusConnection.open(address):
                pass
    assert caught.value.name == DISCONNECTED
    assert str(caught.value) == (
        f"couldn't connect to the D-Bus bus at {sock_dir}/nobody: No such file or directory"
    )


@pytest.mark.anyio
async def test_open_of_an_address_without_unix_entries_fails(dbus_bus: Bus) -> None:
    with pytest.raises(DBusError) as caught:
        async with DBusConnection.open("tcp:host=localhost,port=1"):
            pass
    assert caught.value.name == "org.freedesktop.DBus.Error.Failed"
    assert "no unix:path= or unix:abstract= entry" in str(caught.value)


@pytest.mark.anyio
async def test_open_takes_the_first_usable_entry_of_an_address_list(
    dbus_bus: Bus, sock_dir: Path
) -> None:
    address = f"tcp:host=localhost,port=1;unix:path={sock_dir}/nobody;{dbus_bus.address}"
    assert ",guid=" in dbus_bus.address  # ignored
    with anyio.fail_after(10):
        async with DBusConnection.open(address) as client:
            assert client.unique_name.startswith(":")


@pytest.mark.anyio
async def test_open_of_an_abstract_address() -> None:
    directory = Path(tempfile.mkdtemp(prefix="sota-dbus-"))
    name = f"sota-test-{secrets.token_hex(8)}"
    try:
        with start_bus(directory, listen=f"unix:abstract={name}") as bus:
            assert bus.address.startswith(f"unix:abstract={name}")
            with anyio.fail_after(10):
                async with DBusConnection.open(f"unix:abstract={name}") as client:
                    assert await client.name_has_owner(client.unique_name) == client.unique_name
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.anyio
async def test_an_escaped_path_is_unescaped(dbus_bus: Bus) -> None:
    path = dbus_bus.address.split(",")[0].removeprefix("unix:path=")
    escaped = path.replace("-", "%2d").replace("/", "%2F")
    with anyio.fail_after(10):
        async with DBusConnection.open(f"unix:path={escaped}") as client:
            assert client.unique_name.startswith(":")


@pytest.mark.anyio
async def test_the_callers_exception_leaves_open_unwrapped(dbus_bus: Bus) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with DBusConnection.open(dbus_bus.address):
            raise KeyError("mine")


# -- a fake bus: broken streams and authentication -------------------------------------------


async def handshake(stream: anyio.abc.SocketStream) -> tuple[Parser, Message]:
    """Play the bus side of authentication and Hello; return the parser and the Hello call."""
    data = b""
    while b"\r\n" not in data:
        data += await stream.receive()
    assert data.startswith(b"\0AUTH EXTERNAL ")
    await stream.send(b"OK 0123456789abcdef0123456789abcdef\r\n")
    data = b""
    while b"\r\n" not in data:
        data += await stream.receive()
    begin, _, rest = data.partition(b"\r\n")
    assert begin == b"BEGIN"
    parser = Parser()
    messages = parser.feed(rest)
    while not messages:
        messages = parser.feed(await stream.receive())
    hello = messages[0]
    assert hello.header.fields[HeaderFields.member] == "Hello"
    await stream.send(new_method_return(hello, "s", (":1.99",)).serialise(serial=1))
    return parser, hello


@asynccontextmanager
async def fake_bus(
    sock_dir: Path, serve: Callable[[anyio.abc.SocketStream], Awaitable[None]]
) -> AsyncIterator[str]:
    """A listening socket whose every peer is served by ``serve``; yields its address."""
    path = sock_dir / "fake"
    listener = await anyio.create_unix_listener(path)

    async def one(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await serve(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, one)
        yield f"unix:path={path}"
        tg.cancel_scope.cancel()


async def next_message(parser: Parser, stream: anyio.abc.SocketStream) -> Message:
    while (message := parser.get_next_message()) is None:
        parser.add_data(await stream.receive())
    return message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"X" * 16, id="not-dbus"),
        pytest.param(struct.pack("<cBBBIII", b"l", 9, 0, 1, 0, 2, 0), id="bad-type"),
        pytest.param(
            struct.pack("<cBBBIII", b"l", 2, 0, 1, MAX_MESSAGE_BYTES, 2, 0), id="oversized"
        ),
    ],
)
async def test_a_stream_that_cannot_be_parsed_closes_the_connection(
    sock_dir: Path, caplog: pytest.LogCaptureFixture, junk: bytes
) -> None:
    serials: list[int] = []
    release = anyio.Event()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        parser, hello = await handshake(stream)
        serials.append(hello.header.serial)
        call = await next_message(parser, stream)
        serials.append(call.header.serial)
        await stream.send(junk)
        await release.wait()

    with anyio.fail_after(10):
        async with fake_bus(sock_dir, serve) as address:
            async with DBusConnection.open(address) as client:
                assert client.unique_name == ":1.99"
                with pytest.raises(DBusError) as caught:
                    await client.call(new_method_call(TARGET, "Echo"), timeout=5)
                await client.closed()
                release.set()
    assert caught.value.name == DISCONNECTED
    assert serials == [1, 2]
    # The connection's owner warns, once, with what it means; the connection says why.
    assert "cannot be parsed" in client.close_reason
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert warnings == []


@pytest.mark.anyio
async def test_a_refused_authentication_raises_dbus_error(sock_dir: Path) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.receive()
        await stream.send(b"REJECTED DBUS_COOKIE_SHA1\r\n")

    with anyio.fail_after(10):
        async with fake_bus(sock_dir, serve) as address:
            with pytest.raises(DBusError) as caught:
                async with DBusConnection.open(address):
                    pass
    assert caught.value.name == "org.freedesktop.DBus.Error.Failed"
    assert "refused authentication" in str(caught.value)
    assert "REJECTED DBUS_COOKIE_SHA1" in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("stage", ["auth", "hello"])
async def test_a_bus_that_never_answers_fails_open_within_the_timeout(
    sock_dir: Path, stage: str
) -> None:
    never = anyio.Event()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        if stage == "hello":
            data = b""
            while b"\r\n" not in data:
                data += await stream.receive()
            await stream.send(b"OK 0123456789abcdef0123456789abcdef\r\n")
        await never.wait()

    with anyio.fail_after(5):
        async with fake_bus(sock_dir, serve) as address:
            with pytest.raises(DBusError) as caught:
                async with DBusConnection.open(address, connect_timeout=0.3):
                    pass
    assert caught.value.name == DISCONNECTED
    assert str(caught.value) == f"the D-Bus bus at {address} did not answer within 0.3 s"


async def read_the_auth_line(stream: anyio.abc.SocketStream) -> None:
    await stream.receive()


async def leave_the_auth_line_unread(stream: anyio.abc.SocketStream) -> None:
    # Closing with the client's AUTH line still unread makes the kernel reset the connection,
    # as a bus killed mid-handshake does.
    await anyio.wait_readable(stream.extra(anyio.abc.SocketAttribute.raw_socket))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("serve", "reason"),
    [
        (read_the_auth_line, "the peer closed the connection"),
        (leave_the_auth_line_unread, "Connection reset by peer"),
    ],
)
async def test_a_bus_that_hangs_up_during_authentication_says_how(
    sock_dir: Path, serve: Callable[[anyio.abc.SocketStream], Awaitable[None]], reason: str
) -> None:
    with anyio.fail_after(5):
        async with fake_bus(sock_dir, serve) as address:
            with pytest.raises(DBusError) as caught:
                async with DBusConnection.open(address):
                    pass
    assert caught.value.name == DISCONNECTED
    assert str(caught.value) == f"D-Bus authentication with {address} failed: {reason}"


# -- addresses -----------------------------------------------------------------------------------


def test_session_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus")
    assert bus_address("session") == "unix:path=/run/user/1000/bus"


@pytest.mark.parametrize("value", [None, ""])
def test_session_address_unset_raises(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", value)
    with pytest.raises(DBusError, match="DBUS_SESSION_BUS_ADDRESS is not set"):
        bus_address("session")


def test_system_address_defaults_and_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    assert bus_address("system") == "unix:path=/var/run/dbus/system_bus_socket"
    assert SYSTEM_BUS_DEFAULT == "unix:path=/var/run/dbus/system_bus_socket"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/tmp/system")
    assert bus_address("system") == "unix:path=/tmp/system"


def test_an_explicit_address_is_returned_as_is() -> None:
    assert bus_address("unix:abstract=/tmp/dbus-x,guid=1") == "unix:abstract=/tmp/dbus-x,guid=1"


def test_bus_env_points_subprocesses_at_the_bus(dbus_bus: Bus) -> None:
    env = bus_env(dbus_bus)
    assert env["DBUS_SESSION_BUS_ADDRESS"] == dbus_bus.address
    assert env is not os.environ
