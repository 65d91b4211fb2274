"""Test kit for SWLMs: ``FakeDaemon``, and a ``fake_daemon`` pytest fixture.

List this module in your ``conftest.py`` to get the fixture (it needs anyio's pytest plugin,
which anyio installs, and an ``anyio`` mark on the test)::

    pytest_plugins = ["swlm_sdk.testing"]

    @pytest.mark.anyio
    async def test_my_swlm(fake_daemon: FakeDaemon) -> None:
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ._fake import FakeDaemon as FakeDaemon
from ._fake import Reply as Reply
from ._fake import ReplyFunction as ReplyFunction

__all__ = ["FakeDaemon", "Reply", "ReplyFunction", "fake_daemon"]

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
