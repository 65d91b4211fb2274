"""S19: the device_updates / vehicle_updates routes that clients before 2016-10-26 used."""

from __future__ import annotations

import pytest

from sota_client.sim import CoreSimulator

from ._client import DEVICE, OTHER_DEVICE, call
from .conftest import PAYLOAD


@pytest.mark.parametrize("prefix", ["device_updates", "vehicle_updates"])
@pytest.mark.parametrize("suffix", ["", "/queued"])
def test_list(sim: CoreSimulator, prefix: str, suffix: str) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    reply = call(sim, "GET", f"/api/v1/{prefix}/{DEVICE}{suffix}")
    assert reply.status == 200
    assert [e["requestId"] for e in reply.json()] == [request_id]
    assert (sim.device_state(DEVICE).last_seen is None) == (suffix == "/queued")


@pytest.mark.parametrize("prefix", ["device_updates", "vehicle_updates"])
def test_download_installed_system_info(sim: CoreSimulator, prefix: str) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    base = f"/api/v1/{prefix}/{DEVICE}"
    assert call(sim, "GET", f"{base}/{request_id}/download").body == PAYLOAD
    assert sim.status(DEVICE, request_id) == "InFlight"
    packages = [{"name": "a", "version": "1"}]
    assert call(sim, "PUT", f"{base}/installed", json_body=packages).status == 200
    assert call(sim, "PUT", f"{base}/system_info", json_body={"a": 1}).status == 200
    assert sim.system_info(DEVICE) == {"a": 1}


def test_report_takes_device_and_update_from_the_body(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    body = {
        "device": DEVICE,
        "update_report": {
            "update_id": request_id,
            "operation_results": [{"id": request_id, "result_code": 0, "result_text": "ok"}],
        },
    }
    # Clients v0.2.14-v0.2.19 put the device id in the update-id slot; Core ignores the slot.
    path = f"/api/v1/device_updates/{OTHER_DEVICE}/{OTHER_DEVICE}"
    reply = call(sim, "POST", path, json_body=body)
    assert reply.status == 204
    assert sim.status(DEVICE, request_id) == "Finished"
    (rec,) = sim.reports(DEVICE)
    assert rec.path == path


def test_malformed_legacy_report_is_400(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    path = f"/api/v1/vehicle_updates/{DEVICE}/{request_id}"
    reply = call(sim, "POST", path, json_body=[{"id": request_id, "result_code": 0}])
    assert reply.status == 400
    assert reply.text.startswith("The request content was malformed:")
    assert sim.status(DEVICE, request_id) == "Pending"
