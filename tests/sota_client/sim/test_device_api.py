"""The mydevice routes against Core's behaviour: scenarios S1-S14, S17, S18, S20, S24."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from sota_client.sim import CoreSimulator

from ._client import DEVICE, MY, OP, OTHER_DEVICE, UNKNOWN_ID, call, download, report
from .conftest import PAYLOAD

INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")
MALFORMED = "The request content was malformed:\n"


def _instant(text: str) -> datetime:
    assert INSTANT.fullmatch(text), text
    return datetime.fromisoformat(text)


def test_s1_empty_list_also_for_an_unknown_device(sim: CoreSimulator) -> None:
    assert sim.device_state(DEVICE).status == "NotSeen"
    reply = call(sim, "GET", f"{MY}/updates")
    assert (reply.status, reply.body) == (200, b"[]")
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Content-Length"] == "2"
    state = sim.device_state(DEVICE)
    assert state.last_seen is not None
    assert state.status == "UpToDate"


def test_s2_queued_update_is_listed_with_cores_fields(sim: CoreSimulator) -> None:
    queued = call(sim, "POST", OP, json_body={"name": "nano", "version": "2.2.6"})
    assert queued.status == 200
    entry = queued.json()
    reply = call(sim, "GET", f"{MY}/updates")
    assert reply.status == 200
    assert b": " not in reply.body
    assert b", " not in reply.body
    (listed,) = reply.json()
    assert list(listed) == [
        "requestId",
        "packageId",
        "installPos",
        "status",
        "createdAt",
        "updatedAt",
    ]
    assert listed == entry
    assert listed["packageId"] == {"name": "nano", "version": "2.2.6"}
    assert (listed["installPos"], listed["status"]) == (0, "Pending")
    assert _instant(listed["createdAt"]) == _instant(listed["updatedAt"])


def test_list_is_sorted_and_renumbered(sim: CoreSimulator) -> None:
    sim.add_package("vim", "8.0.0", data=b"vim")
    first = sim.queue_update(DEVICE, "nano", "2.2.6")
    second = sim.queue_update(DEVICE, "vim", "8.0.0")
    sim.queue_update(OTHER_DEVICE, "vim", "8.0.0")
    ids = [e["requestId"] for e in call(sim, "GET", f"{MY}/updates").json()]
    assert ids == [first, second]  # same installPos: creation order
    assert report(sim, first, 0).status == 204
    (left,) = call(sim, "GET", f"{MY}/updates").json()
    assert (left["requestId"], left["installPos"]) == (second, 0)


def test_s4_download_sends_exact_bytes_and_marks_in_flight(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    before = sim.updates(DEVICE)[0]
    reply = download(sim, request_id)
    assert reply.status == 200
    assert reply.body == PAYLOAD
    assert reply.headers["Content-Length"] == str(len(PAYLOAD))
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["Accept-Ranges"] == "bytes"
    (after,) = call(sim, "GET", f"{MY}/updates").json()
    assert after["status"] == "InFlight"
    assert _instant(after["updatedAt"]) > _instant(before.updated_at)
    assert after["createdAt"] == before.created_at


def test_download_by_another_device_serves_bytes_without_touching_the_spec(
    sim: CoreSimulator,
) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    reply = call(sim, "GET", f"/api/v1/mydevice/{OTHER_DEVICE}/updates/{request_id}/download")
    assert (reply.status, reply.body) == (200, PAYLOAD)
    assert sim.status(DEVICE, request_id) == "Pending"


@pytest.mark.parametrize(
    ("header", "status", "content_range", "start", "end"),
    [
        ("bytes=0-9", 206, "bytes 0-9/10240", 0, 10),
        ("bytes=10230-", 206, "bytes 10230-10239/10240", 10230, 10240),
        ("bytes=-5", 206, "bytes 10235-10239/10240", 10235, 10240),
        ("bytes=100-999999", 206, "bytes 100-10239/10240", 100, 10240),
        ("bytes=0-0", 206, "bytes 0-0/10240", 0, 1),
        ("bytes=0-9,20-29", 200, None, 0, 10240),  # several ranges: answered in full
        ("bytes=9-0", 200, None, 0, 10240),  # invalid: ignored
        ("items=0-9", 200, None, 0, 10240),  # another unit: ignored
    ],
)
def test_s5_range(
    sim: CoreSimulator, header: str, status: int, content_range: str | None, start: int, end: int
) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    reply = download(sim, request_id, Range=header)
    assert reply.status == status
    assert reply.headers["Content-Range"] == content_range
    assert reply.body == PAYLOAD[start:end]
    assert reply.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
def test_s5_unsatisfiable_range_is_416(sim: CoreSimulator, header: str) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    reply = download(sim, request_id, Range=header)
    assert reply.status == 416
    assert reply.headers["Content-Range"] == "bytes */10240"
    assert reply.headers["Content-Length"] == str(len(reply.body))


def test_s6_unknown_update_is_404_missing_package(sim: CoreSimulator) -> None:
    reply = download(sim, UNKNOWN_ID)
    assert reply.status == 404
    assert reply.body == b'{"code":"missing_package","description":"package not found"}'
    assert reply.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "path",
    [f"{MY}/updates/not-a-uuid/download", "/api/v1/mydevice/D/updates", f"{MY}/updates/N%2FA"],
)
def test_s6_non_uuid_segment_is_400_text(sim: CoreSimulator, path: str) -> None:
    reply = call(sim, "POST" if path.endswith("A") else "GET", path, json_body=[])
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "is not a valid UUID" in reply.text


def test_s7_success_report(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    call(sim, "GET", f"{MY}/updates")
    body = f'[{{"id":"{request_id}","result_code":0,"result_text":"ok"}}]'.encode()
    reply = call(
        sim,
        "POST",
        f"{MY}/updates/{request_id}",
        body,
        {"Content-Type": "application/json"},
    )
    assert (reply.status, reply.body) == (204, b"")
    assert "Content-Length" not in reply.headers  # a 204 must not carry one
    assert call(sim, "GET", f"{MY}/updates").json() == []
    assert sim.status(DEVICE, request_id) == "Finished"
    (rec,) = sim.reports(DEVICE)
    assert (rec.status, rec.body, rec.update_id) == (204, body.decode(), request_id)
    (row,) = call(sim, "GET", f"{OP}/results").json()
    assert list(row) == ["id", "updateId", "resultCode", "resultText", "device", "receivedAt"]
    assert (row["updateId"], row["resultCode"], row["resultText"], row["device"]) == (
        request_id,
        0,
        "ok",
        DEVICE,
    )
    assert row["id"] != request_id  # Core stores each result under a fresh row id
    state = sim.device_state(DEVICE)
    assert [(h.update_id, h.success) for h in state.history] == [(request_id, True)]
    assert state.status == "UpToDate"


def test_s8_code_1_is_finished(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    assert report(sim, request_id, 1).status == 204
    assert sim.status(DEVICE, request_id) == "Finished"


def test_s9_failure_code_is_failed_and_blocks(sim: CoreSimulator) -> None:
    sim.add_package("vim", "8.0.0", data=b"vim")
    failing = sim.queue_update(DEVICE, "nano", "2.2.6")
    other = sim.queue_update(DEVICE, "vim", "8.0.0")
    call(sim, "GET", f"{MY}/updates")
    assert report(sim, failing, 0, 4).status == 204
    assert sim.status(DEVICE, failing) == "Failed"
    blocked = call(sim, "GET", f"{OP}/blocked").json()
    assert [b["id"] for b in blocked] == [DEVICE]
    assert [e["requestId"] for e in call(sim, "GET", f"{MY}/updates").json()] == [other]
    assert sim.device_state(DEVICE).status == "Error"


def test_s10_empty_report_is_finished(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    assert report(sim, request_id).status == 204
    assert sim.status(DEVICE, request_id) == "Finished"


def test_s11_report_without_spec_is_404_missing_entity(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(OTHER_DEVICE, "nano", "2.2.6")
    reply = report(sim, request_id, 0)
    assert reply.status == 404
    assert reply.body == b'{"code":"missing_entity","description":"UpdateSpec not found"}'
    assert [r.status for r in sim.reports(DEVICE)] == [404]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'[{"id":"N/A","result_code":0,"result_text":""}]', "$[0].id"),
        (b'[{"id":"%s","result_code":"0","result_text":""}]', "$[0].result_code"),
        (b'[{"id":"%s","result_code":0}]', "result_text"),
        (b'[{"id":"%s","result_code":1.5,"result_text":""}]', "$[0].result_code"),
        (b'[{"id":"%s","result_code":4294967296,"result_text":""}]', "$[0].result_code"),
        (b"{}", "array"),
        (b"", "truncated"),
        (b"[", "truncated"),
    ],
)
def test_s12_malformed_report_is_400_text(sim: CoreSimulator, body: bytes, detail: str) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    if b"%s" in body:
        body = body % request_id.encode()
    reply = call(
        sim, "POST", f"{MY}/updates/{request_id}", body, {"Content-Type": "application/json"}
    )
    assert reply.status == 400
    assert reply.text.startswith(MALFORMED)
    assert detail in reply.text
    assert sim.status(DEVICE, request_id) == "Pending"
    (rec,) = sim.reports(DEVICE)
    assert (rec.status, rec.body) == (400, body.decode())


def test_s13_second_report_wins(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    assert report(sim, request_id, 0).status == 204
    assert report(sim, request_id, 4).status == 204
    assert sim.status(DEVICE, request_id) == "Failed"
    assert [h.success for h in sim.device_state(DEVICE).history] == [True, False]


def test_s14_download_after_finished_goes_back_in_flight(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report(sim, request_id, 0)
    assert download(sim, request_id).status == 200
    assert sim.status(DEVICE, request_id) == "InFlight"


def test_s17_installed_replaces_the_list(sim: CoreSimulator) -> None:
    assert sim.installed(DEVICE) is None
    first = [{"name": "a", "version": "1.0.0"}, {"name": "b+c_d.e-f", "version": "2.2.6-3"}]
    reply = call(sim, "PUT", f"{MY}/installed", json_body=first)
    assert (reply.status, reply.body) == (200, b"OK")
    assert reply.headers["Content-Type"].startswith("text/plain")
    reply = call(sim, "PUT", f"{MY}/installed", json_body=[{"name": "z", "version": "9"}])
    assert reply.status == 200
    assert [(p.name, p.version) for p in sim.installed(DEVICE) or []] == [("z", "9")]


@pytest.mark.parametrize(
    ("package", "detail"),
    [
        ({"name": "Movie&MusicPlayer", "version": "1.0.0"}, "$[0].name"),
        ({"name": "", "version": "1.0.0"}, "$[0].name"),
        ({"name": "x" * 101, "version": "1.0.0"}, "$[0].name"),
        ({"name": "a", "version": "2.2.6-3"}, "must match"),
        ({"name": "a"}, "version"),
    ],
)
def test_s17_installed_refinements_are_400_text(package: dict[str, str], detail: str) -> None:
    with CoreSimulator(version_format=r"^\d+\.\d+\.\d+$") as sim:
        reply = call(sim, "PUT", f"{MY}/installed", json_body=[package])
        assert reply.status == 400
        assert reply.text.startswith(MALFORMED)
        assert detail in reply.text
        assert sim.installed(DEVICE) is None


def test_s18_system_info_is_stored_exactly(sim: CoreSimulator) -> None:
    body = b'{"id":"host","class":"system","children":[{"id":"cpu"}]}\n'
    reply = call(sim, "PUT", f"{MY}/system_info", body, {"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (200, b"{}")
    assert reply.headers["Content-Type"] == "application/json"
    assert sim.system_info(DEVICE) == {"id": "host", "class": "system", "children": [{"id": "cpu"}]}
    state = call(sim, "GET", f"/sim/devices/{DEVICE}")
    assert b'"systemInfo":{"id":"host","class":"system","children":[{"id":"cpu"}]}\n' in state.body


def test_s18_system_info_must_be_json(sim: CoreSimulator) -> None:
    reply = call(sim, "PUT", f"{MY}/system_info", b"not json", {"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.text.startswith(MALFORMED)
    assert sim.system_info(DEVICE) is None


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("PUT", "/system_info"), ("PUT", "/installed"), ("POST", f"/updates/{UNKNOWN_ID}")],
)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonx"])
def test_s20_non_json_content_type_is_415(
    sim: CoreSimulator, method: str, suffix: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = call(sim, method, f"{MY}{suffix}", b"[]", headers)
    assert reply.status == 415
    assert reply.text == "The request's Content-Type is not supported. Expected:\napplication/json"


def test_json_content_type_parameters_are_accepted(sim: CoreSimulator) -> None:
    headers = {"Content-Type": "Application/JSON; charset=utf-8"}
    assert call(sim, "PUT", f"{MY}/installed", b"[]", headers).status == 200


def test_s24_health(sim: CoreSimulator) -> None:
    reply = call(sim, "GET", "/health")
    assert (reply.status, reply.body) == (200, b'{"status":"OK"}')


def test_unknown_route_is_404_and_wrong_method_405(sim: CoreSimulator) -> None:
    reply = call(sim, "GET", "/api/v2/nothing")
    assert (reply.status, reply.text) == (404, "The requested resource could not be found.")
    reply = call(sim, "DELETE", f"{MY}/updates")
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET"
    reply = call(sim, "GET", f"{MY}/updates/")  # akka matches no trailing slash
    assert reply.status == 404


def test_head_download_sends_headers_only(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    reply = call(sim, "HEAD", f"{MY}/updates/{request_id}/download")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers["Content-Length"] == str(len(PAYLOAD))


def test_device_ids_are_case_insensitive(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE.upper(), "nano", "2.2.6")
    path = f"/api/v1/mydevice/{DEVICE.upper()}/updates"
    assert [e["requestId"] for e in call(sim, "GET", path).json()] == [request_id]
