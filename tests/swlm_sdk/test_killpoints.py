"""Kill points: inert by default, SIGKILL at the n-th pass, a trace of every point, the App's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from swlm_sdk import DownloadComplete, ResultCode
from swlm_sdk.app import Journal
from swlm_sdk.protocol import SendInstalledPackages, UpdateReport
from swlm_sdk.testing import FakeDaemon

REPO = Path(__file__).parents[2]

POINTS = """
from swlm_sdk._killpoints import kill_point
print("start", flush=True)
kill_point("x")
print("x once", flush=True)
kill_point("y")
kill_point("x")
print("x twice", flush=True)
"""

SWLM = """
import logging, sys
from swlm_sdk.app import App
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
app = App(sys.argv[1], config=sys.argv[2])
app.on_download_complete(lambda event: None)
app.installed_packages(lambda: [("p", "1")])
app.run(backend=sys.argv[3])
"""

INSTALL = [
    "swlm.journal.installing",
    "swlm.install.start",
    "swlm.install.done",
    "swlm.journal.pending",
    "swlm.report.acknowledged",
    "swlm.journal.sent",
]


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOTA_")}
    return {**env, "PYTHONPATH": str(REPO), **variables}


def run_points(**variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", POINTS],
        env=environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_the_variables_nothing_happens() -> None:
    result = run_points()
    assert (result.returncode, result.stdout) == (0, "start\nx once\nx twice\n")


@pytest.mark.parametrize(
    ("kill_at", "printed"),
    [
        ("x@2", "start\nx once\n"),
        ("x", "start\n"),  # the first pass by default
        ("x@1", "start\n"),
        ("y@1", "start\nx once\n"),
    ],
)
def test_kill_at_the_nth_pass(kill_at: str, printed: str) -> None:
    result = run_points(SOTA_KILL_AT=kill_at)
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == printed  # what it printed before the kill survives


@pytest.mark.parametrize("kill_at", ["x@3", "z"])
def test_a_point_not_reached_kills_nothing(kill_at: str) -> None:
    result = run_points(SOTA_KILL_AT=kill_at)
    assert (result.returncode, result.stdout) == (0, "start\nx once\nx twice\n")


def test_the_trace_lists_every_point_in_order(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    result = run_points(SOTA_KILL_TRACE=str(trace))
    assert result.returncode == 0
    assert trace.read_text() == "x\ny\nx\n"


def test_the_trace_includes_the_point_that_kills(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    result = run_points(SOTA_KILL_TRACE=str(trace), SOTA_KILL_AT="x@2")
    assert result.returncode == -signal.SIGKILL
    assert trace.read_text() == "x\ny\nx\n"


# -- the App's points, in a real SWLM process ----------------------------------------------


async def wait_for_line(stream: BufferedByteReceiveStream, text: str) -> None:
    with anyio.fail_after(30):
        while text.encode() not in await stream.receive_until(b"\n", 1 << 16):
            pass


@asynccontextmanager
async def swlm(
    fake: FakeDaemon, state: Path, backend: str, **variables: str
) -> AsyncIterator[Process]:
    """A real SWLM process built with App on ``backend``; yields once its socket listens."""
    command = [sys.executable, "-c", SWLM, str(state), fake.config_path, backend]
    async with await anyio.open_process(command, env=environment(**variables)) as process:
        try:
            assert process.stderr is not None
            await wait_for_line(BufferedByteReceiveStream(process.stderr), "SWLM ready")
            yield process
        finally:
            if process.returncode is None:  # a failed test: do not wait for it for ever
                process.kill()


@pytest.mark.anyio
async def test_an_install_passes_the_app_points_in_order(
    fake_daemon: FakeDaemon, sock_dir: Path, anyio_backend: str
) -> None:
    trace = sock_dir / "trace"
    async with swlm(
        fake_daemon, sock_dir / "state", anyio_backend, SOTA_KILL_TRACE=str(trace)
    ) as process:
        await fake_daemon.wait_for(SendInstalledPackages)  # at start-up
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))
        await fake_daemon.wait_for(SendInstalledPackages, count=2)  # after "sent" is saved
        process.terminate()
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert trace.read_text().splitlines() == INSTALL


@pytest.mark.anyio
async def test_a_kill_after_the_acknowledgement_sends_the_report_once_more(
    fake_daemon: FakeDaemon, sock_dir: Path, anyio_backend: str
) -> None:
    state = sock_dir / "state"
    ok = UpdateReport.single("u1", ResultCode.OK)
    async with swlm(
        fake_daemon, state, anyio_backend, SOTA_KILL_AT="swlm.report.acknowledged"
    ) as process:
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))
        with anyio.fail_after(30):
            assert await process.wait() == -signal.SIGKILL
    assert fake_daemon.reports == [ok]
    journal = Journal(state)
    await journal.open()
    assert [uid for uid, _ in journal.pending()] == ["u1"]

    # The restarted SWLM sends it exactly once more, then treats it as final.
    trace = sock_dir / "trace"
    async with FakeDaemon(sock_dir / "again") as fake:
        async with swlm(fake, state, anyio_backend, SOTA_KILL_TRACE=str(trace)) as process:
            await fake.wait_for(SendInstalledPackages)  # after the report, at start-up
            await fake.deliver(DownloadComplete("u1", "/img"))  # ignored: acknowledged
            await fake.deliver(DownloadComplete("u2", "/img"))
            await fake.wait_for(SendInstalledPackages, count=2)
            process.terminate()
            with anyio.fail_after(30):
                assert await process.wait() == 0
    assert fake.reports == [ok, UpdateReport.single("u2", ResultCode.OK)]
    assert trace.read_text().splitlines() == [
        "swlm.report.acknowledged",
        "swlm.journal.sent",
        *INSTALL,  # u2 only
    ]
