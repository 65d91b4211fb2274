"""The integrator docs stay true: configs parse, links resolve, the unit is valid, the example runs.

Mostly docs/daemon.md, plus the README's quick start and the links of compatibility.md. The last
test starts the real daemon with the doc's example config (paths moved into temporary
directories, servers pointed at the Core simulator) under a fake systemd notify socket.
"""

from __future__ import annotations

import grp
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sota_client._config import Config, PackageManager, parse_config
from sota_client.sim import AuthSettings, CoreSimulator
from swlm_sdk import sync
from swlm_sdk.protocol import NoUpdateRequests

REPO = Path(__file__).parents[1]
DOC = REPO / "docs" / "daemon.md"
README = REPO / "README.md"
UNIT_MARK = "<!-- unit: sota_client.service -->"
DROPIN_MARK = "<!-- unit-dropin: package-manager.conf -->"
UNITS = REPO / "distro" / "systemd"
SYSINFO_MARK = "<!-- test: system_info -->"
EXEC_START = "ExecStart=/usr/bin/sota_client --config /etc/sota.toml"
#: Seconds any single wait on the daemon may take before the test fails.
DEADLINE = 30.0


def doc_text() -> str:
    return DOC.read_text()


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", doc_text(), flags=re.DOTALL)


def block_after(mark: str, language: str) -> str:
    """The fenced block right after an HTML comment mark."""
    match = re.search(re.escape(mark) + rf"\n```{language}\n(.*?)```", doc_text(), re.DOTALL)
    assert match is not None, f"no {language} block after {mark} in {DOC.name}"
    return match[1]


def example_config_text() -> str:
    [example] = [block for block in toml_blocks() if "socket_group" in block]
    return example


def in_tmp(block: str, tmp_path: Path) -> str:
    """The credentials file moved into ``tmp_path``: parsing may read or create it."""
    return re.sub(r'credentials_file = "[^"]*"', f'credentials_file = "{tmp_path}/c.toml"', block)


def unit_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_the_daemon_doc_has_its_examples() -> None:
    assert toml_blocks()
    assert block_after(UNIT_MARK, "ini")
    assert block_after(DROPIN_MARK, "ini")
    assert block_after(SYSINFO_MARK, "sh")


@pytest.mark.parametrize("block", toml_blocks())
def test_every_toml_block_of_the_daemon_doc_parses(block: str, tmp_path: Path) -> None:
    assert isinstance(parse_config(in_tmp(block, tmp_path), "daemon.md"), Config)


def test_the_daemon_doc_example_config_is_a_socket_swlm_deployment(tmp_path: Path) -> None:
    config = parse_config(in_tmp(example_config_text(), tmp_path), "daemon.md")
    assert config.gateway.socket
    assert not config.gateway.http
    assert not config.gateway.websocket
    assert not config.gateway.dbus
    assert config.device.package_manager == PackageManager("off")
    assert config.network.socket_mode == 0o660
    assert config.auth is not None
    assert config.auth.credentials_file == f"{tmp_path}/c.toml"
    assert not (tmp_path / "c.toml").exists()  # only read: the config sets no credentials
    # The unit's directories are the config's.
    unit = unit_lines(block_after(UNIT_MARK, "ini"))
    assert config.device.state_dir == "/var/lib/sota"
    assert "StateDirectory=sota" in unit
    assert config.device.packages_dir.startswith(config.device.state_dir + "/")
    assert "RuntimeDirectory=sota" in unit
    for path in (config.network.socket_commands_path, config.network.socket_events_path):
        assert os.path.dirname(path) == "/run/sota"


def test_the_readme_quick_start_config_parses(tmp_path: Path) -> None:
    [block] = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    block = textwrap.dedent(block)
    config = parse_config(in_tmp(block, tmp_path), "README.md")
    assert config.gateway.socket
    assert config.device.package_manager == PackageManager("off")


