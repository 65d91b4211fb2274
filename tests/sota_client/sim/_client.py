"""A tiny stdlib HTTP client for the simulator tests: one request, whole answer, socket closed."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sota_client.sim import CoreSimulator

DEVICE = "123e4567-e89b-12d3-a456-426655440000"
OTHER_DEVICE = "0b6f1c2e-5d4a-4c3b-9a8f-7e6d5c4b3a21"
UNKNOWN_ID = "00000000-1111-2222-3333-444444444444"
MY = f"/api/v1/mydevice/{DEVICE}"
OP = f"/api/v1/device_updates/{DEVICE}"
TIMEOUT = 10.0


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def connect(sim: CoreSimulator) -> http.client.HTTPConnection:
    parts = urlsplit(sim.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    json_body: Any = None,
) -> Reply:
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return Reply(response.status, response.headers, response.read())


def call(
    sim: CoreSimulator,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    json_body: Any = None,
) -> Reply:
    conn = connect(sim)
    try:
        return exchange(conn, method, path, body, headers, json_body=json_body)
    finally:
        conn.close()


def raw(sim: CoreSimulator, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def report(
    sim: CoreSimulator, request_id: str, *codes: int, device: str = DEVICE, text: str = "ok"
) -> Reply:
    results = [{"id": request_id, "result_code": c, "result_text": text} for c in codes]
    return call(sim, "POST", f"/api/v1/mydevice/{device}/updates/{request_id}", json_body=results)


def download(sim: CoreSimulator, request_id: str, **headers: str) -> Reply:
    return call(sim, "GET", f"{MY}/updates/{request_id}/download", headers=headers)
