"""Shared fixtures: every I/O test runs on asyncio and on trio."""

import pytest


@pytest.fixture(
    scope="session",
    params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")],
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
