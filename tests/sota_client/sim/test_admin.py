"""The /sim/ admin API and the simulator's Python API around it."""

from __future__ import annotations

import os
import pathlib

import pytest

from sota_client.sim import CoreSimulator, PendingUpdateRequest

from ._client import DEVICE, MY, call, report
from .conftest import PAYLOAD


def test_upload_raw_bytes(sim: CoreSimulator) -> None:
    data = os.urandom(100_000)
    reply = call(
        sim, "PUT", "/sim/packages/fw/1.0.0", data, {"Content-Type": "application/octet-stream"}
    )
    assert reply.status == 200
    assert reply.json() == {"name": "fw", "version": "1.0.0", "size": 100_000, "source": "upload"}
    request_id = sim.queue_update(DEVICE, "fw", "1.0.0")
    assert call(sim, "GET", f"{MY}/updates/{request_id}/download").body == data


def test_upload_replaces_and_cleans_up(sim: CoreSimulator) -> None:
    call(sim, "PUT", "/sim/packages/fw/1.0.0", b"one")
    call(sim, "PUT", "/sim/packages/fw/1.0.0", b"second")
    (info,) = [p for p in sim.packages() if p.name == "fw"]
    assert info.size == 6
    data_dir = sim._running.data_dir
    assert len(os.listdir(data_dir)) == 1
    sim.stop()
    assert not os.path.exists(data_dir)


def test_upload_limit() -> None:
    with CoreSimulator(max_upload=10) as sim:
        reply = call(sim, "PUT", "/sim/packages/fw/1.0.0", b"x" * 11)
        assert reply.status == 413
        assert sim.packages() == []


def test_upload_into_a_given_data_dir(tmp_path: pathlib.Path) -> None:
    with CoreSimulator(data_dir=str(tmp_path)) as sim:
        call(sim, "PUT", "/sim/packages/fw/1.0.0", b"abc")
        (name,) = os.listdir(tmp_path)
        assert name.startswith("pkg-")  # never a name derived from the request
    assert os.listdir(tmp_path) == []  # uploads are removed, the directory is kept


@pytest.mark.parametrize(
    ("path", "text"),
    [("/sim/packages/a%26b/1.0.0", "invalid package name"), ("/sim/packages/..%2F/1", "invalid")],
)
def test_upload_with_a_bad_name(sim: CoreSimulator, path: str, text: str) -> None:
    reply = call(sim, "PUT", path, b"abc")
    assert reply.status == 400
    assert text in reply.text


