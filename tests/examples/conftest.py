"""Fixtures for the example SWLMs: importable by module name, short socket dirs, a running app."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

from swlm_sdk import DownloadComplete, ResultCode
from swlm_sdk.app import App
from swlm_sdk.protocol import SendUpdateReport
from swlm_sdk.testing import (
    FakeDaemon,
    fake_daemon,  # noqa: F401 - the fixture vendors get
)

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "examples"

# The examples are standalone scripts, not a package: import them the way they run, with
# their own directory on the path (`import swlm_deb`).
for _example in ("swlm_deb", "swlm_flash"):
    if str(EXAMPLES / _example) not in sys.path:
        sys.path.insert(0, str(EXAMPLES / _example))


@pytest.fixture
def work() -> Iterator[Path]:
    """A short private directory: tmp_path can exceed the 107-byte AF_UNIX limit."""
    path = Path(tempfile.mkdtemp(prefix="swlm-ex-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[App]:
    """Run ``app`` in a task group until the block ends, then stop it gracefully."""
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        yield app
        app.stop()


async def install(fake: FakeDaemon, update_id: str, image: Path) -> tuple[ResultCode, str]:
    """Deliver one ``DownloadComplete`` and return the code and text the SWLM reported."""
    count = len(fake.reports) + 1
    await fake.deliver(DownloadComplete(update_id, str(image)))
    await fake.wait_for(SendUpdateReport, count=count, within=30)
    report = fake.reports[-1]
    assert report.update_id == update_id
    [result] = report.operation_results
    return result.result_code, result.result_text


async def wait_for_line(stream: ByteReceiveStream | None, text: str) -> None:
    """Read a child's output until a line containing ``text`` (its readiness log line)."""
    assert stream is not None
    buffered = BufferedByteReceiveStream(stream)
    with anyio.fail_after(30):
        while text.encode() not in await buffered.receive_until(b"\n", 1 << 16):
            pass


async def terminate(process: Process) -> int:
    """SIGTERM, as systemd stops a service, then the exit status."""
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(30):
        return await process.wait()


def example_env() -> dict[str, str]:
    """The environment for an example run as a script: the SDK importable from the repo."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def exists(path: str | Path) -> bool:
    """A sync helper: tests may look at the file system after the work is done."""
    return os.path.exists(path)
