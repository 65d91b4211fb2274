"""Every example marked ``<!-- test: KIND -->`` in docs/sdk.md runs, against a fake daemon."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

from swlm_sdk import DownloadComplete, ResultCode
from swlm_sdk.protocol import SendInstalledPackages, SendUpdateReport
from swlm_sdk.testing import FakeDaemon

REPO = Path(__file__).parents[2]
DOC = REPO / "docs" / "sdk.md"
EXAMPLE = re.compile(r"<!-- test: (\w+) -->\n```(\w+)\n(.*?)```", re.S)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the examples run as subprocesses; one backend is enough


def exists(path: str) -> bool:
    return os.path.exists(path)


def listen_pid(group: int) -> int:
    """The `swlm listen` process in the shell script's process group (Linux /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if os.getpgid(int(entry)) == group and b"listen" in cmdline:
                return int(entry)
        except OSError:
            continue
    raise AssertionError("no swlm listen process")


def examples(kind: str) -> list[str]:
    return [code for k, _, code in EXAMPLE.findall(DOC.read_text()) if k == kind]


def test_the_doc_has_its_examples() -> None:
    kinds = sorted(k for k, _, _ in EXAMPLE.findall(DOC.read_text()))
    assert kinds == ["app", "listener", "pytest", "pytest_sync", "script", "shell"]


@pytest.fixture
def env(sock_dir: Path, fake_daemon: FakeDaemon) -> dict[str, str]:
    bin_dir = sock_dir / "bin"
    bin_dir.mkdir()
    swlm = bin_dir / "swlm"  # what the console script does, without installing the package
    swlm.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m swlm_sdk "$@"\n')
    swlm.chmod(swlm.stat().st_mode | stat.S_IXUSR)
    (sock_dir / "target").mkdir()
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SOTA_CONFIG": fake_daemon.config_path,
        "STATE_DIRECTORY": str(sock_dir / "state"),
        "TARGET": str(sock_dir / "target"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }


async def wait_for_line(stream: ByteReceiveStream | None, text: str) -> None:
    assert stream is not None
    buffered = BufferedByteReceiveStream(stream)
    with anyio.fail_after(20):
        while text.encode() not in await buffered.receive_until(b"\n", 1 << 16):
            pass


async def install_one(fake: FakeDaemon, sock_dir: Path) -> None:
    image = sock_dir / "u1.img"
    image.write_bytes(b"new firmware")
    await fake.deliver(DownloadComplete("u1", str(image)))
    [command] = await fake.wait_for(SendUpdateReport, within=20)
    assert command.report.update_id == "u1"
    assert command.report.operation_results[0].result_code == ResultCode.OK
    assert (sock_dir / "target" / "payload.bin").read_bytes() == b"new firmware"


async def stop(process: Process) -> int:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(20):
        return await process.wait()


async def test_app_example(sock_dir: Path, fake_daemon: FakeDaemon, env: dict[str, str]) -> None:
    [code] = examples("app")
    script = sock_dir / "my_swlm.py"
    script.write_text(code)
    async with await anyio.open_process([sys.executable, str(script)], env=env) as process:
        await wait_for_line(process.stderr, "SWLM ready")
        await install_one(fake_daemon, sock_dir)
        await fake_daemon.wait_for(SendInstalledPackages, count=2, within=20)
        assert await stop(process) == 0
    assert [p[0].version for p in fake_daemon.package_lists] == ["none", "12"]
    assert not exists(fake_daemon.events_socket)


async def test_listener_example(
    sock_dir: Path, fake_daemon: FakeDaemon, env: dict[str, str]
) -> None:
    [code] = examples("listener")
    script = sock_dir / "listen.py"
    script.write_text(code)
    async with await anyio.open_process([sys.executable, str(script)], env=env) as process:
        await wait_for_line(process.stdout, "listening on")
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))
        with anyio.fail_after(20):
            assert await process.wait() == 0
    assert fake_daemon.requests == [
        b"SendUpdateReport u1 0 copied",
        b"SendInstalledPackages my-payload 1.0",
    ]


async def test_script_example(sock_dir: Path, fake_daemon: FakeDaemon, env: dict[str, str]) -> None:
    [code] = examples("script")
    script = sock_dir / "report.py"
    script.write_text(code)
    result = await anyio.run_process([sys.executable, str(script)], env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert fake_daemon.requests == [
        b"SendUpdateReport 2f1e7c52 4 dpkg: dependency problems",
        b"SendInstalledPackages gcc 12.2.0 libc6 2.36-9",
    ]


async def test_shell_example(sock_dir: Path, fake_daemon: FakeDaemon, env: dict[str, str]) -> None:
    [code] = examples("shell")
    script = sock_dir / "swlm.sh"
    script.write_text(code)
    async with await anyio.open_process(
        ["sh", str(script)], env=env, start_new_session=True
    ) as process:
        await wait_for_line(process.stderr, "listening on")
        await install_one(fake_daemon, sock_dir)
        # Stop `swlm listen` as systemd would; the loop then ends and so does the script.
        os.kill(listen_pid(process.pid), signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
    assert fake_daemon.requests == [b"SendUpdateReport u1 0 installed by the shell SWLM"]
    assert not exists(fake_daemon.events_socket)


async def test_pytest_examples(sock_dir: Path, env: dict[str, str]) -> None:
    """A vendor's project: the tutorial's SWLM and the two test files, and no conftest.py, since
    the fixtures come from the SDK's pytest entry point."""
    [app] = examples("app")
    [test] = examples("pytest")
    [sync_test] = examples("pytest_sync")
    project = sock_dir / "vendor"
    project.mkdir()
    (project / "my_swlm.py").write_text(app)
    (project / "test_my_swlm.py").write_text(test)
    (project / "test_my_swlm_sync.py").write_text(sync_test)
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    result = await anyio.run_process(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        env=env,
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "test_my_swlm.py::test_installs_and_reports PASSED" in output
    assert "test_my_swlm_sync.py::test_install_copies_the_image_or_refuses_an_empty_one PASSED" in (
        output
    )
    assert "2 passed" in output
