"""A private dbus-daemon per test, so D-Bus tests never touch the machine's own buses.

Use it with ``from tests.sota_client.dbus_fixtures import dbus_bus`` and a ``dbus_bus``
argument; :func:`start_bus` runs one on any listening address.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["DBUS_DAEMON", "Bus", "bus_env", "dbus_bus", "start_bus"]

DBUS_DAEMON = "/usr/bin/dbus-daemon"
START_TIMEOUT = 10.0

# No service directories: a call to an unowned name fails at once with ServiceUnknown instead
# of the bus trying to start something from the machine's .service files.
CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass(frozen=True)
class Bus:
    """A running private bus."""

    address: str
    """As the daemon printed it, e.g. ``unix:path=/tmp/sota-dbus-xxx/bus,guid=...``."""
    process: subprocess.Popen[bytes]


def bus_env(bus: Bus) -> dict[str, str]:
    """The environment for a subprocess whose session bus is ``bus``."""
    env = dict(os.environ)
    env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
    return env


def _read_address(process: subprocess.Popen[bytes], fd: int, stderr: Path) -> str:
    """The line the daemon prints once it listens; fails the test if it never comes."""
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            if not selector.select(START_TIMEOUT):
                pytest.fail(f"dbus-daemon printed no address within {START_TIMEOUT:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                process.wait(START_TIMEOUT)
                said = stderr.read_text(errors="replace").strip()
                pytest.fail(f"dbus-daemon exited with {process.returncode}: {said}")
            data += chunk
    return data.decode().strip()


@contextmanager
def start_bus(
    directory: Path, listen: str | None = None, *, config_text: str = CONFIG
) -> Iterator[Bus]:
    """A dbus-daemon listening on ``listen`` (default: a socket in ``directory``), stopped after;
    ``config_text`` is its configuration, with ``{address}`` where it listens."""
    if not os.access(DBUS_DAEMON, os.X_OK):
        pytest.skip(f"{DBUS_DAEMON} is not installed (install the dbus-daemon package)")
    config = directory / "bus.conf"
    config.write_text(config_text.format(address=listen or f"unix:path={directory / 'bus'}"))
    stderr = directory / "stderr"
    read_fd, write_fd = os.pipe()
    # stderr goes to a file, not a pipe: a daemon with much to say must never block on it.
    try:
        with stderr.open("wb") as stderr_file:
            process = subprocess.Popen(
                [
                    DBUS_DAEMON,
                    f"--config-file={config}",
                    "--nofork",
                    "--nopidfile",
                    f"--print-address={write_fd}",
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
            )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        address = _read_address(process, read_fd, stderr)
        yield Bus(address=address, process=process)
    finally:
        os.close(read_fd)
        if process.poll() is None:
            process.kill()
        process.wait(START_TIMEOUT)


@pytest.fixture
def dbus_bus() -> Iterator[Bus]:
    """A private dbus-daemon (session bus rules) for one test, killed afterwards.

    Its socket lives in a short temporary directory (AF_UNIX paths are limited to 107 bytes),
    and its address is the line it prints once it listens, so there is no waiting on a timer.
    """
    directory = Path(tempfile.mkdtemp(prefix="sota-dbus-"))
    try:
        with start_bus(directory) as bus:
            yield bus
    finally:
        shutil.rmtree(directory, ignore_errors=True)
