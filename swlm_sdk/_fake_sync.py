"""A blocking ``FakeDaemon``, run in a background thread, for plain tests of synchronous SWLMs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Self, TypeVar, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._app import App
from ._fake import FakeDaemon, Reply, ReplyFunction
from ._paths import StrPath
from .protocol import Command, DownloadComplete, DownloadFailed, Package, UpdateReport

__all__ = ["SyncFakeDaemon"]

C = TypeVar("C", bound=Command)


class SyncFakeDaemon:
    """:class:`FakeDaemon` for code without an event loop: the same daemon, blocking calls.

    The daemon runs in an event loop in a background thread, and so does an :class:`App`
    passed to :meth:`serving`; the test itself is a plain function::

        with SyncFakeDaemon() as fake:
            app = App(state_dir, config=fake.config_path)
            app.on_download_complete(install)
            with fake.serving(app):
                fake.deliver(DownloadComplete("u1", "/path/to/image"))
                fake.wait_for(SendUpdateReport)
            assert fake.reports == [UpdateReport.single("u1", ResultCode.OK)]

    The arguments, the attributes and :meth:`set_reply` are those of :class:`FakeDaemon`.
    """

    def __init__(
        self,
        directory: StrPath | None = None,
        *,
        commands_socket: StrPath | None = None,
        events_socket: StrPath | None = None,
        replies: Mapping[type[Command], Reply] | ReplyFunction | None = None,
        strict_2016: bool = False,
    ) -> None:
        self._daemon = FakeDaemon(
            directory,
            commands_socket=commands_socket,
            events_socket=events_socket,
            replies=replies,
            strict_2016=strict_2016,
        )
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def __repr__(self) -> str:
        return f"SyncFakeDaemon({self.commands_socket!r})"

    @property
    def commands_socket(self) -> str:
        return self._daemon.commands_socket

    @property
    def events_socket(self) -> str:
        return self._daemon.events_socket

    @property
    def config_path(self) -> str:
        """A daemon config naming both sockets: pass it as ``App(..., config=...)``."""
        return self._daemon.config_path

    @property
    def directory(self) -> str:
        return self._daemon.directory

    @property
    def commands(self) -> list[Command]:
        """Every accepted command, in arrival order."""
        return self._daemon.commands

    @property
    def requests(self) -> list[bytes]:
        """Every request as raw bytes, accepted or not."""
        return self._daemon.requests

    @property
    def reports(self) -> list[UpdateReport]:
        """The update reports received, in order."""
        return self._daemon.reports

    @property
    def package_lists(self) -> list[tuple[Package, ...]]:
        """The installed-package lists received, in order."""
        return self._daemon.package_lists

    def set_reply(self, kind: type[Command], reply: Reply | None) -> None:
        """Answer ``kind`` commands with ``reply`` from now on (``None``: the default)."""
        self._daemon.set_reply(kind, reply)

    def __enter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this SyncFakeDaemon is already running")
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal())
            stack.enter_context(portal.wrap_async_context_manager(self._daemon))
            self._stack, self._portal = stack.pop_all(), portal
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the daemon and its thread; remove the sockets (and the private directory)."""
        stack, self._stack, self._portal = self._stack, None, None
        if stack is not None:
            stack.close()

    def _running(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("use 'with SyncFakeDaemon() as fake:' first")
        return self._portal

    def deliver(
        self, event: DownloadComplete | DownloadFailed | bytes, *, within: float = 10.0
    ) -> None:
        """Blocking :meth:`FakeDaemon.deliver`: connect, write the envelope, half-close.

        :raises DaemonUnavailable: nothing is listening on the events socket.
        """
        self._running().call(functools.partial(self._daemon.deliver, event, within=within))

    @overload
    def wait_for(self, *, count: int = 1, within: float = 10.0) -> list[Command]: ...
    @overload
    def wait_for(self, kind: type[C], *, count: int = 1, within: float = 10.0) -> list[C]: ...
    def wait_for(
        self, kind: type[Command] = Command, *, count: int = 1, within: float = 10.0
    ) -> list[Command] | list[C]:
        """Blocking :meth:`FakeDaemon.wait_for`: at least ``count`` commands of class ``kind``.

        :raises TimeoutError: they did not arrive within ``within`` seconds.
        """
        wait = functools.partial(self._daemon.wait_for, kind, count=count, within=within)
        return self._running().call(wait)

    @contextlib.contextmanager
    def serving(self, app: App, *, within: float = 30.0) -> Iterator[App]:
        """Run ``app`` (made with ``config=fake.config_path``) while in the ``with`` block.

        On entry the app has its events socket open; on exit it is stopped as by SIGTERM:
        running installs finish and their reports are sent. It must have stopped within
        ``within`` seconds.

        :raises TimeoutError: the app did not stop in time (a handler that never returns?).
        """
        portal = self._running()
        task, _ = portal.start_task(app.serve)
        try:
            yield app
        finally:
            portal.call(app.stop)
            try:
                task.result(timeout=within)
            except TimeoutError:
                task.cancel()
                raise TimeoutError(
                    f"{app!r} did not stop within {within:g} s: is an install handler stuck?"
                ) from None
