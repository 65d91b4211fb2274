"""A fake SOTA client daemon for SWLM tests: a real commands socket that answers like 2016."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Self, TypeAlias, TypeVar, overload

import anyio
from anyio.abc import SocketListener, SocketStream

from ._errors import CommandSyntaxError, ProtocolError
from ._paths import StrPath, check_socket_path
from ._wire import push, receive_to_eof
from .protocol import (
    AlreadyAuthenticated,
    AwaitingReboot,
    Command,
    DownloadComplete,
    DownloadFailed,
    Event,
    FoundInstalledPackages,
    FoundSystemInfo,
    GetUpdateRequests,
    InstalledPackagesSent,
    InstallFailed,
    InstallProgress,
    ListInstalledPackages,
    ListSystemInfo,
    NoUpdateRequests,
    Package,
    ResultCode,
    SendInstalledPackages,
    SendInstallProgress,
    SendRebootNeeded,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
    SystemInfoSent,
    UpdateReport,
    UpdateReportSent,
    encode_envelope,
    encode_event,
    parse_command,
)

__all__ = ["FakeDaemon", "Reply", "ReplyFunction"]

C = TypeVar("C", bound=Command)

ReplyValue: TypeAlias = Event | str | bytes
"""An event (sent as its JSON), or a raw text/bytes reply such as ``Unknown Command: ...``."""

ReplyFunction: TypeAlias = Callable[[Command], "ReplyValue | Awaitable[ReplyValue | None] | None"]
"""Called with each accepted command; ``None`` means the default reply."""

Reply: TypeAlias = ReplyValue | ReplyFunction

_MAX_REQUEST = 1 << 20


def _default_reply(command: Command) -> ReplyValue:
    """What a 2016 daemon with ``package_manager = "off"`` and a reachable Core answers."""
    match command:
        case SendUpdateReport():
            return UpdateReportSent()
        case SendInstalledPackages():
            return InstalledPackagesSent()
        case GetUpdateRequests():
            return NoUpdateRequests()
        case ListInstalledPackages():
            return FoundInstalledPackages(())
        case ListSystemInfo():
            return FoundSystemInfo("")
        case SendSystemInfo():
            return SystemInfoSent()
        case StartDownload(update_id=update_id):
            return DownloadFailed(update_id, "the fake daemon has no update to download")
        case StartInstall(update_id=update_id):
            return InstallFailed(
                UpdateReport.single(update_id, ResultCode.GENERAL_ERROR, "no package manager")
            )
        case Shutdown():
            return b""  # the 2016 daemon exits before it answers
        case SendInstallProgress(update_id=update_id, percent=percent, text=text):
            return InstallProgress(update_id, percent, text)  # this daemon's answer
        case SendRebootNeeded(update_id=update_id, text=text):
            return AwaitingReboot(update_id, text)
        case _:
            return AlreadyAuthenticated()


class FakeDaemon:
    """A stand-in for the SOTA client daemon, for testing an SWLM without one.

    It binds a real commands socket, answers each command exactly as the 2016 client does
    (error texts for bad commands; event JSON otherwise) and records what it received.
    It also delivers events to the SWLM's events socket, as the daemon does::

        async with FakeDaemon() as fake:
            ...  # start the SWLM with fake.commands_socket / fake.events_socket
            await fake.deliver(DownloadComplete("u1", "/path/to/image"))
            [report] = await fake.wait_for(SendUpdateReport)

    Both sockets and a daemon config naming them (``config_path``) go in ``directory``
    (created if missing); without one, in a fresh private temporary directory that is
    removed on exit.

    :param replies: a mapping from command class to a :data:`Reply`, or a function called
        with every accepted command (return ``None`` for the default). Defaults:
        ``UpdateReportSent``, ``InstalledPackagesSent``, ``NoUpdateRequests`` and so on.
    :param strict_2016: reject ``SendUpdateReport`` with a result text as the 2016 client did
        (``Unknown Command: unexpected SendUpdateReport args: [...]``).
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
        self._own_dir = directory is None
        self.directory = (
            tempfile.mkdtemp(prefix="swlm-fake-") if directory is None else os.fspath(directory)
        )
        self.commands_socket = check_socket_path(
            commands_socket or os.path.join(self.directory, "commands.sock"), "commands socket"
        )
        self.events_socket = check_socket_path(
            events_socket or os.path.join(self.directory, "events.sock"), "events socket"
        )
        self.config_path = os.path.join(self.directory, "sota.toml")
        self.strict_2016 = strict_2016
        self._replies: dict[type[Command], Reply] = {}
        self._reply_function: ReplyFunction | None = None
        if callable(replies):
            self._reply_function = replies
        elif replies is not None:
            self._replies.update(replies)
        self.commands: list[Command] = []
        """Every accepted command, in arrival order."""
        self.requests: list[bytes] = []
        """Every request as raw bytes, accepted or not."""
        self._changed: anyio.Event | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    def __repr__(self) -> str:
        return f"FakeDaemon({self.commands_socket!r})"

    @property
    def reports(self) -> list[UpdateReport]:
        """The update reports received, in order."""
        return [c.report for c in self.commands if isinstance(c, SendUpdateReport)]

    @property
    def package_lists(self) -> list[tuple[Package, ...]]:
        """The installed-package lists received, in order."""
        return [c.packages for c in self.commands if isinstance(c, SendInstalledPackages)]

    def set_reply(self, kind: type[Command], reply: Reply | None) -> None:
        """Answer ``kind`` commands with ``reply`` from now on (``None``: the default)."""
        if reply is None:
            self._replies.pop(kind, None)
        else:
            self._replies[kind] = reply

    def write_config(self) -> str:
        """Write a daemon config naming both sockets to ``config_path``, and return the path."""
        with open(self.config_path, "w", encoding="utf-8") as file:
            file.write(
                "[gateway]\nsocket = true\n\n[network]\n"
                f'socket_commands_path = "{self.commands_socket}"\n'
                f'socket_events_path = "{self.events_socket}"\n'
            )
        return self.config_path

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this FakeDaemon is already running")
        self._changed = anyio.Event()
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._own_dir:
                stack.callback(shutil.rmtree, self.directory, ignore_errors=True)
                os.chmod(self.directory, 0o700)
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self.write_config()
            listener = await anyio.create_unix_listener(self.commands_socket, mode=0o600)
            stack.callback(self._unlink)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            task_group.start_soon(self._serve, listener)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop answering and remove the commands socket (and the private directory)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.commands_socket)

    async def _serve(self, listener: SocketListener) -> None:
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(30):
                try:
                    request = await receive_to_eof(stream, _MAX_REQUEST, "command")
                except (ProtocolError, OSError, anyio.BrokenResourceError):
                    return
                reply = await self.answer(request)
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    if reply:
                        await stream.send(reply)
                    await stream.send_eof()

    async def answer(self, request: bytes) -> bytes:
        """The reply bytes to one request, recording it; what the socket handler sends."""
        self.requests.append(request)
        try:
            command = parse_command(request, extensions=not self.strict_2016)
        except CommandSyntaxError as exc:
            self._notify()
            return exc.reply.encode()
        self.commands.append(command)
        self._notify()
        reply: Reply | None = self._replies.get(type(command))
        if reply is None and self._reply_function is not None:
            reply = self._reply_function
        value: ReplyValue | None
        if callable(reply):
            result = reply(command)
            value = await result if inspect.isawaitable(result) else result
        else:
            value = reply
        if value is None:
            value = _default_reply(command)
        if isinstance(value, Event):
            return encode_event(value)
        return value.encode() if isinstance(value, str) else value

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    @overload
    async def wait_for(self, *, count: int = 1, within: float = 10.0) -> list[Command]: ...
    @overload
    async def wait_for(self, kind: type[C], *, count: int = 1, within: float = 10.0) -> list[C]: ...
    async def wait_for(
        self, kind: type[Command] = Command, *, count: int = 1, within: float = 10.0
    ) -> list[Command] | list[C]:
        """Wait until at least ``count`` commands of class ``kind`` arrived; return them all.

        :raises TimeoutError: they did not arrive within ``within`` seconds; the message lists
            what did arrive.
        """
        found: list[Command] = []
        with anyio.move_on_after(within):
            while True:
                found = [c for c in self.commands if isinstance(c, kind)]
                if len(found) >= count:
                    return found
                assert self._changed is not None, "the FakeDaemon is not running"
                await self._changed.wait()
        raise TimeoutError(
            f"the fake daemon got {len(found)} {kind.__name__} command(s) within {within:g} s, "
            f"expected {count}; it got {self.commands!r}"
        )

    async def deliver(
        self, event: DownloadComplete | DownloadFailed | bytes, *, within: float = 10.0
    ) -> None:
        """Deliver one event to the events socket as the daemon does: connect, write, half-close.

        ``event`` is sent in its 0.1 envelope; raw bytes are sent as they are (for tests of
        malformed input).

        :raises DaemonUnavailable: nothing is listening on the events socket.
        """
        data = event if isinstance(event, bytes) else encode_envelope(event)
        await push(self.events_socket, data, time_limit=within, hint="is the SWLM listening?")
