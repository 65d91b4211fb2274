"""The daemon's durable journal (SQLite, WAL): what must survive a crash, ``kill -9`` or a reboot.

Downloads in progress, events the SWLM has not taken yet, update reports Core has not accepted
yet, and which updates were already handed over or installed.
"""

from __future__ import annotations

import enum
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import msgspec

from ._errors import SotaError

__all__ = [
    "SCHEMA_VERSION",
    "DownloadRecord",
    "DownloadState",
    "Journal",
    "JournalError",
    "OutboxEvent",
    "PendingReport",
    "UpdateState",
]

logger = logging.getLogger("sota_client.store")


class JournalError(SotaError):
    """The journal could not be opened, read or written (disk full, permissions, closed)."""


class DownloadState(enum.StrEnum):
    """Where a download stands."""

    DOWNLOADING = "downloading"
    COMPLETE = "complete"
    FAILED = "failed"


class UpdateState(enum.StrEnum):
    """How far the daemon got with an update; :meth:`Journal.mark_update` takes any short text,
    these are the names the daemon uses."""

    DOWNLOADED = "downloaded"  # the image is on disk (and handed over to an external SWLM)
    INSTALLING = "installing"
    INSTALLED = "installed"  # installed (or failed to) by the local package manager
    REPORTED = "reported"  # Core has the final report


class DownloadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One download the daemon started."""

    update_id: str
    state: DownloadState
    #: Where the bytes go (the partial file while downloading); None if never told.
    path: str | None
    #: Bytes written so far, or the final size once complete.
    size: int
    #: Hex SHA-256 of the complete file.
    sha256: str | None
    #: Why it failed, for ``FAILED``.
    error: str | None
    started_at: float
    updated_at: float


class OutboxEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event envelope waiting to be delivered to the SWLM's events socket."""

    id: int
    name: str
    #: The exact bytes to send.
    payload: bytes
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float


class PendingReport(msgspec.Struct, frozen=True, kw_only=True):
    """An update report waiting for Core to accept it."""

    update_id: str
    #: The report as JSON, exactly as it will be sent.
    payload: bytes
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float


