"""Blocking versions of the client and listener, run on the async code (no second copy)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Self

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import _client, _control
from ._client import DEFAULT_TIMEOUT, Retry
from ._control import DEFAULT_CONFIRM_TIMEOUT
from ._listener import DEFAULT_EVENT_TIMEOUT, DEFAULT_MAX_EVENT, EventKinds, EventListener
from ._paths import StrPath
from .protocol import Command, Event, InstalledPackagesSent, Package, ResultCode, UpdateReportSent

__all__ = [
    "EventStream",
    "confirm_update",
    "listen",
    "send_command",
    "send_installed_packages",
    "send_raw",
    "send_update_report",
]


def confirm_update(
    control_socket: str, update_id: str, *, reply_timeout: float = DEFAULT_CONFIRM_TIMEOUT
) -> str:
    """Blocking :func:`swlm_sdk.confirm_update`. Do not call it from inside an event loop."""
    return anyio.run(
        functools.partial(
            _control.confirm_update, control_socket, update_id, reply_timeout=reply_timeout
        )
    )


def send_raw(
    request: str | bytes,
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> bytes:
    """Blocking :func:`swlm_sdk.send_raw`. Do not call it from inside an event loop."""
    return anyio.run(
        functools.partial(
            _client.send_raw,
            request,
            commands_socket=commands_socket,
            config=config,
            reply_timeout=reply_timeout,
            retry=retry,
        )
    )


def send_command(
    command: Command | str,
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> Event:
    """Blocking :func:`swlm_sdk.send_command`. Do not call it from inside an event loop."""
    return anyio.run(
        functools.partial(
            _client.send_command,
            command,
            commands_socket=commands_socket,
            config=config,
            reply_timeout=reply_timeout,
            retry=retry,
        )
    )


def send_update_report(
    update_id: str,
    code: ResultCode | int | str,
    text: str | None = None,
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> UpdateReportSent:
    """Blocking :func:`swlm_sdk.send_update_report`. Do not call it from inside an event loop."""
    return anyio.run(
        functools.partial(
            _client.send_update_report,
            update_id,
            code,
            text,
            commands_socket=commands_socket,
            config=config,
            reply_timeout=reply_timeout,
            retry=retry,
        )
    )


def send_installed_packages(
    packages: Iterable[Package | tuple[str, str]],
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> InstalledPackagesSent:
    """Blocking :func:`swlm_sdk.send_installed_packages`. Do not call it inside an event loop."""
    return anyio.run(
        functools.partial(
            _client.send_installed_packages,
            list(packages),
            commands_socket=commands_socket,
            config=config,
            reply_timeout=reply_timeout,
            retry=retry,
        )
    )


class EventStream:
    """A blocking iterator over delivered events; the listener runs in a background thread.

    Use it as a context manager so the events socket is closed and unlinked::

        with swlm_sdk.sync.listen(kinds=[DownloadComplete]) as events:
            for event in events:
                ...
    """

    def __init__(self, listener: EventListener) -> None:
        self.listener = listener
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None

    @property
    def path(self) -> str:
        """The events socket path."""
        return self.listener.path

    def __enter__(self) -> Self:
        stack = ExitStack()
        try:
            portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
            self._portal = stack.enter_context(portal_cm)
            stack.enter_context(self._portal.wrap_async_context_manager(self.listener))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close and unlink the events socket and stop the background thread."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.receive()
            if event is None:
                return
            yield event

    def receive(self, timeout: float | None = None) -> Event | None:
        """The next event; ``None`` once the stream is closed.

        :raises TimeoutError: no event arrived within ``timeout`` seconds.
        """
        if self._portal is None or self._stack is None:
            raise RuntimeError("use 'with listen(...) as events:' before receiving")
        return self._portal.call(self._next, timeout)

    async def _next(self, limit: float | None) -> Event | None:
        with anyio.fail_after(limit):
            try:
                return await anext(self.listener)
            except StopAsyncIteration:
                return None


def listen(
    events_socket: StrPath | None = None,
    *,
    config: StrPath | None = None,
    kinds: EventKinds | None = None,
    mode: int = 0o660,
    max_size: int = DEFAULT_MAX_EVENT,
    read_timeout: float = DEFAULT_EVENT_TIMEOUT,
) -> EventStream:
    """A blocking :class:`swlm_sdk.EventListener`: ``with listen(...) as events: for e in events``.

    :raises ConfigError: the socket path or config is unusable (raised here).
    :raises ListenerError: the events socket cannot be created (raised on ``with``).
    """
    return EventStream(
        EventListener(
            events_socket,
            config=config,
            kinds=kinds,
            mode=mode,
            max_size=max_size,
            read_timeout=read_timeout,
        )
    )
