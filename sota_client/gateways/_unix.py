"""Safe creation of a listening Unix socket path: replace a stale socket, never anything else."""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat

from .._errors import SotaError

__all__ = ["claim_socket_path", "file_identity", "set_socket_group"]


def claim_socket_path(path: str) -> None:
    """Make ``path`` free for ``bind``.

    A socket nobody listens on is a leftover of a crash and is removed. A socket that still
    accepts connections belongs to a running process, and any other kind of file is not ours:
    both are start-up errors (the 2016 client deleted whatever was there).

    :raises SotaError: the path cannot be used, with the reason.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SotaError(f"couldn't open commands socket: {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise SotaError(
            f"couldn't open commands socket: {path} exists and is not a socket; "
            "refusing to replace it"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SotaError(f"couldn't open commands socket: {path}: {exc}") from None
    else:
        raise SotaError(f"couldn't open commands socket: another process is listening on {path}")
    finally:
        probe.close()
    os.unlink(path)


def set_socket_group(path: str, group: str) -> None:
    """Give the socket to ``group`` so that SWLMs running as its members may connect.

    :raises SotaError: the group does not exist or the ownership cannot be changed.
    """
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise SotaError(f"network.socket_group: no group named {group!r}") from None
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        raise SotaError(f"couldn't give {path} to group {group}: {exc.strerror}") from None


def file_identity(path: str) -> tuple[int, int, int] | None:
    """Which file is at ``path`` now (device, inode, change time), or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns
