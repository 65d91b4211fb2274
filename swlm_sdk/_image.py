"""Checking an update image against the size and SHA-256 its ``DownloadComplete`` announced."""

from __future__ import annotations

import hashlib
import os
import stat

from .protocol import DownloadComplete

__all__ = ["image_problem"]

_CHUNK = 1 << 20


def image_problem(event: DownloadComplete) -> str | None:
    """Why ``event.update_image`` is not the image the event announced, or None if it is (or
    the event announced neither a size nor a SHA-256). Blocking: run it in a worker thread.

    The size is compared first (one ``fstat``), then the file is hashed in 1 MiB chunks.
    """
    if event.sha256 is None and event.size is None:
        return None
    path = event.update_image
    try:
        # O_NONBLOCK: a FIFO put in the image's place must not hang the check.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"the image {path} cannot be opened to check it: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return f"the image {path} is not a regular file"
        if event.size is not None and info.st_size != event.size:
            return f"the image {path} has {info.st_size} bytes, not the announced {event.size}"
        if event.sha256 is None:
            return None
        digest = hashlib.sha256()
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        with open(fd, "rb", buffering=0, closefd=False) as file:
            while count := file.readinto(buffer):
                digest.update(view[:count])
    except OSError as exc:
        return f"the image {path} cannot be read to check it: {exc.strerror or exc}"
    finally:
        os.close(fd)
    found = digest.hexdigest()
    if found != event.sha256.lower():
        return f"the image {path} has SHA-256 {found}, not the announced {event.sha256}"
    return None
