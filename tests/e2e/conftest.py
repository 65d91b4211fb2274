"""Fixtures for end-to-end tests: a short work directory, the simulator and daemon processes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sota_client.sim import CoreSimulator

from .harness import DaemonProcess, MakeDaemon


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory: Unix socket paths must stay under 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sota-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sim(workdir: Path) -> Iterator[CoreSimulator]:
    with CoreSimulator(path_roots=(str(workdir),)) as simulator:
        yield simulator


@pytest.fixture
def make_daemon(workdir: Path) -> Iterator[MakeDaemon]:
    daemons: list[DaemonProcess] = []

    def make(core_url: str, **sections: dict[str, Any]) -> DaemonProcess:
        daemon = DaemonProcess(workdir, core_url, **sections)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        if daemon.running():
            daemon.stop()
        # Shown by pytest only when the test failed.
        print(f"--- daemon log ({daemon.log_path}) ---\n{daemon.log()}")
