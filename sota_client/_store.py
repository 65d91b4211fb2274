"""The daemon's durable journal (SQLite, WAL): what must survive a crash, ``kill -9`` or a reboot.

Each update's place in its life (:class:`UpdateState`), downloads in progress with their last
checkpoint, events the SWLM has not taken yet (the outbox), and update reports Core has not
accepted yet. Every state change is one transaction together with the event and the report it
causes, so a crash between them cannot happen: that is the transactional outbox.
"""

from __future__ import annotations

import enum
import logging
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import msgspec

from swlm_sdk._killpoints import kill_point

from ._errors import SotaError

__all__ = [
    "DEFAULT_HOLDERS",
    "FINAL_STATES",
    "PROGRESS_STATES",
    "SCHEMA_VERSION",
    "Admission",
    "DownloadRecord",
    "DownloadState",
    "InstallProgressRecord",
    "Journal",
    "JournalError",
    "OutboxEvent",
    "PendingReport",
    "UpdateRecord",
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
    """An update's place in its life; docs/reliability.md has the whole table of transitions."""

    DOWNLOADING = "downloading"  # the image is being fetched (resumable)
    DOWNLOADED = "downloaded"  # the image is complete; DownloadComplete waits in the outbox
    DELIVERED = "delivered"  # the SWLM took DownloadComplete; its report is awaited
    INSTALLING = "installing"  # the daemon's own package manager is installing it
    AWAITING_REBOOT = "awaiting_reboot"  # installed by the SWLM; counts after a reboot and its OK
    REPORT_PENDING = "report_pending"  # a report waits for Core to accept it
    REPORTED = "reported"  # Core accepted the report: final
    SET_ASIDE = "set_aside"  # it failed the same way again and again; kept, not retried


FINAL_STATES = frozenset({UpdateState.REPORTED, UpdateState.SET_ASIDE})
"""States that nothing drives forward by itself."""


class Admission(enum.StrEnum):
    """What :meth:`Journal.add_report` did with a report."""

    QUEUED = "queued"  # new, or it replaced a different report not yet sent
    ALREADY_QUEUED = "already_queued"  # the same report already waits for Core
    ALREADY_REPORTED = "already_reported"  # Core accepted this same report before
    CONFLICT = "conflict"  # Core accepted a different report for this update


#: Who holds an update in each state, unless the transition names it more exactly (the SWLM's
#: events socket, the package manager): what ``sota_client status`` shows.
DEFAULT_HOLDERS = {
    UpdateState.DOWNLOADING: "the daemon (downloading)",
    UpdateState.DOWNLOADED: "the daemon (handing it to the SWLM)",
    UpdateState.DELIVERED: "the SWLM",
    UpdateState.INSTALLING: "the package manager",
    UpdateState.AWAITING_REBOOT: "the SWLM (awaiting confirmation after reboot)",
    UpdateState.REPORT_PENDING: "the daemon (sending its report to Core)",
    UpdateState.REPORTED: "Core",
    UpdateState.SET_ASIDE: "nobody (set aside)",
}


class InstallProgressRecord(msgspec.Struct, frozen=True):
    """``SendInstallProgress``'s percentage and text, and when it came (wall-clock seconds)."""

    percent: int
    text: str
    at: float


class UpdateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the journal knows about one update."""

    update_id: str
    state: UpdateState
    #: When it entered ``state`` (wall-clock seconds).
    since: float
    #: The report Core accepted (``REPORTED``), as JSON.
    report: bytes | None
    #: Why it was set aside (``SET_ASIDE``).
    error: str | None
    #: Who must act on it now, in words: "the SWLM at /run/sota/events.socket".
    holder: str = ""
    #: ``(name, version)`` of its package, once Core's update list has named it.
    package: tuple[str, str] | None = None
    #: What the SWLM last said of its install in this state, at 10 % steps (see
    #: :meth:`Journal.install_progress`), or None.
    install: InstallProgressRecord | None = None


class DownloadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One download the daemon started."""

    update_id: str
    state: DownloadState
    #: Where the bytes go (the partial file while downloading); None if never told.
    path: str | None
    #: Bytes known to be on disk: the last checkpoint while downloading, the size once complete.
    size: int
    #: Hex SHA-256 of those ``size`` bytes (of the complete file once complete).
    sha256: str | None
    #: Why it failed, for ``FAILED``.
    error: str | None
    started_at: float
    updated_at: float
    #: Bytes received so far, and the size announced (None: not announced), for progress.
    received: int = 0
    total: int | None = None


class OutboxEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event envelope waiting to be delivered to an SWLM through one gateway (its channel)."""

    id: int
    name: str
    #: The exact bytes to send.
    payload: bytes
    #: The update it is about, if any.
    update_id: str | None
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    #: Why it is no longer delivered, if it was set aside.
    set_aside: str | None = None
    #: The SWLM gateway that delivers it: ``socket`` (the events socket) or ``dbus``.
    channel: str = "socket"


class PendingReport(msgspec.Struct, frozen=True, kw_only=True):
    """An update report waiting for Core to accept it."""

    update_id: str
    #: The report as JSON, exactly as it will be sent.
    payload: bytes
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    #: A POST of it may have reached Core without its answer reaching us (a crash, a timeout):
    #: Core's update list must be checked before it is sent again.
    in_doubt: bool
    #: Why it is no longer sent, if it was set aside.
    set_aside: str | None = None


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


_STATES_SQL = ", ".join(f"'{state.value}'" for state in UpdateState)


def _lifecycle_v2(db: sqlite3.Connection) -> None:
    """Every update gets an explicit state; events and reports say what they belong to.

    Schema 1 wrote free-text states (``downloaded``, ``installed``, ``reported``): ``installed``
    meant the install was over and its report queued or sent. Updates known only from a
    download or a kept report get the state those imply.
    """
    db.execute(
        f"""CREATE TABLE updates_v2 (
            update_id TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ({_STATES_SQL})),
            since REAL NOT NULL,
            report BLOB,
            error TEXT
        )"""
    )
    db.execute(
        """INSERT INTO updates_v2 (update_id, state, since)
           SELECT update_id,
                  CASE
                    WHEN update_id IN (SELECT update_id FROM reports) THEN 'report_pending'
                    WHEN state = 'installed' THEN 'reported'
                    ELSE state
                  END,
                  updated_at
           FROM updates
           WHERE state IN ('downloaded', 'installed', 'reported')
              OR update_id IN (SELECT update_id FROM reports)"""
    )
    db.execute("DROP TABLE updates")
    db.execute("ALTER TABLE updates_v2 RENAME TO updates")
    db.execute(
        """INSERT OR IGNORE INTO updates (update_id, state, since)
           SELECT update_id, 'report_pending', created_at FROM reports"""
    )
    db.execute(
        """INSERT OR IGNORE INTO updates (update_id, state, since)
           SELECT update_id, CASE state WHEN 'complete' THEN 'downloaded'
                                        ELSE 'downloading' END, updated_at
           FROM downloads WHERE state IN ('downloading', 'complete')"""
    )
    db.execute("ALTER TABLE outbox ADD COLUMN update_id TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN set_aside TEXT")
    db.execute("ALTER TABLE reports ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE reports ADD COLUMN set_aside TEXT")
    # Schema 1 counted every byte written as "size"; it was never verified, so drop it: a
    # partial file is resumed only from a checkpoint whose hash matches.
    db.execute("UPDATE downloads SET size = 0, sha256 = NULL WHERE state = 'downloading'")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _holders_v3(db: sqlite3.Connection) -> None:
    """Who holds each update and which package it is; how far each download got."""
    db.execute("ALTER TABLE updates ADD COLUMN holder TEXT")
    db.execute("ALTER TABLE updates ADD COLUMN package_name TEXT")
    db.execute("ALTER TABLE updates ADD COLUMN package_version TEXT")
    for state, holder in DEFAULT_HOLDERS.items():
        db.execute("UPDATE updates SET holder = ? WHERE state = ?", (holder, state.value))
    db.execute("ALTER TABLE downloads ADD COLUMN received INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE downloads ADD COLUMN total INTEGER")


def _channels_v4(db: sqlite3.Connection) -> None:
    """Each kept event names the SWLM gateway that delivers it; until now that was the socket."""
    db.execute("ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'socket'")


#: The states in which an install runs, so that its progress is taken: the SWLM holds the
#: update, or the package manager; or the SWLM has its event, and its progress came before the
#: daemon recorded the delivery (see ``_KEEPS_PROGRESS``).
PROGRESS_STATES = (UpdateState.DOWNLOADED, UpdateState.DELIVERED, UpdateState.INSTALLING)
#: An install's progress is of its state, but a quick SWLM may send it before the daemon has
#: recorded the delivery of its event: that progress stays when the delivery is recorded.
_KEEPS_PROGRESS = "updates.state = 'downloaded' AND excluded.state = 'delivered'"
_PROGRESS_STATES = "(" + ", ".join(f"'{state.value}'" for state in PROGRESS_STATES) + ")"


def _install_progress_v5(db: sqlite3.Connection) -> None:
    """How far an SWLM said its install got (``SendInstallProgress``), for the status."""
    db.execute("ALTER TABLE updates ADD COLUMN install_percent INTEGER")
    db.execute("ALTER TABLE updates ADD COLUMN install_text TEXT")
    db.execute("ALTER TABLE updates ADD COLUMN install_at REAL")


#: ``MIGRATIONS[n]`` takes a database from schema ``n`` to ``n + 1``; append, never edit.
MIGRATIONS: tuple[Migration, ...] = (
    _create_v1,
    _lifecycle_v2,
    _holders_v3,
    _channels_v4,
    _install_progress_v5,
)
#: The schema this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = len(MIGRATIONS)

#: Final updates remembered (to answer a report sent again); the oldest are forgotten first.
KEEP_FINISHED = 1000

_ORDER_UPDATES = "ORDER BY since, update_id"
_UPDATE_COLUMNS = (
    "update_id, state, since, report, error, holder, package_name, package_version,"
    " install_percent, install_text, install_at"
)
_DOWNLOAD_COLUMNS = (
    "update_id, state, path, size, sha256, error, started_at, updated_at, received, total"
)
_EVENT_COLUMNS = (
    "id, name, payload, update_id, attempts, next_attempt_at, last_error, created_at, set_aside,"
    " channel"
)
#: The channel of events written when the daemon names none: the 2016 events socket.
DEFAULT_CHANNELS = ("socket",)
_REPORT_COLUMNS = (
    "update_id, payload, attempts, next_attempt_at, last_error, created_at, in_doubt, set_aside"
)


class _Unusable(Exception):
    """The file is not a journal this code can use; it is moved aside under ``label``."""

    def __init__(self, label: str, detail: str) -> None:
        super().__init__(detail)
        self.label = label
        self.detail = detail


class Journal:
    """The SQLite journal; every method is one short transaction, safe from any thread.

    Each write is durable when the method returns (WAL with ``synchronous=FULL``), so the
    async daemon may call the methods directly: they take milliseconds. Each write passes the
    kill point ``journal.<method>`` once committed, so crash tests can stop the daemon there.
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
        #: The SWLM gateways that are on: every event for the SWLM is kept once for each.
        self.event_channels: tuple[str, ...] = DEFAULT_CHANNELS
        #: Called, in the thread that wrote it, once an update was handed over (``DELIVERED``),
        #: so that what waits for its report (``device.report_timeout``) need not poll.
        self.handed_over_listeners: list[Callable[[], None]] = []

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

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> Journal:
        """Open an existing journal only to read it, safely while the daemon writes it.

        Nothing is created or migrated. A journal without a write-ahead log (the daemon is
        not running) is opened immutable, so that no ``-shm`` file owned by the reader is left
        behind for the daemon to trip over.

        :raises JournalError: there is no journal at ``path``, it cannot be read, or its schema
            is not the one this code reads.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise JournalError(f"there is no journal at {path}")
        flags = "mode=ro" if os.path.exists(f"{path}-wal") else "mode=ro&immutable=1"
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?" + flags
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {path}: {exc}") from exc
        if version != SCHEMA_VERSION:
            db.close()
            raise JournalError(
                f"the journal {path} has schema {version}; this program reads schema "
                f"{SCHEMA_VERSION} (start the daemon of this version once to bring it up to date)"
            )
        return cls(db, path)

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

    # -- updates ---------------------------------------------------------------------------

    def update(self, update_id: str) -> UpdateRecord | None:
        """Everything known about ``update_id``'s life, or None if it is unknown."""
        rows = self._query(
            f"SELECT {_UPDATE_COLUMNS} FROM updates WHERE update_id = ?", (update_id,)
        )
        return _update_record(rows[0]) if rows else None

    def update_state(self, update_id: str) -> UpdateState | None:
        """The state of ``update_id``, or None if it is unknown."""
        record = self.update(update_id)
        return None if record is None else record.state

    def unfinished_updates(self) -> list[UpdateRecord]:
        """Every update not in a final state, oldest first: what start-up drives forward."""
        finals = ", ".join(f"'{state.value}'" for state in FINAL_STATES)
        rows = self._query(
            f"SELECT {_UPDATE_COLUMNS} FROM updates WHERE state NOT IN ({finals}) " + _ORDER_UPDATES
        )
        return [_update_record(row) for row in rows]

    def updates(self) -> list[UpdateRecord]:
        """Every update the journal knows, oldest first."""
        rows = self._query(f"SELECT {_UPDATE_COLUMNS} FROM updates " + _ORDER_UPDATES)
        return [_update_record(row) for row in rows]

    def handed_over(self) -> list[UpdateRecord]:
        """Updates that wait for someone else's report (``DELIVERED``), oldest first."""
        rows = self._query(
            f"SELECT {_UPDATE_COLUMNS} FROM updates WHERE state = 'delivered' " + _ORDER_UPDATES
        )
        return [_update_record(row) for row in rows]

    def name_package(self, update_id: str, name: str, version: str) -> None:
        """Remember which package ``update_id`` is (Core's list names it); for the status."""
        self._execute(
            "name_package",
            "UPDATE updates SET package_name = ?, package_version = ? WHERE update_id = ?",
            (name, version, update_id),
        )

    def set_aside(self, update_id: str, error: str) -> None:
        """Stop driving ``update_id`` forward: it failed the same way again and again.

        Its queued report (if any) and undelivered events stay in the journal, marked, and are
        no longer retried.
        """
        with self._transaction("set_aside") as db:
            self._enter(db, update_id, UpdateState.SET_ASIDE, error=error)
            db.execute(
                "UPDATE reports SET set_aside = ? WHERE update_id = ? AND set_aside IS NULL",
                (error, update_id),
            )
            db.execute(
                "UPDATE outbox SET set_aside = ? WHERE update_id = ? AND set_aside IS NULL",
                (error, update_id),
            )

    # -- downloads -------------------------------------------------------------------------

    def begin_download(self, update_id: str, path: str) -> None:
        """A download of ``update_id`` into ``path`` starts (or starts again after a restart).

        The checkpoint of an unfinished download into the same path is kept for the resume.
        """
        now = self._clock()
        with self._transaction("begin_download") as db:
            db.execute(
                """INSERT INTO downloads (update_id, state, path, size, started_at, updated_at)
                   VALUES (?, 'downloading', ?, 0, ?, ?)
                   ON CONFLICT (update_id) DO UPDATE SET
                     size = CASE WHEN state = 'downloading' AND path IS excluded.path
                                 THEN size ELSE 0 END,
                     sha256 = CASE WHEN state = 'downloading' AND path IS excluded.path
                                   THEN sha256 ELSE NULL END,
                     state = 'downloading', path = excluded.path, error = NULL,
                     updated_at = excluded.updated_at""",
                (_id(update_id), path, now, now),
            )
            self._enter(db, update_id, UpdateState.DOWNLOADING)

    def download_progress(self, update_id: str, received: int, total: int | None) -> None:
        """How far the download got, for the status (not a resume point: see checkpoints)."""
        self._execute(
            "download_progress",
            "UPDATE downloads SET received = ?, total = ?"
            " WHERE update_id = ? AND state = 'downloading'",
            (received, total, _id(update_id)),
        )

    def install_progress(self, update_id: str, percent: int, text: str) -> bool:
        """What the SWLM says of the install of ``update_id``, kept until its state changes
        (but for the delivery of its event); False (nothing written) unless the update is
        ``downloaded`` (its delivery not recorded yet), ``delivered`` or ``installing``."""
        with self._transaction("install_progress") as db:
            cursor = db.execute(
                "UPDATE updates SET install_percent = ?, install_text = ?, install_at = ?"
                f" WHERE update_id = ? AND state IN {_PROGRESS_STATES}",
                (percent, text, self._clock(), _id(update_id)),
            )
            return cursor.rowcount == 1

    def await_reboot(self, update_id: str, text: str) -> tuple[UpdateState | None, bool]:
        """The SWLM installed ``update_id``, which counts once the device has rebooted into it
        and the SWLM confirmed it: ``DOWNLOADED`` (its delivery not recorded yet) or
        ``DELIVERED`` becomes ``AWAITING_REBOOT``, whose report has no deadline, with ``text``
        kept for the status; any other state stays. Returns the state it was in before (None:
        unknown) and whether it entered ``AWAITING_REBOOT`` now."""
        with self._transaction("await_reboot") as db:
            state = self._state(db, update_id)
            if state not in (UpdateState.DOWNLOADED, UpdateState.DELIVERED):
                return state, False
            self._enter(db, update_id, UpdateState.AWAITING_REBOOT)
            db.execute(
                "UPDATE updates SET install_percent = 100, install_text = ?, install_at = ?"
                " WHERE update_id = ?",
                (text, self._clock(), _id(update_id)),
            )
            return state, True

    def download_checkpoint(self, update_id: str, size: int, sha256: str) -> None:
        """The first ``size`` bytes of the partial file have this SHA-256: a resume point."""
        self._execute(
            "download_checkpoint",
            "UPDATE downloads SET size = ?, sha256 = ?, updated_at = ?"
            " WHERE update_id = ? AND state = 'downloading'",
            (size, sha256, self._clock(), _id(update_id)),
        )

    def finish_download(
        self, update_id: str, size: int, sha256: str, *, event: tuple[str, bytes] | None = None
    ) -> None:
        """The image is complete (``size`` bytes, this SHA-256): ``DOWNLOADED``.

        :param event: ``(name, envelope)`` of the ``DownloadComplete`` for the outbox, written
            in the same transaction so it cannot be lost.
        """
        with self._transaction("finish_download") as db:
            self._end_download(db, update_id, DownloadState.COMPLETE, size=size, sha256=sha256)
            self._enter(db, update_id, UpdateState.DOWNLOADED)
            if event is not None:
                self._add_event(db, event[0], event[1], update_id)

    def fail_download(
        self,
        update_id: str,
        error: str,
        *,
        report: bytes,
        event: tuple[str, bytes] | None = None,
    ) -> None:
        """The download failed for good: ``REPORT_PENDING`` with its failure ``report``, and
        the ``DownloadFailed`` ``event`` for the outbox, all in one transaction."""
        with self._transaction("fail_download") as db:
            self._end_download(db, update_id, DownloadState.FAILED, error=error)
            self._queue_report(db, update_id, report)
            if event is not None:
                self._add_event(db, event[0], event[1], update_id)

    def _end_download(
        self,
        db: sqlite3.Connection,
        update_id: str,
        state: DownloadState,
        *,
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> None:
        now = self._clock()
        db.execute(
            """INSERT INTO downloads
                 (update_id, state, size, sha256, error, started_at, updated_at)
               VALUES (?, ?, coalesce(?, 0), ?, ?, ?, ?)
               ON CONFLICT (update_id) DO UPDATE SET
                 state = excluded.state, size = coalesce(?, size), sha256 = excluded.sha256,
                 error = excluded.error, updated_at = excluded.updated_at""",
            (_id(update_id), state.value, size, sha256, error, now, now, size),
        )

    def download(self, update_id: str) -> DownloadRecord | None:
        """Everything known about the download of ``update_id``, or None."""
        rows = self._query(
            f"SELECT {_DOWNLOAD_COLUMNS} FROM downloads WHERE update_id = ?", (update_id,)
        )
        return _download_record(rows[0]) if rows else None

    def downloads(self) -> list[DownloadRecord]:
        """Every download the journal remembers, oldest first."""
        rows = self._query(f"SELECT {_DOWNLOAD_COLUMNS} FROM downloads ORDER BY started_at")
        return [_download_record(row) for row in rows]

    def begin_install(self, update_id: str, *, holder: str | None = None) -> None:
        """The package manager (``holder``) starts installing ``update_id``: ``INSTALLING``."""
        with self._transaction("begin_install") as db:
            self._enter(db, update_id, UpdateState.INSTALLING, holder=holder)

    def finish_install(self, update_id: str, report: bytes) -> None:
        """The install ended; its ``report`` is queued for Core: ``REPORT_PENDING``."""
        with self._transaction("finish_install") as db:
            self._queue_report(db, update_id, report)

    # -- events for the SWLM ---------------------------------------------------------------

    def add_event(self, name: str, payload: bytes, update_id: str | None = None) -> int:
        """Keep an event envelope until it is delivered, once for each of
        :attr:`event_channels`; returns the id of the last copy (ids only grow).

        Past ``max_events`` undelivered events the oldest are dropped, with a WARNING, so that
        an SWLM that never listens cannot fill the disk.
        """
        with self._transaction("add_event") as db:
            return self._add_event(db, name, payload, update_id)

    def _add_event(
        self,
        db: sqlite3.Connection,
        name: str,
        payload: bytes,
        update_id: str | None,
        channels: Sequence[str] | None = None,
    ) -> int:
        if not isinstance(payload, bytes):
            raise TypeError(f"an event payload must be bytes, not {type(payload).__name__}")
        now = self._clock()
        event_id = 0
        for channel in self.event_channels if channels is None else channels:
            cursor = db.execute(
                "INSERT INTO outbox (name, payload, update_id, next_attempt_at, created_at,"
                " channel) VALUES (?, ?, ?, ?, ?, ?)",
                (name, payload, update_id, now, now, channel),
            )
            assert cursor.lastrowid is not None
            event_id = cursor.lastrowid
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

    def due_events(self, now: float, limit: int, channel: str = "socket") -> list[OutboxEvent]:
        """The oldest undelivered events of ``channel``, in order, up to the first one not yet
        due.

        Deliver them in the order given and stop at the first failure, so that no event
        overtakes an older one. ``now=math.inf`` returns them whatever their retry time.
        Events set aside are skipped.
        """
        rows = self._query(
            f"SELECT {_EVENT_COLUMNS} FROM outbox WHERE set_aside IS NULL AND channel = ?"
            " ORDER BY id LIMIT ?",
            (channel, limit),
        )
        events = []
        for row in rows:
            event = _outbox_event(row)
            if event.next_attempt_at > now:
                break
            events.append(event)
        return events

    def events(self) -> list[OutboxEvent]:
        """Every undelivered event, set aside or not, oldest first (for the status)."""
        rows = self._query(f"SELECT {_EVENT_COLUMNS} FROM outbox ORDER BY id")
        return [_outbox_event(row) for row in rows]

    def pending_events(self, channel: str | None = None) -> int:
        """How many events wait for delivery through ``channel`` (None: any), not counting those
        set aside."""
        if channel is None:
            return int(self._query("SELECT count(*) FROM outbox WHERE set_aside IS NULL")[0][0])
        rows = self._query(
            "SELECT count(*) FROM outbox WHERE set_aside IS NULL AND channel = ?", (channel,)
        )
        return int(rows[0][0])

    def has_pending_event(self, update_id: str, name: str) -> bool:
        """Whether an event ``name`` about ``update_id`` waits for delivery."""
        rows = self._query(
            "SELECT 1 FROM outbox WHERE update_id = ? AND name = ? AND set_aside IS NULL LIMIT 1",
            (update_id, name),
        )
        return bool(rows)

    def event_delivered(self, event_id: int, *, holder: str | None = None) -> None:
        """The SWLM (``holder``, in words) has the event: forget it. A delivered
        ``DownloadComplete`` moves its update from ``DOWNLOADED`` to ``DELIVERED`` in the same
        transaction."""
        handed_over = False
        with self._transaction("event_delivered") as db:
            row = db.execute(
                "SELECT name, update_id FROM outbox WHERE id = ?", (event_id,)
            ).fetchone()
            db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))
            if row is not None and row[0] == "DownloadComplete" and row[1] is not None:
                if self._state(db, row[1]) is UpdateState.DOWNLOADED:
                    self._enter(db, row[1], UpdateState.DELIVERED, holder=holder)
                    handed_over = True
        if handed_over:
            for listener in list(self.handed_over_listeners):
                listener()

    def event_failed(self, event_id: int, next_attempt_at: float, error: str) -> None:
        """Delivery failed with ``error``; try again at ``next_attempt_at``."""
        self._execute(
            "event_failed",
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE id = ?",
            (next_attempt_at, error, event_id),
        )

    def set_aside_event(self, event_id: int, error: str) -> None:
        """Stop delivering this event (it failed the same way again and again); kept, marked."""
        self._execute(
            "set_aside_event",
            "UPDATE outbox SET set_aside = ? WHERE id = ?",
            (error, event_id),
        )

    def delivered_downloads(self, holder: str | None = None) -> list[tuple[str, str]]:
        """``(update_id, image path)`` of each update handed to the SWLM (to ``holder`` only,
        if given) and not reported."""
        rows = self._query(
            "SELECT u.update_id, d.path, u.holder FROM updates u JOIN downloads d"
            " USING (update_id) WHERE u.state = 'delivered' AND d.state = 'complete'"
            " AND d.path IS NOT NULL ORDER BY u.since, u.update_id"
        )
        return [(row[0], row[1]) for row in rows if holder is None or row[2] == holder]

    def hand_over_again(
        self, update_id: str, name: str, payload: bytes, channel: str = "socket"
    ) -> None:
        """A ``DELIVERED`` update goes back to ``DOWNLOADED`` with its event queued again for
        ``channel`` (the SWLM there restarted and may have lost it); one transaction."""
        with self._transaction("hand_over_again") as db:
            if self._state(db, update_id) is UpdateState.DELIVERED:
                self._add_event(db, name, payload, update_id, (channel,))
                self._enter(db, update_id, UpdateState.DOWNLOADED)

    def route_events(self) -> int:
        """Give the events kept for a gateway that is now off to the SWLM gateways that are on
        (:attr:`event_channels`), so that a change of config loses none; returns how many."""
        if not self.event_channels:
            return 0  # nothing can deliver them now: keep them for a gateway that will
        marks = ", ".join("?" * len(self.event_channels))
        orphans = (
            f"SELECT count(*) FROM outbox WHERE set_aside IS NULL AND channel NOT IN ({marks})"
        )
        if not self._query(orphans, self.event_channels)[0][0]:
            return 0  # the usual start: no write (and no kill point) at all
        with self._transaction("route_events") as db:
            rows = db.execute(
                f"SELECT id, name, payload, update_id FROM outbox"
                f" WHERE set_aside IS NULL AND channel NOT IN ({marks}) ORDER BY id",
                self.event_channels,
            ).fetchall()
            for event_id, name, payload, update_id in rows:
                db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))
                missing = [
                    channel
                    for channel in self.event_channels
                    if db.execute(
                        "SELECT 1 FROM outbox WHERE update_id IS ? AND name = ? AND channel = ?"
                        " AND set_aside IS NULL",
                        (update_id, name, channel),
                    ).fetchone()
                    is None
                ]
                self._add_event(db, name, bytes(payload), update_id, missing)
            return len(rows)

    # -- small settings ------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        """A value the daemon remembers across restarts (e.g. which SWLM it delivered to)."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self._execute(
            "set_setting",
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- update reports for Core -----------------------------------------------------------

    def add_report(self, update_id: str, payload: bytes) -> Admission:
        """Queue a report for Core, unless Core already has one for this update.

        A report equal to the one Core accepted is ``ALREADY_REPORTED`` (answer it from here,
        without sending it again); a different one is a ``CONFLICT``. A report equal to the
        queued one changes nothing; a different one replaces it.
        """
        if not isinstance(payload, bytes):
            raise TypeError(f"a report payload must be bytes, not {type(payload).__name__}")
        with self._transaction("add_report") as db:
            record = self._record(db, update_id)
            if record is not None and record.state is UpdateState.REPORTED:
                return (
                    Admission.ALREADY_REPORTED if record.report == payload else Admission.CONFLICT
                )
            return self._queue_report(db, update_id, payload)

    def _queue_report(self, db: sqlite3.Connection, update_id: str, payload: bytes) -> Admission:
        now = self._clock()
        row = db.execute(
            "SELECT payload FROM reports WHERE update_id = ? AND set_aside IS NULL",
            (update_id,),
        ).fetchone()
        if row is not None and bytes(row[0]) == payload:
            admission = Admission.ALREADY_QUEUED
        else:
            # A report that may already be at Core stays "in doubt" when replaced: Core's
            # list is still checked first, and Core keeps whichever report arrived first.
            db.execute(
                """INSERT INTO reports (update_id, payload, next_attempt_at, created_at)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (update_id) DO UPDATE SET
                     payload = excluded.payload, attempts = 0, last_error = NULL,
                     set_aside = NULL, next_attempt_at = excluded.next_attempt_at,
                     created_at = excluded.created_at""",
                (_id(update_id), payload, now, now),
            )
            admission = Admission.QUEUED
        self._enter(db, update_id, UpdateState.REPORT_PENDING)
        return admission

    def reports(self) -> list[PendingReport]:
        """Every report Core has not accepted, set aside or not, oldest first (for the status)."""
        rows = self._query(f"SELECT {_REPORT_COLUMNS} FROM reports ORDER BY seq")
        return [_pending_report(row) for row in rows]

    def report_overdue(self, update_id: str, since: float, payload: bytes) -> bool:
        """Queue ``payload`` as the report of ``update_id`` if it is still ``DELIVERED`` since
        ``since``: nobody reported it in time. Checked and written in one transaction, so a
        report the SWLM sends meanwhile is never replaced. Returns whether it was queued."""
        with self._transaction("report_overdue") as db:
            record = self._record(db, update_id)
            if record is None or record.state is not UpdateState.DELIVERED:
                return False
            if record.since != since:
                return False
            self._queue_report(db, update_id, payload)
            return True

    def pending_report(self, update_id: str) -> PendingReport | None:
        """The queued report of ``update_id`` (not set aside), or None."""
        rows = self._query(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE update_id = ? AND set_aside IS NULL",
            (update_id,),
        )
        return _pending_report(rows[0]) if rows else None

    def due_reports(self, now: float, limit: int) -> list[PendingReport]:
        """The kept reports due at ``now``, oldest first (each update's report stands alone)."""
        rows = self._query(
            f"SELECT {_REPORT_COLUMNS} FROM reports"
            " WHERE next_attempt_at <= ? AND set_aside IS NULL ORDER BY seq LIMIT ?",
            (now, limit),
        )
        return [_pending_report(row) for row in rows]

    def next_report_due(self) -> float | None:
        """The earliest retry time of the kept reports, or None if there is none."""
        value = self._query("SELECT min(next_attempt_at) FROM reports WHERE set_aside IS NULL")[0][
            0
        ]
        return None if value is None else float(value)

    def pending_reports(self) -> int:
        """How many reports wait for Core (not counting those set aside)."""
        return int(self._query("SELECT count(*) FROM reports WHERE set_aside IS NULL")[0][0])

    def report_sending(self, update_id: str) -> None:
        """A POST of the report starts: from now until its answer it is in doubt."""
        self._execute(
            "report_sending",
            "UPDATE reports SET in_doubt = 1 WHERE update_id = ?",
            (update_id,),
        )

    def report_accepted(self, update_id: str) -> None:
        """Core has the report: ``REPORTED``, with the report kept to answer a resend."""
        with self._transaction("report_accepted") as db:
            row = db.execute(
                "SELECT payload FROM reports WHERE update_id = ?", (update_id,)
            ).fetchone()
            db.execute("DELETE FROM reports WHERE update_id = ?", (update_id,))
            self._enter(
                db, update_id, UpdateState.REPORTED, report=None if row is None else bytes(row[0])
            )
            self._forget_old_finished(db)

    def report_failed(
        self, update_id: str, next_attempt_at: float, error: str, *, in_doubt: bool = False
    ) -> None:
        """Sending failed with ``error``; try again at ``next_attempt_at``.

        :param in_doubt: the POST may still have reached Core (no answer came back).
        """
        self._execute(
            "report_failed",
            "UPDATE reports SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
            " in_doubt = ? WHERE update_id = ?",
            (next_attempt_at, error, int(in_doubt), update_id),
        )

    # -- plumbing --------------------------------------------------------------------------

    def _enter(
        self,
        db: sqlite3.Connection,
        update_id: str,
        state: UpdateState,
        *,
        report: bytes | None = None,
        error: str | None = None,
        holder: str | None = None,
    ) -> None:
        """Move ``update_id`` to ``state`` inside the caller's transaction; ``holder`` says who
        holds it now (default: :data:`DEFAULT_HOLDERS`)."""
        db.execute(
            f"""INSERT INTO updates (update_id, state, since, report, error, holder)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (update_id) DO UPDATE SET
                 state = excluded.state, since = excluded.since, report = excluded.report,
                 error = excluded.error, holder = excluded.holder,
                 install_percent = CASE WHEN {_KEEPS_PROGRESS} THEN install_percent END,
                 install_text = CASE WHEN {_KEEPS_PROGRESS} THEN install_text END,
                 install_at = CASE WHEN {_KEEPS_PROGRESS} THEN install_at END""",
            (
                _id(update_id),
                state.value,
                self._clock(),
                report,
                error,
                holder or DEFAULT_HOLDERS[state],
            ),
        )

    def _record(self, db: sqlite3.Connection, update_id: str) -> UpdateRecord | None:
        row = db.execute(
            f"SELECT {_UPDATE_COLUMNS} FROM updates WHERE update_id = ?", (update_id,)
        ).fetchone()
        return None if row is None else _update_record(row)

    def _state(self, db: sqlite3.Connection, update_id: str) -> UpdateState | None:
        record = self._record(db, update_id)
        return None if record is None else record.state

    def _forget_old_finished(self, db: sqlite3.Connection) -> None:
        db.execute(
            """DELETE FROM updates WHERE update_id IN (
                 SELECT update_id FROM updates WHERE state = 'reported'
                 ORDER BY since DESC LIMIT -1 OFFSET ?)""",
            (KEEP_FINISHED,),
        )

    def _execute(self, label: str, sql: str, params: Sequence[Any] = ()) -> None:
        with self._transaction(label) as db:
            db.execute(sql, params)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            db = self._open_db()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self, label: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; then the kill point ``journal.<label>``."""
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
        kill_point(f"journal.{label}")

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"the journal {self.path} is closed")
        return self._db


def _update_record(row: Sequence[Any]) -> UpdateRecord:
    state = UpdateState(row[1])
    return UpdateRecord(
        update_id=row[0],
        state=state,
        since=row[2],
        report=None if row[3] is None else bytes(row[3]),
        error=row[4],
        holder=row[5] or DEFAULT_HOLDERS[state],
        package=None if row[6] is None else (row[6], row[7] or ""),
        install=None if row[8] is None else InstallProgressRecord(row[8], row[9] or "", row[10]),
    )


def _download_record(row: Sequence[Any]) -> DownloadRecord:
    return DownloadRecord(
        update_id=row[0],
        state=DownloadState(row[1]),
        path=row[2],
        size=row[3],
        sha256=row[4],
        error=row[5],
        started_at=row[6],
        updated_at=row[7],
        received=row[8],
        total=row[9],
    )


def _outbox_event(row: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(
        id=row[0],
        name=row[1],
        payload=bytes(row[2]),
        update_id=row[3],
        attempts=row[4],
        next_attempt_at=row[5],
        last_error=row[6],
        created_at=row[7],
        set_aside=row[8],
        channel=row[9],
    )


def _pending_report(row: Sequence[Any]) -> PendingReport:
    return PendingReport(
        update_id=row[0],
        payload=bytes(row[1]),
        attempts=row[2],
        next_attempt_at=row[3],
        last_error=row[4],
        created_at=row[5],
        in_doubt=bool(row[6]),
        set_aside=row[7],
    )


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
