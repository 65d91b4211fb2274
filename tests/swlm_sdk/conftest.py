"""Fixtures for the SDK's I/O tests: a 2016 peer on either socket.

The fake daemon fixtures (``fake_daemon``, ``sync_fake_daemon``) come from the SDK's pytest
plugin, loaded by its entry point as for a vendor.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swlm_sdk import Retry

UDS_LIMIT = 107

FAST = Retry(attempts=None, initial_delay=0.005, max_delay=0.02)
"""Report retries for the App tests: quick, and never giving up."""


class Server2016:
    """A raw-socket copy of the 2016 commands-socket framing, in a thread.

    Per connection: read to EOF, record the bytes, write ``reply(request)``, shutdown(SHUT_WR),
    close. A peer that does not half-close would hang it, as it hung the 2016 client.
    """

    def __init__(self, path: Path, reply: Callable[[bytes], bytes]) -> None:
        self.path = str(path)
        self.reply = reply
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.reply(data))
                conn.shutdown(socket.SHUT_WR)

    def __enter__(self) -> Server2016:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def reply_2016(request: bytes) -> bytes:
    """The 2016 client's answers for the commands an SWLM sends (package_manager = off)."""
    words = request.decode().split()
    if words[0] in ("SendUpdateReport", "sendup"):
        if len(words) > 3:
            args = ", ".join(f'"{w}"' for w in words[1:])
            return f"Unknown Command: unexpected SendUpdateReport args: [{args}]".encode()
        return b'"UpdateReportSent"'
    if words[0] in ("SendInstalledPackages", "sendpack"):
        return b'"InstalledPackagesSent"'
    return f"Unknown Command: bad command: {request.decode()}".encode()


@pytest.fixture
def server_2016(sock_dir: Path) -> Iterator[Server2016]:
    with Server2016(sock_dir / "cmd.sock", reply_2016) as server:
        yield server


def deliver_2016(path: str, payload: bytes) -> None:
    """What the 2016 client's Socket::pulse did for one event: connect, write, shutdown, drop."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