def test_register_a_local_file(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(PAYLOAD)
    with CoreSimulator(path_roots=[str(tmp_path)]) as sim:
        reply = call(sim, "PUT", "/sim/packages/image/1.0.0", json_body={"path": str(image)})
        assert reply.json()["source"] == "path"
        request_id = sim.queue_update(DEVICE, "image", "1.0.0")
        assert call(sim, "GET", f"{MY}/updates/{request_id}/download").body == PAYLOAD
    assert image.exists()  # registered files are never deleted


@pytest.mark.parametrize(
    ("make", "status", "text"),
    [
        (lambda root, outside: str(outside), 403, "not under an allowed directory"),
        (lambda root, outside: "relative/file", 400, "must be absolute"),
        (lambda root, outside: str(root), 400, "not a regular file"),
        (lambda root, outside: str(root / "escape"), 403, "not under an allowed directory"),
        (lambda root, outside: str(root / "missing"), 400, "not a regular file"),
    ],
)
def test_registration_is_confined_to_allowed_directories(
    tmp_path: pathlib.Path, make: object, status: int, text: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    (root / "escape").symlink_to(outside)
    assert callable(make)
    with CoreSimulator(path_roots=[str(root)]) as sim:
        reply = call(sim, "PUT", "/sim/packages/x/1", json_body={"path": make(root, outside)})
        assert reply.status == status
        assert text in reply.text
        assert sim.packages() == []


def test_registration_is_refused_without_configured_roots(
    sim: CoreSimulator, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    reply = call(sim, "PUT", "/sim/packages/x/1", json_body={"path": str(tmp_path / "f")})
    assert reply.status == 403
    reply = call(sim, "PUT", "/sim/packages/x/1", json_body={"file": "/etc/passwd"})
    assert reply.status == 400


def test_device_state_json(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    call(sim, "GET", f"{MY}/updates")
    report(sim, request_id, 0)
    call(sim, "PUT", f"{MY}/installed", json_body=[{"name": "nano", "version": "2.2.6"}])
    state = call(sim, "GET", f"/sim/devices/{DEVICE}").json()
    assert list(state) == [
        "device",
        "status",
        "lastSeen",
        "updates",
        "reports",
        "results",
        "history",
        "blocked",
        "installed",
        "systemInfo",
        "requests",
    ]
    assert state["status"] == "UpToDate"
    assert [u["status"] for u in state["updates"]] == ["Finished"]
    (rec,) = state["reports"]
    assert rec["body"] == f'[{{"id": "{request_id}", "result_code": 0, "result_text": "ok"}}]'
    assert state["installed"] == [{"name": "nano", "version": "2.2.6"}]
    assert state["systemInfo"] is None
    assert [r["route"] for r in state["requests"]] == ["updates", "report", "installed"]
    assert call(sim, "GET", "/sim/devices").json() == [DEVICE]
    assert call(sim, "GET", "/sim/devices/nope").status == 400


def test_request_log_and_package_list(sim: CoreSimulator) -> None:
    call(sim, "GET", "/health")
    log = call(sim, "GET", "/sim/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [("GET", "/health", 200)]
    assert call(sim, "GET", "/sim/packages").json() == [
        {"name": "nano", "version": "2.2.6", "size": len(PAYLOAD), "source": "memory"}
    ]


def test_reset(sim: CoreSimulator) -> None:
    sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject({"kind": "status", "route": "health"})
    assert call(sim, "POST", "/sim/reset").status == 204
    assert sim.packages() == []
    assert sim.updates(DEVICE) == []
    assert call(sim, "GET", "/health").status == 200
    assert [r.path for r in sim.requests] == ["/health"]


def test_expire_tokens_over_http_without_auth(sim: CoreSimulator) -> None:
    assert call(sim, "POST", "/sim/tokens/expire").json() == {"revoked": 0}


def test_add_package_arguments(sim: CoreSimulator, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        sim.add_package("a", "1")
    with pytest.raises(ValueError, match="exactly one"):
        sim.add_package("a", "1", data=b"x", path="/etc/hostname")
    with pytest.raises(ValueError, match="not a regular file"):
        sim.add_package("a", "1", path=str(tmp_path))
    with pytest.raises(ValueError, match="invalid package name"):
        sim.add_package("a b", "1", data=b"x")


def test_add_package_through_a_symlink(sim: CoreSimulator, tmp_path: pathlib.Path) -> None:
    (tmp_path / "real.bin").write_bytes(PAYLOAD)
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    sim.add_package("linked", "1.0.0", path=str(tmp_path / "link.bin"))
    request_id = sim.queue_update(DEVICE, "linked", "1.0.0")
    assert call(sim, "GET", f"{MY}/updates/{request_id}/download").body == PAYLOAD


def test_loopback_only_by_default() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        CoreSimulator("0.0.0.0")
    with pytest.raises(ValueError, match="not a loopback address"):
        CoreSimulator("example.com")


def test_ipv6_loopback_url() -> None:
    sim = CoreSimulator("::1")
    try:
        sim.start()
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    try:
        assert sim.url == f"http://[::1]:{sim.port}"
        assert call(sim, "GET", "/health").status == 200
    finally:
        sim.stop()


def test_start_twice_is_an_error(sim: CoreSimulator) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        sim.start()


def test_wait_for_wakes_on_a_state_change(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    got = sim.wait_for(lambda: sim.pending(DEVICE))
    assert isinstance(got[0], PendingUpdateRequest)
    with pytest.raises(TimeoutError, match="did not reach the condition"):
        sim.wait_for(lambda: sim.status(DEVICE, request_id) == "Finished", timeout=0.01)
