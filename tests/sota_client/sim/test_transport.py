"""HTTP/1.1 behaviour: Content-Length everywhere, bounded bodies, framing errors, keep-alive,
concurrency, and a clean shutdown."""

from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import threading

import pytest

from sota_client.sim import CoreSimulator, StatusFault

from ._client import DEVICE, MY, OP, TIMEOUT, UNKNOWN_ID, Reply, call, connect, exchange, raw


def test_every_answer_but_204_carries_content_length(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    json_type = {"Content-Type": "application/json"}
    replies: list[Reply] = [
        call(sim, "GET", f"{MY}/updates"),
        call(sim, "GET", f"{MY}/updates/{request_id}/download"),
        call(sim, "GET", f"{MY}/updates/{request_id}/download", headers={"Range": "bytes=1-2"}),
        call(sim, "GET", f"{MY}/updates/{request_id}/download", headers={"Range": "bytes=99999-"}),
        call(sim, "GET", f"{MY}/updates/{UNKNOWN_ID}/download"),
        call(sim, "GET", f"{MY}/updates/x/download"),
        call(sim, "PUT", f"{MY}/installed", b"[]", json_type),
        call(sim, "PUT", f"{MY}/system_info", b"{}", json_type),
        call(sim, "PUT", f"{MY}/system_info", b"{}"),
        call(sim, "POST", f"{MY}/updates/{UNKNOWN_ID}", b"[]", json_type),
        call(sim, "POST", f"{MY}/updates/{request_id}", b"[1]", json_type),
        call(sim, "DELETE", f"{MY}/updates"),
        call(sim, "GET", "/nowhere"),
        call(sim, "GET", "/health"),
        call(sim, "POST", "/token"),
        call(sim, "GET", f"/sim/devices/{DEVICE}"),
    ]
    sim.inject(StatusFault(status=500, route="health"))
    replies.append(call(sim, "GET", "/health"))
    statuses = sorted({r.status for r in replies})
    assert statuses == [200, 206, 400, 404, 405, 415, 416, 500]
    for reply in replies:
        assert reply.headers["Content-Length"] == str(len(reply.body)), reply


def test_keep_alive_serves_many_requests_on_one_connection(sim: CoreSimulator) -> None:
    conn = connect(sim)
    try:
        for _ in range(5):
            assert exchange(conn, "GET", "/health").status == 200
        assert exchange(conn, "PUT", f"{MY}/installed", json_body=[]).status == 200
        assert exchange(conn, "POST", f"{MY}/updates/{UNKNOWN_ID}", json_body=[]).status == 404
        assert exchange(conn, "GET", "/health").status == 200
    finally:
        conn.close()
    assert len({r.headers.get("host") for r in sim.requests}) == 1


def test_body_over_the_limit_is_413_and_the_connection_closes() -> None:
    with CoreSimulator(max_body=1024) as sim:
        reply = call(
            sim,
            "PUT",
            f"{MY}/system_info",
            b"[" + b" " * 2000 + b"]",
            {"Content-Type": "application/json"},
        )
        assert reply.status == 413
        assert reply.headers["Connection"] == "close"
        assert "exceeds the limit of 1024" in reply.text
        assert sim.system_info(DEVICE) is None


def test_expect_100_continue_is_refused_before_the_body_when_too_big() -> None:
    with CoreSimulator(max_body=1024) as sim:
        answer = raw(
            sim,
            b"PUT /api/v1/mydevice/" + DEVICE.encode() + b"/installed HTTP/1.1\r\n"
            b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in answer


def test_expect_100_continue_within_the_limit(sim: CoreSimulator) -> None:
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"PUT " + MY.encode() + b"/installed HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"[]")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nOK")


def test_chunked_request_body(sim: CoreSimulator) -> None:
    body = b'[{"name":"a","version":"1"}]'
    answer = raw(
        sim,
        b"PUT " + MY.encode() + b"/installed HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n"
        + b"5;ext=1\r\n"
        + body[:5]
        + b"\r\n"
        + b"%x\r\n" % (len(body) - 5)
        + body[5:]
        + b"\r\n0\r\nX-Trailer: y\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [(p.name, p.version) for p in sim.installed(DEVICE) or []] == [("a", "1")]


def test_chunked_request_body_over_the_limit() -> None:
    with CoreSimulator(max_body=10) as sim:
        answer = raw(
            sim,
            b"PUT " + MY.encode() + b"/installed HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n[       \r\n8\r\n        \r\n",
        )
        assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    ("head", "status", "text"),
    [
        (b"Content-Length: abc\r\n", 400, b"invalid Content-Length"),
        (b"Content-Length: 1\r\nContent-Length: 2\r\n", 400, b"invalid Content-Length"),
        (b"Content-Length: -1\r\n", 400, b"invalid Content-Length"),
        (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", 400, b"must not both"),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501, b"gzip"),
        (b"Transfer-Encoding: chunked\r\n\r\nzz", 400, b"invalid chunk size"),
    ],
)
def test_bad_body_framing(sim: CoreSimulator, head: bytes, status: int, text: bytes) -> None:
    answer = raw(
        sim,
        b"PUT "
        + MY.encode()
        + b"/installed HTTP/1.1\r\nHost: x\r\n"
        + head
        + (b"" if head.endswith(b"zz") else b"\r\n")
        + b"\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert text in answer
    assert b"\r\nContent-Length: " in answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /health HTTP/9.9\r\n\r\n", 505),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET /health HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", 431),
        (b"BREW /health HTTP/1.1\r\n\r\n", 501),
        (b"GET health HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_a_text_error(
    sim: CoreSimulator, request_bytes: bytes, status: int
) -> None:
    answer = raw(sim, request_bytes)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head + b"\r\n"
    assert call(sim, "GET", "/health").status == 200


def test_client_vanishing_mid_download_does_not_hurt_the_server(
    sim: CoreSimulator, tmp_path: pathlib.Path
) -> None:
    image = tmp_path / "big.bin"
    image.write_bytes(os.urandom(1 << 20) * 8)
    sim.add_package("big", "1.0.0", path=str(image))
    request_id = sim.queue_update(DEVICE, "big", "1.0.0")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {MY}/updates/{request_id}/download HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(16).startswith(b"HTTP/1.1 200")
    assert call(sim, "GET", "/health").status == 200


def test_concurrent_downloads(sim: CoreSimulator, tmp_path: pathlib.Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "image.bin").write_bytes(data)
    sim.add_package("image", "1.0.0", path=str(tmp_path / "image.bin"))
    sim.add_package("blob", "1.0.0", data=data)
    ids = [sim.queue_update(DEVICE, name, "1.0.0") for name in ("image", "blob")]
    digests: list[str] = []
    lock = threading.Lock()

    def fetch(request_id: str) -> None:
        body = call(sim, "GET", f"{MY}/updates/{request_id}/download").body
        with lock:
            digests.append(hashlib.sha256(body).hexdigest())

    threads = [threading.Thread(target=fetch, args=(ids[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert digests == [hashlib.sha256(data).hexdigest()] * 8


def test_request_log_keeps_headers_for_assertions(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    call(
        sim,
        "GET",
        f"{MY}/updates/{request_id}/download",
        headers={
            "Authorization": "Bearer t",
            "User-Agent": "sota-client/0.1",
            "Range": "bytes=0-1",
        },
    )
    (record,) = sim.requests
    assert record.headers["authorization"] == "Bearer t"
    assert record.headers["user-agent"] == "sota-client/0.1"
    assert record.headers["range"] == "bytes=0-1"
    assert (record.method, record.route, record.device, record.status) == (
        "GET",
        "download",
        DEVICE,
        206,
    )


def test_vanished_package_file_is_a_500_not_a_crash(
    sim: CoreSimulator, tmp_path: pathlib.Path
) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(b"x")
    sim.add_package("image", "1.0.0", path=str(image))
    request_id = sim.queue_update(DEVICE, "image", "1.0.0")
    image.unlink()
    reply = call(sim, "GET", f"{MY}/updates/{request_id}/download")
    assert reply.status == 500
    assert "package file unavailable" in reply.json()["error"]


def test_idle_connections_time_out() -> None:
    with (
        CoreSimulator(idle_timeout=0.2) as sim,
        socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as sock,
    ):
        assert sock.recv(1) == b""


def test_stop_closes_idle_keep_alive_connections() -> None:
    sim = CoreSimulator().start()
    try:
        conn = connect(sim)
        try:
            assert exchange(conn, "GET", "/health").status == 200
            sim.stop()
            assert conn.sock is not None
            assert conn.sock.recv(1) == b""
        finally:
            conn.close()
    finally:
        sim.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = sim.url


def test_operator_route_collisions(sim: CoreSimulator) -> None:
    # POST <prefix>/<uuid> queues; POST <prefix>/<uuid>/<x> is the legacy report.
    assert call(sim, "POST", OP, json_body={"name": "nano", "version": "2.2.6"}).status == 200
    assert call(sim, "POST", f"{OP}/sync", json_body={}).status == 400
