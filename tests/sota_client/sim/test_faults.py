"""Fault injection: each kind, matching, counting, and the S22 redirect without Authorization."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from urllib.parse import urlsplit

import pytest

from sota_client.sim import (
    AuthSettings,
    ChunkedFault,
    CoreSimulator,
    DelayFault,
    DropFault,
    ExpireTokensFault,
    RedirectFault,
    StatusFault,
    TruncateFault,
)

from ._client import DEVICE, MY, TIMEOUT, call, connect, download, exchange
from .conftest import PAYLOAD


def test_status_fault_for_the_next_n_matching_requests(sim: CoreSimulator) -> None:
    sim.inject(StatusFault(status=503, body="try later", route="updates", count=2))
    for _ in range(2):
        reply = call(sim, "GET", f"{MY}/updates")
        assert (reply.status, reply.text) == (503, "try later")
        assert reply.headers["Content-Length"] == "9"
    assert call(sim, "GET", f"{MY}/updates").status == 200
    assert [r.fault for r in sim.requests] == ["status", "status", None]


def test_status_fault_skips_the_request_itself(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(StatusFault(status=500, route="download"))
    assert download(sim, request_id).status == 500
    assert sim.status(DEVICE, request_id) == "Pending"


@pytest.mark.parametrize(
    ("fault", "hits"),
    [
        (StatusFault(method="put"), ["PUT"]),
        (StatusFault(path=r"/installed$"), ["PUT"]),
        (StatusFault(route="health"), ["HEALTH"]),
        (StatusFault(method="GET", path="updates"), ["GET"]),
    ],
)
def test_matching(sim: CoreSimulator, fault: StatusFault, hits: list[str]) -> None:
    sim.inject(fault)
    got = []
    for name, method, path in [
        ("GET", "GET", f"{MY}/updates"),
        ("PUT", "PUT", f"{MY}/installed"),
        ("HEALTH", "GET", "/health"),
    ]:
        if call(sim, method, path, b"[]", {"Content-Type": "application/json"}).status == 503:
            got.append(name)
    assert got == hits


def test_first_armed_match_wins_and_admin_api_is_never_faulted(sim: CoreSimulator) -> None:
    sim.inject(StatusFault(status=502, path=".*"))
    sim.inject(StatusFault(status=504, path=".*"))
    assert call(sim, "GET", "/sim/faults").status == 200
    assert call(sim, "GET", "/health").status == 502
    assert call(sim, "GET", "/health").status == 504
    assert call(sim, "GET", "/health").status == 200


def test_delay_fault_answers_normally_afterwards(sim: CoreSimulator) -> None:
    sim.inject(DelayFault(seconds=0.05, route="updates"))
    reply = call(sim, "GET", f"{MY}/updates")
    assert (reply.status, reply.body) == (200, b"[]")
    assert sim.requests[-1].fault == "delay"


def test_a_long_delay_is_cut_short_by_stop() -> None:
    outcome: list[object] = []
    with CoreSimulator() as sim:
        sim.inject(DelayFault(seconds=300))

        def client() -> None:
            try:
                outcome.append(call(sim, "GET", "/health").status)
            except (OSError, http.client.HTTPException) as exc:
                outcome.append(type(exc))

        thread = threading.Thread(target=client)
        thread.start()
        sim.wait_for(lambda: any(r.fault == "delay" for r in sim.requests))
        sim.stop()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert len(outcome) == 1


def test_truncate_announces_everything_and_sends_k_bytes(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(TruncateFault(after=1000, route="download"))
    conn = connect(sim)
    try:
        conn.request("GET", f"{MY}/updates/{request_id}/download")
        response = conn.getresponse()
        assert response.headers["Content-Length"] == str(len(PAYLOAD))
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
    finally:
        conn.close()
    assert info.value.partial == PAYLOAD[:1000]
    assert sim.status(DEVICE, request_id) == "InFlight"


def test_truncate_file_backed_package(sim: CoreSimulator, tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "image.bin"
    path.write_bytes(PAYLOAD)
    sim.add_package("image", "1.0.0", path=str(path))
    request_id = sim.queue_update(DEVICE, "image", "1.0.0")
    sim.inject(TruncateFault(after=4097, route="download"))
    conn = connect(sim)
    try:
        conn.request("GET", f"{MY}/updates/{request_id}/download")
        with pytest.raises(http.client.IncompleteRead) as info:
            conn.getresponse().read()
    finally:
        conn.close()
    assert info.value.partial == PAYLOAD[:4097]


def test_drop_closes_without_an_answer(sim: CoreSimulator) -> None:
    sim.inject(DropFault(route="updates"))
    with pytest.raises(http.client.RemoteDisconnected):
        call(sim, "GET", f"{MY}/updates")
    (record,) = sim.requests
    assert (record.status, record.fault) == (None, "drop")
    assert call(sim, "GET", f"{MY}/updates").status == 200


def test_expire_tokens_fault() -> None:
    with CoreSimulator(auth=AuthSettings()) as sim:
        creds = sim.client_credentials
        reply = call(
            sim,
            "POST",
            "/token",
            b"grant_type=client_credentials",
            {
                "Authorization": "Basic "
                + __import__("base64")
                .b64encode(f"{creds.client_id}:{creds.client_secret}".encode())
                .decode(),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        bearer = {"Authorization": f"Bearer {reply.json()['access_token']}"}
        assert call(sim, "GET", f"{MY}/updates", headers=bearer).status == 200
        sim.inject(ExpireTokensFault(route="updates"))
        assert call(sim, "GET", f"{MY}/updates", headers=bearer).status == 401
        assert call(sim, "GET", f"{MY}/updates", headers=bearer).status == 401


def test_chunked_download(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(ChunkedFault(chunk_size=4000, route="download"))
    reply = download(sim, request_id)
    assert reply.status == 200
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in reply.headers
    assert reply.body == PAYLOAD


def test_chunked_framing_on_the_wire(sim: CoreSimulator) -> None:
    sim.inject(ChunkedFault(chunk_size=4, route="health"))
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert body == b'4\r\n{"st\r\n4\r\natus\r\n4\r\n":"O\r\n3\r\nK"}\r\n0\r\n\r\n'


def test_s22_redirect_to_storage_without_authorization(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(RedirectFault())
    assert call(sim, "GET", "/health").status == 200  # a redirect only matches downloads
    first = download(sim, request_id, Authorization="Bearer device-token")
    assert first.status == 302
    assert first.headers["Content-Length"] == "0"
    location = urlsplit(first.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == sim.url
    assert location.path.startswith("/storage/")
    assert sim.status(DEVICE, request_id) == "InFlight"

    refused = call(sim, "GET", location.path, headers={"Authorization": "Bearer device-token"})
    assert refused.status == 400
    assert "Only one auth mechanism" in refused.text
    fetched = call(sim, "GET", location.path)
    assert (fetched.status, fetched.body) == (200, PAYLOAD)
    partial = call(sim, "GET", location.path, headers={"Range": "bytes=5-9"})
    assert (partial.status, partial.body) == (206, PAYLOAD[5:10])

    storage = [r for r in sim.requests if r.route == "storage"]
    assert ["authorization" in r.headers for r in storage] == [True, False, False]
    assert call(sim, "GET", "/storage/unknown").status == 404


def test_faults_over_http(sim: CoreSimulator) -> None:
    spec = [
        {"kind": "status", "status": 500, "route": "health", "count": 2},
        {"kind": "truncate", "after": 3, "route": "download"},
    ]
    reply = call(sim, "POST", "/sim/faults", json_body=spec)
    assert reply.json() == {"armed": 2}
    listed = call(sim, "GET", "/sim/faults").json()
    assert [(f["fault"]["kind"], f["remaining"]) for f in listed] == [
        ("status", 2),
        ("truncate", 1),
    ]
    assert call(sim, "GET", "/health").status == 500
    assert call(sim, "GET", "/sim/faults").json()[0]["remaining"] == 1
    assert call(sim, "DELETE", "/sim/faults").status == 204
    assert call(sim, "GET", "/health").status == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "explode"}, "Invalid value 'explode'"),
        ({"kind": "status", "colour": "red"}, "unknown field `colour`"),
        ({"kind": "status", "status": 199}, "$.status"),
        ({"kind": "status", "location": "/x\r\nX-Evil: 1"}, "single header line"),
        ({"kind": "delay"}, "missing required field `seconds`"),
        ({"kind": "drop", "count": 0}, "$.count"),
        ({"kind": "drop", "path": "("}, "bad path regex"),
        ({"kind": "status", "content_type": "a\r\nX-Evil: 1"}, "single header line"),
        ("not json", "JSON"),
    ],
)
def test_bad_fault_specs_are_400_naming_the_problem(
    sim: CoreSimulator, spec: object, message: str
) -> None:
    body = spec.encode() if isinstance(spec, str) else json.dumps(spec).encode()
    reply = call(sim, "POST", "/sim/faults", body, {"Content-Type": "application/json"})
    assert reply.status == 400
    assert message in reply.text
    assert call(sim, "GET", "/sim/faults").json() == []


def test_inject_accepts_a_mapping(sim: CoreSimulator) -> None:
    sim.inject({"kind": "status", "status": 507, "route": "health"})
    assert call(sim, "GET", "/health").status == 507


def test_keep_alive_survives_a_status_fault(sim: CoreSimulator) -> None:
    sim.inject(StatusFault(route="health"))
    conn = connect(sim)
    try:
        assert exchange(conn, "GET", "/health").status == 503
        assert exchange(conn, "GET", "/health").status == 200
    finally:
        conn.close()
