"""Chunked transfers pushed by the RVI backend: chunk files on disk, joined into one image.

Blocking file I/O: the gateway calls it through a worker thread. Every path inside
``<storage_dir>/downloads`` is reached through directory descriptors without following links,
so nothing planted there (a link, a FIFO, a file of another user) is ever written through.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec

from .._errors import SotaError, io_error_text
from .._ids import PART_SUFFIX, check_update_id, shown_id

__all__ = ["JoinedImage", "TransferError", "Transfers"]

logger = logging.getLogger(__name__)

DOWNLOADS = "downloads"
_DIR_MODE = 0o700
_CHUNK_MODE = 0o600
_IMAGE_MODE = 0o644  # as a downloaded image: the SWLM may read it as another user of the group
_IMAGE_DIR_MODE = 0o750
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class JoinedImage(msgspec.Struct, frozen=True):
    """A transfer joined and checked: where the image is, its size and its SHA-256."""

    path: str
    size: int
    sha256: str


class TransferError(SotaError):
    """A transfer cannot go on or be finished; the message names the update and why."""

    def __init__(self, update_id: str, problem: str) -> None:
        super().__init__(f"RVI transfer of update {shown_id(update_id)}: {problem}")
        self.update_id = update_id


class _Transfer(msgspec.Struct):
    checksum: str
    chunkscount: int
    last_activity: float
    sizes: dict[int, int] = msgspec.field(default_factory=dict)  # index -> bytes stored

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


class Transfers:
    """Chunked transfers pushed by the RVI backend, stored per update on disk and joined in index
    order.

    Thread-safe: every call holds a lock, except the joining of a finished transfer, which
    works on a directory set aside under a name no update id can have.
    Transfers are not resumed across restarts (the backend starts again): see ``clear_stale``.
    """

    def __init__(
        self,
        storage_dir: str,
        *,
        max_transfers: int = 16,
        max_chunks: int = 65_536,
        max_chunk_bytes: int = 1 << 20,
        max_total_bytes: int = 4 << 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage_dir = storage_dir
        self.downloads_dir = os.path.join(storage_dir, DOWNLOADS)
        self.max_transfers = max_transfers
        self.max_chunks = max_chunks
        self.max_chunk_bytes = max_chunk_bytes
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._transfers: dict[str, _Transfer] = {}
        self._lock = threading.Lock()
        self._set_aside = 0

    # -- the calls of the gateway ---------------------------------------------------------------

    def start(self, update_id: str, checksum: str, chunkscount: int) -> None:
        """Begin a transfer, or begin it again: chunks received before are dropped.

        :raises TransferError: too many transfers at once, a bad ``chunkscount``, or a disk error.
        """
        check_update_id(update_id)
        if not 1 <= chunkscount <= self.max_chunks:
            raise TransferError(
                update_id, f"chunkscount {chunkscount} is not between 1 and {self.max_chunks}"
            )
        with self._lock:
            if update_id not in self._transfers and len(self._transfers) >= self.max_transfers:
                raise TransferError(
                    update_id,
                    f"too many transfers at once ({self.max_transfers}); refused a new one",
                )
            self._transfers.pop(update_id, None)
            with self._os_errors(update_id, "creating its chunk directory"), self._downloads() as d:
                _remove_entry(d, update_id)
                os.mkdir(update_id, _DIR_MODE, dir_fd=d)
            self._transfers[update_id] = _Transfer(checksum, chunkscount, self._clock())

    def chunk(self, update_id: str, index: int, data: bytes) -> list[int]:
        """Store chunk ``index`` (a chunk sent again replaces it); return every index received.

        :raises TransferError: no such transfer; or a bound is crossed (the chunk is too large,
            more chunks than announced, too many bytes in all), and then the transfer is dropped;
            or a disk error.
        """
        check_update_id(update_id)
        with self._lock:
            transfer = self._known(update_id)
            if index < 0:
                raise TransferError(update_id, f"chunk index {index} is negative")
            problem = self._bound_crossed(transfer, index, len(data))
            if problem is not None:
                self._drop(update_id)
                raise TransferError(update_id, f"{problem}; the transfer is dropped")
            transfer.last_activity = self._clock()
            try:
                with self._downloads() as d:
                    chunk_dir = self._chunk_dir(d, update_id, transfer)
                try:
                    _write_chunk(chunk_dir, str(index), data)
                finally:
                    os.close(chunk_dir)
            except OSError as exc:
                transfer.sizes.pop(index, None)  # a copy sent before was unlinked already
                raise TransferError(
                    update_id, f"{io_error_text(exc)}: writing chunk {index}"
                ) from None
            transfer.sizes[index] = len(data)
            return sorted(transfer.sizes)

    def finish(self, update_id: str, destination: str) -> str:
        """:meth:`finish_image`, returning only the image's path."""
        return self.finish_image(update_id, destination).path

    def finish_image(self, update_id: str, destination: str) -> JoinedImage:
        """Join the chunks in numeric index order into ``destination`` and check the SHA-1;
        the image's size and SHA-256 are taken in the same pass (the daemon's journal keeps
        those of every download).

        The image appears at ``destination`` only complete, synced and checked: it is written
        as ``destination.part`` first and renamed. The transfer is dropped whether the check
        succeeds or not, except when chunks are missing (they may still come).

        :raises TransferError: no such transfer, missing chunks, a checksum mismatch, or a disk
            error.
        """
        check_update_id(update_id)
        with self._lock:
            transfer = self._known(update_id)
            missing = transfer.chunkscount - len(transfer.sizes)
            if missing > 0:
                raise TransferError(
                    update_id,
                    f"{missing} of {transfer.chunkscount} chunks are missing "
                    f"(received {len(transfer.sizes)})",
                )
            # Joining takes a while, so it runs without the lock, on the chunks set aside under
            # a name no update id can have (ids never start with '.'): a new start of the same
            # update meanwhile cannot touch what is read.
            self._set_aside += 1
            aside = f".finishing-{self._set_aside}"
            try:
                with self._downloads() as d:
                    _remove_entry(d, aside)  # left by an earlier run
                    _require_directory(d, update_id)
                    os.rename(update_id, aside, src_dir_fd=d, dst_dir_fd=d)
                    chunk_dir = os.open(aside, _DIR_FLAGS, dir_fd=d)
            except OSError as exc:
                self._drop(update_id)
                self._remove_quietly(aside)
                raise TransferError(
                    update_id, f"{io_error_text(exc)}: setting its chunks aside"
                ) from None
            del self._transfers[update_id]
        try:
            with self._os_errors(update_id, f"joining its chunks into {destination}"):
                digest, image = _join(chunk_dir, transfer.sizes, destination)
            if digest != transfer.checksum:
                _unlink_quietly(destination + PART_SUFFIX)
                raise TransferError(
                    update_id, f"checksum mismatch: expected {transfer.checksum} got {digest}"
                )
            with self._os_errors(update_id, f"saving {destination}"):
                _commit(destination)
        finally:
            os.close(chunk_dir)
            with self._lock:
                self._remove_quietly(aside)
        logger.info("RVI transfer of update %s complete: %s", shown_id(update_id), destination)
        return image

    def abort(self, update_id: str | None = None) -> list[str]:
        """Drop one transfer, or every one (None); returns the ids dropped."""
        if update_id is not None:
            check_update_id(update_id)
        with self._lock:
            ids = sorted(self._transfers) if update_id is None else [update_id]
            dropped = [one for one in ids if one in self._transfers]
            for one in dropped:
                self._drop(one)
            return dropped

    def expire(self, idle_seconds: float) -> list[str]:
        """Drop the transfers whose last chunk (or start) is older than ``idle_seconds``."""
        with self._lock:
            now = self._clock()
            idle = sorted(
                update_id
                for update_id, transfer in self._transfers.items()
                if now - transfer.last_activity > idle_seconds
            )
            for update_id in idle:
                logger.info("RVI transfer of update %s timed out", shown_id(update_id))
                self._drop(update_id)
            return idle

    def active(self) -> list[str]:
        """The updates being transferred, sorted."""
        with self._lock:
            return sorted(self._transfers)

    def received(self, update_id: str) -> list[int]:
        """The sorted indices received so far (the ``ChunkReceived`` list).

        :raises TransferError: no such transfer.
        """
        check_update_id(update_id)
        with self._lock:
            return sorted(self._known(update_id).sizes)

    def clear_stale(self) -> None:
        """At start-up: remove whatever a previous run left in ``downloads`` (chunk directories
        and set-aside ones); transfers are not resumed across restarts.

        :raises SotaError: the downloads directory cannot be created or read.
        """
        with self._lock:
            self._transfers.clear()
            try:
                with self._downloads() as d:
                    for name in os.listdir(d):
                        _remove_entry(d, name)
            except OSError as exc:
                raise SotaError(
                    f"couldn't clear the RVI downloads directory {self.downloads_dir}: "
                    f"{io_error_text(exc)}"
                ) from None

    # -- helpers --------------------------------------------------------------------------------

    def _known(self, update_id: str) -> _Transfer:
        transfer = self._transfers.get(update_id)
        if transfer is None:
            raise TransferError(update_id, "no such transfer (no /sota/start, or it was dropped)")
        return transfer

    def _bound_crossed(self, transfer: _Transfer, index: int, size: int) -> str | None:
        if size > self.max_chunk_bytes:
            return f"chunk {index} has {size} bytes, more than {self.max_chunk_bytes}"
        if index not in transfer.sizes:
            count = len(transfer.sizes) + 1
            limit = min(transfer.chunkscount, self.max_chunks)
            if count > limit:
                return f"chunk {index} is chunk number {count}, more than the {limit} announced"
        total = transfer.total - transfer.sizes.get(index, 0) + size
        if total > self.max_total_bytes:
            return f"the chunks add up to {total} bytes, more than {self.max_total_bytes}"
        return None

    def _drop(self, update_id: str) -> None:
        """Forget a transfer and remove its chunks; a removal error is only logged."""
        self._transfers.pop(update_id, None)
        self._remove_quietly(update_id)

    def _remove_quietly(self, name: str) -> None:
        try:
            with self._downloads() as d:
                _remove_entry(d, name)
        except OSError as exc:
            logger.warning("Couldn't remove %s: %s", os.path.join(self.downloads_dir, name), exc)

    def _chunk_dir(self, downloads: int, update_id: str, transfer: _Transfer) -> int:
        """A descriptor of the transfer's chunk directory; if it is gone or was replaced (by a
        link or a file), a new empty one: the chunks received are lost, and the ack list says
        so to the backend."""
        try:
            return os.open(update_id, _DIR_FLAGS, dir_fd=downloads)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise  # EMFILE, EACCES, ...: the chunks may well be fine
            logger.warning(
                "The chunk directory of update %s is unusable (%s); its chunks start over",
                shown_id(update_id),
                exc.strerror,
            )
        _remove_entry(downloads, update_id)
        transfer.sizes.clear()
        os.mkdir(update_id, _DIR_MODE, dir_fd=downloads)
        return os.open(update_id, _DIR_FLAGS, dir_fd=downloads)

    @contextmanager
    def _downloads(self) -> Iterator[int]:
        """A descriptor of ``downloads``, created if missing; a link or file there is replaced."""
        os.makedirs(self.storage_dir, _DIR_MODE, exist_ok=True)
        storage = os.open(self.storage_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fd = os.open(DOWNLOADS, _DIR_FLAGS, dir_fd=storage)
            except FileNotFoundError:
                fd = -1
            except OSError as exc:
                if not _is_planted(storage, DOWNLOADS):
                    raise
                logger.warning("Replacing %s: %s", self.downloads_dir, exc.strerror)
                os.unlink(DOWNLOADS, dir_fd=storage)
                fd = -1
            if fd < 0:
                try:
                    os.mkdir(DOWNLOADS, _DIR_MODE, dir_fd=storage)
                except FileExistsError:
                    pass  # made by another thread meanwhile
                fd = os.open(DOWNLOADS, _DIR_FLAGS, dir_fd=storage)
        finally:
            os.close(storage)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _os_errors(self, update_id: str, doing: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise TransferError(update_id, f"{io_error_text(exc)}: {doing}") from None


def _is_planted(directory: int, name: str) -> bool:
    """Whether ``name`` exists but is not a real directory (a link, a file, ...)."""
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return not stat.S_ISDIR(info.st_mode)


def _require_directory(directory: int, name: str) -> None:
    """Raise unless ``name`` is a real directory (rename would move a planted link too)."""
    info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)


def _join(chunk_dir: int, sizes: dict[int, int], destination: str) -> tuple[str, JoinedImage]:
    """Write the chunks in numeric order into ``destination.part``, synced; return the SHA-1
    and the image (its size and SHA-256)."""
    parent = os.path.dirname(destination) or "."
    os.makedirs(parent, _IMAGE_DIR_MODE, exist_ok=True)
    part = destination + PART_SUFFIX
    _unlink_quietly(part)  # a leftover, or a link planted there: never written through
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(part, flags, _IMAGE_MODE)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    try:
        for index in sorted(sizes):  # ints: 10 after 9, not after 1 as names would sort
            data = _read_chunk(chunk_dir, index, sizes[index])
            sha1.update(data)
            sha256.update(data)
            size += len(data)
            _write_all(out, data)
        os.fsync(out)
    except BaseException:
        os.close(out)
        _unlink_quietly(part)
        raise
    os.close(out)
    return sha1.hexdigest(), JoinedImage(destination, size, sha256.hexdigest())


def _remove_entry(directory: int, name: str) -> None:
    """Remove ``name`` in ``directory``: a directory with what is in it, or a link itself."""
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        # rmtree with dir_fd works through descriptors and never follows links inside.
        shutil.rmtree(name, dir_fd=directory)
    else:
        os.unlink(name, dir_fd=directory)


def _write_chunk(chunk_dir: int, name: str, data: bytes) -> None:
    """Write a chunk file anew: whatever is at the name (an earlier copy, a planted link or
    a hard link to someone's file) is unlinked first, never written through."""
    try:
        os.unlink(name, dir_fd=chunk_dir)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, _CHUNK_MODE, dir_fd=chunk_dir)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        _unlink_quietly(name, chunk_dir)
        raise
    os.close(fd)


def _read_chunk(chunk_dir: int, index: int, size: int) -> bytes:
    """The chunk as written: a file changed or swapped since is an error, not part of the image."""
    fd = os.open(str(index), _READ_FLAGS, dir_fd=chunk_dir)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            raise OSError(errno.EINVAL, f"chunk {index} changed on disk")
        data = bytearray()
        while len(data) < size and (piece := os.read(fd, size - len(data))):
            data += piece
        if len(data) != size or os.read(fd, 1):
            raise OSError(errno.EINVAL, f"chunk {index} changed on disk")
        return bytes(data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _commit(destination: str) -> None:
    """Rename the synced ``.part`` over ``destination`` and sync the directory, so the image
    survives a crash; rename replaces a link at ``destination`` instead of following it."""
    os.replace(destination + PART_SUFFIX, destination)
    directory = os.open(
        os.path.dirname(destination) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    )
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _unlink_quietly(path: str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("Couldn't remove %s: %s", path, exc)
