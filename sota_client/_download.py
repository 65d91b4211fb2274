"""Streams an update image to ``<dir>/<update_id>``: bounded size and memory, sha256, Range resume
of only the ``.part`` files it wrote itself (checkpoints), atomic rename.

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup

from swlm_sdk import Backoff

from ._errors import (
    AuthError,
    BackendError,
    DownloadError,
    DownloadErrorKind,
    TransportError,
    error_for_status,
    one_line,
)
from ._ids import PART_SUFFIX, check_update_id

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_SIZE",
    "Checkpoint",
    "DownloadResult",
    "Fetch",
    "Progress",
    "StreamedResponse",
    "download_update",
    "image_is_intact",
    "remove_partial",
]

logger = logging.getLogger(__name__)

_DEFAULT_BACKOFF = Backoff()

BATCH_BYTES = 4 << 20
"""Bytes received into one buffer before worker threads hash and write them, while the next
buffer fills: three thread hops a batch (about 0.2 ms each here, so 4 MiB rather than 1 MiB
saves a quarter of the download's CPU), and memory bounded by two buffers. Batches still end
at the checkpoint offsets."""

DEFAULT_MAX_DOWNLOAD_SIZE = 4 << 30
"""The default of ``device.max_download_size``: no image may be larger (4 GiB)."""

CHECKPOINT_MIN = 1 << 20
CHECKPOINT_MAX = 64 << 20
"""A checkpoint is due once the bytes since the last one reach an eighth of the file size,
clamped to these: frequent enough that a restart re-fetches little, rare enough to cost nothing."""

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

    async def receive_into(self, view: memoryview) -> int:
        """Body bytes exactly as sent (no content decoding) into ``view``; 0 at its end.

        :raises TransportError: the connection failed.
        """
        ...

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (for error texts)."""
        ...


Fetch = Callable[[Mapping[str, str]], AbstractAsyncContextManager[StreamedResponse]]
"""Opens the download with these extra request headers (``Range``); may raise BackendError."""

Progress = Callable[[int, int | None], None]
"""Called with (bytes received so far, total size if known), at most about once per MiB."""


class DownloadResult(msgspec.Struct, frozen=True):
    """A complete, fsynced image: absolute ``path``, ``size`` in bytes, hex ``sha256``."""

    path: str
    size: int
    sha256: str


class Checkpoint(msgspec.Struct, frozen=True):
    """The first ``size`` bytes of a ``.part`` the daemon wrote and synced, and their hex
    ``sha256``: the only proof that a ``.part`` found after a restart is ours and intact."""

    size: int
    sha256: str


def checkpoint_due(last: int) -> int:
    """The smallest size ``s`` with ``s - last >= clamp(s // 8, 1 MiB, 64 MiB)``.

    Checkpoints fall on these exact offsets (the writes are split there), so the same download
    gives the same checkpoints on every run, which crash tests rely on.
    """
    low, high = last + CHECKPOINT_MIN, last + CHECKPOINT_MAX  # the rule holds at ``high``
    while low < high:
        middle = (low + high) // 2
        if middle - last >= min(max(middle // 8, CHECKPOINT_MIN), CHECKPOINT_MAX):
            high = middle
        else:
            low = middle + 1
    return low


async def download_update(
    fetch: Fetch,
    dest_dir: str | os.PathLike[str],
    update_id: str,
    *,
    max_size: int = DEFAULT_MAX_DOWNLOAD_SIZE,
    resume: Checkpoint | None = None,
    checkpoint: Callable[[Checkpoint], None] | None = None,
    progress: Progress | None = None,
    retries: int = 5,
    backoff: Backoff = _DEFAULT_BACKOFF,
) -> DownloadResult:
    """Download into ``<dest_dir>/<update_id>.part``, then rename it to ``<dest_dir>/<update_id>``.

    An existing ``.part`` is resumed with ``Range`` only if it is a regular file of ours (one
    link, owned by our uid) whose first ``resume.size`` bytes hash to ``resume.sha256``; it is
    cut back to that size, since bytes written after the last checkpoint may not have survived
    a power cut. Any other ``.part`` is removed and the download starts over. ``checkpoint`` is
    called (in the caller's thread, so it must be quick) with each new :class:`Checkpoint`: at
    the offsets of :func:`checkpoint_due` and when a transfer breaks off; the caller stores it
    and passes the latest as ``resume`` next time.

    A connection that drops midway is resumed with ``Range``. A server that ignores Range (200)
    starts the file over; 416 counts as complete only if its total equals what we have. Up to
    ``retries`` consecutive attempts without progress are retried after ``backoff`` waits. The
    file never grows past the announced size nor past ``max_size``, and an announced size must
    fit ``max_size`` and the free space before any byte is written. The ``.part`` is kept when
    the error is transient (or an auth failure), and removed when its content or the update is
    no good.

    :raises DownloadError: every failure except auth; ``kind`` and ``transient`` say which.
    :raises AuthError: the server answered 401/403 (the caller re-authenticates and calls again).
    """
    check_update_id(update_id)
    job = await anyio.to_thread.run_sync(
        _Job.open, os.fspath(dest_dir), update_id, resume, _Options(max_size, checkpoint, progress)
    )
    try:
        await _attempts(job, fetch, retries, backoff)
        result = await anyio.to_thread.run_sync(job.finish)
    except DownloadError as exc:
        if not exc.transient:
            await _shielded(job.discard)
        raise
    finally:
        await _shielded(job.close)
    logger.debug("Download of update %s complete: %d bytes", update_id, result.size)
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
            logger.log(
                logging.WARNING if failures == 1 else logging.INFO,
                "Download of update %s interrupted at %d bytes (%s); trying again in %g s "
                "(attempt %d of %d)",
                job.update_id,
                job.file.size,
                one_line(str(error)),
                backoff.delay(failures),
                failures + 1,
                retries + 1,
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


def _free_bytes(directory: str) -> int:
    """Bytes an unprivileged writer may still use in ``directory`` (root's reserve left out)."""
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


class _Options(msgspec.Struct, frozen=True):
    """What the caller chose for one download: the size bound and whom to tell what."""

    max_size: int
    checkpoint: Callable[[Checkpoint], None] | None
    progress: Progress | None


class _Job:
    """One download's state across its requests: the open ``.part`` file and what we know."""

    def __init__(self, update_id: str, final: str, options: _Options) -> None:
        self.update_id = update_id
        self.final = final
        self.part = final + PART_SUFFIX
        self.options = options
        self.total: int | None = None
        self.interrupted = False  # the last failure broke off a body, rather than a connect
        self.file = _PartFile(self.part, update_id)
        self._checkpointed = 0  # the size of the last checkpoint (or of the resumed file)
        self._due = checkpoint_due(0)  # the offset where the next checkpoint's batch ends
        self._accepted = 0  # bytes received so far: on disk, being written, or buffered

    @classmethod
    def open(
        cls, dest_dir: str, update_id: str, resume: Checkpoint | None, options: _Options
    ) -> _Job:
        """Resume the ``.part`` if it matches ``resume``, else create it anew; blocking."""
        job = cls(update_id, os.path.join(os.path.abspath(dest_dir), update_id), options)
        job.file.open(resume)
        job._checkpointed_at(job.file.size)
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
                first, total = self._content_range(response)
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
                    self._checkpointed_at(0)
                total = _int_header(response, "Content-Length")
            await self._announced(total)
            await self._stream(response)
        if self.total is not None and self.file.size < self.total:
            return False  # a shorter range than asked for: ask for the rest
        return True

    async def _announced(self, total: int | None) -> None:
        """Check the size the server announced against ``max_size`` and the free space."""
        self.total = total
        if total is None:
            return  # chunked or close-delimited: bounded by max_size while streaming
        if total > self.options.max_size:
            raise DownloadError(
                DownloadErrorKind.TOO_LARGE,
                f"Download error: update {self.update_id} is {total} bytes, more than "
                f"device.max_download_size ({self.options.max_size})",
                update_id=self.update_id,
            )
        if total < self.file.size:
            raise self._larger_than(total)
        directory = os.path.dirname(self.final)
        with _os_errors(f"checking the free space in {directory}", self.update_id):
            free = await anyio.to_thread.run_sync(_free_bytes, directory)
        need = total - self.file.size
        if need > free:
            raise DownloadError(
                DownloadErrorKind.DISK_FULL,
                f"Download error: update {self.update_id} needs {need} more bytes, "
                f"only {free} are free in {directory}",
                update_id=self.update_id,
            )

    async def _stream(self, response: StreamedResponse) -> None:
        """Receive the body into one buffer while worker threads write and hash the other.

        Batches end at the checkpoint offsets, so that each checkpoint's bytes are written
        (and synced) before it is taken. Exceptions are raised outside the task group, so
        that callers see them as they are, not inside an exception group.
        """
        self._accepted = self.file.size
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            writer = _Writer(self, tg)
            try:
                await self._receive(response, writer)
            except Exception as exc:  # raised again below, as it is
                failure = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await writer.settle()
        if failure is not None:
            raise failure

    async def _receive(self, response: StreamedResponse, writer: _Writer) -> None:
        buffers = (memoryview(bytearray(BATCH_BYTES)), memoryview(bytearray(BATCH_BYTES)))
        current, filled = 0, 0
        while True:
            start = self._accepted - filled  # the file offset of the buffer's first byte
            end = min(start + BATCH_BYTES, self._due)
            try:
                count = await response.receive_into(buffers[current][filled : end - start])
            except TransportError:
                with anyio.CancelScope(shield=True):
                    await self._broken_off(writer, buffers[current][:filled])
                raise
            if not count:
                break
            self._check_growth(self._accepted + count)
            filled += count
            self._accepted += count
            if start + filled == end:
                await writer.submit(buffers[current][:filled], at_due=end == self._due)
                if end == self._due:
                    self._due = checkpoint_due(end)
                current, filled = 1 - current, 0
        if filled:
            await writer.submit(buffers[current][:filled], at_due=False)
        await writer.wait()

    async def _broken_off(self, writer: _Writer, buffered: memoryview) -> None:
        """The body broke off: what arrived is good (the batch being written and the
        ``buffered`` rest), so write it, sync it and checkpoint it; the next request resumes
        after it."""
        self.interrupted = True
        await writer.wait()
        if buffered:
            await writer.submit(buffered, at_due=False)
            await writer.wait()
        if self.file.size > self._checkpointed:
            if self.options.checkpoint is not None:
                await anyio.to_thread.run_sync(self.file.sync)
            self._checkpoint()
            self._due = checkpoint_due(self.file.size)  # the resumed transfer's offsets

    def _check_growth(self, size: int) -> None:
        """Refuse to grow the file to ``size`` bytes (before any is written) past a bound."""
        if self.total is not None and size > self.total:
            raise self._mismatch(f"the server sent more than the announced {self.total} bytes")
        if size > self.options.max_size:
            raise DownloadError(
                DownloadErrorKind.TOO_LARGE,
                f"Download error: update {self.update_id} sent more than "
                f"device.max_download_size ({self.options.max_size}) bytes without announcing "
                "its size",
                update_id=self.update_id,
            )

    def _progress(self) -> None:
        if self.options.progress is not None:
            self.options.progress(self.file.size, self.total)

    def _checkpoint(self) -> None:
        """Tell the caller how much is on disk; its bytes were synced first, so that after a
        power cut the checkpoint still matches the file (and the resume is not wasted)."""
        self._checkpointed = self.file.size
        if self.options.checkpoint is not None:
            self.options.checkpoint(Checkpoint(self.file.size, self.file.sha256))

    def _checkpointed_at(self, size: int) -> None:
        self._checkpointed = size
        self._due = checkpoint_due(size)

    async def _unsatisfiable(self, response: StreamedResponse) -> bool:
        match = _UNSATISFIED_RANGE.fullmatch(response.header("Content-Range") or "")
        total = int(match[1]) if match else None
        have = self.file.size
        if total == have:
            self.total = total
            return True
        if total is not None and total < have:
            raise self._larger_than(total)
        logger.info("Range not satisfiable for update %s; starting over", self.update_id)
        await anyio.to_thread.run_sync(self.file.truncate)
        self._checkpointed_at(0)
        return False

    def _content_range(self, response: StreamedResponse) -> tuple[int, int | None]:
        value = response.header("Content-Range") or ""
        match = _CONTENT_RANGE.fullmatch(value)
        if match is None:
            raise self._mismatch(f"invalid Content-Range {value[:100]!r} in a 206 response")
        total = None if match[3] == "*" else int(match[3])
        return int(match[1]), total

    def _larger_than(self, total: int) -> DownloadError:
        return self._mismatch(
            f"the partial file {self.part} has {self.file.size} bytes, "
            f"more than the {total} bytes of the update"
        )

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


class _Writer:
    """One batch at a time written and hashed, in two worker threads at once, while the next
    batch arrives (SHA-256 and the page cache each take about as long as the receive).

    :meth:`submit` waits for the batch before (so only two buffers are ever in use), and each
    finished batch is followed, in the event loop, by its checkpoint and the progress call.
    """

    def __init__(self, job: _Job, tg: TaskGroup) -> None:
        self._job = job
        self._tg = tg
        self._pending: tuple[anyio.Event, ...] = ()
        self._error: Exception | None = None
        self._at_due = False

    async def submit(self, batch: memoryview, *, at_due: bool) -> None:
        """Start writing ``batch``; ``at_due``: it ends at a checkpoint, so sync it."""
        await self.wait()
        file = self._job.file
        synced = at_due and self._job.options.checkpoint is not None
        self._pending, self._at_due = (anyio.Event(), anyio.Event()), at_due
        self._tg.start_soon(self._run, self._pending[0], file.store, batch, synced)
        self._tg.start_soon(self._run, self._pending[1], file.digest, batch)

    async def _run(self, done: anyio.Event, work: Callable[..., None], *args: object) -> None:
        try:
            await anyio.to_thread.run_sync(work, *args)
        except Exception as exc:  # handed to the receiving task by wait()
            self._error = self._error or exc
        finally:
            done.set()

    async def wait(self) -> None:
        """Wait for the batch being written; raise its error, or take its checkpoint."""
        if not self._pending:
            return
        await self.settle()
        self._pending = ()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._at_due:
            self._job._checkpoint()
        self._job._progress()

    async def settle(self) -> None:
        """Wait for the batch being written, whatever its outcome (the file is closed next)."""
        for done in self._pending:
            await done.wait()


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

    def open(self, resume: Checkpoint | None) -> None:
        """Resume the ``.part`` if it is ours and matches ``resume``; else start a new one.

        Anyone who can write to the directory could have planted the ``.part``: a link to a
        file elsewhere (which we would then overwrite), a file of theirs (which they could change
        after we checked it), or bytes of their choosing. Only a file we wrote qualifies.
        """
        with self._os_errors("opening"):
            try:
                found = os.lstat(self.path)
            except FileNotFoundError:
                found = None
            if found is not None:
                problem = _not_ours(found) or self._resume(resume)
                if problem is None:
                    return
                self._remove_planted(found, problem)
            # O_EXCL | O_NOFOLLOW: whatever appears at the path meanwhile, we never write to it.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self.fd = os.open(self.path, flags, 0o644)

    def _resume(self, resume: Checkpoint | None) -> str | None:
        """Open the file and keep its checkpointed bytes; else why it cannot be resumed."""
        if resume is None:
            return "there is no checkpoint to resume from"
        try:
            # O_NONBLOCK: a FIFO swapped in after the lstat must not hang the open.
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "it is a symbolic link"
            raise
        try:
            problem = _not_ours(os.fstat(fd))
            if problem is None:
                have, digest = _hash_prefix(fd, resume.size)
                if have < resume.size:
                    problem = f"it has {have} bytes, fewer than the {resume.size} of its checkpoint"
                elif digest.hexdigest() != resume.sha256:
                    problem = f"its first {resume.size} bytes do not match its checkpoint"
            if problem is None:
                os.ftruncate(fd, resume.size)  # bytes past the checkpoint may be garbage
        except BaseException:
            os.close(fd)
            raise
        if problem is not None:
            os.close(fd)
            return problem
        self.fd, self.size, self._hash = fd, resume.size, digest
        return None

    def _remove_planted(self, found: os.stat_result, problem: str) -> None:
        if stat.S_ISDIR(found.st_mode):
            raise DownloadError(
                DownloadErrorKind.IO,
                f"Download error: update {self.update_id}: {self.path} is a directory, not a "
                "partial download; remove it",
                update_id=self.update_id,
            )
        with self._os_errors("removing"):
            try:
                os.unlink(self.path)  # removes a link itself, never what it points to
            except FileNotFoundError:
                pass
        logger.warning(
            "Removed %s (%s); the download of update %s starts over",
            self.path,
            problem,
            self.update_id,
        )

    def store(self, data: memoryview, sync: bool) -> None:
        """Append ``data`` (and sync it); :meth:`digest` hashes the same bytes meanwhile."""
        with self._os_errors("writing"):
            _write_all(self.fd, data)
            self.size += len(data)
            if sync:
                os.fdatasync(self.fd)

    def digest(self, data: memoryview) -> None:
        self._hash.update(data)

    def sync(self) -> None:
        with self._os_errors("writing"):
            os.fdatasync(self.fd)

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
            # rename() replaces the name ``final`` itself: a symlink planted there is not followed.
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


def _not_ours(info: os.stat_result) -> str | None:
    """Why a file at the ``.part`` path cannot be one the daemon wrote, or None."""
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_nlink != 1:
        return f"it has {info.st_nlink} hard links"
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by the daemon's uid {os.geteuid()}"
    return None


def image_is_intact(path: str, size: int, sha256: str) -> bool:
    """Whether ``path`` is still a regular file of ``size`` bytes with this SHA-256 (blocking).

    For a complete image handed over again: it must be exactly what was downloaded.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return False
        have, digest = _hash_prefix(fd, size)
        return have == size and digest.hexdigest() == sha256
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_partial(final: str) -> None:
    """Remove the ``.part`` of the image at ``final``: its update is over, nothing resumes it."""
    part = final + PART_SUFFIX
    try:
        os.unlink(part)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("Could not remove %s: %s", part, exc)


def _hash_prefix(fd: int, size: int) -> tuple[int, hashlib._Hash]:
    """Hash up to ``size`` bytes from the start of ``fd``; leaves the offset after them."""
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    have = 0
    while have < size and (block := os.read(fd, min(size - have, BATCH_BYTES))):
        digest.update(block)
        have += len(block)
    return have, digest


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
