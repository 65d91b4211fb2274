"""``python -m sota_client.sim``: serve, queue, and the read-out subcommands, as subprocesses."""

from __future__ import annotations

import json
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import IO

import pytest

from ._client import DEVICE, TIMEOUT

REPO = pathlib.Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sota_client.sim", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=60,
        check=False,
    )


class Lines:
    """Reads a child's output line by line, failing after TIMEOUT seconds instead of hanging."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self._fd = stream.fileno()
        self._buffer = b""

    def next(self) -> str:
        with selectors.DefaultSelector() as selector:
            selector.register(self._fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if not selector.select(TIMEOUT):
                    pytest.fail(f"no complete line from the simulator in time: {self._buffer!r}")
                data = os.read(self._fd, 4096)
                if not data:
                    pytest.fail(f"the simulator exited; output so far: {self._buffer!r}")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode() + "\n"


def _http(method: str, url: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with NO_PROXY.open(request, timeout=TIMEOUT) as response:
        data: bytes = response.read()
        return data


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    ready = tmp_path / "ready"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sota_client.sim",
            "serve",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--allow-path",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    ) as proc:
        try:
            line = Lines(proc.stdout).next()
            assert line.startswith("listening on http://127.0.0.1:"), line
            url = line.split()[-1]
            assert ready.read_text() == url + "\n"
            assert ready.stat().st_mode & 0o077 == 0
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(TIMEOUT)


def test_serve_queue_and_read_back(
    served: tuple[str, subprocess.Popen[bytes]], tmp_path: pathlib.Path
) -> None:
    url, proc = served
    image = tmp_path / "nano_2.2.6.deb"
    image.write_bytes(b"debian package bytes")
    queued = _sim("queue", "--url", url, "--device", DEVICE, str(image), "--version", "2.2.6")
    assert queued.returncode == 0, queued.stderr
    request_id = queued.stdout.strip()

    base = f"{url}/api/v1/mydevice/{DEVICE}"
    listed = json.loads(_http("GET", f"{base}/updates"))
    assert [(e["requestId"], e["packageId"]) for e in listed] == [
        (request_id, {"name": "nano_2.2.6.deb", "version": "2.2.6"})
    ]
    assert _http("GET", f"{base}/updates/{request_id}/download") == image.read_bytes()
    result = [{"id": request_id, "result_code": 0, "result_text": "done"}]
    _http("POST", f"{base}/updates/{request_id}", json.dumps(result).encode())
    _http("PUT", f"{base}/installed", b'[{"name":"nano","version":"2.2.6"}]')
    _http("PUT", f"{base}/system_info", b'{"id":"host"}')

    reports = _sim("reports", "--url", url, "--device", DEVICE)
    assert reports.returncode == 0, reports.stderr
    (rec,) = json.loads(reports.stdout)
    assert (rec["updateId"], rec["status"], json.loads(rec["body"])) == (request_id, 204, result)
    installed = _sim("installed", "--url", url, "--device", DEVICE)
    assert json.loads(installed.stdout) == [{"name": "nano", "version": "2.2.6"}]
    info = _sim("system-info", "--url", url, "--device", DEVICE)
    assert json.loads(info.stdout) == {"id": "host"}
    state = _sim("state", "--url", url, "--device", DEVICE)
    assert json.loads(state.stdout)["updates"][0]["status"] == "Finished"
    packages = json.loads(_http("GET", f"{url}/sim/packages"))
    assert [p["source"] for p in packages] == ["path"]  # registered, not copied

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0


def test_queue_uploads_when_the_directory_is_not_served(
    served: tuple[str, subprocess.Popen[bytes]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    url, _ = served
    image = tmp_path_factory.mktemp("elsewhere") / "fw.bin"
    image.write_bytes(os.urandom(70_000))
    queued = _sim("queue", "--url", url, "--device", DEVICE, str(image), "--name", "fw")
    assert queued.returncode == 0, queued.stderr
    packages = json.loads(_http("GET", f"{url}/sim/packages"))
    assert [(p["name"], p["version"], p["size"], p["source"]) for p in packages] == [
        ("fw", "1.0.0", 70_000, "upload")
    ]
    request_id = queued.stdout.strip()
    path = f"{url}/api/v1/mydevice/{DEVICE}/updates/{request_id}/download"
    assert _http("GET", path) == image.read_bytes()


def test_inject_and_reset(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = served
    armed = _sim("inject", "--url", url, '{"kind":"status","status":503,"route":"health"}')
    assert (armed.returncode, json.loads(armed.stdout)) == (0, {"armed": 1})
    with pytest.raises(urllib.error.HTTPError) as info:
        _http("GET", f"{url}/health")
    info.value.close()
    assert info.value.code == 503
    bad = _sim("inject", "--url", url, '{"kind":"nope"}')
    assert bad.returncode == 1
    assert "Invalid value 'nope'" in bad.stderr
    assert _sim("reset", "--url", url).returncode == 0


def test_sigint_stops_the_server_too(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, proc = served
    proc.send_signal(signal.SIGINT)
    assert proc.wait(TIMEOUT) == 0


def test_auth_credentials_are_printed() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sota_client.sim",
            "serve",
            "--client-id",
            "dev",
            "--client-secret",
            "pw",
        ],
        stdout=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    ) as proc:
        try:
            lines = Lines(proc.stdout)
            assert lines.next().startswith("listening on http://127.0.0.1:")
            assert lines.next() == "client_id dev\n"
            assert lines.next() == "client_secret pw\n"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(TIMEOUT) == 0


def test_non_loopback_bind_is_refused() -> None:
    result = _sim("serve", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert "--allow-remote" in result.stderr


def test_client_errors_are_one_line_on_stderr(tmp_path: pathlib.Path) -> None:
    unreachable = _sim("state", "--url", "http://127.0.0.1:9", "--device", DEVICE)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: cannot reach the simulator")
    missing = _sim("queue", "--url", "http://127.0.0.1:9", "--device", DEVICE, str(tmp_path / "x"))
    assert missing.returncode == 1
    assert "is not a file" in missing.stderr


def test_bad_device_id_is_reported(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = served
    result = _sim("state", "--url", url, "--device", "not-a-uuid")
    assert result.returncode == 1
    assert "400" in result.stderr
    assert "not a valid UUID" in result.stderr
