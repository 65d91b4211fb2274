"""Calling a vendor's function: a sync one in a worker thread, an async one on the loop."""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import anyio
import anyio.from_thread
import pytest

from swlm_sdk._calls import call_user, is_async_callable

pytestmark = pytest.mark.anyio


def where() -> str:
    return threading.current_thread().name


async def finish(value: object) -> tuple[object, str]:
    await anyio.lowlevel.checkpoint()
    return value, where()


class Later:
    """An awaitable that is not a coroutine: trio refuses a coroutine returned to a thread."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, tuple[object, str]]:
        return finish(self.value).__await__()


async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    loop = where()
    threads: list[str] = []

    def install(image: str, code: int) -> tuple[str, int]:
        threads.append(where())
        return image, code

    assert await call_user(install, "/img", 4) == ("/img", 4)
    assert [thread != loop for thread in threads] == [True]


async def test_an_async_function_runs_on_the_loop() -> None:
    loop = where()

    async def install(image: str) -> tuple[str, str]:
        await anyio.lowlevel.checkpoint()
        return image, where()

    assert await call_user(install, "/img") == ("/img", loop)


async def test_an_object_with_an_async_call_runs_on_the_loop() -> None:
    loop = where()

    class Installer:
        async def __call__(self, image: str) -> tuple[str, str]:
            await anyio.lowlevel.checkpoint()
            return image, where()

    assert is_async_callable(Installer())
    assert await call_user(Installer(), "/img") == ("/img", loop)


async def test_an_awaitable_from_a_sync_function_is_awaited_on_the_loop() -> None:
    loop = where()
    threads: list[str] = []

    def install(image: str) -> Later:
        threads.append(where())
        return Later(image)

    assert await call_user(install, "/img") == ("/img", loop)
    assert [thread != loop for thread in threads] == [True]


async def test_convert_runs_where_the_result_is_made() -> None:
    loop = where()

    def convert(value: object) -> tuple[object, str]:
        return value, where()

    async def provide() -> str:
        return "awaited"

    value, thread = await call_user(lambda: "plain", convert=convert)
    assert value == "plain"
    assert thread != loop  # iterating a lazy result may block: not on the loop
    assert await call_user(lambda: Later("later"), convert=convert) == (("later", loop), loop)
    assert await call_user(provide, convert=convert) == ("awaited", loop)


@pytest.mark.parametrize("shield_thread", [False, True])
async def test_a_cancelled_caller_starts_a_sync_function_only_when_shielded(
    shield_thread: bool,
) -> None:
    ran: list[object] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        ran.append(await call_user(lambda: "installed", shield_thread=shield_thread))
        await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert ran == (["installed"] if shield_thread else [])


async def test_a_started_thread_finishes_and_its_result_is_returned() -> None:
    ran: list[object] = []
    with anyio.CancelScope() as scope:

        def install() -> str:
            anyio.from_thread.run_sync(scope.cancel)  # cancelled while the thread runs
            return "installed"

        ran.append(await call_user(install))
        await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert ran == ["installed"]
