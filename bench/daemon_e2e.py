"""The daemon as a process: download throughput and memory against curl, command round trips.

Starts the simulator and a real ``sota_client`` process, then (1) fetches a file with
``curl -o file`` and with the daemon's ``StartDownload`` (``dl <id>`` on the commands socket,
whose reply comes when the image is on disk), same server, same file, median of the runs, with
the daemon's resident memory before and at its peak; (2) times sequential ``ls`` round trips
through the commands socket against a bare Unix-socket echo in the same process (the floor
for one connection per command). Run: ``.venv/bin/python -m bench.daemon_e2e``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sota_client.sim import CoreSimulator
from swlm_sdk.sync import send_raw
from tests.e2e.harness import DEVICE, DaemonProcess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="image size (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="downloads per client (default 3)")
    parser.add_argument("--commands", type=int, default=500, help="round trips (default 500)")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is not installed", file=sys.stderr)
        return 1
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="sota-bench-"))
    try:
        image = work / "image.bin"
        with image.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        with CoreSimulator(path_roots=(str(work),)) as sim:
            sim.add_package("image", "1.0", path=str(image))
            daemon = DaemonProcess(work, sim.url, core={"polling": False})
            daemon.start()
            try:
                idle_rss = _rss_kib(daemon, "VmRSS")
                curl = [_curl(sim, work, size) for _ in range(args.runs)]
                ours = [_daemon_download(sim, daemon, size) for _ in range(args.runs)]
                peak_rss = _rss_kib(daemon, "VmHWM")
                rtt = _round_trips(daemon, args.commands)
            finally:
                daemon.stop()
        floor = _echo_round_trips(work / "echo.sock", args.commands)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb = size / 1e6
    curl_rate, our_rate = mb / statistics.median(curl), mb / statistics.median(ours)
    print(f"Download of {args.size_mib} MiB from the simulator, median of {args.runs}:\n")
    print("| client | MB/s | ratio to curl |")
    print("|---|---:|---:|")
    print(f"| `curl -o file` | {curl_rate:,.0f} | 1.00 |")
    print(f"| sota_client daemon (`dl <id>`) | {our_rate:,.0f} | {our_rate / curl_rate:.2f} |")
    print()
    print("| daemon memory | MiB |")
    print("|---|---:|")
    print(f"| resident, idle after start-up | {idle_rss / 1024:.1f} |")
    print(f"| peak resident, after {args.runs} downloads of {args.size_mib} MiB | "
          f"{peak_rss / 1024:.1f} |")  # fmt: skip
    print()
    print(f"Commands socket, {args.commands} sequential round trips (connect, send, read to EOF):")
    print()
    print("| server | median ms | ratio to the floor |")
    print("|---|---:|---:|")
    print(f"| bare Unix-socket echo (the floor) | {floor * 1000:.3f} | 1.0 |")
    print(f"| sota_client `ls` | {rtt * 1000:.3f} | {rtt / floor:.1f} |")
    return 0


def _rss_kib(daemon: DaemonProcess, field: str) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc status")


def _curl(sim: CoreSimulator, work: Path, size: int) -> float:
    request_id = sim.queue_update(DEVICE, "image", "1.0")
    url = f"{sim.url}/api/v1/mydevice/{DEVICE}/updates/{request_id}/download"
    out = work / "curl.out"
    start = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", str(out), url], check=True)
    elapsed = time.perf_counter() - start
    assert out.stat().st_size == size
    out.unlink()
    return elapsed


def _daemon_download(sim: CoreSimulator, daemon: DaemonProcess, size: int) -> float:
    request_id = sim.queue_update(DEVICE, "image", "1.0")
    start = time.perf_counter()
    reply = send_raw(f"dl {request_id}", commands_socket=daemon.commands_socket)
    elapsed = time.perf_counter() - start
    assert b"DownloadComplete" in reply, reply
    image = daemon.packages_dir / request_id
    assert image.stat().st_size == size
    image.unlink()
    return elapsed


def _round_trips(daemon: DaemonProcess, count: int) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        send_raw("ls", commands_socket=daemon.commands_socket)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _echo_round_trips(path: Path, count: int) -> float:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)

    def serve() -> None:
        for _ in range(count):
            conn, _ = server.accept()
            with conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                conn.sendall(b'"' + data + b'"')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            send_raw("ls", commands_socket=path)
            times.append(time.perf_counter() - start)
    finally:
        thread.join(10)
        server.close()
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
