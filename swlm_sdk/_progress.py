"""Install progress from a vendor's handler to the daemon: a call that never blocks the install.

``report_progress(percent, text)`` works in a sync handler (a worker thread, or a thread of the
vendor's own) and in an async one. It only records the newest value; a task of the App sends
it: the first at once, then at most one every ``interval`` seconds (the newest wins), and the
last one before the install's report. A chatty installer costs a few commands, not a flood.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["DEFAULT_PROGRESS_INTERVAL", "ProgressReporter", "report_progress"]

DEFAULT_PROGRESS_INTERVAL = 1.0
"""Seconds between two progress commands of one install."""

_current: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar(
    "swlm_sdk_install_progress", default=None
)


def report_progress(percent: int, text: str = "") -> None:
    """Tell the daemon how far the install of the current update has got (0-100).

    Call it from an :class:`~swlm_sdk.App` install handler, sync or async, as often as you
    like: it returns at once and never fails the install. The daemon shows it in ``sota_client
    status``, in ``systemctl status`` and to the local API's clients (the HMI). A daemon that
    does not take progress (the 2016 client) is not sent any.

    :raises ValueError: ``percent`` is not an integer from 0 to 100.
    :raises RuntimeError: no App install is running in this context (the call must come from
        the handler, or a thread it started with its context, e.g. ``contextvars.copy_context``).
    """
    reporter = _current.get()
    if reporter is None:
        raise RuntimeError(
            "report_progress() reports the progress of an App's install: call it from the "
            "on_download_complete handler (or a thread started with its context)"
        )
    reporter.report(percent, text)


class ProgressReporter:
    """The progress of one install: :meth:`report` from anywhere, sent by :meth:`sending`.

    :param send: sends one progress to the daemon; it must not raise for a failed send (the
        App logs those and may stop sending).
    :param interval: seconds between two sends.
    """

    def __init__(
        self,
        send: Callable[[int, str], Awaitable[None]],
        *,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self._send = send
        self._interval = interval
        self._lock = threading.Lock()
        self._newest: tuple[int, str] | None = None  # not sent yet
        self._sent: tuple[int, str] | None = None
        self._wake = anyio.Event()
        self._ended = anyio.Event()
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()

    def report(self, percent: int, text: str = "") -> None:
        """Keep ``(percent, text)`` as the newest progress and wake the sender. It never waits
        for a send: from another thread it waits only until the event loop takes the wake-up."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"a progress is an integer percentage from 0 to 100, not {percent!r}")
        with self._lock:
            self._newest = (percent, str(text))
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            anyio.from_thread.run_sync(self._wake.set, token=self._token)

    @asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Send while the block runs (the handler, with this reporter as its context's); at its
        end, the send under way and then the newest progress not sent yet (a cancelled block
        cancels them)."""
        token = _current.set(self)
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run)
                try:
                    yield
                except Exception as exc:  # the handler's: raised as it is, not in a group
                    failure = exc
                finally:
                    self._ended.set()
                    self._wake.set()
        finally:
            _current.reset(token)
        if failure is not None:
            raise failure

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._flush()
            if self._ended.is_set():
                await self._flush()  # what came while the last one was being sent
                return
            with anyio.move_on_after(self._interval):
                await self._ended.wait()

    async def _flush(self) -> None:
        with self._lock:
            newest, self._newest = self._newest, None
        if newest is not None and newest != self._sent:
            self._sent = newest
            await self._send(*newest)
