"""The daemon at rest: exec → READY=1, idle RSS after 3 polls, CPU per poll with nothing pending.

All in the production install (``pip install .``, no test extras: see ``bench._venv``), socket
gateway on, ``polling_sec = 1``, against the Core simulator, each against a baseline run by
the same interpreter in the same run:

- exec → ``READY=1`` (a fresh exec each time, after one start not counted), against the floor:
  ``python -c "import anyio, msgspec, sqlite3"`` from exec to exit;
- RSS (``VmRSS``) after the third poll, against a process that imports anyio, msgspec and
  sqlite3 and sleeps in ``anyio.run``;
- CPU (user + system, the process CPU clock) per poll over a window of polls once idle,
  against a minimal asyncio poller: a keep-alive HTTP GET of the same ``/updates`` every
  second on a raw socket, measured the same way.

The idle rounds run side by side (each daemon and poller its own device), as idle processes
hardly compete. Run: ``.venv/bin/python -m bench.daemon_idle [--quick] [--python PATH]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sota_client.sim import CoreSimulator

from ._common import (
    BenchError,
    Daemon,
    Helper,
    Row,
    Section,
    cpu_seconds,
    proc_kib,
    run_main,
    spread,
    time_exec,
)
from ._venv import chosen_python

FLOOR = "import anyio, msgspec, sqlite3"

SLEEPER = """\
import anyio, msgspec, sqlite3
print("ready", flush=True)
anyio.run(anyio.sleep, 3600)
"""

POLLER = """\
import asyncio, sys

async def main(host, port, path):
    request = (f"GET {path} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n"
               "Accept: application/json\\r\\n\\r\\n").encode()
    reader = writer = None
    print("ready", flush=True)
    while True:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        try:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
        except asyncio.IncompleteReadError:  # the server closed the kept connection
            writer.close()
            reader = writer = None
            continue
        status = head.split(b" ", 2)[1]
        if status != b"200":
            sys.exit(f"GET {path}: {head!r}")
        length = 0
        for line in head.split(b"\\r\\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        await asyncio.sleep(1)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer starts, one idle round")
    parser.add_argument("--starts", type=int, help="timed starts (default 15; quick 10)")
    parser.add_argument("--rounds", type=int, help="idle daemons (default 5; quick 1)")
    parser.add_argument("--window", type=int, help="polls to measure CPU over (10; quick 3)")
    parser.add_argument("--polls", type=int, default=3, help="polls before the RSS (3)")
    parser.add_argument("--python", type=Path, help="the venv's interpreter (default: production)")
    return parser


def collect(argv: list[str] | None = None) -> Section:
    args = parser().parse_args(argv)
    starts = args.starts or (10 if args.quick else 15)
    rounds = args.rounds or (1 if args.quick else 5)
    window = args.window or (3 if args.quick else 10)
    python = chosen_python(args.python)
    work = Path(tempfile.mkdtemp(prefix="sota-idle-"))
    try:
        with CoreSimulator() as sim:
            ready, floor = _starts(python, work, sim, starts)
            idle = _idle(python, work, sim, rounds, window, args.polls)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rss, sleeper_rss, cpu, poller_cpu = idle
    ready_ms, floor_ms = [s * 1000 for s in ready], [s * 1000 for s in floor]
    rss_ratio = [r / s for r, s in zip(rss, sleeper_rss, strict=True)]
    cpu_ratio = [c / p for c, p in zip(cpu, poller_cpu, strict=True)]
    rows = [
        Row(
            f"idle RSS, production install, socket gateway on, after {args.polls} polls",
            f"{spread(rss)} MiB",
            f"anyio + msgspec + sqlite3 asleep: {spread(sleeper_rss)} MiB",
            spread(rss_ratio, "{:.2f}x"),
            "≤ 30 MiB",
            round(statistics.median(rss), 1) <= 30,
        ),
        Row(
            f"exec → `READY=1`, median of {starts} starts",
            f"{spread(ready_ms, '{:.0f}')} ms",
            f"floor (Python + anyio + msgspec + sqlite3): {spread(floor_ms, '{:.0f}')} ms",
            f"{statistics.median(ready_ms) / statistics.median(floor_ms):.2f}x",
            "≤ 200 ms",
            round(statistics.median(ready_ms)) <= 200,
        ),
        Row(
            f"CPU per poll with nothing pending, over {window} polls",
            f"{spread(cpu, '{:.2f}')} ms",
            f"minimal asyncio poller: {spread(poller_cpu, '{:.2f}')} ms",
            spread(cpu_ratio, "{:.1f}x"),
            "≤ 2 ms",
            round(statistics.median(cpu), 2) <= 2,
        ),
    ]
    details = [
        f"Idle: {rounds} daemon(s) and as many baselines side by side, one device each; "
        f"RSS after poll {args.polls}, CPU over the next polls (ranges are across the daemons)."
    ]
    return Section("The daemon at rest", "python -m bench.daemon_idle", rows, details)


def _starts(
    python: Path, work: Path, sim: CoreSimulator, count: int
) -> tuple[list[float], list[float]]:
    """Seconds to READY=1 and to the floor's exit, ``count`` each, interleaved."""
    daemon = Daemon(python, work / "starts", sim.url)
    ready, floor = [], []
    for n in range(count + 1):  # the first of each warms the caches and is not counted
        elapsed = daemon.start()
        daemon.stop()
        floor_elapsed = time_exec([str(python), "-I", "-c", FLOOR], work)
        if n:
            ready.append(elapsed)
            floor.append(floor_elapsed)
    return ready, floor


def _polls(sim: CoreSimulator, device: str) -> int:
    return sum(1 for r in sim.requests if r.route == "updates" and r.device == device)


def _wait_polls(sim: CoreSimulator, device: str, count: int, what: str) -> None:
    deadline = time.monotonic() + count * 2 + 30
    while _polls(sim, device) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"{what} made {_polls(sim, device)} polls, not {count}")
        time.sleep(0.02)


def _idle(
    python: Path, work: Path, sim: CoreSimulator, rounds: int, window: int, polls: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per round: the daemon's RSS and the sleeper's (MiB), then the daemon's CPU per poll
    and the poller's (ms)."""
    daemons: list[tuple[str, Daemon]] = []
    pollers: list[tuple[str, Helper]] = []
    sleepers: list[Helper] = []
    host, port = "127.0.0.1", sim.port
    try:
        for n in range(rounds):
            device = str(uuid.uuid4())
            daemon = Daemon(python, work / f"idle{n}", sim.url, device=device)
            daemon.start()
            daemons.append((device, daemon))
            device = str(uuid.uuid4())
            path = f"/api/v1/mydevice/{device}/updates"
            pollers.append((device, Helper(python, POLLER, host, str(port), path, cwd=work)))
            sleepers.append(Helper(python, SLEEPER, cwd=work))
        rss = []
        for device, daemon in daemons:
            _wait_polls(sim, device, polls, "the daemon")
            time.sleep(0.5)  # halfway to the next poll: the last one is handled
            rss.append(proc_kib(daemon.pid, "VmRSS") / 1024)
        sleeper_rss = [proc_kib(s.pid, "VmRSS") / 1024 for s in sleepers]
        # CPU from halfway between two polls to halfway between two later ones.
        processes = [(d, daemon.pid, "the daemon") for d, daemon in daemons]
        processes += [(d, poller.pid, "the asyncio poller") for d, poller in pollers]
        first = {}
        for device, _, what in processes:
            _wait_polls(sim, device, polls + 1, what)
        time.sleep(0.5)
        for device, pid, _ in processes:
            first[device] = (_polls(sim, device), cpu_seconds(pid))
        start = max(n for n, _ in first.values())
        for device, _, what in processes:
            _wait_polls(sim, device, start + window, what)
        time.sleep(0.5)
        per_poll = {}
        for device, pid, _ in processes:
            polls, cpu = _polls(sim, device), cpu_seconds(pid)
            polls0, cpu0 = first[device]
            per_poll[device] = (cpu - cpu0) / (polls - polls0) * 1000
        cpu_ms = [per_poll[d] for d, _ in daemons]
        poller_ms = [per_poll[d] for d, _ in pollers]
        for _, daemon in daemons:
            daemon.stop()
    finally:
        for _, daemon in daemons:
            daemon.kill()
        for helper in [p for _, p in pollers] + sleepers:
            helper.stop()
    return rss, sleeper_rss, cpu_ms, poller_ms


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


if __name__ == "__main__":
    raise SystemExit(main())
