"""The Debian packages on a fresh Debian 12 root: installed offline with apt, one update end to end
with the packaged flash SWLM (a flash, a reboot into the new slot, the report), then an upgrade
that keeps the journal and a purge that cleans up.

The root is made with ``mmdebstrap`` from this machine's apt sources, with Python 3.11 in it (a
Debian 12 system has it; a bare ``minbase`` does not). The daemon and the SWLM run from the
packages with ``chroot``, as the users and groups their units name, in directories made as
systemd would make them from the units' ``RuntimeDirectory=`` lines. There is no systemd in the
root: the units' own checks are in ``test_units.py``.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sota_client.sim import CoreSimulator

sys.path.insert(0, str(Path(__file__).parents[2] / "examples" / "swlm_flash"))
import swlm_flash

pytestmark = pytest.mark.e2e

DEVICE = "4b1e1c3a-6f0e-4c55-9a52-3d2f1a0b7c11"
CODENAME = "bookworm"  # the packages are built for Debian 12's Python 3.11
DEADLINE = 900  # seconds for making the root and for each apt run
SLOT_SIZE = 1 << 16
OLD_IMAGE = b"factory firmware 1.0\n"
NEW_IMAGE = bytes(range(256)) * 64
FLASH_STATE = Path("/var/lib/swlm-flash")


def run(argv: list[str], *, timeout: float = DEADLINE) -> str:
    """Run ``argv``; its output, or a failure that shows it."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{output}"
    return output


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {package} (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("making a Debian root and chroot into it needs root (CI runs as root)")
    directory = tmp_path_factory.mktemp("debian") / "root"
    run(
        [
            tool("mmdebstrap", "mmdebstrap"),
            "--variant=apt",
            "--mode=root",
            "--include=python3.11",
            "--quiet",
            CODENAME,
            str(directory),
        ]
    )
    return directory


def in_root(root: Path, *argv: str, userspec: str | None = None, offline: bool = False) -> str:
    """Run ``argv`` in the root; ``offline`` takes the network away (a new, empty namespace)."""
    command = ["chroot", *([f"--userspec={userspec}"] if userspec else []), str(root), *argv]
    if offline:
        command = [tool("unshare", "util-linux"), "--net", *command]
    return run(command)


def unit(root: Path, name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((root / "usr/lib/systemd/system" / name).read_text())
    return parser["Service"]


def ids(root: Path, user: str, group: str) -> tuple[int, int]:
    def look_up(table: str, name: str) -> int:
        for line in (root / "etc" / table).read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise AssertionError(f"no {name} in the root's /etc/{table}")

    return look_up("passwd", user), look_up("group", group)


def runtime_directory(root: Path, service: configparser.SectionProxy) -> Path:
    """``RuntimeDirectory=`` made as systemd makes it: owned by the unit's user and group."""
    path = root / "run" / service["RuntimeDirectory"]
    path.mkdir(exist_ok=True)
    uid, gid = ids(root, service.get("User", "root"), service.get("Group", "root"))
    os.chown(path, uid, gid)
    path.chmod(int(service.get("RuntimeDirectoryMode", "0755"), 8))
    return path


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def flash_device(root: Path) -> dict[str, str]:
    """Two slot files and a boot state in the root, firmware 1.0 active in slot a."""
    state = root / FLASH_STATE.relative_to("/")
    state.mkdir(parents=True, exist_ok=True)
    (state / "slot-a.img").write_bytes(OLD_IMAGE)
    (state / "slot-b.img").write_bytes(b"")
    old = {"name": "ecu-main", "version": "1.0", "sha256": hashlib.sha256(OLD_IMAGE).hexdigest()}
    (state / "bootstate.json").write_text(json.dumps({"active": "a", "a": old, "b": None}))
    (state / "boot_id").write_text(f"{uuid.uuid4()}\n")  # the root has no /proc
    return {
        "--boot-id-file": str(FLASH_STATE / "boot_id"),
        "--slot-a": str(FLASH_STATE / "slot-a.img"),
        "--slot-b": str(FLASH_STATE / "slot-b.img"),
        "--slot-size": str(SLOT_SIZE),
        "--boot-state": str(FLASH_STATE / "bootstate.json"),
        "--firmware-name": "ecu-main",
    }


def test_the_packages_install_offline_run_an_update_upgrade_and_purge(
    root: Path, built_debs: dict[str, Path], tmp_path: Path
) -> None:
    debs = root / "tmp" / "debs"
    debs.mkdir(exist_ok=True)
    for name in ("sota-client", "swlm-flash-example"):
        shutil.copy2(built_debs[name], debs)
    packages = sorted(f"/tmp/debs/{p.name}" for p in debs.iterdir())

    # Offline: the root's package lists are empty and it has no network.
    in_root(root, "apt-get", "install", "-y", "--no-install-recommends", *packages, offline=True)
    assert in_root(root, "/usr/bin/sota_client", "--version").strip()
    daemon_unit = unit(root, "sota_client.service")
    swlm_unit = unit(root, "swlm-flash.service")
    runtime_directory(root, daemon_unit)

    bundle = swlm_flash.make_bundle(tmp_path / "ecu-main-1.1.tar", "ecu-main", "1.1", NEW_IMAGE)
    options = flash_device(root)
    with CoreSimulator() as sim:
        sim.add_package("ecu-main", "1.1", data=bundle.read_bytes())
        update_id = sim.queue_update(DEVICE, "ecu-main", "1.1")
        swlm_argv = ["/usr/bin/swlm-flash", "--config", "/etc/sota.toml"]
        swlm_argv += [word for pair in options.items() for word in pair]
        swlm_user = f"{swlm_unit.get('User', 'root')}:{swlm_unit.get('Group', 'root')}"
        daemon_user = f"{daemon_unit['User']}:{daemon_unit['Group']}"
        daemon_argv = [
            "/usr/bin/sota_client",
            "--config",
            "/etc/sota.toml",
            "--core-server",
            sim.url,
            "--core-polling-sec",
            "1",
            "--device-uuid",
            DEVICE,
            "--device-system-info",
            "",
        ]
        swlm_state = root / FLASH_STATE.relative_to("/")

        def boot(until: str) -> None:
            """Start the daemon and the SWLM as their units do; stop them at ``until``."""
            with (
                process(
                    ["chroot", f"--userspec={swlm_user}", str(root), *swlm_argv],
                    tmp_path / "swlm.log",
                ),
                process(
                    ["chroot", f"--userspec={daemon_user}", str(root), *daemon_argv],
                    tmp_path / "daemon.log",
                ),
            ):
                deadline = time.monotonic() + 120
                while not (awaits_reboot() if until == "flashed" else sim.reports(DEVICE)):
                    if time.monotonic() > deadline:
                        logs = {n: (tmp_path / n).read_text() for n in ("daemon.log", "swlm.log")}
                        pytest.fail(f"the update is not {until} after 120 s; logs: {logs}")
                    time.sleep(0.1)

        def awaits_reboot() -> bool:
            try:
                journal = json.loads((swlm_state / "swlm-journal.json").read_text())
            except (FileNotFoundError, ValueError):
                return False
            entry = journal["updates"].get(update_id, {})
            return entry.get("state") == "awaiting_reboot" and entry.get("announced") is True

        boot(until="flashed")
        assert sim.reports(DEVICE) == []  # it counts once slot b has booted
        (swlm_state / "boot_id").write_text(f"{uuid.uuid4()}\n")  # a reboot
        boot(until="reported")
        (report,) = sim.reports(DEVICE)
    assert report.update_id == update_id
    assert [r.result_code for r in report.results] == [0], report.results
    state = root / FLASH_STATE.relative_to("/")
    assert (state / "slot-b.img").read_bytes() == NEW_IMAGE
    assert json.loads((state / "bootstate.json").read_text())["active"] == "b"

    # An upgrade (the same package again) keeps the journal and an edited config.
    config = root / "etc" / "sota.toml"
    config.write_text(config.read_text() + "# edited on the device\n")
    in_root(root, "dpkg", "-i", *packages, offline=True)
    assert config.read_text().endswith("# edited on the device\n")
    status = json.loads(in_root(root, "/usr/bin/sota_client", "status", "--json"))
    assert update_id in json.dumps(status), status

    # A purge removes what the packages made.
    in_root(root, "apt-get", "purge", "-y", "swlm-flash-example", "sota-client", offline=True)
    for gone in ("etc/sota.toml", "var/lib/sota", "usr/lib/sota-client", "usr/bin/sota_client"):
        assert not (root / gone).exists(), gone
