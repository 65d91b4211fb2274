"""Download throughput of the Core simulator against ``python -m http.server``, with curl.

Both serve the same random file on 127.0.0.1; curl downloads it to /dev/null several times
from each (after one warm-up run) and a markdown table row of median MB/s (10^6 bytes/s) is
printed. Run: ``.venv/bin/python -m bench.sim_throughput [--quick] [--size-mib 512] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import statistics
import subprocess
import sys
import tempfile

from sota_client.sim import CoreSimulator

from ._common import Section, require, run_main

DEVICE = "123e4567-e89b-12d3-a456-426655440000"
STARTUP_TIMEOUT = 10.0


def _write_random(path: str, size: int) -> None:
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            piece = os.urandom(min(remaining, 4 << 20))
            out.write(piece)
            remaining -= len(piece)


def _curl_speed(url: str, size: int) -> float:
    """One download to /dev/null; curl's average speed in MB/s."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download} %{size_download}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.split()
    if int(out[1]) != size:
        raise RuntimeError(f"{url}: got {out[1]} bytes, expected {size}")
    return float(out[0]) / 1e6


def _median_speed(url: str, size: int, runs: int) -> float:
    _curl_speed(url, size)  # warm-up: page cache, TCP buffers
    return statistics.median(_curl_speed(url, size) for _ in range(runs))


def _start_http_server(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(STARTUP_TIMEOUT):
            proc.kill()
            proc.wait()
            raise RuntimeError("python -m http.server did not start")
    line = proc.stdout.readline().decode()
    match = re.search(r"port (\d+)", line)
    if match is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"unexpected http.server output: {line!r}")
    return proc, f"http://127.0.0.1:{match.group(1)}"


def collect(argv: list[str] | None = None) -> Section:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 2 runs")
    parser.add_argument("--size-mib", type=int, help="file size (default 512; quick 64)")
    parser.add_argument("--runs", type=int, help="timed runs per server (default 5; quick 2)")
    args = parser.parse_args(argv)
    args.size_mib = args.size_mib or (64 if args.quick else 512)
    args.runs = args.runs or (2 if args.quick else 5)
    require("curl")
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="sota-sim-bench-") as work:
        image = os.path.join(work, "image.bin")
        _write_random(image, size)
        with CoreSimulator() as sim:
            sim.add_package("image", "1.0.0", path=image)
            request_id = sim.queue_update(DEVICE, "image", "1.0.0")
            sim_url = f"{sim.url}/api/v1/mydevice/{DEVICE}/updates/{request_id}/download"
            simulated = _median_speed(sim_url, size, args.runs)
        proc, base = _start_http_server(work)
        with proc:
            try:
                stdlib = _median_speed(f"{base}/image.bin", size, args.runs)
            finally:
                proc.terminate()
    table = "\n".join(
        [
            "| file | simulator (sendfile) | python -m http.server | ratio |",
            "|---|---|---|---|",
            f"| {args.size_mib} MiB random, curl -o /dev/null, median of {args.runs} "
            f"| {simulated:,.0f} MB/s | {stdlib:,.0f} MB/s | {simulated / stdlib:.1f}x |",
        ]
    )
    return Section(
        "The Core simulator (it must never be the bottleneck)",
        "python -m bench.sim_throughput",
        details=[table],
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


if __name__ == "__main__":
    raise SystemExit(main())
