"""Download throughput: our downloader (asyncio and trio) against ``curl -o file``, same server.

Serves one random file with ``python -m http.server`` on 127.0.0.1 at the Core download path, then
downloads it several times with each client and prints a markdown table of MB/s (1 MB = 10^6
bytes; the median of the runs). In-process, in the dev venv: trio comes with the test extras
(skipped when it is missing). Run: ``.venv/bin/python -m bench.download_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import anyio

from sota_client._backend import CoreBackend

from ._common import BenchError, Section, run_main

DEVICE = "bench-device"
UPDATE = "bench-update"


def collect(argv: list[str] | None = None) -> Section:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="32 MiB, 2 runs")
    parser.add_argument("--size-mib", type=int, help="file size (default 256; quick 32)")
    parser.add_argument("--runs", type=int, help="runs per client (default 5; quick 2)")
    args = parser.parse_args(argv)
    args.size_mib = args.size_mib or (32 if args.quick else 256)
    args.runs = args.runs or (2 if args.quick else 5)
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="sota-bench-") as work:
        root = os.path.join(work, "www")
        source = os.path.join(root, "api", "v1", "mydevice", DEVICE, "updates", UPDATE)
        os.makedirs(source)
        source = os.path.join(source, "download")
        expected = _write_random(source, size)
        out = os.path.join(work, "out")
        os.mkdir(out)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/api/v1/mydevice/{DEVICE}/updates/{UPDATE}/download"
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_connectable("127.0.0.1", port, deadline=10.0)
            # Each client returns a function giving the sha256, so curl's check is not timed.
            clients: dict[str, Callable[[], Callable[[], str]]] = {}
            if shutil.which("curl"):
                clients["curl -o file"] = lambda: _curl(url, os.path.join(out, "curl"))
            for backend in ("asyncio", "trio"):
                if backend == "trio" and importlib.util.find_spec("trio") is None:
                    continue
                clients[f"sota_client ({backend})"] = _ours(base, out, backend)
            rows = []
            for name, run in clients.items():
                speeds = []
                for _ in range(args.runs):
                    _clear(out)
                    started = time.perf_counter()
                    check = run()
                    elapsed = time.perf_counter() - started
                    digest = check()
                    if digest != expected:
                        raise BenchError(f"{name}: wrong sha256 {digest}")
                    speeds.append(size / elapsed / 1e6)
                rows.append((name, speeds))
        finally:
            server.terminate()
            server.wait(10)
    lines = [
        f"Download of {args.size_mib} MiB from `python -m http.server` on 127.0.0.1, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n",
        "| client | " + " | ".join(f"run {n + 1}" for n in range(args.runs)) + " | median MB/s |",
        "|---|" + "---:|" * (args.runs + 1),
    ]
    for name, speeds in rows:
        cells = " | ".join(f"{speed:.0f}" for speed in speeds)
        lines.append(f"| {name} | {cells} | **{statistics.median(speeds):.0f}** |")
    return Section(
        "The downloader alone, asyncio and trio",
        "python -m bench.download_throughput",
        details=["\n".join(lines)],
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


def _ours(base: str, out: str, backend: str) -> Callable[[], Callable[[], str]]:
    async def download() -> str:
        async with CoreBackend(base, DEVICE) as core:
            result = await core.download(UPDATE, out)
        return result.sha256  # computed while streaming: part of our cost

    def run() -> Callable[[], str]:
        digest = anyio.run(download, backend=backend)
        return lambda: digest

    return run


def _curl(url: str, path: str) -> Callable[[], str]:
    subprocess.run(["curl", "-sS", "--fail", "-o", path, url], check=True)
    return lambda: _sha256(path)


def _write_random(path: str, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for _ in range(0, size, 1 << 20):
            block = os.urandom(min(1 << 20, size - file.tell()))
            digest.update(block)
            file.write(block)
    return digest.hexdigest()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _clear(directory: str) -> None:
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_connectable(host: str, port: int, deadline: float) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
