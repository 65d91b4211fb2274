"""The App's control socket: ``swlm confirm <id>`` from a shell reaches the running SWLM here.

One request per connection, as on the daemon's sockets: the client writes one JSON object and
half-closes, the App answers one JSON object and closes. ``{"confirm": "<update id>"}`` is
answered ``{"ok": true, "text": "<the report's text>"}`` or ``{"ok": false, "error": "<why>"}``.
The socket is ``state_dir/control.socket``, mode 0600 by default: confirming firmware is for
the SWLM's own user and root, not for the daemon's group.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import msgspec
from anyio.abc import SocketListener, SocketStream

from ._errors import ConfirmRefused, ProtocolError
from ._paths import StrPath, check_socket_path
from ._socket_file import bind_own_socket, unlink_own_socket
from ._wire import exchange, receive_to_eof, stream_failure

__all__ = [
    "CONTROL_SOCKET_NAME",
    "DEFAULT_CONFIRM_TIMEOUT",
    "confirm_update",
    "control_server",
    "control_socket_path",
]

log = logging.getLogger("swlm_sdk.app")

CONTROL_SOCKET_NAME = "control.socket"
_MAX_MESSAGE = 4096
_READ_TIMEOUT = 5.0
_CONNECTIONS = 4
DEFAULT_CONFIRM_TIMEOUT = 60.0
"""Seconds ``swlm confirm`` waits: the App's ``on_boot`` hook runs before the answer."""


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    confirm: str


class _Reply(msgspec.Struct, omit_defaults=True):
    ok: bool
    text: str = ""
    error: str = ""


Confirm = Callable[[str], Awaitable[str]]
"""Confirms one update and returns its report's text, or raises :class:`ConfirmRefused`."""


def control_socket_path(state_dir: StrPath) -> str:
    """Where the App with this ``state_dir`` listens for confirmations.

    :raises ConfigError: the path is too long for a Unix socket.
    """
    return check_socket_path(
        os.path.join(os.fspath(state_dir), CONTROL_SOCKET_NAME), "control socket"
    )


@contextlib.asynccontextmanager
async def control_server(path: str, confirm: Confirm, *, mode: int = 0o600) -> AsyncIterator[None]:
    """Listen on the control socket at ``path`` and answer each request with
    ``confirm(update_id)``, until the block ends; then remove the socket."""
    listener, identity = await bind_own_socket(path, mode, "control socket")
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_ControlServer(path, confirm).serve, listener)
            yield
            group.cancel_scope.cancel()
    finally:
        unlink_own_socket(path, identity)


class _ControlServer:
    def __init__(self, path: str, confirm: Confirm) -> None:
        self.path = path
        self._confirm = confirm

    async def serve(self, listener: SocketListener) -> None:
        slots = anyio.Semaphore(_CONNECTIONS)  # more peers wait in the kernel's backlog
        async with listener, anyio.create_task_group() as group:
            while True:
                await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    slots.release()
                    log.error("control socket %s: accept failed: %s", self.path, exc)
                    await anyio.sleep(0.1)  # e.g. EMFILE: pause instead of spinning
                    continue
                group.start_soon(self._answer, stream, slots)

    async def _answer(self, stream: SocketStream, slots: anyio.Semaphore) -> None:
        try:
            async with stream:
                reply = await self._reply_to(stream)
                with anyio.move_on_after(_READ_TIMEOUT):
                    await stream.send(msgspec.json.encode(reply) + b"\n")
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            log.warning("control socket %s: connection failed: %s", self.path, stream_failure(exc))
        finally:
            slots.release()

    async def _reply_to(self, stream: SocketStream) -> _Reply:
        data = b""
        with anyio.move_on_after(_READ_TIMEOUT) as scope:
            try:
                data = await receive_to_eof(stream, _MAX_MESSAGE, "request")
            except ProtocolError as exc:
                return _Reply(False, error=str(exc))
        if scope.cancelled_caught:
            return _Reply(False, error=f"no complete request within {_READ_TIMEOUT:g} s")
        try:
            request = msgspec.json.decode(data, type=_Request)
        except msgspec.DecodeError as exc:
            return _Reply(False, error=f'not a request like {{"confirm": "<update id>"}}: {exc}')
        try:
            return _Reply(True, text=await self._confirm(request.confirm))
        except ConfirmRefused as exc:
            return _Reply(False, error=str(exc))


async def confirm_update(
    socket_path: str, update_id: str, *, reply_timeout: float = DEFAULT_CONFIRM_TIMEOUT
) -> str:
    """Ask the running App to confirm ``update_id`` (after the reboot into it); the text of
    the report it then sends.

    :raises ConfirmRefused: the App answered that it does not confirm it, and why.
    :raises TransportError: no App listens on ``socket_path``, or it did not answer in time.
    :raises ProtocolError: the answer is not one.
    """
    data = await exchange(
        socket_path,
        msgspec.json.encode(_Request(update_id)),
        time_limit=reply_timeout,
        limit=_MAX_MESSAGE,
        hint="is the SWLM running, with this state directory?",
    )
    try:
        reply = msgspec.json.decode(data, type=_Reply)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"the SWLM's answer {data[:120]!r} is not valid: {exc}") from None
    if not reply.ok:
        raise ConfirmRefused(reply.error or "the SWLM refused without saying why")
    return reply.text
