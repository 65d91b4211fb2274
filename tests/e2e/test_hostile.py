"""Hostile input from any peer never stops the daemon, and never makes it crash-loop.

Each test is a reproduction that ended the daemon (exit 1, at every restart) before the fix.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import msgspec
import pytest

from sota_client.sim import AuthSettings, CoreSimulator, StatusFault
from swlm_sdk import send_raw
from swlm_sdk.protocol import ResultCode, UpdateReport

from .harness import DEVICE, MakeDaemon, auth_section

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LONG_ID = "%" * 22_000


async def test_a_report_with_a_huge_id_is_refused_and_the_daemon_goes_on(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url, core={"polling": False})
    await anyio.to_thread.run_sync(daemon.start)
    reply = await send_raw(f"sendup {LONG_ID} 0", commands_socket=daemon.commands_socket)
    assert reply.startswith(b'{"variant":"Error","fields":["Invalid update id \'%%%%')
    assert reply.endswith(b'it is longer than 250 bytes"]}')
    assert await send_raw("ls", commands_socket=daemon.commands_socket)
    assert daemon.running()
    assert await anyio.to_thread.run_sync(daemon.stop) == 0
    await anyio.to_thread.run_sync(daemon.start)  # and it starts again
    assert daemon.running()


async def test_a_poisoned_report_in_the_journal_is_set_aside_at_start_up(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    """What an older daemon left in the journal crashed every start-up within a second."""
    daemon = make_daemon(sim.url, core={"polling": False})
    await anyio.to_thread.run_sync(daemon.start)
    assert await anyio.to_thread.run_sync(daemon.stop) == 0
    report = msgspec.json.encode(UpdateReport.single(LONG_ID, ResultCode.OK, ""))
    db = sqlite3.connect(daemon.state_dir / "sota.db")
    try:
        db.execute(
            "INSERT INTO reports (update_id, payload, next_attempt_at, created_at)"
            " VALUES (?, ?, 0, 0)",
            (LONG_ID, report),
        )
        db.execute(
            "INSERT INTO updates (update_id, state, since) VALUES (?, 'report_pending', 0)",
            (LONG_ID,),
        )
        db.commit()
    finally:
        db.close()
    await anyio.to_thread.run_sync(daemon.start)
    await anyio.to_thread.run_sync(
        lambda: daemon.wait_log(lambda text: "is set aside and will not be sent again" in text)
    )
    assert await send_raw("ls", commands_socket=daemon.commands_socket)
    assert daemon.running()
    assert not [r for r in sim.requests if r.route == "report"]


async def test_an_update_list_with_a_huge_id_is_survived(
    sim: CoreSimulator, make_daemon: MakeDaemon, workdir: Path
) -> None:
    """Core listed it InFlight and the package manager had it: the OK report crashed it."""
    installed = workdir / "installed.txt"
    installed.write_text("nano 2.2.6\n")
    listing = [
        {
            "requestId": LONG_ID,
            "status": "InFlight",
            "packageId": {"name": "nano", "version": "2.2.6"},
            "installPos": 0,
            "createdAt": "2016-01-01T00:00:00Z",
        }
    ]
    sim.inject(
        StatusFault(
            status=200,
            route="updates",
            body=json.dumps(listing),
            content_type="application/json",
            count=1000,
        )
    )
    daemon = make_daemon(sim.url, device={"package_manager": f"file:{installed}"})
    await anyio.to_thread.run_sync(daemon.start)
    await anyio.to_thread.run_sync(
        lambda: daemon.wait_log(lambda text: text.count("Running command: GetUpdateRequests") >= 3)
    )
    assert daemon.running()
    assert daemon.log().count("Ignoring update '%%%%") == 1  # said once, not at every poll
    assert not [r for r in sim.requests if r.route == "report"]


async def test_a_token_the_auth_server_should_never_have_sent_is_survived(
    workdir: Path, make_daemon: MakeDaemon
) -> None:
    """``"access_token": "tök€"`` once ended the daemon with a UnicodeEncodeError."""
    with CoreSimulator(auth=AuthSettings(client_id="device", client_secret="secret")) as sim:
        sim.inject(
            StatusFault(
                status=200,
                route="token",
                body='{"access_token":"t\u00f6k\u20ac","token_type":"bearer",'
                '"expires_in":3600,"scope":""}',
                content_type="application/json",
                count=2,
            )
        )
        daemon = make_daemon(
            sim.url,
            auth=auth_section(sim.url, workdir),
        )
        await anyio.to_thread.run_sync(daemon.start)
        with anyio.fail_after(60):
            # The bad tokens are refused, then a good one is fetched and used.
            await sim.wait_for_async(lambda: any(r.route == "updates" for r in sim.requests))
        assert daemon.running()
        assert "Invalid access token" in daemon.log()
        updates = [r for r in sim.requests if r.route == "updates"]
        assert all(r.headers["authorization"].isascii() for r in updates)
    assert "Traceback" not in daemon.log()


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


async def test_twenty_thousand_updates_keep_memory_flat_and_commands_answered(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    """A valid list of 20,000 once started 20,000 downloads at once: 40 -> 355 MB, ls in 10 s."""
    sim.add_package("nano", "2.2.6", data=b"x" * 4096)
    for _ in range(20_000):
        sim.queue_update(DEVICE, "nano", "2.2.6")
    daemon = make_daemon(sim.url, core={"polling_sec": 1})
    await anyio.to_thread.run_sync(daemon.start)
    assert daemon.proc is not None
    with anyio.fail_after(120):
        await sim.wait_for_async(
            lambda: sum(1 for r in sim.requests if r.route == "download") >= 20
        )
    with anyio.fail_after(30):  # answered while the queue is worked through
        assert await send_raw("ls", commands_socket=daemon.commands_socket) == (
            b'{"variant":"FoundInstalledPackages","fields":[[]]}'
        )
    peak = peak_rss_mib(daemon.proc.pid)
    print(f"20,000 updates listed: peak RSS {peak:.0f} MiB")  # docs/reliability.md
    assert peak < 150, f"peak RSS {peak:.0f} MiB"
    assert daemon.log().count("Core lists 20000 updates; handling the first 1000") == 1
    downloads = [r for r in sim.requests if r.route == "download"]
    assert all(r.status is not None for r in downloads[:-1])  # one at a time, in turn
