"""The journal: on disk after every change, atomic, private, bounded, robust to corruption."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import anyio
import pytest

import swlm_sdk._journal
from swlm_sdk.app import Journal, JournalEntry

pytestmark = pytest.mark.anyio


def on_disk(journal: Journal) -> dict[str, dict[str, object]]:
    with open(journal.path) as file:
        updates: dict[str, dict[str, object]] = json.load(file)["updates"]
    return updates


async def test_each_change_is_on_disk(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    await journal.open()
    await journal.mark_installing("u1")
    assert on_disk(journal)["u1"]["state"] == "installing"
    await journal.record("u1", 4, "failed")
    assert on_disk(journal)["u1"] == {"state": "pending", "code": 4, "text": "failed", "seq": 2}
    await journal.mark_sent("u1")
    assert on_disk(journal)["u1"]["state"] == "sent"
    await journal.mark_sent("u1")  # already sent: nothing changes
    assert on_disk(journal)["u1"]["seq"] == 3
    await journal.forget("u1")
    assert on_disk(journal) == {}
    assert sorted(os.listdir(tmp_path / "state")) == ["swlm-journal.json"]  # no temp files


async def test_each_kind_of_change_passes_its_kill_point_once_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    passed: list[tuple[str, object]] = []

    def point(name: str) -> None:  # what a SIGKILL right there would leave on disk
        passed.append((name, on_disk(journal).get("u1", {}).get("state")))

    monkeypatch.setattr(swlm_sdk._journal, "kill_point", point)
    await journal.open()
    await journal.mark_installing("u1")
    await journal.record("u1", 0, "")
    await journal.mark_sent("u1")
    await journal.mark_sent("u1")  # no change, no write: no point
    await journal.forget("u1")
    await journal.forget("u1")
    assert passed == [
        ("swlm.journal.installing", "installing"),
        ("swlm.journal.pending", "pending"),
        ("swlm.journal.sent", "sent"),
        ("swlm.journal.forget", None),
    ]


async def test_private_permissions(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    await journal.open()
    await journal.record("u1", 0, "")
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600


async def test_reload_keeps_order_and_state(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    await journal.open()
    for i in range(5):
        await journal.record(f"u{i}", i, f"t{i}")
    await journal.mark_sent("u2")
    again = Journal(tmp_path)
    await again.open()
    assert [uid for uid, _ in again.pending()] == ["u0", "u1", "u3", "u4"]
    assert again.get("u2") == JournalEntry("sent", 2, "t2", seq=6)
    await again.record("u9", 0, "")
    assert again.get("u9") == JournalEntry("pending", 0, "", seq=7)


async def test_old_sent_entries_are_pruned(tmp_path: Path) -> None:
    journal = Journal(tmp_path, keep=3)
    await journal.open()
    for i in range(6):
        await journal.record(f"u{i}", 0, "")
        await journal.mark_sent(f"u{i}")
    await journal.record("p", 0, "")
    assert sorted(journal.entries()) == ["p", "u3", "u4", "u5"]


async def test_concurrent_changes_are_all_saved(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    await journal.open()
    async with anyio.create_task_group() as group:
        for i in range(200):
            group.start_soon(journal.record, f"u{i}", i % 20, "")
    assert len(on_disk(journal)) == 200


async def test_corrupt_journal_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "swlm-journal.json").write_text('{"updates": {"u1": {"state": "bogus"}}}')
    journal = Journal(tmp_path)
    with caplog.at_level(logging.ERROR):
        await journal.open()
    assert journal.entries() == {}
    assert (tmp_path / "swlm-journal.json.corrupt").exists()
    assert "is unreadable" in caplog.text


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('{"updates": {"u1": {"state": "pending", "code": 20}}}', "<= 19"),
        ('{"updates": {"u1": {"state": "sent", "code": -1}}}', ">= 0"),
        ('{"updates": {"u1": {"state": "pending", "code": true}}}', "Expected `int"),
        ('{"updates": {"u1": {"state": "pending"}}}', "pending report for update 'u1' has no"),
        ('{"updates": {"u1": {"state": "sent", "code": null}}}', "sent report for update 'u1'"),
        ('{"updates": {"has space": {"state": "pending", "code": 0}}}', "at `key`"),
        ('{"updates": {"u1\\n": {"state": "pending", "code": 0}}}', "at `key`"),
        ('{"updates": {"": {"state": "installing"}}}', "at `key`"),
        ('{"updates": {"a;b": {"state": "installing"}}}', "at `key`"),
        ('{"updates": {"%s": {"state": "installing"}}}' % ("x" * 1025), "at `key`"),
        ('{"updates": {"u1": {"state": "awaiting_reboot"}}}', "awaits a reboot but has no boot"),
        ('{"updates": {"u1": {"state": "awaiting_reboot", "boot_id": "b", "boots": "2"}}}', "int"),
        ("[]", "Expected `object`"),
        ('{"updates": {"u1": {"state": "pending", "code": 0}}', "truncated"),
    ],
)
async def test_what_the_sdk_never_writes_is_unreadable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, document: str, problem: str
) -> None:
    # Such an entry would be a report that can never be sent: the App would retry it forever.
    (tmp_path / "swlm-journal.json").write_text(document)
    journal = Journal(tmp_path)
    with caplog.at_level(logging.ERROR):
        await journal.open()
    assert journal.entries() == {}
    assert (tmp_path / "swlm-journal.json.corrupt").read_text() == document
    [message] = [r.getMessage() for r in caplog.records]
    assert "is unreadable" in message
    assert problem in message


async def test_what_the_sdk_writes_loads(tmp_path: Path) -> None:
    long_id = "x" * 1024
    (tmp_path / "swlm-journal.json").write_text(
        '{"updates": {"u1": {"state": "installing"}, '
        f'"{long_id}": {{"state": "sent", "code": 19, "seq": 4}}, '
        '"u\u00e9": {"state": "pending", "code": 0}}}'
    )
    journal = Journal(tmp_path)
    await journal.open()
    assert journal.entries() == {
        "u1": JournalEntry("installing"),
        long_id: JournalEntry("sent", 19, seq=4),
        "u\u00e9": JournalEntry("pending", 0),
    }


async def test_not_open_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await Journal(tmp_path).record("u1", 0, "")
