"""The console gateway (reference 8.1): a REPL on text streams, ending at end of input (bug 49)."""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, cast

import anyio
import pytest

from sota_client.gateways import run_console
from sota_client.gateways._socket import Execute
from sota_client.sim import CoreSimulator
from swlm_sdk.protocol import Command, Event, FoundSystemInfo, Shutdown, StartDownload

from .daemon_fixtures import package_file, running_daemon

pytestmark = pytest.mark.anyio


class CountingInput:
    """Standard input that counts how often it is read (a busy loop reads it again and again)."""

    def __init__(self, text: str) -> None:
        self._text = io.StringIO(text)
        self.reads = 0

    def readline(self) -> str:
        self.reads += 1
        return self._text.readline()


class BrokenInput:
    def readline(self) -> str:
        raise OSError(errno.EIO, "Input/output error")


class BrokenOutput:
    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        pass


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        yield simulator


async def recorded(command: Command) -> Event | None:
    if isinstance(command, Shutdown):
        return None
    assert isinstance(command, StartDownload)
    return FoundSystemInfo(command.update_id)


async def console(stdin: object, stdout: object, execute: Execute = recorded) -> None:
    """Run the console on stand-ins for sys.stdin and sys.stdout (it reads and writes lines)."""
    with anyio.fail_after(10):
        await run_console(execute, cast(TextIO, stdin), cast(TextIO, stdout))


async def test_commands_run_until_end_of_input(tmp_path: Path, sim: CoreSimulator) -> None:
    stdin = CountingInput("ls\nfoo\n")
    stdout = io.StringIO()
    manager = package_file(tmp_path, "apa 0.0.0")
    async with running_daemon(tmp_path, sim, package_manager=manager) as daemon:
        await console(stdin, stdout, daemon.interpreter.execute)
    assert stdout.getvalue() == (
        '> {"variant":"FoundInstalledPackages","fields":[[{"name":"apa","version":"0.0.0"}]]}\n'
        "> Unknown Command: bad command: foo\n"
        "> \n"
    )
    assert stdin.reads == 3  # two lines and the end: no busy loop


async def test_blank_lines_and_commands_without_reply() -> None:
    stdin = io.StringIO("\n  \ndl 1\nshutdown\n")
    stdout = io.StringIO()
    await console(stdin, stdout)
    assert stdout.getvalue() == '> > > {"variant":"FoundSystemInfo","fields":["1"]}\n> > \n'


async def test_a_failing_terminal_closes_the_console_only() -> None:
    await console(BrokenInput(), io.StringIO())
    await console(io.StringIO("dl 1\n"), BrokenOutput())
