"""The daemon's root in-process: a background loop that fails is restarted; the daemon goes on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sota_client import _daemon
from sota_client._config import parse_config
from sota_client._poller import Poller
from sota_client._reports import ReportSender
from sota_client.gateways import EventOutbox
from sota_client.sim import CoreSimulator
from swlm_sdk import send_command, send_raw
from swlm_sdk.protocol import FoundInstalledPackages
from tests.conftest import LogWaiter

pytestmark = pytest.mark.anyio


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        yield simulator


LOOPS: list[tuple[str, type[Any], str]] = [
    ("report", ReportSender, "run"),
    ("event delivery", EventOutbox, "run"),
    ("polling", Poller, "run"),
]


@pytest.mark.parametrize(("name", "owner", "method"), LOOPS, ids=[loop[0] for loop in LOOPS])
async def test_a_failing_background_loop_is_restarted_and_the_daemon_goes_on(
    sim: CoreSimulator,
    sock_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_waiter: Callable[[str], LogWaiter],
    name: str,
    owner: type[Any],
    method: str,
) -> None:
    real: Callable[..., Awaitable[None]] = getattr(owner, method)
    calls = 0
    again = anyio.Event()

    async def flaky(self: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(f"a bug in the {name} loop")
        again.set()
        await real(self, *args)

    monkeypatch.setattr(owner, method, flaky)
    commands = sock_dir / "cmd.sock"
    config = parse_config(
        f"""
        [core]
        server = "{sim.url}"
        polling_sec = 3600
        [device]
        packages_dir = "{tmp_path / "packages"}"
        state_dir = "{tmp_path / "state"}"
        certificates_path = "{tmp_path / "no-ca.pem"}"
        system_info = ""
        [gateway]
        socket = true
        [network]
        socket_commands_path = "{commands}"
        socket_events_path = "{sock_dir / "ev.sock"}"
        """
    )
    failed = log_waiter(f"The {name} loop failed: RuntimeError: a bug in the {name} loop")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_daemon._main, config)
        await failed.wait(within=20)
        with anyio.fail_after(20):
            await again.wait()  # restarted after its backoff
        reply = await send_command("ls", commands_socket=commands)
        assert reply == FoundInstalledPackages(())
        assert await send_raw("Shutdown", commands_socket=commands) == b""
    assert calls == 2
