"""The 2016 guide's complete example config (``tests/data/guide-example.toml``) loads to what the
guide says, and the real daemon starts on it against the Core simulator."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sota_client._cli import main
from sota_client._config import (
    AuthConfig,
    Config,
    CoreConfig,
    DBusConfig,
    DeviceConfig,
    GatewayConfig,
    NetworkConfig,
    PackageManager,
    RviConfig,
    load_config,
    parse_config,
)
from sota_client.sim import AuthSettings, CoreSimulator
from tests.sota_client.daemon_fixtures import free_port
from tests.sota_client.test_config import warnings_of

GUIDE = Path(__file__).parents[1] / "data" / "guide-example.toml"
REPO = Path(__file__).parents[2]
DEVICE = "123e4567-e89b-12d3-a456-426655440000"
CLIENT_ID = "bf66425f-d4d6-422b-b510-7c7f178af9fe"
CLIENT_SECRET = "hr8nEWzQc9"
#: Seconds any single wait on the daemon may take before the test fails.
DEADLINE = 30.0

requires_dpkg_query = pytest.mark.skipif(
    shutil.which("dpkg-query") is None, reason='package_manager = "deb" needs dpkg-query'
)


def test_the_guide_example_loads_to_what_the_guide_says(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials.toml"
    config = load_config(str(GUIDE), overrides={("auth", "credentials_file"): str(credentials)})
    assert config == Config(
        auth=AuthConfig(
            server="http://127.0.0.1:9001",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            credentials_file=str(credentials),
        ),
        # polling_interval = 10: the legacy spelling of polling_sec, which turns polling on.
        core=CoreConfig(server="http://127.0.0.1:8080", polling=True, polling_sec=10),
        device=DeviceConfig(
            uuid=DEVICE,
            vin="",
            system_info="system_info.sh",
            packages_dir="/tmp/",
            package_manager=PackageManager("deb"),
            certificates_path="/tmp/sota_certificates",
        ),
        network=NetworkConfig(
            http_server="127.0.0.1:8080",
            socket_commands_path="/tmp/sota-commands.socket",
            socket_events_path="/tmp/sota-events.socket",
            websocket_server="ws://127.0.0.1:3012",
            rvi_edge_server="http://127.0.0.1:9080",  # the guide's form, as written
        ),
        gateway=GatewayConfig(websocket=True),
        rvi=RviConfig(client="http://127.0.0.1:8901", storage_dir="/var/sota", timeout=20),
        dbus=DBusConfig(),
    )
    assert warnings_of(caplog) == []  # every key known, every value good
    # The credentials file did not exist: it was created from the guide's credentials.
    assert credentials.read_text() == (
        f'[auth]\nclient_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
    )


def test_the_guide_example_prints_as_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("SOTA_CONFIG", "SOTA_LOG", "RUST_LOG"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])  # main() adds its stderr handler
    monkeypatch.setattr(root, "level", root.level)
    credentials = tmp_path / "credentials.toml"
    argv = ["--print", f"--config={GUIDE}", f"--auth-credentials-file={credentials}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert 'rvi_edge_server = "http://127.0.0.1:9080"\n' in out
    assert 'websocket_server = "ws://127.0.0.1:3012"\n' in out
    assert "report_timeout = 86400.0\n" in out
    assert parse_config(out) == load_config(
        str(GUIDE), overrides={("auth", "credentials_file"): str(credentials)}
    )


# ---------------------------------------------------------------------------------------------
# The real daemon on the guide's config


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for Unix socket paths (at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sota-guide-") as directory:
        yield Path(directory)


def wait_for_notification(notify: socket.socket, wanted: str, log: Path) -> None:
    """Read sd_notify datagrams until one has the line ``wanted``; the socket's timeout bounds
    each read."""
    try:
        while wanted not in notify.recv(4096).decode().splitlines():
            pass
    except TimeoutError:
        pytest.fail(f"no {wanted} within {DEADLINE} s; daemon log:\n{log.read_text()}")


@pytest.mark.e2e
@requires_dpkg_query
def test_the_daemon_starts_on_the_guide_example(short_dir: Path) -> None:
    """Exactly the guide's file; the servers and the paths a test must not touch come as flags."""
    bin_dir = short_dir / "bin"
    bin_dir.mkdir()
    system_info = bin_dir / "system_info.sh"  # the guide's system_info, found in PATH
    system_info.write_text('#!/bin/sh\necho \'{"from": "system_info.sh"}\'\n')
    system_info.chmod(0o755)
    credentials = short_dir / "credentials.toml"
    log = short_dir / "daemon.log"
    notify_path = str(short_dir / "notify")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SOTA_CONFIG", "SOTA_LOG", "RUST_LOG", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    env.update(
        NOTIFY_SOCKET=notify_path,
        RUST_LOG="info",
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}",
        PYTHONPATH=str(REPO),
    )
    with (
        CoreSimulator(auth=AuthSettings(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)) as sim,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        log.open("wb") as log_file,
    ):
        notify.bind(notify_path)
        notify.settimeout(DEADLINE)
        argv = [
            f"--config={GUIDE}",
            f"--auth-server={sim.url}",
            f"--core-server={sim.url}",
            f"--auth-credentials-file={credentials}",
            f"--device-packages-dir={short_dir / 'packages'}",
            f"--device-state-dir={short_dir / 'state'}",
            f"--device-certificates-path={short_dir / 'no-ca.pem'}",
            # the guide's websocket gateway on a port nobody else uses now
            f"--network-websocket-server=127.0.0.1:{free_port()}",
        ]
        with subprocess.Popen(
            [sys.executable, "-m", "sota_client", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        ) as daemon:
            try:
                wait_for_notification(notify, "READY=1", log)
                # Authenticated with the guide's credentials, then sent what 2016 sent after
                # authenticating: the deb package list (dpkg-query) and the system info.
                assert sim.wait_for(lambda: sim.system_info(DEVICE), timeout=DEADLINE) == {
                    "from": "system_info.sh"
                }
                installed = sim.wait_for(lambda: sim.installed(DEVICE), timeout=DEADLINE)
                assert installed  # this machine has Debian packages
                daemon.send_signal(signal.SIGTERM)
                wait_for_notification(notify, "STOPPING=1", log)
                assert daemon.wait(timeout=DEADLINE) == 0, log.read_text()
            finally:
                if daemon.poll() is None:
                    daemon.kill()
    text = log.read_text()
    assert "INFO - The websocket gateway listens on ws://127.0.0.1:" in text, text
    assert " WARN - " not in text, text
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert json.dumps(CLIENT_SECRET) in credentials.read_text()
