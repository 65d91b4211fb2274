"""Fixtures for the simulator tests: a running simulator with one package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sota_client.sim import CoreSimulator

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, every byte value


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        simulator.add_package("nano", "2.2.6", data=PAYLOAD)
        yield simulator
