"""One rule for a Unix socket path about to be bound: a dead socket is removed, nothing else is.

The daemon's commands socket and the SDK's events and control sockets all follow it, so a
crashed process never blocks the next start and a start never deletes what is not a socket
nobody listens on (the 2016 client deleted whatever was at the path). Each caller turns
:class:`SocketPathTaken` into its own error, with what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

__all__ = ["SocketPathTaken", "clear_stale_socket"]

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
