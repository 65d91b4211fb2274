"""The daemon as a service: flows A, B, E, F of the reference, concurrency, crashes, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import anyio
import msgspec
import pytest

from sota_client.sim import AuthSettings, CoreSimulator, StallFault
from swlm_sdk import (
    DownloadComplete,
    EventListener,
    Package,
    TransportError,
    send_command,
    send_raw,
    send_update_report,
)
from swlm_sdk.protocol import (
    FoundInstalledPackages,
    InstalledPackagesSent,
    UpdateReportSent,
)

from .harness import DEVICE, MakeDaemon, auth_section

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def report_bodies(sim: CoreSimulator, request_id: str) -> list[object]:
    return [msgspec.json.decode(r.body) for r in sim.reports(DEVICE) if r.path.endswith(request_id)]


def system_info_script(workdir: Path) -> str:
    script = workdir / "system_info.sh"
    script.write_text('#!/bin/sh\necho \'{"id":"host","class":"system"}\'\n')
    script.chmod(0o755)
    return str(script)


async def test_startup_with_auth_sends_packages_and_system_info(
    workdir: Path, make_daemon: MakeDaemon
) -> None:
    """Flow A: token, then the package list and system info, every call with the token."""
    packages = workdir / "packages.txt"
    packages.write_text("gcc 7.63\nmovie-player rc2-beta3\n")
    auth = AuthSettings(client_id="device-1", client_secret="s3cret")
    with CoreSimulator(auth=auth) as sim:
        daemon = make_daemon(
            sim.url,
            auth=auth_section(sim.url, workdir, "device-1", "s3cret"),
            device={
                "package_manager": f"file:{packages}",
                "system_info": system_info_script(workdir),
            },
            core={"polling": False},
        )
        await anyio.to_thread.run_sync(daemon.start)
        with anyio.fail_after(30):
            await sim.wait_for_async(lambda: sim.installed(DEVICE) and sim.system_info(DEVICE))
        assert sim.installed(DEVICE) == [
            Package("gcc", "7.63"),
            Package("movie-player", "rc2-beta3"),
        ]
        assert sim.system_info(DEVICE) == {"id": "host", "class": "system"}
        requests = sim.requests
    token_requests = [r for r in requests if r.route == "token"]
    device_requests = [r for r in requests if r.device is not None]
    assert len(token_requests) == 1
    assert device_requests
    assert all(r.headers["authorization"].startswith("Bearer ") for r in device_requests)
    assert (workdir / "credentials.toml").stat().st_mode & 0o777 == 0o600


async def test_pending_update_is_installed_by_the_package_manager(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon
) -> None:
    """Flow B: download, install with the local package manager, report, re-send packages."""
    packages = workdir / "packages.txt"
    packages.write_text("base 1.0\n")
    sim.add_package("tool", "2.0", data=b"tool image")
    daemon = make_daemon(sim.url, device={"package_manager": f"file:{packages}"})
    await anyio.to_thread.run_sync(daemon.start)
    request_id = sim.queue_update(DEVICE, "tool", "2.0")
    with anyio.fail_after(30):
        await sim.wait_for_async(lambda: report_bodies(sim, request_id))
        await sim.wait_for_async(
            lambda: len([r for r in sim.requests if r.route == "installed"]) >= 2
        )
    assert report_bodies(sim, request_id) == [
        [{"id": request_id, "result_code": 0, "result_text": ""}]
    ]
    image = daemon.packages_dir / request_id
    # The file package manager records the image path; a successful install deletes the image.
    assert packages.read_text() == f"base 1.0\n{image}\n"
    assert not image.exists()
    assert sim.status(DEVICE, request_id) == "Finished"


async def test_in_flight_update_already_installed_is_reported_without_a_download(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon
) -> None:
    """Flow E: Core says InFlight and the package is there: report OK with an empty text."""
    packages = workdir / "packages.txt"
    packages.write_text("fw 1.0.0\n")
    sim.add_package("fw", "1.0.0", data=b"fw")
    request_id = sim.queue_update(DEVICE, "fw", "1.0.0")
    url = f"{sim.url}/api/v1/mydevice/{DEVICE}/updates/{request_id}/download"
    await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url).read())
    assert sim.status(DEVICE, request_id) == "InFlight"
    daemon = make_daemon(sim.url, device={"package_manager": f"file:{packages}"})
    await anyio.to_thread.run_sync(daemon.start)
    with anyio.fail_after(30):
        await sim.wait_for_async(lambda: report_bodies(sim, request_id))
    assert report_bodies(sim, request_id) == [
        [{"id": request_id, "result_code": 0, "result_text": ""}]
    ]
    downloads = [r for r in sim.requests if r.route == "download"]
    assert len(downloads) == 1  # only ours above


async def test_expired_token_does_not_lose_the_report(
    workdir: Path, make_daemon: MakeDaemon
) -> None:
    """Flow F: Core starts refusing the token; the report still arrives (2016 lost it)."""
    auth = AuthSettings(client_id="device-1", client_secret="s3cret")
    with CoreSimulator(auth=auth) as sim:
        sim.add_package("fw", "1.0.0", data=b"fw")
        request_id = sim.queue_update(DEVICE, "fw", "1.0.0")
        daemon = make_daemon(
            sim.url,
            auth={"server": sim.url, "client_id": "device-1", "client_secret": "s3cret"},
            core={"polling": False},
        )
        await anyio.to_thread.run_sync(daemon.start)
        await anyio.to_thread.run_sync(daemon.wait_log, lambda log: 'Event: "Authenticated"' in log)
        assert sim.expire_tokens() == 1
        reply = await send_update_report(
            request_id, "ok", "installed", commands_socket=daemon.commands_socket
        )
        assert reply == UpdateReportSent()
        assert report_bodies(sim, request_id) == [
            [{"id": request_id, "result_code": 0, "result_text": "installed"}]
        ]
        assert len([r for r in sim.requests if r.route == "token"]) == 2


@pytest.mark.parametrize("clients", [10, 100])
async def test_concurrent_socket_clients(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon, clients: int
) -> None:
    packages = workdir / "packages.txt"
    packages.write_text("a 1\nb 2\n")
    daemon = make_daemon(
        sim.url, device={"package_manager": f"file:{packages}"}, core={"polling": False}
    )
    await anyio.to_thread.run_sync(daemon.start)
    replies: dict[int, object] = {}

    async def one(i: int) -> None:
        if i % 2:
            replies[i] = await send_command("ls", commands_socket=daemon.commands_socket)
        else:
            command = f"sendpack p{i} {i}.0"
            replies[i] = await send_command(command, commands_socket=daemon.commands_socket)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(clients):
                tg.start_soon(one, i)
    listed = FoundInstalledPackages((Package("a", "1"), Package("b", "2")))
    assert replies == {i: listed if i % 2 else InstalledPackagesSent() for i in range(clients)}


async def test_kill_9_mid_download_then_restart_resumes_and_completes(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    image = os.urandom(8 * 2**20)
    sim.add_package("big", "1.0", data=image)
    sim.inject(StallFault(route="download", after=3 * 2**20, seconds=120))
    daemon = make_daemon(sim.url)
    await anyio.to_thread.run_sync(daemon.start)
    request_id = sim.queue_update(DEVICE, "big", "1.0")
    part = daemon.packages_dir / f"{request_id}.part"
    await anyio.to_thread.run_sync(
        daemon.wait_log, lambda log: part.exists() and part.stat().st_size > 2**20
    )
    await anyio.to_thread.run_sync(daemon.kill)
    kept = part.stat().st_size
    assert 0 < kept < len(image)

    async with EventListener(daemon.events_socket) as events:
        await anyio.to_thread.run_sync(daemon.start)
        with anyio.fail_after(60):
            event = await events.__anext__()
    assert isinstance(event, DownloadComplete)
    assert event.update_id == request_id
    received = await anyio.Path(event.update_image).read_bytes()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(image).hexdigest()
    ranges = [r.headers.get("range") for r in sim.requests if r.route == "download"]
    assert ranges[0] is None
    assert ranges[-1] is not None
    start = int(ranges[-1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= kept


def test_the_daemon_raises_its_open_file_limit_for_many_peers(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    """1,000 idle peers and 300 slow writers need more than the common 1024 descriptors."""
    daemon = make_daemon(sim.url, core={"polling": False})
    daemon.start(open_files=1024)
    assert daemon.proc is not None
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert int(soft) == min(int(hard), 65536) > 1024


@pytest.mark.parametrize(
    "point", ["journal.finish_download", "journal.begin_install", "install.done"]
)
async def test_a_restart_finishes_what_a_kill_left_even_without_polling(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon, point: str
) -> None:
    """Core is not asked again (polling off): start-up itself takes the update forward."""
    sim.add_package("nano", "2.2.6", data=b"an update image")
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    daemon = make_daemon(
        sim.url,
        core={"polling": False},
        device={"package_manager": f"file:{workdir / 'installed.txt'}"},
    )
    await anyio.to_thread.run_sync(lambda: daemon.start(env={"SOTA_KILL_AT": point}))
    with contextlib.suppress(TransportError):  # the daemon dies before or after it answers
        await send_raw(f"dl {update_id}", commands_socket=daemon.commands_socket)
    assert await anyio.to_thread.run_sync(lambda: daemon.wait_exit(60)) == -signal.SIGKILL
    await anyio.to_thread.run_sync(daemon.start)
    with anyio.fail_after(60):
        await sim.wait_for_async(lambda: sim.reports(DEVICE))
    assert [r.status for r in sim.reports(DEVICE)] == [204]
    assert [r.route for r in sim.requests].count("updates") == 0  # never polled


async def test_sigterm_and_shutdown_stop_cleanly(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url, core={"polling": False})
    await anyio.to_thread.run_sync(daemon.start)
    assert daemon.commands_socket.exists()
    assert daemon.commands_socket.stat().st_mode & 0o777 == 0o660
    assert await anyio.to_thread.run_sync(daemon.stop) == 0
    assert not daemon.commands_socket.exists()

    await anyio.to_thread.run_sync(daemon.start)
    assert await send_raw("Shutdown", commands_socket=daemon.commands_socket) == b""
    assert await anyio.to_thread.run_sync(lambda: daemon.stop(signal.SIGCONT)) == 0
    assert not daemon.commands_socket.exists()
    assert any("READY=1" in status for status in daemon.statuses)
    assert "STOPPING=1" in daemon.statuses[-1]


async def test_bad_input_never_stops_the_daemon(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url, core={"polling": False})
    await anyio.to_thread.run_sync(daemon.start)
    path = daemon.commands_socket
    assert await send_raw(b"\xff\xfe", commands_socket=path) == (
        b"IO error: stream did not contain valid UTF-8"
    )
    assert await send_raw("foo", commands_socket=path) == b"Unknown Command: bad command: foo"
    assert await send_raw("dl ../../etc/passwd", commands_socket=path) == (
        b'{"variant":"Error","fields":["Invalid update id \'../../etc/passwd\': '
        b"it starts with '.'\"]}"
    )
    big = await send_raw(b"x" * 2_000_000, commands_socket=path)
    assert big.startswith(b"IO error: command longer than")
    for garbage in (os.urandom(512) for _ in range(20)):
        reply = await send_raw(garbage, commands_socket=path)
        assert reply  # an error text or an event, never silence
    assert await send_raw("getreq", commands_socket=path) == b'"NoUpdateRequests"'
    assert daemon.running()


def test_console_gateway_answers_and_survives_end_of_input(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url, gateway={"console": True}, core={"polling": False})
    daemon.start(stdin=subprocess.PIPE)
    assert daemon.proc is not None
    assert daemon.proc.stdin is not None
    assert daemon.proc.stdout is not None
    daemon.proc.stdin.write(b"ls\nfoo\n")
    daemon.proc.stdin.close()
    expected = (
        b'> {"variant":"FoundInstalledPackages","fields":[[]]}\n'
        b"> Unknown Command: bad command: foo\n"
        b"> \n"
    )
    output = b""
    while len(output) < len(expected):
        more = os.read(daemon.proc.stdout.fileno(), 4096)
        assert more, f"the console closed early: {output!r}"
        output += more
    assert output == expected
    assert daemon.running()
    assert daemon.stop() == 0


def test_a_file_in_the_way_of_the_commands_socket_is_never_deleted(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url)
    daemon.commands_socket.write_text("precious")
    with pytest.raises(AssertionError, match="exited with 1"):
        daemon.start()
    assert daemon.commands_socket.read_text() == "precious"
    assert "exists and is not a socket" in daemon.log()


def test_an_unusable_packages_dir_is_a_one_line_start_up_error(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon
) -> None:
    blocker = workdir / "a-file"
    blocker.write_text("")
    daemon = make_daemon(sim.url, device={"packages_dir": str(blocker / "packages")})
    with pytest.raises(AssertionError, match="exited with 1"):
        daemon.start()
    assert (
        f"sota_client: couldn't create device.packages_dir {blocker}/packages: Not a directory"
        in (daemon.log())
    )
    assert "Traceback" not in daemon.log()
