"""Streams an update image to ``<dir>/<update_id>``: Range resume, sha256, bounded memory, rename.

No HTTP client here: the caller passes a ``fetch`` that opens the response (the backend's, which
also handles auth and redirects), so the request logic exists once.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    aclosing,
    contextmanager,
)
from dataclasses import dataclass
from typing import Protocol

import anyio

from swlm_sdk import Backoff

from ._errors import (
    AuthError,
    BackendError,
    DownloadError,
    DownloadErrorKind,
    TransportError,
    error_for_status,
)
from ._ids import PART_SUFFIX, check_update_id

__all__ = [
    "DownloadResult",
    "Fetch",
    "Progress",
    "StreamedResponse",
    "download_update",
]

logger = logging.getLogger(__name__)

_DEFAULT_BACKOFF = Backoff()

BATCH_BYTES = 1 << 20
"""Bytes buffered before one thread hop writes and hashes them (one hop per MiB, not per chunk)."""

ERROR_BODY_LIMIT = 64 * 1024

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


class StreamedResponse(Protocol):
    """An open HTTP response, as the backend hands it over (the final one after redirects)."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    def header(self, name: str) -> str | None:
        """A response header (case-insensitive), or None."""
        ...

    def iter_raw(self) -> AsyncGenerator[bytes, None]:
        """The body exactly as sent (no content decoding); raises :class:`TransportError`."""
        ...

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (for error texts)."""
        ...


Fetch = Callable[[Mapping[str, str]], AbstractAsyncContextManager[StreamedResponse]]
"""Opens the download with these extra request headers (``Range``); may raise BackendError."""

Progress = Callable[[int, int | None], None]
"""Called with (bytes received so far, total size if known), at most about once per MiB."""


@dataclass(frozen=True)
class DownloadResult:
    """A complete, fsynced image: absolute ``path``, ``size`` in bytes, hex ``sha256``."""

    path: str
    size: int
    sha256: str


async def download_update(
    fetch: Fetch,
    dest_dir: str | os.PathLike[str],
    update_id: str,
    *,
    progress: Progress | None = None,
    retries: int = 5,
    backoff: Backoff = _DEFAULT_BACKOFF,
) -> DownloadResult:
    """Download into ``<dest_dir>/<update_id>.part``, then rename it to ``<dest_dir>/<update_id>``.

    An existing ``.part`` (from a daemon restart) is hashed and resumed with ``Range``; so is a
    connection that drops midway. A server that ignores Range (200) starts the file over; 416 counts
    as complete only if its total equals what we have. Up to ``retries`` consecutive attempts
    without progress are retried after ``backoff`` waits. The ``.part`` is kept when the error
    is transient (or an auth failure), and removed when its content or the update is no good.

    :raises DownloadError: every failure except auth; ``kind`` and ``transient`` say which.
    :raises AuthError: the server answered 401/403 (the caller re-authenticates and calls again).
    """
    check_update_id(update_id)
    job = await anyio.to_thread.run_sync(_Job.open, os.fspath(dest_dir), update_id, progress)
    try:
        await _attempts(job, fetch, retries, backoff)
        result = await anyio.to_thread.run_sync(job.finish)
    except DownloadError as exc:
        if not exc.transient:
            await _shielded(job.discard)
        raise
    finally:
        await _shielded(job.close)
    logger.info("Download of update %s complete: %d bytes", update_id, result.size)
    return result


async def _attempts(job: _Job, fetch: Fetch, retries: int, backoff: Backoff) -> None:
    failures = 0
    while True:
        start = job.file.size
        error: BackendError | None = None
        try:
            if await job.attempt(fetch):
                return
        except AuthError:
            raise
        except BackendError as exc:  # statuses, transport, redirects gone wrong
            if not exc.transient:
                raise _wrap(exc, job) from exc
            error = exc
        failures = 0 if job.file.size > start else failures + 1
        if failures > retries:
            if error is None:
                raise DownloadError(
                    DownloadErrorKind.SIZE_MISMATCH,
                    f"Download error: update {job.update_id} stayed incomplete at "
                    f"{job.file.size} of {job.total} bytes after {retries + 1} requests",
                    update_id=job.update_id,
                    transient=False,
                )
            raise _wrap(error, job) from error
        if error is not None:
            logger.warning(
                "Download of update %s interrupted at %d bytes (%s); trying again",
                job.update_id,
                job.file.size,
                error,
            )
            await backoff.wait(failures)


def _wrap(exc: BackendError, job: _Job) -> DownloadError:
    """The BackendError as a DownloadError that keeps its text and ``transient`` flag."""
    if not isinstance(exc, TransportError):
        kind = DownloadErrorKind.HTTP
        message = str(exc)
    elif job.interrupted:
        kind = DownloadErrorKind.TRUNCATED
        total = "?" if job.total is None else str(job.total)
        message = (
            f"Download error: update {job.update_id} broke off at {job.file.size} "
            f"of {total} bytes: {exc}"
        )
    else:
        kind = DownloadErrorKind.NETWORK
        message = str(exc)
    return DownloadError(kind, message, update_id=job.update_id, transient=exc.transient)


async def _shielded(fn: Callable[[], None]) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(fn)


class _Job:
    """One download's state across its requests: the open ``.part`` file and what we know."""

    def __init__(self, update_id: str, final: str, progress: Progress | None) -> None:
        self.update_id = update_id
        self.final = final
        self.part = final + PART_SUFFIX
        self.progress = progress
        self.total: int | None = None
        self.interrupted = False  # the last failure broke off a body, rather than a connect
        self.file = _PartFile(self.part, update_id)

    @classmethod
    def open(cls, dest_dir: str, update_id: str, progress: Progress | None) -> _Job:
        """Open (or create) the ``.part`` file and hash what it already holds; blocking."""
        job = cls(update_id, os.path.join(os.path.abspath(dest_dir), update_id), progress)
        job.file.open()
        if job.file.size:
            logger.info("Resuming the download of update %s at %d bytes", update_id, job.file.size)
        return job

    async def attempt(self, fetch: Fetch) -> bool:
        """One request; True when the image is complete, False when another request is needed."""
        have = self.file.size
        self.interrupted = False
        async with fetch({"Range": f"bytes={have}-"} if have else {}) as response:
            status = response.status
            if status == 416 and have:
                return await self._unsatisfiable(response)
            if not 200 <= status < 300:
                body = await response.read(ERROR_BODY_LIMIT)
                raise error_for_status(status, response.reason, body)
            if status == 206:
                first, self.total = self._content_range(response)
                if first != have:
                    raise self._mismatch(
                        f"the server sent bytes from {first} when asked for bytes={have}-"
                    )
            else:
                if have:
                    logger.info(
                        "The server ignored Range for update %s; starting over", self.update_id
                    )
                    await anyio.to_thread.run_sync(self.file.truncate)
                self.total = _int_header(response, "Content-Length")
            await self._stream(response)
        if self.total is not None and self.file.size < self.total:
            return False  # a shorter range than asked for: ask for the rest
        return True

    async def _stream(self, response: StreamedResponse) -> None:
        buffer = bytearray()
        try:
            async with aclosing(response.iter_raw()) as chunks:
                async for chunk in chunks:
                    buffer += chunk
                    if len(buffer) >= BATCH_BYTES:
                        await self._flush(buffer)
        except TransportError:
            self.interrupted = True
            await self._flush(buffer)  # what arrived is good: resume after it
            raise
        await self._flush(buffer)

    async def _flush(self, buffer: bytearray) -> None:
        if buffer:
            await anyio.to_thread.run_sync(self.file.write, buffer)
            buffer.clear()
        if self.total is not None and self.file.size > self.total:
            raise self._mismatch(f"the server sent more than the announced {self.total} bytes")
        if self.progress is not None:
            self.progress(self.file.size, self.total)

    async def _unsatisfiable(self, response: StreamedResponse) -> bool:
        match = _UNSATISFIED_RANGE.fullmatch(response.header("Content-Range") or "")
        total = int(match[1]) if match else None
        have = self.file.size
        if total == have:
            self.total = total
            return True
        if total is not None and total < have:
            raise self._mismatch(
                f"the partial file {self.part} has {have} bytes, "
                f"more than the {total} bytes of the update"
            )
        logger.info("Range not satisfiable for update %s; starting over", self.update_id)
        await anyio.to_thread.run_sync(self.file.truncate)
        return False

    def _content_range(self, response: StreamedResponse) -> tuple[int, int | None]:
        value = response.header("Content-Range") or ""
        match = _CONTENT_RANGE.fullmatch(value)
        if match is None:
            raise self._mismatch(f"invalid Content-Range {value[:100]!r} in a 206 response")
        total = None if match[3] == "*" else int(match[3])
        return int(match[1]), total

    def _mismatch(self, what: str) -> DownloadError:
        return DownloadError(
            DownloadErrorKind.SIZE_MISMATCH,
            f"Download error: update {self.update_id}: {what}",
            update_id=self.update_id,
        )

    def finish(self) -> DownloadResult:
        size, digest = self.file.size, self.file.sha256
        self.file.commit(self.final)
        return DownloadResult(self.final, size, digest)

    def discard(self) -> None:
        self.file.remove()

    def close(self) -> None:
        self.file.close()


