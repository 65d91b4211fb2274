"""The journal: round trips, order, durability across close, kill -9 and corruption, threads."""

from __future__ import annotations

import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sota_client._errors import SotaError
from sota_client._store import (
    KEEP_FINISHED,
    MIGRATIONS,
    SCHEMA_VERSION,
    Admission,
    DownloadRecord,
    DownloadState,
    Journal,
    JournalError,
    UpdateState,
    _migrate,
)

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Wall-clock seconds the test sets by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sota.db"


@pytest.fixture
def journal(db_path: Path, clock: FakeClock) -> Iterator[Journal]:
    with Journal.open(db_path, clock=clock) as journal:
        yield journal


def _sqlite(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# -- the file ----------------------------------------------------------------------------------


def test_open_creates_a_private_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sota.db"
    with Journal.open(path) as journal:
        assert journal.path == str(path)
        journal.begin_download("u1", "/p/u1")
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        for name in ("sota.db", "sota.db-wal", "sota.db-shm"):
            assert ((path.parent / name).stat().st_mode & 0o777) == 0o600, name
    assert _sqlite(path, "PRAGMA journal_mode") == [("wal",)]
    assert _sqlite(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_an_existing_database_is_made_private(db_path: Path) -> None:
    Journal.open(db_path).close()
    db_path.chmod(0o644)
    Journal.open(db_path).close()
    assert (db_path.stat().st_mode & 0o777) == 0o600


def test_a_directory_open_to_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        Journal.open(tmp_path / "sota.db").close()
    assert "open to other users (mode 755)" in caplog.text


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    (tmp_path / "sota.db").symlink_to(target)
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal.open(tmp_path / "sota.db")
    assert not target.exists()


def test_a_closed_journal_says_so(db_path: Path) -> None:
    journal = Journal.open(db_path)
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="is closed"):
        journal.begin_install("u1")
    with pytest.raises(JournalError, match="is closed"):
        journal.update_state("u1")
    assert isinstance(JournalError("x"), SotaError)


# -- downloads ---------------------------------------------------------------------------------


def test_download_round_trip(journal: Journal, clock: FakeClock) -> None:
    journal.begin_download("u1", "/pkgs/u1.part")
    assert journal.update_state("u1") is UpdateState.DOWNLOADING
    clock.now = 1001.0
    journal.download_checkpoint("u1", 4096, "cd" * 32)
    assert journal.download("u1") == DownloadRecord(
        update_id="u1",
        state=DownloadState.DOWNLOADING,
        path="/pkgs/u1.part",
        size=4096,
        sha256="cd" * 32,
        error=None,
        started_at=1000.0,
        updated_at=1001.0,
    )
    clock.now = 1002.0
    journal.finish_download("u1", 8192, "ab" * 32)
    record = journal.download("u1")
    assert record is not None
    assert (record.state, record.size, record.sha256, record.updated_at) == (
        DownloadState.COMPLETE,
        8192,
        "ab" * 32,
        1002.0,
    )
    assert journal.update_state("u1") is UpdateState.DOWNLOADED


def test_unfinished_updates_oldest_first(journal: Journal, clock: FakeClock) -> None:
    for n, update_id in enumerate(["c", "a", "b", "d", "e"]):
        clock.now = 1000.0 + n
        journal.begin_download(update_id, f"/p/{update_id}")
    journal.finish_download("b", 1, "00")
    journal.fail_download("d", "HTTP client error: Response Code: 404 Not Found", report=b"r")
    journal.report_accepted("d")
    journal.set_aside("e", "boom")
    assert [r.update_id for r in journal.unfinished_updates()] == ["c", "a", "b"]
    failed = journal.download("d")
    assert failed is not None
    assert failed.state == DownloadState.FAILED
    assert failed.error == "HTTP client error: Response Code: 404 Not Found"


def test_a_download_begun_again_keeps_its_checkpoint(journal: Journal, clock: FakeClock) -> None:
    journal.begin_download("u1", "/p/u1")
    journal.download_checkpoint("u1", 100, "ab" * 32)
    clock.now = 2000.0
    journal.begin_download("u1", "/p/u1")  # a restart: resume from the checkpoint
    record = journal.download("u1")
    assert record is not None
    assert (record.state, record.size, record.sha256, record.started_at) == (
        DownloadState.DOWNLOADING,
        100,
        "ab" * 32,
        1000.0,
    )
    journal.begin_download("u1", "/other/u1")
    record = journal.download("u1")
    assert record is not None
    assert (record.path, record.size, record.sha256) == ("/other/u1", 0, None)


def test_a_failed_or_complete_download_begun_again_starts_over(journal: Journal) -> None:
    journal.begin_download("u1", "/p/u1")
    journal.download_checkpoint("u1", 100, "ab" * 32)
    journal.fail_download("u1", "network", report=b"r")
    journal.download_checkpoint("u1", 200, "cd" * 32)  # not downloading: ignored
    journal.begin_download("u1", "/p/u1")
    record = journal.download("u1")
    assert record is not None
    assert (record.state, record.size, record.sha256, record.error) == (
        DownloadState.DOWNLOADING,
        0,
        None,
        None,
    )


def test_a_download_can_end_without_having_begun(journal: Journal) -> None:
    journal.finish_download("u1", 10, "ff")
    journal.fail_download("u2", "boom", report=b"r")
    one, two = journal.download("u1"), journal.download("u2")
    assert one is not None
    assert two is not None
    assert (one.state, one.path, one.size) == (DownloadState.COMPLETE, None, 10)
    assert (two.state, two.error, two.size) == (DownloadState.FAILED, "boom", 0)


@pytest.mark.parametrize("bad", ["", None, 5])
def test_an_update_id_must_be_a_non_empty_string(journal: Journal, bad: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        journal.begin_download(bad, "/p")  # type: ignore[arg-type]


# -- events for the SWLM -----------------------------------------------------------------------


def test_events_come_back_in_order_with_exact_bytes(journal: Journal) -> None:
    payloads = [b'{"version":"0.1"}', b"\x00\xff binary", "ünï".encode()]
    ids = [journal.add_event("DownloadComplete", p) for p in payloads]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    due = journal.due_events(1000.0, 10)
    assert [(e.id, e.name, e.payload, e.attempts) for e in due] == [
        (i, "DownloadComplete", p, 0) for i, p in zip(ids, payloads, strict=True)
    ]
    assert journal.pending_events() == 3
    assert [e.id for e in journal.due_events(1000.0, 2)] == ids[:2]


def test_a_failed_event_holds_back_the_ones_after_it(journal: Journal, clock: FakeClock) -> None:
    first = journal.add_event("DownloadComplete", b"1")
    second = journal.add_event("DownloadFailed", b"2")
    journal.event_failed(first, 1010.0, "Connection refused")
    assert journal.due_events(1000.0, 10) == []
    (head, after) = journal.due_events(1010.0, 10)
    assert (head.id, head.attempts, head.last_error) == (first, 1, "Connection refused")
    assert after.id == second
    assert [e.id for e in journal.due_events(math.inf, 10)] == [first, second]
    journal.event_delivered(first)
    assert [e.id for e in journal.due_events(1000.0, 10)] == [second]
    journal.event_delivered(second)
    assert journal.pending_events() == 0


def test_event_ids_never_go_back(journal: Journal) -> None:
    first = journal.add_event("E", b"1")
    journal.event_delivered(first)
    assert journal.add_event("E", b"2") > first


def test_too_many_undelivered_events_drop_the_oldest(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal.open(db_path, max_events=3) as journal:
        ids = [journal.add_event("E", bytes([n])) for n in range(5)]
        assert [e.id for e in journal.due_events(math.inf, 10)] == ids[2:]
    assert "more than 3 were waiting" in caplog.text


def test_a_payload_must_be_bytes(journal: Journal) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        journal.add_event("E", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        journal.add_report("u1", "text")  # type: ignore[arg-type]


# -- reports for Core --------------------------------------------------------------------------


def test_reports_round_trip(journal: Journal, clock: FakeClock) -> None:
    journal.add_report("u1", b'[{"id":"u1","result_code":0,"result_text":""}]')
    journal.add_report("u2", b"[2]")
    assert journal.pending_reports() == 2
    assert journal.next_report_due() == 1000.0
    assert [(r.update_id, r.payload, r.attempts) for r in journal.due_reports(1000.0, 10)] == [
        ("u1", b'[{"id":"u1","result_code":0,"result_text":""}]', 0),
        ("u2", b"[2]", 0),
    ]
    journal.report_failed("u1", 1060.0, "Hyper error: connection refused")
    assert [r.update_id for r in journal.due_reports(1000.0, 10)] == ["u2"]
    assert journal.next_report_due() == 1000.0
    journal.report_accepted("u2")
    assert journal.next_report_due() == 1060.0
    (retry,) = journal.due_reports(1060.0, 10)
    assert (retry.attempts, retry.last_error) == (1, "Hyper error: connection refused")
    journal.report_accepted("u1")
    assert journal.due_reports(math.inf, 10) == []
    assert journal.next_report_due() is None


def test_a_new_report_replaces_the_old_one(journal: Journal) -> None:
    assert journal.add_report("u1", b"old") is Admission.QUEUED
    journal.report_failed("u1", 5000.0, "down")
    assert journal.add_report("u1", b"new") is Admission.QUEUED
    (report,) = journal.due_reports(1000.0, 10)
    assert (report.payload, report.attempts, report.last_error) == (b"new", 0, None)


def test_the_same_report_again_changes_nothing(journal: Journal) -> None:
    journal.add_report("u1", b"same")
    journal.report_failed("u1", 5000.0, "down", in_doubt=True)
    assert journal.add_report("u1", b"same") is Admission.ALREADY_QUEUED
    report = journal.pending_report("u1")
    assert report is not None
    assert (report.attempts, report.next_attempt_at, report.in_doubt) == (1, 5000.0, True)


def test_a_report_core_accepted_is_answered_from_the_journal(journal: Journal) -> None:
    journal.add_report("u1", b"ok")
    journal.report_sending("u1")
    journal.report_accepted("u1")
    record = journal.update("u1")
    assert record is not None
    assert (record.state, record.report) == (UpdateState.REPORTED, b"ok")
    assert journal.add_report("u1", b"ok") is Admission.ALREADY_REPORTED
    assert journal.add_report("u1", b"different") is Admission.CONFLICT
    assert journal.pending_reports() == 0  # neither was queued


def test_a_report_in_doubt(journal: Journal) -> None:
    journal.add_report("u1", b"r")
    report = journal.pending_report("u1")
    assert report is not None
    assert not report.in_doubt
    journal.report_sending("u1")  # a kill now leaves it in doubt
    report = journal.pending_report("u1")
    assert report is not None
    assert report.in_doubt
    journal.report_failed("u1", 1001.0, "HTTP client error: 500", in_doubt=False)
    report = journal.pending_report("u1")
    assert report is not None
    assert not report.in_doubt
    # replaced while in doubt: Core's list must still be checked before the new one goes
    journal.report_sending("u1")
    journal.add_report("u1", b"other")
    report = journal.pending_report("u1")
    assert report is not None
    assert (report.payload, report.in_doubt) == (b"other", True)


def test_old_final_updates_are_forgotten(journal: Journal, clock: FakeClock) -> None:
    for n in range(KEEP_FINISHED + 5):
        clock.now = 1000.0 + n
        journal.add_report(f"u{n}", b"r")
        journal.report_accepted(f"u{n}")
    kept = journal.updates()
    assert len(kept) == KEEP_FINISHED
    assert kept[0].update_id == "u5"


def test_reports_limit(journal: Journal) -> None:
    for n in range(5):
        journal.add_report(f"u{n}", b"r")
    assert [r.update_id for r in journal.due_reports(1000.0, 3)] == ["u0", "u1", "u2"]


# -- update states -----------------------------------------------------------------------------


def test_an_update_s_life_through_the_swlm(journal: Journal, clock: FakeClock) -> None:
    assert journal.update_state("u1") is None
    journal.begin_download("u1", "/p/u1")
    clock.now = 1001.0
    journal.finish_download("u1", 3, "ab" * 32, event=("DownloadComplete", b"envelope"))
    assert journal.update_state("u1") is UpdateState.DOWNLOADED
    (event,) = journal.due_events(math.inf, 10)
    assert (event.name, event.payload, event.update_id) == ("DownloadComplete", b"envelope", "u1")
    assert journal.has_pending_event("u1", "DownloadComplete")
    clock.now = 1002.0
    journal.event_delivered(event.id)
    assert not journal.has_pending_event("u1", "DownloadComplete")
    record = journal.update("u1")
    assert record is not None
    assert (record.state, record.since) == (UpdateState.DELIVERED, 1002.0)
    journal.add_report("u1", b"report")
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING
    assert [r.update_id for r in journal.unfinished_updates()] == ["u1"]
    journal.report_accepted("u1")
    assert journal.update_state("u1") is UpdateState.REPORTED
    assert journal.unfinished_updates() == []


def test_an_update_s_life_through_the_package_manager(journal: Journal) -> None:
    journal.begin_download("u1", "/p/u1")
    journal.finish_download("u1", 3, "ab" * 32)  # no SWLM gateway: no event
    assert journal.pending_events() == 0
    journal.begin_install("u1")
    assert journal.update_state("u1") is UpdateState.INSTALLING
    journal.finish_install("u1", b"report")
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING
    assert [r.payload for r in journal.due_reports(math.inf, 10)] == [b"report"]


def test_a_failed_download_queues_its_report_and_event_together(journal: Journal) -> None:
    journal.begin_download("u1", "/p/u1")
    journal.fail_download("u1", "404", report=b"failed", event=("DownloadFailed", b"envelope"))
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING
    assert [r.payload for r in journal.due_reports(math.inf, 10)] == [b"failed"]
    assert [e.name for e in journal.due_events(math.inf, 10)] == ["DownloadFailed"]


def test_a_delivered_event_for_an_update_already_further_changes_nothing(
    journal: Journal,
) -> None:
    journal.finish_download("u1", 3, "ab" * 32, event=("DownloadComplete", b"e"))
    (event,) = journal.due_events(math.inf, 10)
    journal.add_report("u1", b"r")  # the SWLM reported before the delivery was recorded
    journal.event_delivered(event.id)
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING


@pytest.mark.parametrize(
    "transition",
    [
        lambda j: j.finish_download("u1", 3, "ab" * 32, event=("DownloadComplete", b"e")),
        lambda j: j.fail_download("u1", "x", report=b"r", event=("DownloadFailed", b"e")),
    ],
)
def test_a_state_change_and_its_event_are_one_transaction(
    journal: Journal, monkeypatch: pytest.MonkeyPatch, transition: Any
) -> None:
    """If writing the event fails, the state change is not written either (and vice versa)."""
    journal.begin_download("u1", "/p/u1")

    def broken(*args: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal, "_add_event", broken)
    with pytest.raises(JournalError):
        transition(journal)
    assert journal.update_state("u1") is UpdateState.DOWNLOADING
    record = journal.download("u1")
    assert record is not None
    assert record.state is DownloadState.DOWNLOADING
    assert journal.pending_reports() == 0


def test_set_aside_keeps_the_entries_but_stops_them(journal: Journal) -> None:
    journal.fail_download("u1", "x", report=b"r", event=("DownloadFailed", b"e"))
    journal.add_event("DownloadComplete", b"other", "u2")
    journal.set_aside("u1", "Core refused it: 400")
    record = journal.update("u1")
    assert record is not None
    assert (record.state, record.error) == (UpdateState.SET_ASIDE, "Core refused it: 400")
    assert journal.due_reports(math.inf, 10) == []
    assert journal.pending_reports() == 0
    assert [e.update_id for e in journal.due_events(math.inf, 10)] == ["u2"]
    assert journal.unfinished_updates() == []
    assert _sqlite(Path(journal.path), "SELECT count(*) FROM reports") == [(1,)]  # kept
    # a new report sent on purpose is queued again
    assert journal.add_report("u1", b"again") is Admission.QUEUED
    assert [r.payload for r in journal.due_reports(math.inf, 10)] == [b"again"]


def test_an_event_can_be_set_aside_alone(journal: Journal) -> None:
    first = journal.add_event("E", b"1")
    second = journal.add_event("E", b"2")
    journal.set_aside_event(first, "boom")
    assert [e.id for e in journal.due_events(math.inf, 10)] == [second]
    assert journal.pending_events() == 1


# -- durability --------------------------------------------------------------------------------


def test_everything_survives_close_and_reopen(db_path: Path, clock: FakeClock) -> None:
    with Journal.open(db_path, clock=clock) as journal:
        journal.begin_download("u1", "/p/u1.part")
        journal.download_checkpoint("u1", 77, "ab" * 32)
        event = journal.add_event("DownloadComplete", b"envelope")
        journal.event_failed(event, 1005.0, "refused")
        journal.add_report("u2", b"report")
        journal.begin_install("u3")
    with Journal.open(db_path, clock=clock) as journal:
        assert journal.update_state("u1") is UpdateState.DOWNLOADING
        record = journal.download("u1")
        assert record is not None
        assert record.size == 77
        (kept,) = journal.due_events(math.inf, 10)
        assert (kept.id, kept.payload, kept.attempts, kept.next_attempt_at) == (
            event,
            b"envelope",
            1,
            1005.0,
        )
        assert [r.payload for r in journal.due_reports(1000.0, 10)] == [b"report"]
        assert journal.update_state("u3") is UpdateState.INSTALLING


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}


def test_committed_records_survive_kill_9(db_path: Path) -> None:
    """A process that writes and then dies by SIGKILL loses nothing that it wrote."""
    program = """
import os, signal, sys
from sota_client._store import Journal
journal = Journal.open(sys.argv[1])
for n in range(200):
    journal.add_event("DownloadComplete", b"event-%d" % n)
    journal.finish_download("d%d" % n, n, "00")
    journal.add_report("u%d" % n, b"report-%d" % n)
journal.begin_download("resume-me", "/p/resume-me.part")
os.kill(os.getpid(), signal.SIGKILL)
"""
    child = subprocess.run(
        [sys.executable, "-c", program, str(db_path)], env=_child_env(), timeout=60
    )
    assert child.returncode == -signal.SIGKILL
    assert (db_path.parent / "sota.db-wal").exists()  # never closed cleanly
    with Journal.open(db_path) as journal:
        events = journal.due_events(math.inf, 1000)
        assert [e.payload for e in events] == [b"event-%d" % n for n in range(200)]
        reports = journal.due_reports(math.inf, 1000)
        assert sorted(r.payload for r in reports) == sorted(b"report-%d" % n for n in range(200))
        assert all(journal.update_state(f"d{n}") == "downloaded" for n in range(200))
        assert all(journal.update_state(f"u{n}") == "report_pending" for n in range(200))
        assert journal.update_state("resume-me") is UpdateState.DOWNLOADING


def test_a_kill_9_in_the_middle_of_writing_keeps_every_acknowledged_record(
    db_path: Path,
) -> None:
    """The child reports each event after add_event returns; all reported ones must be kept."""
    program = """
import itertools, sys
from sota_client._store import Journal
journal = Journal.open(sys.argv[1])
for n in itertools.count():
    journal.add_event("E", str(n).encode())
    print(n, flush=True)
"""
    with subprocess.Popen(
        [sys.executable, "-u", "-c", program, str(db_path)],
        env=_child_env(),
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        acknowledged = [int(child.stdout.readline()) for _ in range(300)]
        child.kill()
        rest, _ = child.communicate(timeout=60)
    acknowledged += [int(line) for line in rest.split()]
    assert child.returncode == -signal.SIGKILL
    with Journal.open(db_path) as journal:
        kept = [int(e.payload) for e in journal.due_events(math.inf, 100_000)]
    # everything acknowledged is there, in order; at most one more was committed unacknowledged
    assert kept[: len(acknowledged)] == acknowledged
    assert len(kept) - len(acknowledged) in (0, 1)


# -- unusable files ----------------------------------------------------------------------------


def _moved_aside(directory: Path, label: str) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(f"sota.db.{label}-"))


def _fill(path: Path) -> None:
    with Journal.open(path) as journal:
        for n in range(300):
            journal.add_event("E", bytes(500) + str(n).encode())


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "overwritten"],
)
def test_a_corrupt_file_is_moved_aside_and_the_journal_starts_empty(
    db_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(db_path)
    original = db_path.read_bytes()
    if damage == "garbage":
        db_path.write_bytes(b"this is not a database\n" * 100)
    elif damage == "truncated":
        db_path.write_bytes(original[:100])
    else:
        db_path.write_bytes(original[:8192] + b"\xa5" * 16384 + original[8192 + 16384 :])
    damaged = db_path.read_bytes()
    with caplog.at_level(logging.ERROR), Journal.open(db_path) as journal:
        assert journal.pending_events() == 0
        journal.add_event("E", b"works")
        assert journal.pending_events() == 1
    (aside,) = _moved_aside(db_path.parent, "corrupt")
    assert aside.read_bytes() == damaged
    assert f"moved it to {aside} and started an empty one" in caplog.text
    assert caplog.records[-1].levelno == logging.ERROR


def test_stale_wal_files_of_a_corrupt_file_do_not_spoil_the_new_journal(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db_path.write_bytes(b"x" * 4096)
    (db_path.parent / "sota.db-wal").write_bytes(b"wal" * 1000)
    (db_path.parent / "sota.db-shm").write_bytes(b"shm" * 1000)
    with Journal.open(db_path) as journal:
        journal.add_event("E", b"fresh")
    with Journal.open(db_path) as journal:
        assert [e.payload for e in journal.due_events(math.inf, 10)] == [b"fresh"]
    (aside,) = _moved_aside(db_path.parent, "corrupt")
    assert aside.read_bytes() == b"x" * 4096


def test_two_corruptions_in_the_same_second_keep_both_files(db_path: Path) -> None:
    for _ in range(2):
        db_path.parent.mkdir(mode=0o700, exist_ok=True)
        db_path.write_bytes(b"garbage" * 1000)
        Journal.open(db_path).close()
    assert len(_moved_aside(db_path.parent, "corrupt")) == 2


def test_a_file_from_a_newer_daemon_is_moved_aside(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Journal.open(db_path).close()
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with Journal.open(db_path) as journal:
        journal.begin_install("u1")
    assert len(_moved_aside(db_path.parent, "newer")) == 1
    assert f"schema version {SCHEMA_VERSION + 1}" in caplog.text


# -- migrations --------------------------------------------------------------------------------


def test_migrations_run_once_each_and_keep_the_data(db_path: Path) -> None:
    with Journal.open(db_path) as journal:
        journal.begin_install("u1")

    def add_column(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE updates ADD COLUMN note TEXT DEFAULT 'v2'")

    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        _migrate(db, (*MIGRATIONS, add_column))
        _migrate(db, (*MIGRATIONS, add_column))  # already there: nothing runs
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert db.execute("SELECT update_id, note FROM updates").fetchall() == [("u1", "v2")]
    finally:
        db.close()


def test_a_schema_1_journal_gets_explicit_states(db_path: Path) -> None:
    """A journal written by the previous release: free-text states become the lifecycle."""
    db_path.parent.mkdir(mode=0o700)
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        _migrate(db, MIGRATIONS[:1])
        rows = [
            ("updates", ("a", "downloaded", 1.0)),
            ("updates", ("b", "installed", 2.0)),  # install over, report sent
            ("updates", ("c", "installed", 3.0)),  # install over, report still queued
            ("updates", ("d", "reported", 4.0)),
            ("updates", ("e", "something-else", 5.0)),
        ]
        for table, values in rows:
            db.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", values)
        db.execute(
            "INSERT INTO reports (update_id, payload, next_attempt_at, created_at)"
            " VALUES ('c', x'5b5d', 0, 3), ('f', x'5b5d', 0, 6)"
        )
        db.execute(
            "INSERT INTO downloads (update_id, state, path, size, started_at, updated_at)"
            " VALUES ('g', 'downloading', '/p/g', 500, 7, 7)"
        )
    finally:
        db.close()
    with Journal.open(db_path) as journal:
        states = {r.update_id: r.state for r in journal.updates()}
        assert states == {
            "a": UpdateState.DOWNLOADED,
            "b": UpdateState.REPORTED,
            "c": UpdateState.REPORT_PENDING,
            "d": UpdateState.REPORTED,
            "f": UpdateState.REPORT_PENDING,
            "g": UpdateState.DOWNLOADING,
        }
        record = journal.download("g")
        assert record is not None
        assert (record.size, record.sha256) == (0, None)  # never verified: not resumed
        assert {r.update_id for r in journal.due_reports(math.inf, 10)} == {"c", "f"}


def test_a_schema_2_journal_learns_who_holds_each_update(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        _migrate(db, MIGRATIONS[:2])
        db.execute(
            "INSERT INTO updates (update_id, state, since) VALUES"
            " ('a', 'delivered', 1.0), ('b', 'report_pending', 2.0), ('c', 'reported', 3.0)"
        )
        db.execute(
            "INSERT INTO downloads (update_id, state, path, size, started_at, updated_at)"
            " VALUES ('d', 'downloading', '/p/d', 500, 7, 7)"
        )
    finally:
        db.close()
    with Journal.open(db_path) as journal:
        holders = {r.update_id: (r.holder, r.since) for r in journal.updates()}
        assert holders == {
            "a": ("the SWLM", 1.0),
            "b": ("the daemon (sending its report to Core)", 2.0),
            "c": ("Core", 3.0),
        }
        record = journal.download("d")
        assert record is not None
        assert (record.received, record.total) == (0, None)


def test_each_transition_records_who_holds_the_update(db_path: Path) -> None:
    with Journal.open(db_path) as journal:
        journal.begin_download("u1", "/p/u1")
        assert _holder(journal, "u1") == "the daemon (downloading)"
        journal.finish_download("u1", 1, "00", event=("DownloadComplete", b"e"))
        (event,) = journal.events()
        journal.event_delivered(event.id, holder="the SWLM at /run/sota/events.socket")
        assert _holder(journal, "u1") == "the SWLM at /run/sota/events.socket"
        journal.begin_install("u1", holder="the package manager deb")
        assert _holder(journal, "u1") == "the package manager deb"
        journal.finish_install("u1", b"[]")
        assert _holder(journal, "u1") == "the daemon (sending its report to Core)"
        journal.report_accepted("u1")
        assert _holder(journal, "u1") == "Core"


def _holder(journal: Journal, update_id: str) -> str:
    record = journal.update(update_id)
    assert record is not None
    return record.holder


def test_every_write_passes_a_kill_point(db_path: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    program = """
import sys
from sota_client._store import Journal
with Journal.open(sys.argv[1]) as journal:
    journal.begin_download("u1", "/p/u1")
    journal.finish_download("u1", 1, "00", event=("DownloadComplete", b"e"))
    journal.update_state("u1")
"""
    env = {**_child_env(), "SOTA_KILL_TRACE": str(trace)}
    subprocess.run([sys.executable, "-c", program, str(db_path)], env=env, timeout=60, check=True)
    assert trace.read_text().split() == ["journal.begin_download", "journal.finish_download"]
    env = {**_child_env(), "SOTA_KILL_AT": "journal.finish_download"}
    child = subprocess.run([sys.executable, "-c", program, str(db_path)], env=env, timeout=60)
    assert child.returncode == -signal.SIGKILL
    with Journal.open(db_path) as journal:  # killed right after the commit: it is all there
        assert journal.update_state("u1") is UpdateState.DOWNLOADED
        assert journal.pending_events() == 2


def test_a_failing_migration_changes_nothing(db_path: Path) -> None:
    Journal.open(db_path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE extra (x)")
        db.execute("THIS IS NOT SQL")

    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            _migrate(db, (*MIGRATIONS, broken))
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchall()
        assert tables == []
    finally:
        db.close()


# -- threads -----------------------------------------------------------------------------------


def test_many_threads_at_once(journal: Journal) -> None:
    threads, per_thread = 8, 100
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait(timeout=30)
            for n in range(per_thread):
                journal.add_event("E", f"{t}:{n}".encode())
                journal.download_checkpoint(f"t{t}", n, "00")
                journal.begin_download(f"t{t}", "/p")
                journal.add_report(f"t{t}-{n % 5}", b"r")
                journal.due_events(math.inf, 5)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    events = journal.due_events(math.inf, threads * per_thread + 1)
    assert len(events) == threads * per_thread
    for t in range(threads):
        mine = [int(e.payload.split(b":")[1]) for e in events if e.payload.startswith(b"%d:" % t)]
        assert mine == list(range(per_thread))  # each thread's events in its own order
        assert journal.update_state(f"t{t}") is UpdateState.DOWNLOADING
    assert journal.pending_reports() == threads * 5


# -- outbox channels: one copy of each SWLM event per SWLM gateway --------------------------------


def test_a_schema_3_journal_keeps_its_events_for_the_socket(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        _migrate(db, MIGRATIONS[:3])
        db.execute(
            "INSERT INTO outbox (name, payload, update_id, next_attempt_at, created_at)"
            " VALUES ('DownloadComplete', x'7b7d', 'a', 1, 1)"
        )
    finally:
        db.close()
    with Journal.open(db_path) as journal:
        (event,) = journal.events()
        assert event.channel == "socket"
        assert journal.due_events(math.inf, 10, "dbus") == []


def test_each_swlm_gateway_gets_its_own_copy_and_the_first_delivery_counts(
    journal: Journal,
) -> None:
    journal.event_channels = ("socket", "dbus")
    journal.begin_download("u1", "/p/u1")
    journal.finish_download("u1", 1, "00", event=("DownloadComplete", b"e"))
    assert journal.pending_events() == 2
    assert journal.pending_events("dbus") == 1
    (by_dbus,) = journal.due_events(math.inf, 10, "dbus")
    (by_socket,) = journal.due_events(math.inf, 10, "socket")
    assert (by_dbus.channel, by_socket.channel) == ("dbus", "socket")
    journal.event_delivered(by_dbus.id, holder="the SWLM on D-Bus")
    assert _holder(journal, "u1") == "the SWLM on D-Bus"
    journal.event_delivered(by_socket.id, holder="the SWLM at the socket")
    assert _holder(journal, "u1") == "the SWLM on D-Bus"  # already delivered: unchanged
    assert journal.pending_events() == 0


def test_handing_over_again_goes_to_one_gateway_only(journal: Journal) -> None:
    journal.event_channels = ("socket", "dbus")
    journal.begin_download("u1", "/p/u1")
    journal.finish_download("u1", 1, "00", event=("DownloadComplete", b"e"))
    for event in sorted(journal.events(), key=lambda e: e.channel):  # D-Bus first
        journal.event_delivered(event.id, holder=f"the SWLM by {event.channel}")
    assert journal.delivered_downloads("the SWLM by socket") == []  # the D-Bus one took it
    assert journal.delivered_downloads("the SWLM by dbus") == [("u1", "/p/u1")]
    journal.hand_over_again("u1", "DownloadComplete", b"e", "dbus")
    assert [e.channel for e in journal.events()] == ["dbus"]
    assert journal.update_state("u1") is UpdateState.DOWNLOADED


def test_events_kept_for_a_gateway_turned_off_go_to_those_turned_on(journal: Journal) -> None:
    journal.begin_download("u1", "/p/u1")
    journal.finish_download("u1", 1, "00", event=("DownloadComplete", b"e1"))
    journal.event_channels = ("socket", "dbus")
    journal.add_event("DownloadFailed", b"e2", "u2")  # already kept for both
    journal.event_channels = ("dbus",)  # the socket is off now
    assert journal.route_events() == 2
    assert sorted((e.update_id, e.channel) for e in journal.events()) == [
        ("u1", "dbus"),
        ("u2", "dbus"),
    ]
    assert journal.route_events() == 0
    journal.event_channels = ()  # nothing to deliver them: they stay where they are
    assert journal.route_events() == 0
    assert journal.pending_events() == 2
