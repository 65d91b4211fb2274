"""Where package bytes live: in memory, in an uploaded file, or in a registered local file."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from typing import Literal

__all__ = ["PackageBlob", "check_registered_path", "store_upload"]

_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW


class PackageBlob:
    """The bytes of one package.

    A file-backed blob is opened afresh for each download, so a download sees the file as it
    is then, and the server can hand the descriptor to ``sendfile``.
    """

    __slots__ = ("data", "path", "source")

    def __init__(
        self,
        *,
        data: bytes | None = None,
        path: str | None = None,
        source: Literal["memory", "upload", "path"] = "memory",
    ) -> None:
        if (data is None) == (path is None):
            raise ValueError("a package needs exactly one of data and path")
        self.data = data
        self.path = path
        self.source: Literal["memory", "upload", "path"] = source

    def size(self) -> int:
        """The current size in bytes (a file's size can change after registration)."""
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def open_file(self) -> tuple[int, int]:
        """Open the backing file; return ``(fd, size)``. The caller closes ``fd``.

        :raises OSError: the file is gone, unreadable, or no longer a regular file.
        """
        assert self.path is not None
        fd = os.open(self.path, _FILE_FLAGS)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{self.path} is not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, st.st_size

    def discard(self) -> None:
        """Delete the backing file if the simulator created it (an upload)."""
        if self.source == "upload" and self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def check_registered_path(path: str, roots: Sequence[str]) -> str:
    """Resolve a path a client asked to register, and check it may be served.

    Registering a path lets anyone who can reach the admin API read that file, so the file must
    be a regular file inside one of ``roots``.

    :returns: the resolved absolute path.
    :raises PermissionError: the path is outside every root (or no root is configured).
    :raises ValueError: the path is relative or not a regular file.
    """
    if not path or "\0" in path or not os.path.isabs(path):
        raise ValueError(f"path must be absolute: {path!r}")
    real = os.path.realpath(path)
    allowed = [os.path.realpath(root) for root in roots]
    if not any(os.path.commonpath([real, root]) == root for root in allowed):
        raise PermissionError(
            f"{path} is not under an allowed directory"
            + (f" ({', '.join(allowed)})" if allowed else " (none configured: use --allow-path)")
        )
    if not os.path.isfile(real):
        raise ValueError(f"{path} is not a regular file")
    return real


def store_upload(chunks: Iterable[bytes], directory: str) -> PackageBlob:
    """Write an uploaded body to a new private file in ``directory``.

    The file name is random, never derived from the package name. The partial file is removed
    if the upload fails.
    """
    fd, path = tempfile.mkstemp(prefix="pkg-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return PackageBlob(path=path, source="upload")