def _int_header(response: StreamedResponse, name: str) -> int | None:
    value = response.header(name)
    return int(value) if value is not None and value.isdigit() else None


class _PartFile:
    """The ``.part`` file and the sha256 of its content; blocking, called via worker threads."""

    def __init__(self, path: str, update_id: str) -> None:
        self.path = path
        self.update_id = update_id
        self.fd = -1
        self.size = 0
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def open(self) -> None:
        # O_NOFOLLOW: a symlink planted at the .part path must not redirect our writes.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        with self._os_errors("opening"):
            self.fd = os.open(self.path, flags, 0o644)
        try:
            with self._os_errors("reading"):
                if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                    raise OSError(errno.EINVAL, "Not a regular file")
                while block := os.read(self.fd, BATCH_BYTES):
                    self._hash.update(block)
                    self.size += len(block)
        except BaseException:
            self.close()
            raise

    def write(self, data: bytearray) -> None:
        with self._os_errors("writing"), memoryview(data) as view:
            _write_all(self.fd, view)
            self._hash.update(view)
            self.size += len(view)

    def truncate(self) -> None:
        with self._os_errors("truncating"):
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
        self.size = 0
        self._hash = hashlib.sha256()

    def commit(self, final: str) -> None:
        """fsync, rename over ``final`` and fsync the directory, so the image survives a crash."""
        with self._os_errors("saving"):
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.path, final)
            directory = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("Could not remove %s: %s", self.path, exc)

    def _os_errors(self, doing: str) -> AbstractContextManager[None]:
        return _os_errors(f"{doing} {self.path}", self.update_id)


@contextmanager
def _os_errors(what: str, update_id: str) -> Iterator[None]:
    """Turns an OSError into ``IO error: <strerror> (os error N): <what>``."""
    try:
        yield
    except OSError as exc:
        raise DownloadError.from_os_error(exc, what, update_id=update_id) from exc


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
