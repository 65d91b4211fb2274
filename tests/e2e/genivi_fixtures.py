"""The GENIVI SWLM stand-in (``genivi_swlm.py``) as a process for end-to-end tests, and the
images it installs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sota_client.dbus_fixtures import Bus, bus_env

__all__ = ["Genivi", "genivi", "image"]

STUB = Path(__file__).with_name("genivi_swlm.py")
DEADLINE = 30.0


class Genivi:
    """The GENIVI SWLM stand-in as a process; what it did, from its log lines."""

    def __init__(self, bus: Bus, workdir: Path, *options: str) -> None:
        self.bus = bus
        self.log_path = workdir / "swlm.jsonl"
        self.state = workdir / "swlm-state.json"
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Genivi:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(STUB),
                *("--log", str(self.log_path), "--state", str(self.state)),
                *self.options,
            ],
            env=bus_env(self.bus),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs = len(self.events("ready"))
        self.wait_for(lambda: len(self.events("ready")) > runs)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def lines(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == name]

    def wait_for(self, predicate: Callable[[], object]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"the SWLM never did it; its log:\n{self.lines()}")
            time.sleep(0.05)


@pytest.fixture
def genivi(dbus_bus: Bus, workdir: Path) -> Iterator[Callable[..., Genivi]]:
    started: list[Genivi] = []

    def make(*options: str) -> Genivi:
        swlm = Genivi(dbus_bus, workdir, *options)
        started.append(swlm)
        return swlm

    yield make
    for swlm in started:
        swlm.stop()
        print(f"--- SWLM log ---\n{swlm.lines()}")


def image(update_id: str, *codes: int) -> tuple[bytes, list[str]]:
    """An image for the stand-in (its manifest), one operation per result code, and the
    operations' ids."""
    op_ids = [str(uuid.uuid4()) for _ in codes]
    operations = [
        {"id": op_id, "operation": "installPackage", "result_code": code}
        for op_id, code in zip(op_ids, codes, strict=True)
    ]
    body = {
        "updateId": update_id,
        "name": "ATS Demo",
        "description": "demo",
        "operations": operations,
    }
    return json.dumps(body).encode(), op_ids
