"""The commands-socket client against a raw 2016-style server and the fake daemon."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import anyio
import pytest

from swlm_sdk import (
    Client,
    CommandFailed,
    CommandRejected,
    ConfigError,
    DaemonTimeout,
    DaemonUnavailable,
    ErrorEvent,
    Package,
    ProtocolError,
    ResultCode,
    Retry,
    TransportError,
    UpdateReportSent,
    clean_result_text,
    send_command,
    send_installed_packages,
    send_raw,
    send_update_report,
)
from swlm_sdk.protocol import (
    FoundInstalledPackages,
    GetUpdateRequests,
    NotAuthenticated,
    NoUpdateRequests,
    SendUpdateReport,
    StartDownload,
    UnknownEvent,
    UpdateReport,
    parse_command,
)
from swlm_sdk.testing import FakeDaemon

from .conftest import Server2016

pytestmark = pytest.mark.anyio


# -- byte compatibility with the 2016 framing ------------------------------------------------


async def test_report_bytes_are_the_2016_canonical_form(server_2016: Server2016) -> None:
    reply = await send_update_report("u1", "OK", commands_socket=server_2016.path)
    assert reply == UpdateReportSent()
    assert server_2016.requests == [b"SendUpdateReport u1 0"]
    # The 2016 grammar took the long name with a numeric code.
    assert parse_command(server_2016.requests[0]) == SendUpdateReport(
        UpdateReport.single("u1", ResultCode.OK)
    )


@pytest.mark.parametrize(
    ("code", "wire"),
    [(ResultCode.INSTALL_FAILED, b"4"), (19, b"19"), ("general_error", b"19"), ("1", b"1")],
)
async def test_codes_go_as_numbers(server_2016: Server2016, code: object, wire: bytes) -> None:
    await send_update_report("u-9", code, commands_socket=server_2016.path)  # type: ignore[arg-type]
    assert server_2016.requests == [b"SendUpdateReport u-9 " + wire]


async def test_2016_rejects_the_text_so_the_report_is_sent_again_without_it(
    server_2016: Server2016, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="swlm_sdk.client"):
        reply = await send_update_report(
            "u1", ResultCode.INSTALL_FAILED, "dpkg: broken", commands_socket=server_2016.path
        )
    assert reply == UpdateReportSent()
    assert server_2016.requests == [
        b"SendUpdateReport u1 4 dpkg: broken",
        b"SendUpdateReport u1 4",
    ]
    assert "does not accept a result text" in caplog.text


async def test_packages_bytes(server_2016: Server2016) -> None:
    await send_installed_packages(
        [("gcc", "7.63"), Package("libc", "2.36-1")], commands_socket=server_2016.path
    )
    assert server_2016.requests == [b"SendInstalledPackages gcc 7.63 libc 2.36-1"]


async def test_raw_reply_comes_back_as_it_came(server_2016: Server2016) -> None:
    assert await send_raw("foo", commands_socket=server_2016.path) == (
        b"Unknown Command: bad command: foo"
    )
    with pytest.raises(CommandRejected) as info:
        await send_command("foo", commands_socket=server_2016.path)
    assert info.value.reply == "Unknown Command: bad command: foo"


# -- result text ---------------------------------------------------------------------------


def test_clean_result_text() -> None:
    assert clean_result_text(None) == ""
    assert clean_result_text("  a;b\nc\r\nd  ") == "a b c  d"
    assert clean_result_text("x" * 10_000) == "x" * 4096


async def test_text_with_breaks_travels_cleaned(fake_daemon: FakeDaemon) -> None:
    await send_update_report(
        "u1", "INSTALL_FAILED", "line one;\nline two", commands_socket=fake_daemon.commands_socket
    )
    [report] = fake_daemon.reports
    assert report.operation_results[0].result_text == "line one  line two"
    assert report.operation_results[0].result_code == ResultCode.INSTALL_FAILED


async def test_our_daemon_keeps_the_text(fake_daemon: FakeDaemon) -> None:
    await send_update_report("u1", 4, "bad deps", commands_socket=fake_daemon.commands_socket)
    assert fake_daemon.requests == [b"SendUpdateReport u1 4 bad deps"]


# -- typed replies and errors ----------------------------------------------------------------


async def test_send_command_returns_typed_events(fake_daemon: FakeDaemon) -> None:
    client = Client(fake_daemon.commands_socket)
    assert await client.send_command(GetUpdateRequests()) == NoUpdateRequests()
    assert await client.send_command("ls") == FoundInstalledPackages(())
    assert fake_daemon.requests == [b"GetUpdateRequests", b"ls"]


async def test_failure_events_raise_command_failed(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, replies={SendUpdateReport: NotAuthenticated()}) as fake:
        with pytest.raises(CommandFailed) as info:
            await send_update_report("u1", "OK", commands_socket=fake.commands_socket)
        assert info.value.event == NotAuthenticated()
        assert "NotAuthenticated" in str(info.value)
        fake.set_reply(SendUpdateReport, ErrorEvent("HTTP client error: 500"))
        with pytest.raises(CommandFailed, match="Error: HTTP client error: 500"):
            await send_update_report("u1", "OK", commands_socket=fake.commands_socket)


async def test_unknown_reply_event_is_passed_through(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, replies=lambda cmd: b'"SomethingNew"') as fake:
        assert await send_command("ls", commands_socket=fake.commands_socket) == UnknownEvent(
            "SomethingNew"
        )
        with pytest.raises(CommandFailed):
            await send_installed_packages([("a", "1")], commands_socket=fake.commands_socket)


async def test_bad_local_input_is_a_protocol_error_before_any_io(sock_dir: Path) -> None:
    path = str(sock_dir / "nobody.sock")
    with pytest.raises(ProtocolError, match="update id"):
        await send_update_report("u 1", "OK", commands_socket=path)
    with pytest.raises(ProtocolError, match="unknown result code"):
        await send_update_report("u1", "NOPE", commands_socket=path)
    with pytest.raises(ProtocolError, match="at least one package"):
        await send_installed_packages([], commands_socket=path)
    with pytest.raises(ProtocolError, match="package version"):
        await send_installed_packages([("a", "1 2")], commands_socket=path)


async def test_missing_socket(sock_dir: Path) -> None:
    with pytest.raises(DaemonUnavailable, match=r"no socket at .*socket = true"):
        await send_command("ls", commands_socket=sock_dir / "missing.sock")


async def test_refused_connection(sock_dir: Path) -> None:
    path = sock_dir / "dead.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening: connect is refused
        with pytest.raises(DaemonUnavailable, match="connection refused"):
            await send_command("ls", commands_socket=path)


async def test_regular_file_is_not_a_daemon(sock_dir: Path) -> None:
    path = sock_dir / "file"
    path.write_text("x")
    with pytest.raises(TransportError):
        await send_command("ls", commands_socket=path)


async def test_too_long_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at most 107"):
        Client("/tmp/" + "x" * 200)


async def test_timeout_when_the_daemon_never_answers(sock_dir: Path) -> None:
    async def hang(command: object) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError

    async with FakeDaemon(sock_dir, replies=hang) as fake:
        client = Client(fake.commands_socket, reply_timeout=0.2)
        with pytest.raises(DaemonTimeout, match=r"within 0\.2 s"):
            await client.send_command("ls")


async def test_oversized_reply_is_refused(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, replies=lambda c: b'"' + b"x" * 5000 + b'"') as fake:
        client = Client(fake.commands_socket, max_reply=1000)
        with pytest.raises(ProtocolError, match="larger than 1000 bytes"):
            await client.send_command("ls")


async def test_garbage_reply_is_a_protocol_error(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, replies=lambda c: b"{not json") as fake:
        with pytest.raises(ProtocolError):
            await send_command("ls", commands_socket=fake.commands_socket)


async def test_retry_waits_for_the_daemon_to_come_up(sock_dir: Path) -> None:
    path = sock_dir / "late.sock"
    retry = Retry(attempts=None, initial_delay=0.01, max_delay=0.05)
    client = Client(path, retry=retry)
    result: list[object] = []
    done = anyio.Event()

    async def report() -> None:
        result.append(await client.send_update_report("u1", "OK"))
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(report)
        # The first attempt fails for sure: nothing exists yet. Then the daemon starts.
        async with FakeDaemon(sock_dir, commands_socket=path) as fake:
            with anyio.fail_after(10):
                await done.wait()
    assert result == [UpdateReportSent()]
    assert fake.requests == [b"SendUpdateReport u1 0"]


async def test_retry_gives_up_after_its_attempts(sock_dir: Path) -> None:
    client = Client(sock_dir / "never.sock", retry=Retry(attempts=3, initial_delay=0.001))
    with pytest.raises(DaemonUnavailable):
        await client.send_command("ls")
    assert list(Retry(attempts=4, initial_delay=1, multiplier=3, max_delay=5).delays()) == [
        1,
        3,
        5,
    ]


async def test_config_file_gives_the_socket(sock_dir: Path, fake_daemon: FakeDaemon) -> None:
    config = sock_dir / "sota.toml"
    config.write_text(f'[network]\nsocket-commands-path = "{fake_daemon.commands_socket}"\n')
    await send_update_report("u1", "OK", config=config)
    assert fake_daemon.requests == [b"SendUpdateReport u1 0"]


async def test_sota_config_env(monkeypatch: pytest.MonkeyPatch, fake_daemon: FakeDaemon) -> None:
    monkeypatch.setenv("SOTA_CONFIG", fake_daemon.config_path)
    assert Client().socket_path == fake_daemon.commands_socket
    await send_command(StartDownload("u1"))
    assert fake_daemon.commands == [StartDownload("u1")]


async def test_100_concurrent_report_senders(fake_daemon: FakeDaemon) -> None:
    client = Client(fake_daemon.commands_socket)
    replies: list[UpdateReportSent] = []

    async def one(i: int) -> None:
        replies.append(await client.send_update_report(f"u{i}", i % 20, f"text {i}"))

    async with anyio.create_task_group() as group:
        for i in range(100):
            group.start_soon(one, i)
    assert replies == [UpdateReportSent()] * 100
    got = {r.update_id: r.operation_results[0] for r in fake_daemon.reports}
    assert len(got) == 100
    for i in range(100):
        assert got[f"u{i}"].result_code == i % 20
        assert got[f"u{i}"].result_text == f"text {i}"
