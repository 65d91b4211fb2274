"""Waiting for a file to appear at a path (an SWLM's events socket): inotify on its directory,
read through libc with ctypes, or checks at growing intervals where inotify is not there.

The daemon waits for this while an event waits for its SWLM, which can be for days; a check
every second would wake an idle daemon for nothing. inotify wakes it only when the directory
changes. Without it (not Linux, no free inotify instance or watch, the directory not there
yet) the path is checked after ``first_check`` seconds, then twice as long each time, up to
``longest_check``.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio

from ._unix import file_identity

__all__ = ["FileWatch", "Identity", "inotify_available"]

logger = logging.getLogger(__name__)

Identity = tuple[int, int, int]

# <sys/inotify.h>
_IN_ATTRIB = 0x00000004
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

#: A new file at the name (bind, rename) or a new owner or mode (its identity has the ctime).
_APPEARED = _IN_CREATE | _IN_MOVED_TO | _IN_ATTRIB
#: The watch itself is gone or stale, or events were lost: look again.
_LOOK_AGAIN = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_Q_OVERFLOW | _IN_IGNORED
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name

_libc: ctypes.CDLL | None = None
_libc_loaded = False


def _load_libc() -> ctypes.CDLL | None:
    global _libc, _libc_loaded
    if not _libc_loaded:
        _libc_loaded = True
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            libc = None
        _libc = libc
    return _libc


def inotify_available() -> bool:
    """Whether this system's libc has inotify (Linux)."""
    return _load_libc() is not None


class FileWatch:
    """Waits, again and again, until a file other than a given one is at ``path``.

    Use it as a context manager (it holds an inotify descriptor), from one task at a time.

    :param inotify: False to use the checks only (for tests of the fallback).
    :param sleep: how the fallback waits (tests record the intervals).
    """

    def __init__(
        self,
        path: str,
        *,
        first_check: float = 1.0,
        longest_check: float = 30.0,
        inotify: bool = True,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.path = path
        directory, name = os.path.split(os.path.abspath(path))
        self._directory = os.fsencode(directory)
        self._name = os.fsencode(name)
        self._first_check = first_check
        self._longest_check = max(longest_check, first_check)
        self._sleep = sleep
        self._inotify = inotify
        self._libc = _load_libc() if inotify else None
        self._fd: int | None = None
        self._wd: int | None = None
        self._said_why = False

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._wd = None

    @property
    def watching(self) -> bool:
        """Whether inotify watches the directory now (else the checks run)."""
        return self._wd is not None

    async def changed(self, seen: Identity | None) -> Identity:
        """Return the identity of the file at the path once it is there and is not ``seen``.

        A file that goes away is not a change: only a new one is (a socket to deliver to).
        """
        delay = self._first_check
        while True:
            watching = self._watch()  # before the look: a file that appears after it wakes us
            now = file_identity(self.path)
            if now is not None and now != seen:
                return now
            if watching:
                await self._next_change()
            else:
                await self._sleep(delay)
                delay = min(delay * 2, self._longest_check)

    def _watch(self) -> bool:
        """Watch the directory if that can be done; drop what was queued before now."""
        libc = self._libc
        if libc is None:
            self._explain("this system has no inotify" if self._inotify else "inotify is off")
            return False
        if self._fd is None:
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                self._explain(f"no inotify instance: {os.strerror(ctypes.get_errno())}")
                return False
            self._fd = fd
        if self._wd is None:
            mask = _APPEARED | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR
            wd = libc.inotify_add_watch(self._fd, self._directory, mask)
            if wd < 0:
                code = ctypes.get_errno()
                self._explain(
                    f"cannot watch {os.fsdecode(self._directory)}: {os.strerror(code)}",
                    quiet=code == errno.ENOENT,  # created later (RuntimeDirectory=, an SWLM)
                )
                return False
            self._wd = wd
            self._said_why = False
        self._read_events()
        return self._wd is not None

    async def _next_change(self) -> None:
        """Wait until the directory says something about our name or the watch."""
        assert self._fd is not None
        while True:
            await anyio.wait_readable(self._fd)
            if self._read_events():
                return

    def _read_events(self) -> bool:
        """Read every queued event; True if one may mean a new file (or the watch is gone)."""
        assert self._fd is not None
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return relevant
            except InterruptedError:
                continue
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size : offset + _HEADER.size + size].rstrip(b"\0")
                offset += _HEADER.size + size
                if mask & _IN_Q_OVERFLOW:
                    relevant = True
                elif wd != self._wd:
                    continue  # a watch dropped before
                elif mask & _LOOK_AGAIN:
                    # Deleted or unmounted: the kernel drops the watch. Moved: we do, as the
                    # path now names another directory, if any.
                    if mask & _IN_MOVE_SELF and self._libc is not None:
                        self._libc.inotify_rm_watch(self._fd, wd)
                    self._wd = None
                    relevant = True
                elif mask & _APPEARED and name == self._name:
                    relevant = True

    def _explain(self, why: str, *, quiet: bool = False) -> None:
        if self._said_why:
            return
        self._said_why = True
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "Watching for %s without inotify (%s): looking after %g s, then less and less "
            "often, at most %g s apart",
            self.path,
            why,
            self._first_check,
            self._longest_check,
        )
