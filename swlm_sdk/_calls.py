"""Calling a vendor's function that may be sync or async: handlers, observers, providers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar, overload

import anyio

__all__ = ["call_user", "is_async_callable"]

T = TypeVar("T")


def is_async_callable(function: object) -> bool:
    """A coroutine function, or an object whose class defines an async ``__call__``."""
    if inspect.iscoroutinefunction(function):
        return True
    return inspect.iscoroutinefunction(vars(type(function)).get("__call__"))


@overload
async def call_user(
    function: Callable[..., object], *args: object, shield_thread: bool = False
) -> object: ...
@overload
async def call_user(
    function: Callable[..., object],
    *args: object,
    convert: Callable[[object], T],
    shield_thread: bool = False,
) -> T: ...
async def call_user(
    function: Callable[..., object],
    *args: object,
    convert: Callable[[object], object] | None = None,
    shield_thread: bool = False,
) -> object:
    """``function(*args)``, sync or async, and its result (awaited if it is awaitable).

    A sync function runs in a worker thread: it may block (a package manager, a file read)
    and must not stall the event loop, where the events and reports go on. An async callable,
    an object with an async ``__call__`` included, runs on the loop, and so does awaiting
    whatever awaitable a sync function returns.

    :param convert: turns the result into the value returned. For a sync function it runs in
        the worker thread too (unless the result is awaitable): iterating a lazy result may
        block as much as the call.
    :param shield_thread: a sync function runs even if the caller is cancelled before its
        thread starts (or while it waits for a free worker thread), and its result is
        returned: for work that must not be dropped once begun (an install). Without it such
        a cancellation is raised instead; a thread that started always runs to its end
        (anyio's ``abandon_on_cancel=False``) and its result is returned.
    """
    if is_async_callable(function):
        result = function(*args)
    else:

        def call_in_thread() -> object:
            result = function(*args)
            if convert is None or inspect.isawaitable(result):
                return result
            return convert(result)

        with anyio.CancelScope(shield=shield_thread):
            result = await anyio.to_thread.run_sync(call_in_thread)
        if not inspect.isawaitable(result):
            return result
    value = await result if inspect.isawaitable(result) else result
    return value if convert is None else convert(value)
