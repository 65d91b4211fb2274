"""Shared fixtures: every I/O test runs on asyncio and on trio; short socket directories;
waiting for a log message instead of polling."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

WATCHED_LOGGERS = ("sota_client", "swlm_sdk")


@pytest.fixture(
    scope="session",
    params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")],
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory: tmp_path can exceed the 107-byte AF_UNIX limit."""
    path = Path(tempfile.mkdtemp(prefix="sota-t-"))
    assert len(str(path)) < 40
    yield path
    shutil.rmtree(path, ignore_errors=True)


class LogWaiter(logging.Handler):
    """Wait for a log message (logged from the event loop's thread) instead of polling."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = anyio.Event()
        self.count = 0
        self.levels: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self.levels.add(record.levelno)
            self.seen.set()

    async def wait(self, within: float = 10.0) -> None:
        with anyio.fail_after(within):
            await self.seen.wait()


@pytest.fixture
def log_waiter() -> Iterator[Callable[[str], LogWaiter]]:
    """``waiter = log_waiter("text")`` then ``await waiter.wait()``; watches the project's
    loggers (``sota_client`` and ``swlm_sdk``) at DEBUG."""
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    old_levels = [logger.level for logger in loggers]
    added: list[LogWaiter] = []
    for logger in loggers:
        logger.setLevel(logging.DEBUG)

    def make(text: str) -> LogWaiter:
        waiter = LogWaiter(text)
        for logger in loggers:
            logger.addHandler(waiter)
        added.append(waiter)
        return waiter

    yield make
    for logger, level in zip(loggers, old_levels, strict=True):
        for waiter in added:
            logger.removeHandler(waiter)
        logger.setLevel(level)