Migration = Callable[[sqlite3.Connection], None]


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE downloads (
            update_id TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('downloading', 'complete', 'failed')),
            path TEXT,
            size INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT,
            error TEXT,
            started_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    # AUTOINCREMENT: ids never go back, even after the table empties, so id order is the
    # order the events were written in.
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            payload BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE reports (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            update_id TEXT NOT NULL UNIQUE,
            payload BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX reports_due ON reports (next_attempt_at)")
    db.execute(
        """CREATE TABLE updates (
            update_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )


#: ``MIGRATIONS[n]`` takes a database from schema ``n`` to ``n + 1``; append, never edit.
MIGRATIONS: tuple[Migration, ...] = (_create_v1,)
#: The schema this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = len(MIGRATIONS)

_MAX_STATE_LENGTH = 64


class _Unusable(Exception):
    """The file is not a journal this code can use; it is moved aside under ``label``."""

    def __init__(self, label: str, detail: str) -> None:
        super().__init__(detail)
        self.label = label
        self.detail = detail


class Journal:
    """The SQLite journal; every method is one short transaction, safe from any thread.

    Each write is durable when the method returns (WAL with ``synchronous=FULL``), so the
    async daemon may call the methods directly: they take milliseconds.
    Open it with :meth:`open`; close it with :meth:`close` or a ``with`` block.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        max_events: int = 10_000,
    ) -> None:
        self._db: sqlite3.Connection | None = db
        self.path = path
        self._clock = clock
        self._max_events = max_events
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_events: int = 10_000,
    ) -> Journal:
        """Open (or create) the journal file at ``path``, usually ``<state_dir>/sota.db``.

        A missing directory is created with mode 0700 and the file with mode 0600. A file that
        is corrupt, not a database, or from a newer version of the daemon is renamed to
        ``<path>.corrupt-<UTC time>`` (or ``.newer-``), an ERROR is logged, and the daemon
        starts with an empty journal.

        :param clock: wall-clock seconds, for the times stored (injected by tests).
        :param max_events: the most undelivered events kept; the oldest go first past that.
        :raises JournalError: the directory or file cannot be created or opened at all.
        """
        path = os.fspath(path)
        _private_directory(os.path.dirname(path) or ".")
        try:
            db = _connect(path)
        except _Unusable as exc:
            aside = _move_aside(path, exc.label)
            logger.error(
                "The journal %s is unusable (%s); moved it to %s and started an empty one",
                path,
                exc.detail,
                aside,
            )
            try:
                db = _connect(path)
            except _Unusable as again:
                raise JournalError(f"cannot create a new journal {path}: {again}") from again
        return cls(db, path, clock=clock, max_events=max_events)

    def close(self) -> None:
        """Close the file; later calls raise :class:`JournalError`. Closing twice is fine."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({self.path!r})"

    # -- downloads -------------------------------------------------------------------------

    def begin_download(self, update_id: str, path: str) -> None:
        """A download of ``update_id`` into ``path`` starts (or starts again after a restart)."""
        now = self._clock()
        self._execute(
            """INSERT INTO downloads (update_id, state, path, size, started_at, updated_at)
               VALUES (?, 'downloading', ?, 0, ?, ?)
               ON CONFLICT (update_id) DO UPDATE SET
                 state = 'downloading', path = excluded.path, sha256 = NULL, error = NULL,
                 size = CASE WHEN path IS excluded.path THEN size ELSE 0 END,
                 updated_at = excluded.updated_at""",
            (_id(update_id), path, now, now),
        )

    def download_progress(self, update_id: str, size: int) -> None:
        """``size`` bytes of ``update_id`` are on disk (informative; the file is the truth)."""
        self._execute(
            "UPDATE downloads SET size = ?, updated_at = ? WHERE update_id = ?",
            (size, self._clock(), _id(update_id)),
        )

    def finish_download(self, update_id: str, size: int, sha256: str) -> None:
        """The download is complete: ``size`` bytes with this SHA-256."""
        self._end_download(update_id, DownloadState.COMPLETE, size=size, sha256=sha256)

    def fail_download(self, update_id: str, error: str) -> None:
        """The download failed for good, because of ``error``."""
        self._end_download(update_id, DownloadState.FAILED, error=error)

    def _end_download(
        self,
        update_id: str,
        state: DownloadState,
        *,
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> None:
        now = self._clock()
        self._execute(
            """INSERT INTO downloads
                 (update_id, state, size, sha256, error, started_at, updated_at)
               VALUES (?, ?, coalesce(?, 0), ?, ?, ?, ?)
               ON CONFLICT (update_id) DO UPDATE SET
                 state = excluded.state, size = coalesce(?, size), sha256 = excluded.sha256,
                 error = excluded.error, updated_at = excluded.updated_at""",
            (_id(update_id), state.value, size, sha256, error, now, now, size),
        )

    def downloads_in_progress(self) -> list[str]:
        """The update ids whose download had started and not ended, oldest first."""
        rows = self._query(
            "SELECT update_id FROM downloads WHERE state = 'downloading'"
            " ORDER BY started_at, update_id"
        )
        return [row[0] for row in rows]

    def download(self, update_id: str) -> DownloadRecord | None:
        """Everything known about the download of ``update_id``, or None."""
        rows = self._query(
            "SELECT update_id, state, path, size, sha256, error, started_at, updated_at"
            " FROM downloads WHERE update_id = ?",
            (update_id,),
        )
        if not rows:
            return None
        update, state, path, size, sha256, error, started_at, updated_at = rows[0]
        return DownloadRecord(
            update_id=update,
            state=DownloadState(state),
            path=path,
            size=size,
            sha256=sha256,
            error=error,
            started_at=started_at,
            updated_at=updated_at,
        )

    def forget_download(self, update_id: str) -> None:
        """Drop the record of ``update_id``'s download (its file is gone)."""
        self._execute("DELETE FROM downloads WHERE update_id = ?", (update_id,))

    # -- events for the SWLM ---------------------------------------------------------------

    def add_event(self, name: str, payload: bytes) -> int:
        """Keep an event envelope until it is delivered; returns its id (ids only grow).

        Past ``max_events`` undelivered events the oldest are dropped, with a WARNING, so that
        an SWLM that never listens cannot fill the disk.
        """
        if not isinstance(payload, bytes):
            raise TypeError(f"an event payload must be bytes, not {type(payload).__name__}")
        now = self._clock()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO outbox (name, payload, next_attempt_at, created_at)"
                " VALUES (?, ?, ?, ?)",
                (name, payload, now, now),
            )
            event_id = cursor.lastrowid
            assert event_id is not None
            dropped = db.execute(
                "DELETE FROM outbox WHERE id <= ?", (event_id - self._max_events,)
            ).rowcount
        if dropped:
            logger.warning(
                "%d undelivered events dropped: more than %d were waiting for the SWLM",
                dropped,
                self._max_events,
            )
        return event_id

    def due_events(self, now: float, limit: int) -> list[OutboxEvent]:
        """The oldest undelivered events, in order, up to the first one not yet due.

        Deliver them in the order given and stop at the first failure, so that no event
        overtakes an older one. ``now=math.inf`` returns them whatever their retry time.
        """
        rows = self._query(
            "SELECT id, name, payload, attempts, next_attempt_at, last_error, created_at"
            " FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        )
        events = []
        for row in rows:
            event = OutboxEvent(
                id=row[0],
                name=row[1],
                payload=bytes(row[2]),
                attempts=row[3],
                next_attempt_at=row[4],
                last_error=row[5],
                created_at=row[6],
            )
            if event.next_attempt_at > now:
                break
            events.append(event)
        return events

    def next_event_due(self) -> float | None:
        """When the oldest undelivered event may be tried again, or None if there is none."""
        rows = self._query("SELECT next_attempt_at FROM outbox ORDER BY id LIMIT 1")
        return float(rows[0][0]) if rows else None

    def pending_events(self) -> int:
        """How many events wait for delivery."""
        return int(self._query("SELECT count(*) FROM outbox")[0][0])

    def event_delivered(self, event_id: int) -> None:
        """The SWLM has the event: forget it."""
        self._execute("DELETE FROM outbox WHERE id = ?", (event_id,))

    def event_failed(self, event_id: int, next_attempt_at: float, error: str) -> None:
        """Delivery failed with ``error``; try again at ``next_attempt_at``."""
        self._execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE id = ?",
            (next_attempt_at, error, event_id),
        )

    # -- update reports for Core -----------------------------------------------------------

    def add_report(
        self, update_id: str, payload: bytes, *, next_attempt_at: float | None = None
    ) -> None:
        """Keep a report until Core accepts it; it replaces any earlier one for the update.

        :param next_attempt_at: when it is first due; now by default.
        """
        if not isinstance(payload, bytes):
            raise TypeError(f"a report payload must be bytes, not {type(payload).__name__}")
        now = self._clock()
        due = now if next_attempt_at is None else next_attempt_at
        self._execute(
            """INSERT INTO reports (update_id, payload, next_attempt_at, created_at)
               VALUES (?, ?, ?, ?)
               ON CONFLICT (update_id) DO UPDATE SET
                 payload = excluded.payload, attempts = 0, last_error = NULL,
                 next_attempt_at = excluded.next_attempt_at, created_at = excluded.created_at""",
            (_id(update_id), payload, due, now),
        )

    def due_reports(self, now: float, limit: int) -> list[PendingReport]:
        """The kept reports due at ``now``, oldest first (each update's report stands alone)."""
        rows = self._query(
            "SELECT update_id, payload, attempts, next_attempt_at, last_error, created_at"
            " FROM reports WHERE next_attempt_at <= ? ORDER BY seq LIMIT ?",
            (now, limit),
        )
        return [
            PendingReport(
                update_id=row[0],
                payload=bytes(row[1]),
                attempts=row[2],
                next_attempt_at=row[3],
                last_error=row[4],
                created_at=row[5],
            )
            for row in rows
        ]

    def next_report_due(self) -> float | None:
        """The earliest retry time of the kept reports, or None if there is none."""
        value = self._query("SELECT min(next_attempt_at) FROM reports")[0][0]
        return None if value is None else float(value)

    def pending_reports(self) -> int:
        """How many reports wait for Core."""
        return int(self._query("SELECT count(*) FROM reports")[0][0])

    def report_accepted(self, update_id: str) -> None:
        """Core has the report (or refused it for good): forget it."""
        self._execute("DELETE FROM reports WHERE update_id = ?", (update_id,))

    def report_failed(self, update_id: str, next_attempt_at: float, error: str) -> None:
        """Sending failed with ``error``; try again at ``next_attempt_at``."""
        self._execute(
            "UPDATE reports SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE update_id = ?",
            (next_attempt_at, error, update_id),
        )

    # -- update states ---------------------------------------------------------------------

    def mark_update(self, update_id: str, state: str) -> None:
        """Record how far ``update_id`` got (see :class:`UpdateState`)."""
        if not state or len(state) > _MAX_STATE_LENGTH:
            raise ValueError(f"an update state must be 1-{_MAX_STATE_LENGTH} characters")
        self._execute(
            """INSERT INTO updates (update_id, state, updated_at) VALUES (?, ?, ?)
               ON CONFLICT (update_id) DO UPDATE SET
                 state = excluded.state, updated_at = excluded.updated_at""",
            (_id(update_id), str(state), self._clock()),
        )

    def update_state(self, update_id: str) -> str | None:
        """The last state recorded for ``update_id``, or None if it is unknown."""
        rows = self._query("SELECT state FROM updates WHERE update_id = ?", (update_id,))
        return str(rows[0][0]) if rows else None

    def forget_update(self, update_id: str) -> None:
        """Drop what is known about ``update_id``'s progress."""
        self._execute("DELETE FROM updates WHERE update_id = ?", (update_id,))

    # -- plumbing --------------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._transaction() as db:
            db.execute(sql, params)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            db = self._open_db()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._open_db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise JournalError(f"cannot write the journal {self.path}: {exc}") from exc

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"the journal {self.path} is closed")
        return self._db


