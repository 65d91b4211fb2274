"""The simulator's state on its own: what it keeps per device, and how much."""

from __future__ import annotations

import uuid

from sota_client.sim import ReportedResult
from sota_client.sim._state import CoreState
from sota_client.sim._store import PackageBlob

DEVICE = "123e4567-e89b-12d3-a456-426655440000"


def test_a_device_keeps_only_the_newest_entries_of_each_log() -> None:
    """A client stuck in a report loop must not exhaust the memory of a long demo."""
    state = CoreState(history_limit=3)
    state.put_package("fw", "1.0", PackageBlob(data=b"image"))
    ids = [state.queue(DEVICE, "fw", "1.0").request_id for _ in range(5)]
    for request_id in ids:
        result = ReportedResult(str(uuid.uuid4()), 0, f"installed {request_id}")
        state.report(DEVICE, request_id, [result], path="/report", body="[]")
    seen = state.device_state(DEVICE)
    assert [r.update_id for r in seen.reports] == ids[2:]
    assert [r.update_id for r in seen.results] == ids[2:]
    assert [h.update_id for h in seen.history] == ids[2:]


def test_the_state_of_a_device_never_seen_is_empty_and_adds_no_device() -> None:
    state = CoreState(history_limit=3)
    seen = state.device_state(DEVICE)
    assert (seen.status, seen.reports, seen.results, seen.history) == ("NotSeen", [], [], [])
    assert state.devices() == []
