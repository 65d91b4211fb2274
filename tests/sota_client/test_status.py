"""``sota_client status``: the journal's view of every update, read-only, as text and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from sota_client._cli import main
from sota_client._status import age_text, format_status, read_status
from sota_client._store import SCHEMA_VERSION, Journal, JournalError
from swlm_sdk.protocol import ResultCode, UpdateReport

T0 = 1_796_000_000.0  # 2026-11-30T...Z


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def report(update_id: str, code: ResultCode, text: str = "") -> bytes:
    return msgspec.json.encode(UpdateReport.single(update_id, code, text))


def fill(journal: Journal, clock: Clock) -> None:
    """One update in each state the status shows."""
    journal.begin_download("dl", "/var/sota/dl")
    journal.name_package("dl", "nano", "2.2.6")
    journal.download_progress("dl", 300, 1200)
    journal.begin_download("ready", "/var/sota/ready")
    journal.finish_download("ready", 5, "ab" * 32, event=("DownloadComplete", b"{}"))
    journal.begin_download("given", "/var/sota/given")
    journal.finish_download("given", 5, "ab" * 32, event=("DownloadComplete", b"{}"))
    given = next(e for e in journal.events() if e.update_id == "given")
    journal.event_delivered(given.id, holder="the SWLM at /run/sota/events.socket")
    journal.begin_download("inst", "/var/sota/inst")
    journal.finish_download("inst", 5, "ab" * 32)
    journal.begin_install("inst", holder="the package manager deb")
    journal.add_report("pending", report("pending", ResultCode.INSTALL_FAILED, "dpkg: error"))
    journal.report_failed("pending", T0 + 60, "HTTP transport error: could not connect")
    journal.add_report("done", report("done", ResultCode.OK, "installed"))
    journal.report_accepted("done")
    journal.add_report("stuck", report("stuck", ResultCode.OK))
    journal.set_aside("stuck", "Core refused it: 400 Bad Request")
    clock.now += 150


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    clock = Clock()
    with Journal.open(tmp_path / "state" / "sota.db", clock=clock) as journal:
        fill(journal, clock)
    return tmp_path / "state"


def test_every_state_in_words_with_its_holder_and_time(state_dir: Path) -> None:
    with Journal.open_read_only(state_dir / "sota.db") as journal:
        text = format_status(read_status(journal, now=T0 + 150))
    assert "dl  nano 2.2.6" in text
    assert "downloading: 25% (300 of 1200 bytes)" in text
    assert "waiting to be handed to the SWLM" in text
    assert "delivered to the SWLM at /run/sota/events.socket at 2026-" in text
    assert "(2 min ago); its report is awaited" in text
    assert "installing by the package manager deb" in text
    assert "report pending since" in text
    assert "reported to Core at" in text
    assert "OK (installed)" in text
    assert "set aside at" in text
    assert "why: Core refused it: 400 Bad Request" in text
    assert "Undelivered event (1):\n  #1 DownloadComplete for ready" in text
    assert "Pending reports (2):" in text
    assert "pending: INSTALL_FAILED, queued since" in text
    assert "1 failed attempt, last error: HTTP transport error: could not connect" in text
    assert "stuck: OK" in text
    assert "SET ASIDE: Core refused it: 400 Bad Request" in text


def test_json_has_the_same_facts_for_programs(state_dir: Path) -> None:
    with Journal.open_read_only(state_dir / "sota.db") as journal:
        status = json.loads(msgspec.json.encode(read_status(journal, now=T0 + 150)))
    updates = {u["update_id"]: u for u in status["updates"]}
    assert set(updates) == {"dl", "ready", "given", "inst", "pending", "done", "stuck"}
    assert updates["dl"]["state"] == "downloading"
    assert updates["dl"]["package"] == {"name": "nano", "version": "2.2.6"}
    assert updates["dl"]["download"] == {"received": 300, "total": 1200, "percent": 25}
    assert updates["given"]["state"] == "delivered"
    assert updates["given"]["holder"] == "the SWLM at /run/sota/events.socket"
    assert updates["given"]["age"] == 150
    assert updates["given"]["since"].endswith("Z")
    assert updates["done"]["reported"]["operation_results"][0]["result_code"] == 0
    assert updates["stuck"]["state"] == "set_aside"
    assert [e["update_id"] for e in status["events"]] == ["ready"]
    reports = {r["update_id"]: r for r in status["reports"]}
    assert reports["pending"]["attempts"] == 1
    assert reports["pending"]["result_code"] == "INSTALL_FAILED"
    assert reports["stuck"]["set_aside"] == "Core refused it: 400 Bad Request"
    assert status["schema"] == SCHEMA_VERSION


def config_file(tmp_path: Path, state_dir: Path) -> Path:
    path = tmp_path / "sota.toml"
    path.write_text(f'[device]\nstate_dir = "{state_dir}"\n')
    return path


def test_the_command_reads_the_journal_of_the_config(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, state_dir)
    assert main(["status", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"Journal {state_dir / 'sota.db'} at ")
    assert "delivered to the SWLM" in out
    assert err == ""  # no "Loading config file" noise around the report
    assert main(["status", "-c", str(config), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["updates"]) == 7


def test_the_config_comes_from_sota_config_like_the_daemons(
    tmp_path: Path,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOTA_CONFIG", str(config_file(tmp_path, state_dir)))
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["journal"] == str(state_dir / "sota.db")


def test_no_journal_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, tmp_path / "nowhere")
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"there is no journal at {tmp_path / 'nowhere' / 'sota.db'}" in err
    assert f"device.state_dir = {tmp_path / 'nowhere'}" in err
    assert not (tmp_path / "nowhere").exists()  # nothing created


def test_reading_while_the_daemon_writes(tmp_path: Path) -> None:
    clock = Clock()
    with Journal.open(tmp_path / "sota.db", clock=clock) as writer:
        fill(writer, clock)
        with Journal.open_read_only(tmp_path / "sota.db") as reader:
            before = len(read_status(reader).updates)
            writer.begin_download("new", "/var/sota/new")  # the daemon goes on meanwhile
            after = len(read_status(reader).updates)
            with pytest.raises(JournalError):
                reader.begin_download("x", "/var/sota/x")  # read-only
    assert (before, after) == (7, 8)


def test_a_stopped_daemons_journal_is_read_without_leaving_files(state_dir: Path) -> None:
    """Files a root reader left would belong to root and trip a daemon that is not root."""
    before = sorted(os.listdir(state_dir))
    assert before == ["sota.db"]  # the writer closed cleanly: no -wal, no -shm
    with Journal.open_read_only(state_dir / "sota.db") as journal:
        assert len(read_status(journal).updates) == 7
    assert sorted(os.listdir(state_dir)) == before


def test_a_journal_of_another_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "sota.db")
    db.execute("PRAGMA user_version = 2")
    db.close()
    expected = rf"schema 2; this program reads schema {SCHEMA_VERSION} \(start"
    with pytest.raises(JournalError, match=expected):
        Journal.open_read_only(tmp_path / "sota.db")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (119, "119 s"),
        (150, "2 min"),
        (7199, "119 min"),
        (7260, "2 h 1 min"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_ages_in_words(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


@pytest.mark.anyio
async def test_the_daemon_records_the_package_and_the_progress(tmp_path: Path) -> None:
    from sota_client.sim import CoreSimulator
    from swlm_sdk.protocol import GetUpdateRequests

    from .daemon_fixtures import DEVICE, running_daemon

    with CoreSimulator() as sim:
        sim.add_package("nano", "2.2.6", data=b"n" * 5000)
        update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
        async with running_daemon(tmp_path, sim, event_outbox=True) as d:
            await d.execute(GetUpdateRequests())
            await d.idle()
            record = d.journal.update(update_id)
            download = d.journal.download(update_id)
    assert record is not None
    assert record.package == ("nano", "2.2.6")
    assert download is not None
    assert (download.received, download.total) == (5000, 5000)


def test_the_status_creates_no_credentials_file(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only reading: run as root, it must not leave a root-owned credentials file behind."""
    credentials = tmp_path / "credentials.toml"
    config = tmp_path / "sota.toml"
    config.write_text(
        f'[auth]\nclient_id = "a"\nclient_secret = "b"\ncredentials_file = "{credentials}"\n'
        f'[device]\nstate_dir = "{state_dir}"\n'
    )
    assert main(["status", "--config", str(config)]) == 0
    assert not credentials.exists()