def anchors(doc: Path) -> set[str]:
    """GitHub's ids for the headings of a Markdown file."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize(
    "doc", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda doc: doc.name
)
def test_relative_links_in_the_docs_resolve(doc: Path) -> None:
    for target, anchor in re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", doc.read_text()):
        if "://" in target:
            continue
        path = (doc.parent / target) if target else doc
        assert path.exists(), f"{doc.name} links to missing {target}"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{doc.name} links to missing {target}#{anchor}"


def test_the_daemon_doc_systemd_unit() -> None:
    """The doc shows the packaged unit and drop-in, verbatim: tests/packaging/test_units.py
    verifies them and computes the exposure figures the doc gives."""
    unit = block_after(UNIT_MARK, "ini")
    assert unit == (UNITS / "sota_client.service").read_text()
    lines = unit_lines(unit)
    for line in ("Type=notify", "NotifyAccess=main", EXEC_START, "KillMode=mixed"):
        assert line in lines
    assert any(line.startswith("TimeoutStopSec=") for line in lines)
    assert not any(line.startswith("DefaultTimeoutStopSec=") for line in lines)
    dropin = block_after(DROPIN_MARK, "ini")
    assert dropin == (UNITS / "package-manager.conf").read_text()
    assert unit_lines(dropin)[1] == "[Service]"
    # The doc says where the package puts the drop-in and where it goes to take effect.
    assert "/usr/share/sota-client/package-manager.conf" in doc_text()
    assert unit_lines(dropin)[0].startswith(
        "# /etc/systemd/system/sota_client.service.d/package-manager.conf"
    )


def test_the_daemon_doc_system_info_script_prints_json(tmp_path: Path) -> None:
    script = tmp_path / "sota-system-info"
    script.write_text(block_after(SYSINFO_MARK, "sh"))
    script.chmod(0o755)
    result = subprocess.run(
        [str(script)], capture_output=True, timeout=DEADLINE, check=True, env={"PATH": os.defpath}
    )
    info = json.loads(result.stdout)
    assert set(info) == {"hostname", "kernel", "machine"}
    assert info["machine"] == os.uname().machine


# ---------------------------------------------------------------------------------------------
# The example deployment, for real


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for Unix socket paths (at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sota-doc-") as directory:
        yield Path(directory)


def notifications(sock: socket.socket) -> Iterator[str]:
    """The lines of each sd_notify datagram; every wait is bounded by the socket's timeout."""
    while True:
        yield from sock.recv(4096).decode().splitlines()


def wait_for_line(messages: Iterator[str], wanted: str, log: Path) -> None:
    try:
        for line in messages:
            if line == wanted:
                return
    except TimeoutError:
        pytest.fail(f"no {wanted} within {DEADLINE} s; daemon log:\n{log.read_text()}")


def test_the_daemon_doc_example_deployment_runs(tmp_path: Path, short_dir: Path) -> None:
    """The example config and system_info program, as systemd would run them (Type=notify)."""
    device = "9ea653bc-3486-44cd-aa86-d936bd957e52"
    program = tmp_path / "sota-system-info"
    program.write_text(block_after(SYSINFO_MARK, "sh"))
    program.chmod(0o755)
    run = short_dir / "run"
    run.mkdir()  # what RuntimeDirectory= does
    group = grp.getgrgid(os.getgid()).gr_name
    with CoreSimulator(auth=AuthSettings()) as sim:
        credentials = sim.client_credentials
        (tmp_path / "c.toml").write_text(
            f'[auth]\nclient_id = "{credentials.client_id}"\n'
            f'client_secret = "{credentials.client_secret}"\n'
        )
        text = in_tmp(example_config_text(), tmp_path)
        for old, new in (
            ("https://auth.example.com", sim.url),
            ("https://core.example.com", sim.url),
            ("/var/lib/sota", str(tmp_path / "state")),
            ("/run/sota", str(run)),
            ("/usr/local/bin/sota-system-info", str(program)),
            ('socket_group = "sota"', f'socket_group = "{group}"'),
        ):
            assert old in text
            text = text.replace(old, new)
        config_path = tmp_path / "sota.toml"
        config_path.write_text(text)
        config = parse_config(text)
        commands = config.network.socket_commands_path

        log = tmp_path / "daemon.log"
        notify_path = str(short_dir / "notify")
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("SOTA_CONFIG", "SOTA_LOG", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        env.update(NOTIFY_SOCKET=notify_path, RUST_LOG="info")
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
            log.open("wb") as log_file,
        ):
            notify.bind(notify_path)
            notify.settimeout(DEADLINE)
            messages = notifications(notify)
            with subprocess.Popen(
                [sys.executable, "-m", "sota_client", "--config", str(config_path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            ) as daemon:
                try:
                    wait_for_line(messages, "READY=1", log)
                    info = os.stat(commands)
                    assert stat.S_ISSOCK(info.st_mode)
                    assert stat.S_IMODE(info.st_mode) == 0o660
                    assert info.st_gid == os.getgid()

                    # Authenticated with the provisioned credentials, then ran system_info.
                    sent = sim.wait_for(lambda: sim.system_info(device), timeout=DEADLINE)
                    assert sent["machine"] == os.uname().machine
                    reply = sync.send_command(
                        "getreq", commands_socket=commands, reply_timeout=DEADLINE
                    )
                    assert reply == NoUpdateRequests()

                    daemon.send_signal(signal.SIGTERM)
                    wait_for_line(messages, "STOPPING=1", log)
                    assert daemon.wait(timeout=DEADLINE) == 0, log.read_text()
                finally:
                    if daemon.poll() is None:
                        daemon.kill()
    assert not os.path.exists(commands)
    assert (tmp_path / "state" / "sota.db").is_file()
    assert "Stopped" in log.read_text()
