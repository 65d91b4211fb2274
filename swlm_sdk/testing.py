"""Test kit for SWLMs: ``FakeDaemon`` and its blocking twin, and pytest fixtures for both.

Installing the SDK registers this module as a pytest plugin (a ``pytest11`` entry point), so
the fixtures need no ``conftest.py`` line. ``fake_daemon`` is async (anyio's pytest plugin,
which anyio installs, runs it: mark the test ``anyio``); ``sync_fake_daemon`` is for plain
tests of synchronous code::

    @pytest.mark.anyio
    async def test_my_swlm(fake_daemon: FakeDaemon) -> None:
        ...

    def test_my_sync_swlm(sync_fake_daemon: SyncFakeDaemon) -> None:
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from ._fake import FakeDaemon as FakeDaemon
from ._fake import Reply as Reply
from ._fake import ReplyFunction as ReplyFunction
from ._fake_sync import SyncFakeDaemon as SyncFakeDaemon

__all__ = [
    "FakeDaemon",
    "Reply",
    "ReplyFunction",
    "SyncFakeDaemon",
    "fake_daemon",
    "sync_fake_daemon",
]

try:
    import pytest
except ImportError:  # pragma: no cover - FakeDaemon works without pytest
    pass
else:

    @pytest.fixture
    async def fake_daemon() -> AsyncIterator[FakeDaemon]:
        """A running :class:`FakeDaemon` in a private temporary directory."""
        async with FakeDaemon() as fake:
            yield fake

    @pytest.fixture
    def sync_fake_daemon() -> Iterator[SyncFakeDaemon]:
        """A running :class:`SyncFakeDaemon` in a private temporary directory."""
        with SyncFakeDaemon() as fake:
            yield fake
