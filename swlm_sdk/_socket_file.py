"""One rule for a Unix socket path about to be bound: a dead socket is removed, nothing else is;
and the SDK's sockets, bound under that rule and unlinked only while they are still their own.

The daemon's commands socket and the SDK's events and control sockets all follow it, so a
crashed process never blocks the next start and a start never deletes what is not a socket
nobody listens on (the 2016 client deleted whatever was at the path). Each caller turns
:class:`SocketPathTaken` into its own error, with what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat

import anyio
from anyio.abc import SocketListener

from ._errors import ListenerError

__all__ = ["SocketPathTaken", "bind_own_socket", "clear_stale_socket", "unlink_own_socket"]

log = logging.getLogger("swlm_sdk.listener")

PROBE_TIMEOUT = 1.0
"""Seconds to wait for a socket to accept the probe connection."""


class SocketPathTaken(Exception):
    """The path cannot be used for a new socket; the message names it and says why."""


def clear_stale_socket(path: str) -> bool:
    """Make ``path`` free for ``bind``: remove a socket nobody accepts connections on.

    Returns whether such a socket was removed (nothing was at ``path`` otherwise).

    :raises SocketPathTaken: ``path`` is another kind of file, a socket a process listens on,
        or cannot be looked at.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise SocketPathTaken(f"cannot check {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a socket"
        raise SocketPathTaken(f"{path} exists and is {kind}; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT)
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketPathTaken(f"cannot check socket {path}: {exc.strerror or exc}") from None
    else:
        raise SocketPathTaken(f"another process is listening on {path}")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def _clear_stale(path: str, what: str) -> None:
    """Remove a dead socket at ``path``; refuse to touch anything else."""
    try:
        removed = clear_stale_socket(path)
    except SocketPathTaken as exc:
        raise ListenerError(f"{exc}. Free it, or choose another {what} path") from None
    if removed:
        log.info("removed stale %s %s", what, path)


async def bind_own_socket(
    path: str, mode: int, what: str
) -> tuple[SocketListener, tuple[int, int]]:
    """Listen on a new Unix socket at ``path`` with permissions ``mode``, replacing a stale
    one a dead process left; also the socket's identity, for :func:`unlink_own_socket`.

    :raises ListenerError: ``path`` is another file, a live socket, or cannot be created.
    """
    await anyio.to_thread.run_sync(_clear_stale, path, what)
    try:
        listener = await anyio.create_unix_listener(path, mode=mode)
    except OSError as exc:
        raise ListenerError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    info = os.lstat(path)
    return listener, (info.st_dev, info.st_ino)


def unlink_own_socket(path: str, identity: tuple[int, int] | None) -> None:
    """Remove the socket at ``path`` if it is still ours: another listener may have replaced
    it after a stale-check."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    if (info.st_dev, info.st_ino) == identity:
        with contextlib.suppress(OSError):
            os.unlink(path)
