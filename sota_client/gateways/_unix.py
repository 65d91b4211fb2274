"""Safe creation of a listening Unix socket path: replace a stale socket, never anything else.

Also the process's open-file limit, which bounds how many peers a listening socket can hold.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import resource

from swlm_sdk._socket_file import SocketPathTaken, clear_stale_socket

from .._errors import SotaError

__all__ = [
    "bind_error",
    "claim_socket_path",
    "file_identity",
    "raise_open_file_limit",
    "set_socket_group",
]

logger = logging.getLogger(__name__)

OPEN_FILE_CEILING = 65536


def bind_error(path: str, exc: OSError) -> SotaError:
    """The start-up error for a socket that cannot be created, saying what to do about it."""
    directory = os.path.dirname(os.path.abspath(path))
    if exc.errno == errno.ENOENT and not os.path.isdir(directory):
        return SotaError(
            f"couldn't open commands socket: {path}: the directory {directory} does not exist. "
            f"Create it (e.g. install -d -m 0750 {directory}), or under systemd set "
            f"RuntimeDirectory={os.path.basename(directory)} in the unit, or change "
            "network.socket_commands_path"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SotaError(
            f"couldn't open commands socket: {path}: {exc.strerror}. The daemon's user "
            f"must be able to write to {directory}"
        )
    return SotaError(f"couldn't open commands socket: {path}: {exc.strerror or exc}")


def claim_socket_path(path: str) -> None:
    """Make ``path`` free for ``bind``.

    A socket nobody listens on is a leftover of a crash and is removed. A socket that still
    accepts connections belongs to a running process, and any other kind of file is not ours:
    both are start-up errors (the 2016 client deleted whatever was there).

    :raises SotaError: the path cannot be used, with the reason.
    """
    try:
        removed = clear_stale_socket(path)
    except SocketPathTaken as exc:
        raise SotaError(f"couldn't open commands socket: {exc}") from None
    if removed:
        logger.info("Removed a stale commands socket at %s (a crash left it)", path)


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


def raise_open_file_limit(ceiling: int = OPEN_FILE_CEILING) -> int:
    """Raise the soft limit on open files to the hard limit (at most ``ceiling``); return it.

    Every peer connected to the commands socket holds a file descriptor, idle or not, and 1,000
    idle peers plus 300 slow writers already exceed the common default soft limit of 1024; once
    the daemon is out of descriptors, downloads and the journal fail too. The hard limit (for
    example systemd's ``LimitNOFILE=``) is what the administrator allows; the ceiling keeps an
    unlimited one from meaning an unbounded descriptor table. Call it once at start-up, before
    :meth:`CommandServer.serve`, which sizes its connection cap from the soft limit.

    Never fails: if the limit cannot be read or raised, that is logged and the current soft
    limit (0 if unknown) is returned, and the daemon runs with it.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as exc:
        logger.warning("Couldn't read the open-file limit (%s); leaving it as it is", exc)
        return 0
    if soft == resource.RLIM_INFINITY:
        return ceiling  # not on Linux (nr_open bounds it); as good as the ceiling anyway
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft >= target:
        return soft  # never lower it
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        logger.warning(
            "Couldn't raise the open-file limit from %d to %d (%s); running with %d. "
            "Raise LimitNOFILE= in the service unit",
            soft,
            target,
            exc,
            soft,
        )
        return soft
    logger.debug("Raised the open-file limit from %d to %d", soft, target)
    return target