def _id(update_id: str) -> str:
    if not isinstance(update_id, str) or not update_id:
        raise ValueError(f"an update id must be a non-empty string, not {update_id!r}")
    return update_id


def _private_directory(directory: str) -> None:
    """Create ``directory`` with mode 0700 if it is missing; warn if others can enter it."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        mode = os.stat(directory).st_mode
    except OSError as exc:
        raise JournalError(f"cannot create the state directory {directory}: {exc}") from exc
    if mode & 0o077:
        logger.warning(
            "The state directory %s is open to other users (mode %o); 0700 is advised",
            directory,
            stat.S_IMODE(mode),
        )


def _connect(path: str) -> sqlite3.Connection:
    """Open the file, check it, and bring its schema up to date.

    :raises _Unusable: the file is corrupt, not a database, or from a newer schema.
    :raises JournalError: it cannot be opened for another reason.
    """
    try:
        # Created here rather than by SQLite so the mode is 0600 from the start (SQLite gives
        # its -wal and -shm files the database file's mode), and a symlink is refused.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    try:
        db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    try:
        _prepare(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        if exc.sqlite_errorcode in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise _Unusable("corrupt", str(exc)) from exc
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection) -> None:
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(f"the journal cannot use write-ahead logging (mode {mode})")
    # FULL: with WAL this syncs the log at every commit, so a power cut right after a method
    # returns loses nothing (NORMAL survives a crash of the process, but not of the machine).
    # Writes are a few per update, so the fsync costs nothing that matters.
    db.execute("PRAGMA synchronous=FULL")
    problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise _Unusable("corrupt", "; ".join(str(p) for p in problems[:5]))
    _migrate(db, MIGRATIONS)


def _migrate(db: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Run the migrations the file has not had yet, each in its own transaction."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise _Unusable(
            "newer",
            f"it has schema version {version}, this daemon knows up to {len(migrations)}",
        )
    for target in range(version + 1, len(migrations) + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            migrations[target - 1](db)
            db.execute(f"PRAGMA user_version = {int(target)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        logger.info("Journal schema now at version %d", target)


def _move_aside(path: str, label: str) -> str:
    """Rename the unusable file (and its WAL) to ``<path>.<label>-<UTC time>[-n]``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}.{label}-{stamp}"
    n = 1
    while os.path.lexists(aside):
        aside = f"{path}.{label}-{stamp}-{n}"
        n += 1
    try:
        os.rename(path, aside)
        if os.path.lexists(f"{path}-wal"):
            os.rename(f"{path}-wal", f"{aside}-wal")
        if os.path.lexists(f"{path}-shm"):
            os.unlink(f"{path}-shm")
    except OSError as exc:
        raise JournalError(f"cannot move the unusable journal {path} aside: {exc}") from exc
    return aside
