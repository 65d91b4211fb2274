"""The ``swlm`` command line: output, exit codes, config lookup; ``listen`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from swlm_sdk import DaemonUnavailable, DownloadComplete, DownloadFailed, ErrorEvent, ResultCode
from swlm_sdk.__main__ import main
from swlm_sdk.protocol import GetUpdateRequests, SendUpdateReport
from swlm_sdk.testing import FakeDaemon, SyncFakeDaemon

from .conftest import deliver_2016

REPO = Path(__file__).parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_codes_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "codes")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 20
    assert lines[0].split(None, 2) == ["0", "OK", "Operation executed successfully"]
    assert lines[19].split(None, 2) == ["19", "GENERAL_ERROR", "Other error"]
    for line, result in zip(lines, ResultCode, strict=True):
        assert line.split(None, 2) == [str(result.value), result.name, result.description]


def test_report(sync_fake_daemon: SyncFakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    config = sync_fake_daemon.config_path
    assert run(capsys, "--config", config, "report", "u1", "OK") == (0, "UpdateReportSent\n", "")
    code, _, _ = run(capsys, "report", "--config", config, "u2", "install_failed", "dpkg:", "no")
    assert code == 0
    assert sync_fake_daemon.requests == [
        b"SendUpdateReport u1 0",
        b"SendUpdateReport u2 4 dpkg: no",
    ]


def test_report_with_env_and_socket_override(
    sync_fake_daemon: SyncFakeDaemon,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOTA_CONFIG", sync_fake_daemon.config_path)
    assert run(capsys, "report", "u1", "0")[0] == 0
    monkeypatch.setenv("SOTA_CONFIG", "/nonexistent/sota.toml")
    code, _, err = run(
        capsys, "report", "--commands-socket", sync_fake_daemon.commands_socket, "u2", "1"
    )
    assert (code, err) == (0, "")
    assert len(sync_fake_daemon.reports) == 2


def test_packages(sync_fake_daemon: SyncFakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    config = sync_fake_daemon.config_path
    assert run(capsys, "-c", config, "packages", "a", "1", "b", "2.0")[:2] == (
        0,
        "InstalledPackagesSent\n",
    )
    assert sync_fake_daemon.requests == [b"SendInstalledPackages a 1 b 2.0"]
    code, _, err = run(capsys, "-c", config, "packages", "a", "1", "b")
    assert code == 2
    assert "odd number" in err


def test_send_prints_the_reply_as_it_came(
    sync_fake_daemon: SyncFakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sync_fake_daemon.config_path
    assert run(capsys, "-c", config, "send", "getreq") == (0, '"NoUpdateRequests"\n', "")
    assert run(capsys, "-c", config, "send", "foo")[:2] == (
        1,
        "Unknown Command: bad command: foo\n",
    )
    assert run(capsys, "-c", config, "send", "dl 5")[0] == 1  # DownloadFailed
    assert run(capsys, "-c", config, "send", "shutdown") == (0, "\n", "")
    assert sync_fake_daemon.commands[0] == GetUpdateRequests()


def test_daemon_error_is_exit_1(
    sync_fake_daemon: SyncFakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_fake_daemon.set_reply(SendUpdateReport, ErrorEvent("HTTP client error: 500"))
    code, out, err = run(capsys, "-c", sync_fake_daemon.config_path, "report", "u1", "OK")
    assert (code, out) == (1, "")
    assert "Error: HTTP client error: 500" in err
    sync_fake_daemon.set_reply(SendUpdateReport, "Unknown Command: nope")
    code, _, err = run(capsys, "-c", sync_fake_daemon.config_path, "report", "u1", "OK")
    assert code == 1
    assert "rejected the command: Unknown Command: nope" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "u1", "BOGUS"], "unknown result code 'BOGUS'"),
        (["report", "u 1", "OK"], "update id 'u 1' cannot be sent"),
        (["packages", "a;b", "1"], "package name"),
        (["report", "--timeout", "0", "u1", "OK"], "--timeout must be positive"),
        (["--config", "/nonexistent.toml", "report", "u1", "OK"], "cannot read config"),
        (["--commands-socket", "/" + "x" * 120, "report", "u1", "OK"], "at most 107"),
    ],
)
def test_usage_errors_are_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str, sock_dir: Path
) -> None:
    code, out, err = run(capsys, "--events-socket", str(sock_dir / "e.sock"), *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_argparse_errors_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "report", "u1")[0] == 2


def test_unreachable_is_exit_3(sock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--commands-socket", str(sock_dir / "none"), "report", "u1", "0")
    assert (code, out) == (3, "")
    assert err.startswith("swlm: no socket at ")


def test_listen_cannot_create_socket_is_exit_4(
    sock_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sock_dir / "file").write_text("keep me")
    code, _, err = run(capsys, "listen", "--events-socket", str(sock_dir / "file"))
    assert code == 4
    assert "refusing to replace it" in err
    assert (sock_dir / "file").read_text() == "keep me"


@pytest.fixture
def listen_process(sock_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    path = str(sock_dir / "ev.sock")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swlm_sdk",
            "listen",
            "--events-socket",
            path,
            "--json",
            "--event",
            "DownloadComplete",
            "--event",
            "Future",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stderr is not None
    try:
        assert process.stderr.readline() == f"swlm: listening on {path}\n"  # ready to accept
        yield process, path
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_listen_prints_json_lines_and_stops_on_sigterm(
    listen_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, path = listen_process
    assert process.stdout is not None
    envelope = (
        b'{"version":"0.1","event":"DownloadComplete","data":'
        b'{"update_id":"u1","update_image":"/var/sota/u1","signature":""}}'
    )
    deliver_2016(
        path, b'{"version":"0.1","event":"DownloadFailed","data":{"update_id":"u0","reason":"r"}}'
    )
    deliver_2016(path, b"garbage")
    deliver_2016(path, envelope)
    deliver_2016(path, b'{"version":"0.2","event":"Future","data":{"x":1}}')
    assert process.stdout.readline() == envelope.decode() + "\n"
    assert json.loads(process.stdout.readline()) == {
        "version": "0.2",
        "event": "Future",
        "data": {"x": 1},
    }
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert not os.path.exists(path)


def test_listen_readable_lines(sock_dir: Path) -> None:
    path = str(sock_dir / "ev.sock")
    process = subprocess.Popen(
        [sys.executable, "-m", "swlm_sdk", "listen", "--events-socket", path, "--count", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stderr is not None
    assert process.stderr.readline().startswith("swlm: listening on")
    deliver_2016(
        path,
        b'{"version":"0.1","event":"DownloadComplete","data":'
        b'{"update_id":"u1","update_image":"/a b","signature":""}}',
    )
    deliver_2016(
        path,
        b'{"version":"0.1","event":"DownloadFailed","data":{"update_id":"u2","reason":"IO error"}}',
    )
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out.splitlines() == [
        "DownloadComplete update_id=u1 update_image='/a b' signature=''",
        "DownloadFailed update_id=u2 reason='IO error'",
    ]


def test_listen_shows_the_update_metadata_that_came(sock_dir: Path) -> None:
    path = str(sock_dir / "ev.sock")
    process = subprocess.Popen(
        [sys.executable, "-m", "swlm_sdk", "listen", "--events-socket", path, "--count", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stderr is not None
    assert process.stderr.readline().startswith("swlm: listening on")
    sha = "ab" * 32
    deliver_2016(
        path,
        b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"u1",'
        b'"update_image":"/p/u1","signature":"","sha256":"' + sha.encode() + b'","size":3,'
        b'"package":{"name":"fw","version":"1.4.2"}}}',
    )
    deliver_2016(
        path,
        b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"u2",'
        b'"update_image":"/p/u2","signature":"","size":0}}',
    )
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out.splitlines() == [
        f"DownloadComplete update_id=u1 update_image=/p/u1 signature='' sha256={sha} size=3 "
        "package='fw 1.4.2'",
        "DownloadComplete update_id=u2 update_image=/p/u2 signature='' size=0",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stdout", "event", "message"),
    [
        pytest.param(
            "closed pipe",  # `swlm listen --json | true`
            DownloadComplete("u-7", "/var/sota/u-7"),
            "swlm: couldn't pass on DownloadComplete for update u-7: "
            "stdout is closed (broken pipe)",
            id="broken-pipe",
        ),
        pytest.param(
            "/dev/full",  # `swlm listen >> events.log` on a full disk
            DownloadFailed("u-8", "IO error"),
            "swlm: couldn't pass on DownloadFailed for update u-8: "
            "cannot write to stdout: No space left on device",
            id="disk-full",
        ),
        pytest.param(
            "closed pipe",
            b'{"version":"0.2","event":"Future","data":{"x":1}}',
            "swlm: couldn't pass on Future: stdout is closed (broken pipe)",
            id="unknown-event",
        ),
    ],
)
async def test_listen_that_cannot_write_an_event_names_it_and_fails(
    fake_daemon: FakeDaemon,
    stdout: str,
    event: DownloadComplete | DownloadFailed | bytes,
    message: str,
) -> None:
    if stdout == "closed pipe":
        read_end, write_end = os.pipe()
        os.close(read_end)
    else:
        write_end = os.open(stdout, os.O_WRONLY)
    try:
        process = await anyio.open_process(
            [sys.executable, "-m", "swlm_sdk", "listen", "--json", "-c", fake_daemon.config_path],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        os.close(write_end)
    async with process:
        assert process.stderr is not None
        stderr = BufferedByteReceiveStream(process.stderr)
        with anyio.fail_after(20):
            ready = await stderr.receive_until(b"\n", 1 << 16)
            assert ready == f"swlm: listening on {fake_daemon.events_socket}".encode()
            await fake_daemon.deliver(event)
            assert await process.wait() == 5
            rest = b"".join([chunk async for chunk in stderr])
    assert rest.decode().splitlines() == [message]
    # It stopped listening: the daemon keeps what comes next instead of handing it to nobody.
    with pytest.raises(DaemonUnavailable):
        await fake_daemon.deliver(DownloadComplete("u-9", "/var/sota/u-9"))
