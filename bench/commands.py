"""A command's round trip on the commands socket against an asyncio echo server's.

Starts the Core simulator, a real ``sota_client`` (the production install, polling off) and,
run by the same interpreter, an asyncio Unix-socket echo server (``asyncio.start_unix_server``:
read to EOF, write it back, close). Each round sends ``ls`` to the daemon and to the echo
server in turns, ``--count`` times each, one connection per command as an SWLM does (connect,
send, half-close, read to EOF, from a blocking socket in this process), and takes the medians.
Run: ``.venv/bin/python -m bench.commands [--quick] [--python PATH]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from sota_client.sim import CoreSimulator

from ._common import BenchError, Daemon, Helper, Row, Section, run_main, spread, unix_round_trip
from ._venv import chosen_python

ECHO = """\
import asyncio, sys

async def echo(reader, writer):
    writer.write(await reader.read())
    await writer.drain()
    writer.close()
    await writer.wait_closed()

async def main(path):
    server = await asyncio.start_unix_server(echo, path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main(sys.argv[1]))
"""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 100")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick 2)")
    parser.add_argument("--count", type=int, help="round trips per server a round (300; 100)")
    parser.add_argument("--python", type=Path, help="the venv's interpreter (default: production)")
    return parser


def collect(argv: list[str] | None = None) -> Section:
    args = parser().parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    count = args.count or (100 if args.quick else 300)
    python = chosen_python(args.python)
    work = Path(tempfile.mkdtemp(prefix="sota-cmd-"))
    ours, echo = [], []
    try:
        with CoreSimulator() as sim, Daemon(python, work, sim.url, polling=False) as daemon:
            daemon.start()
            _, reply = daemon.command("ls")
            if b"FoundInstalledPackages" not in reply:
                raise BenchError(f"ls answered {reply[:300]!r}")
            server = Helper(python, ECHO, str(work / "echo.sock"), cwd=work)
            try:
                for _ in range(rounds):
                    round_ours, round_echo = _round(daemon.commands_socket, reply, work, count)
                    ours.append(round_ours)
                    echo.append(round_echo)
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = [o / e for o, e in zip(ours, echo, strict=True)]
    ours_ms, echo_ms = [s * 1000 for s in ours], [s * 1000 for s in echo]
    rows = [
        Row(
            f"`ls` round trip on the commands socket, median of {count} a round",
            f"{spread(ours_ms, '{:.3f}')} ms",
            f"asyncio echo server: {spread(echo_ms, '{:.3f}')} ms",
            spread(ratio, "{:.2f}x"),
            "≤ 1.5x",
            statistics.median(ratio) <= 1.5,
        )
    ]
    return Section("Commands socket round trip", "python -m bench.commands", rows)


def _round(commands: Path, reply: bytes, work: Path, count: int) -> tuple[float, float]:
    """Median seconds of ``count`` round trips to the daemon and to the echo server, taken
    in turns so that both see the same moments of a busy machine."""
    ours: list[float] = []
    echo: list[float] = []
    for n in range(count):
        for who in ("daemon", "echo") if n % 2 == 0 else ("echo", "daemon"):
            if who == "daemon":
                path, expected, times = commands, reply, ours
            else:
                path, expected, times = work / "echo.sock", b"ls", echo
            seconds, got = unix_round_trip(path, b"ls")
            if got != expected:
                raise BenchError(f"{path} answered {got[:300]!r}, not {expected[:300]!r}")
            times.append(seconds)
    return statistics.median(ours), statistics.median(echo)


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


if __name__ == "__main__":
    raise SystemExit(main())
