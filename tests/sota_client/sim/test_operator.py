"""The operator routes: queue, cancel (S15), order (S3), results, blocked; and their Python API."""

from __future__ import annotations

import pytest

from sota_client.sim import CoreError, CoreSimulator, Rejection

from ._client import DEVICE, MY, OP, OTHER_DEVICE, UNKNOWN_ID, call, download, report


def _listed(sim: CoreSimulator) -> list[tuple[str, int]]:
    return [(e["requestId"], e["installPos"]) for e in call(sim, "GET", f"{MY}/updates").json()]


@pytest.fixture
def two(sim: CoreSimulator) -> tuple[str, str]:
    sim.add_package("vim", "8.0.0", data=b"vim")
    return sim.queue_update(DEVICE, "nano", "2.2.6"), sim.queue_update(DEVICE, "vim", "8.0.0")


def test_queue_unknown_package_is_404(sim: CoreSimulator) -> None:
    reply = call(sim, "POST", OP, json_body={"name": "nano", "version": "9.9.9"})
    assert reply.status == 404
    assert reply.json() == {"code": "missing_package", "description": "package not found"}
    with pytest.raises(CoreError, match="missing_package"):
        sim.queue_update(DEVICE, "nope", "1")


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"name":"nano"}', {"Content-Type": "application/json"}, 400),
        (b'{"name":"nano","version":"2.2.6"}', {"Content-Type": "text/plain"}, 415),
        (b"[]", {"Content-Type": "application/json"}, 400),
    ],
)
def test_queue_bad_body(
    sim: CoreSimulator, body: bytes, headers: dict[str, str], status: int
) -> None:
    assert call(sim, "POST", OP, body, headers).status == status
    assert sim.updates(DEVICE) == []


def test_s3_order(sim: CoreSimulator, two: tuple[str, str]) -> None:
    first, second = two
    assert _listed(sim) == [(first, 0), (second, 1)]
    reply = call(sim, "PUT", f"{OP}/order", json_body={"0": second, "1": first})
    assert (reply.status, reply.body) == (204, b"")
    assert _listed(sim) == [(second, 0), (first, 1)]
    assert [u.install_pos for u in sim.updates(DEVICE)] == [0, 1]


def test_s3_order_keys_are_sorted_as_numbers(sim: CoreSimulator, two: tuple[str, str]) -> None:
    first, second = two
    assert call(sim, "PUT", f"{OP}/order", json_body={"10": first, "2": second}).status == 204
    assert _listed(sim) == [(second, 0), (first, 1)]


@pytest.mark.parametrize(
    ("order", "text"),
    [
        ({"0": "first"}, "need to be specified"),
        ({"0": "first", "1": UNKNOWN_ID}, "need to be specified"),
        ({"0": "first", "1": "second", "2": UNKNOWN_ID}, "need to be pending"),
    ],
)
def test_s3_order_must_name_exactly_the_pending_updates(
    sim: CoreSimulator, two: tuple[str, str], order: dict[str, str], text: str
) -> None:
    names = {"first": two[0], "second": two[1]}
    body = {k: names.get(v, v) for k, v in order.items()}
    reply = call(sim, "PUT", f"{OP}/order", json_body=body)
    assert reply.status == 400
    assert reply.text == f"To set install order, all updates for a vehicle {text}"
    assert _listed(sim) == [(two[0], 0), (two[1], 1)]


@pytest.mark.parametrize("body", [{"x": UNKNOWN_ID}, {"0": "N/A"}, [UNKNOWN_ID]])
def test_s3_malformed_order_is_400(sim: CoreSimulator, two: tuple[str, str], body: object) -> None:
    reply = call(sim, "PUT", f"{OP}/order", json_body=body)
    assert reply.status == 400
    assert reply.text.startswith("The request content was malformed:")


def test_s3_in_flight_updates_are_not_ordered(sim: CoreSimulator, two: tuple[str, str]) -> None:
    first, second = two
    download(sim, first)
    with pytest.raises(Rejection, match="need to be pending"):
        sim.set_install_order(DEVICE, [second, first])
    sim.set_install_order(DEVICE, [second])
    assert sim.status(DEVICE, first) == "InFlight"


def test_s15_cancel_pending(sim: CoreSimulator, two: tuple[str, str]) -> None:
    first, second = two
    reply = call(sim, "PUT", f"{OP}/{first}/cancelupdate")
    assert (reply.status, reply.body) == (204, b"")
    assert sim.status(DEVICE, first) == "Canceled"
    assert _listed(sim) == [(second, 0)]


def test_s15_cancel_in_flight_or_unknown_is_404(sim: CoreSimulator, two: tuple[str, str]) -> None:
    first, _ = two
    download(sim, first)
    for update in (first, UNKNOWN_ID):
        reply = call(sim, "PUT", f"{OP}/{update}/cancelupdate")
        assert reply.status == 404
        assert reply.json() == {"code": "missing_entity", "description": "UpdateSpec not found"}
    with pytest.raises(CoreError, match="missing_entity"):
        sim.cancel_update(DEVICE, first)
    assert sim.status(DEVICE, first) == "InFlight"


def test_results_per_device_and_per_update(sim: CoreSimulator, two: tuple[str, str]) -> None:
    first, second = two
    report(sim, first, 0)
    report(sim, second, 4, text="dpkg failed")
    all_rows = call(sim, "GET", f"{OP}/results").json()
    assert [(r["updateId"], r["resultCode"]) for r in all_rows] == [(first, 0), (second, 4)]
    (row,) = call(sim, "GET", f"{OP}/{second}/results").json()
    assert (row["resultCode"], row["resultText"]) == (4, "dpkg failed")
    assert call(sim, "GET", f"/api/v1/device_updates/{OTHER_DEVICE}/results").json() == []
    assert [r.update_id for r in sim.results(DEVICE)] == [first, second]


def test_blocked_flag(sim: CoreSimulator) -> None:
    assert call(sim, "GET", f"{OP}/blocked").json() == []
    assert call(sim, "PUT", f"{OP}/blocked").status == 204
    (flag,) = call(sim, "GET", f"{OP}/blocked").json()
    assert list(flag) == ["id", "blockedAt"]
    assert call(sim, "DELETE", f"{OP}/blocked").status == 204
    assert call(sim, "GET", f"{OP}/blocked").json() == []


def test_python_api_rejects_bad_ids(sim: CoreSimulator) -> None:
    with pytest.raises(Rejection, match="not a valid UUID"):
        sim.queue_update("device-1", "nano", "2.2.6")
    with pytest.raises(CoreError, match="missing_entity"):
        sim.status(DEVICE, UNKNOWN_ID)
