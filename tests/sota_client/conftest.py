"""Fixtures of the daemon tests: short socket directories, waiting for a log message."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .daemon_fixtures import LogWaiter


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory: tmp_path can exceed the 107-byte AF_UNIX limit."""
    path = Path(tempfile.mkdtemp(prefix="sota-t-"))
    assert len(str(path)) < 40
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def log_waiter() -> Iterator[Callable[[str], LogWaiter]]:
    """``waiter = log_waiter("text")`` then ``await waiter.wait()``; watches ``sota_client``."""
    logger = logging.getLogger("sota_client")
    added: list[LogWaiter] = []
    old_level = logger.level
    logger.setLevel(logging.DEBUG)

    def make(text: str) -> LogWaiter:
        waiter = LogWaiter(text)
        logger.addHandler(waiter)
        added.append(waiter)
        return waiter

    yield make
    for waiter in added:
        logger.removeHandler(waiter)
    logger.setLevel(old_level)
