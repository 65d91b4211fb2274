"""``SendInstallProgress``: answered ``InstallProgress`` while the SWLM holds the update, refused
otherwise; journaled (for ``sota_client status``), logged and shown in ``STATUS=`` at 10 % steps;
published live to the local API; no Core and no token needed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import msgspec
import pytest

from sota_client._install_progress import (
    MAX_PROGRESS_TEXT,
    take_install_progress,
    take_reboot_needed,
)
from sota_client._status import format_status, read_status
from sota_client._store import Journal, UpdateState
from sota_client.sim import AuthSettings, CoreSimulator
from swlm_sdk.protocol import (
    AwaitingReboot,
    ErrorEvent,
    InstallProgress,
    ResultCode,
    SendInstallProgress,
    SendRebootNeeded,
    UpdateReport,
    parse_command,
)

from .daemon_fixtures import running_daemon

HOLDER = "the SWLM at /run/sota/events.socket"


def delivered(journal: Journal, update_id: str = "u1") -> None:
    journal.begin_download(update_id, f"/var/sota/{update_id}")
    journal.finish_download(update_id, 5, "ab" * 32, event=("DownloadComplete", b"{}"))
    [event] = [e for e in journal.events() if e.update_id == update_id]
    journal.event_delivered(event.id, holder=HOLDER)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "sota.db")


def say(journal: Journal, percent: int, text: str = "", update_id: str = "u1") -> object:
    return take_install_progress(journal, SendInstallProgress(update_id, percent, text))


def test_progress_of_a_delivered_update_is_answered_and_kept(journal: Journal) -> None:
    delivered(journal)
    assert say(journal, 40, "writing slot b") == InstallProgress("u1", 40, "writing slot b")
    record = journal.update("u1")
    assert record is not None
    assert record.install is not None
    assert (record.install.percent, record.install.text) == (40, "writing slot b")
    assert record.state is UpdateState.DELIVERED  # a view: no state changes


def test_progress_of_an_update_the_swlm_does_not_hold_is_refused(journal: Journal) -> None:
    assert say(journal, 10) == ErrorEvent(
        "Update u1 is unknown to the daemon: no progress is taken"
    )
    journal.begin_download("u1", "/var/sota/u1")
    assert say(journal, 10) == ErrorEvent(
        "Update u1 is downloading, not being installed: no progress is taken"
    )
    journal.add_report("u1", msgspec.json.encode(UpdateReport.single("u1", ResultCode.OK)))
    reply = say(journal, 100)
    assert isinstance(reply, ErrorEvent)
    assert "is report_pending, not being installed" in reply.text


def test_the_journal_and_the_log_get_it_at_10_percent_steps(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    delivered(journal)
    kept = []
    with caplog.at_level(logging.INFO, logger="sota_client._install_progress"):
        for percent in (1, 5, 9, 10, 15, 19, 20, 20, 35, 100, 100, 50):
            assert say(journal, percent) == InstallProgress("u1", percent)  # each is answered
            record = journal.update("u1")
            assert record is not None
            assert record.install is not None
            kept.append(record.install.percent)
    # Written: the first, each next step of 10, 100 once, and a step back (a second phase).
    assert kept == [1, 1, 1, 10, 10, 10, 20, 20, 35, 100, 100, 50]
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [f"Installing u1: {p}%" for p in (1, 10, 20, 35, 100, 50)]


def test_a_text_is_one_bounded_line(journal: Journal) -> None:
    delivered(journal)
    reply = say(journal, 5, "x" * 5000)
    assert isinstance(reply, InstallProgress)
    assert len(reply.text) == MAX_PROGRESS_TEXT
    assert reply.text.endswith("…")
    reply = say(journal, 50, "\x1b[2Jboom")
    assert isinstance(reply, InstallProgress)
    assert reply.text == "\\x1b[2Jboom"  # no terminal escape reaches a status or a log


def test_progress_that_comes_before_the_delivery_is_recorded_is_kept(journal: Journal) -> None:
    """A quick SWLM reads its event and reports progress before the daemon has written down
    that the event was delivered (the socket's write ends before the journal's)."""
    journal.begin_download("u1", "/var/sota/u1")
    journal.finish_download("u1", 5, "ab" * 32, event=("DownloadComplete", b"{}"))
    assert say(journal, 30, "early") == InstallProgress("u1", 30, "early")
    [event] = journal.events()
    journal.event_delivered(event.id, holder=HOLDER)
    record = journal.update("u1")
    assert record is not None
    assert record.state is UpdateState.DELIVERED
    assert record.install is not None
    assert (record.install.percent, record.install.text) == (30, "early")


def test_a_new_state_drops_the_progress_of_the_last(journal: Journal) -> None:
    delivered(journal)
    say(journal, 90, "verifying")
    journal.add_report("u1", msgspec.json.encode(UpdateReport.single("u1", ResultCode.OK)))
    record = journal.update("u1")
    assert record is not None
    assert record.install is None


def test_the_status_shows_it_in_words_and_in_json(journal: Journal) -> None:
    delivered(journal)
    say(journal, 40, "writing slot b")
    status = read_status(journal)
    text = format_status(status)
    assert "its report is awaited; installing: 40% (writing slot b) at 20" in text
    [update] = json.loads(msgspec.json.encode(status))["updates"]
    assert update["install"]["percent"] == 40
    assert update["install"]["text"] == "writing slot b"
    assert update["install"]["at"].endswith("Z")


@pytest.mark.anyio
async def test_the_daemon_answers_it_without_asking_core_and_publishes_it(
    tmp_path: Path,
) -> None:
    """With ``[auth]`` and no token yet, every other command would wait for the token."""
    with CoreSimulator(auth=AuthSettings(client_id="device")) as sim:
        async with running_daemon(tmp_path, sim, credentials=("device", "wrong")) as d:
            delivered(d.journal)
            before = len(sim.requests)
            reply = await d.execute(parse_command("progress u1 40 writing slot b"))
            assert reply == InstallProgress("u1", 40, "writing slot b")
            assert d.recorder.of(InstallProgress) == [reply]
            assert len(sim.requests) == before


# -- SendRebootNeeded ---------------------------------------------------------------------------


def reboot_needed(journal: Journal, text: str = "", update_id: str = "u1") -> object:
    return take_reboot_needed(journal, SendRebootNeeded(update_id, text))


def test_an_update_installed_for_the_next_boot_awaits_its_confirmation(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    delivered(journal)
    with caplog.at_level(logging.INFO, logger="sota_client._install_progress"):
        assert reboot_needed(journal, "slot b flashed") == AwaitingReboot("u1", "slot b flashed")
        record = journal.update("u1")
        # The SWLM sends it again when it lost the reply: the same answer, nothing changes.
        assert reboot_needed(journal, "slot b flashed") == AwaitingReboot("u1", "slot b flashed")
    assert journal.update("u1") == record
    assert record is not None
    assert record.state is UpdateState.AWAITING_REBOOT
    assert record.holder == "the SWLM (awaiting confirmation after reboot)"
    [said] = [r.getMessage() for r in caplog.records]
    assert said.startswith("Update u1 is installed and counts once the SWLM confirms it")
    text = format_status(read_status(journal))
    assert "installed by the SWLM (slot b flashed); awaiting confirmation after reboot" in text
    assert "no report deadline" in text


def test_an_update_awaiting_its_reboot_is_not_handed_over_again(journal: Journal) -> None:
    """The reboot restarts the SWLM; that must not install the update a second time."""
    delivered(journal)
    reboot_needed(journal)
    journal.hand_over_again("u1", "DownloadComplete", b"{}")
    assert journal.update_state("u1") is UpdateState.AWAITING_REBOOT
    assert [e for e in journal.events() if e.update_id == "u1"] == []


def test_its_report_after_the_reboot_ends_it(journal: Journal) -> None:
    delivered(journal)
    reboot_needed(journal)
    report = msgspec.json.encode(UpdateReport.single("u1", ResultCode.OK))
    journal.add_report("u1", report)
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING


def test_reboot_needed_for_an_update_the_swlm_does_not_hold_is_refused(journal: Journal) -> None:
    assert reboot_needed(journal) == ErrorEvent(
        "Update u1 is unknown to the daemon: nothing awaits a reboot"
    )
    journal.begin_download("u1", "/var/sota/u1")
    assert reboot_needed(journal) == ErrorEvent(
        "Update u1 is downloading, not with the SWLM: nothing awaits a reboot"
    )
    assert journal.update_state("u1") is UpdateState.DOWNLOADING


@pytest.mark.anyio
async def test_the_daemon_answers_reboot_needed_without_core(tmp_path: Path) -> None:
    with CoreSimulator(auth=AuthSettings(client_id="device")) as sim:
        async with running_daemon(tmp_path, sim, credentials=("device", "wrong")) as d:
            delivered(d.journal)
            before = len(sim.requests)
            reply = await d.execute(parse_command("rebootneeded u1 slot b flashed"))
            assert reply == AwaitingReboot("u1", "slot b flashed")
            assert d.recorder.of(AwaitingReboot) == [reply]
            assert len(sim.requests) == before
