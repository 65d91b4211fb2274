"""``make bench``: run every benchmark, print issue 11's table, write docs/performance.md.

``python -m bench`` (the full run: 512 MiB and 1 GiB images, 5 rounds or more of each figure)
prints the summary table and each benchmark's details on stdout and writes
docs/performance.md with the machine, the date, and the medians and ranges; ``--quick`` (``make
bench-quick``, under a minute) runs smaller sizes and fewer rounds and writes nothing.

Every figure has a baseline measured in the same run (curl and openssl, a bare interpreter,
an asyncio poller or echo server, the same path at a smaller size), because the machines are
shared and absolute numbers move from run to run; the ratios are what to compare. The daemon
runs from a production install (``bench._venv``: ``pip install .`` into ``.bench-venv/``, no
test extras), built or brought up to date first. A daemon that misbehaves (a wrong size, no
READY=1, an error reply) ends the run with a message and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import (
    commands,
    daemon_e2e,
    daemon_idle,
    download_throughput,
    scale,
    sdk_import,
    sim_throughput,
)
from ._common import SUMMARY_HEADER, BenchError, Section
from ._venv import installed, production_python

OUTPUT = Path(__file__).parents[1] / "docs" / "performance.md"
NOTES_MARKER = "<!-- Below this line: kept by `make bench`, written by hand. -->"

# (collect, uses the production venv): the order of issue 11's table, then the older rows.
BENCHMARKS: list[tuple[Callable[[list[str] | None], Section], bool]] = [
    (daemon_e2e.collect, True),
    (daemon_idle.collect, True),
    (commands.collect, True),
    (sdk_import.collect, True),
    (scale.collect, True),
    (download_throughput.collect, False),
    (sim_throughput.collect, False),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller and fewer; docs/performance.md untouched"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        python = production_python()
        sections = _run_all(python, args.quick)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    rows = [row for section in sections for row in section.rows]
    summary = "\n".join([SUMMARY_HEADER, *(row.markdown() for row in rows)])
    # The page: the summary once, then what each benchmark adds to it.
    details = "\n".join(
        f"## {s.title}\n\n`{s.command}`\n\n" + "\n\n".join(s.details) + "\n"
        for s in sections
        if s.details
    )
    print(f"## Summary{' (quick)' if args.quick else ''}\n\n{summary}\n", flush=True)
    elapsed = time.monotonic() - started
    print(f"bench: {len(rows)} figures in {elapsed:.0f} s", file=sys.stderr)
    if not args.quick:
        commands = [s.command for s in sections]
        OUTPUT.write_text(_page(summary, details, installed(python), elapsed, commands))
        print(f"bench: wrote {OUTPUT}", file=sys.stderr)
    return 0


def _run_all(python: Path, quick: bool) -> list[Section]:
    sections = []
    for collect, production in BENCHMARKS:
        argv = (["--quick"] if quick else []) + (["--python", str(python)] if production else [])
        name = collect.__module__
        print(f"bench: {name} {' '.join(argv)}", file=sys.stderr, flush=True)
        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):  # stray prints: not in the page
            section = collect(argv)
        sections.append(section)
        print(f"bench: {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        print(f"## {section.title}\n\n{section.markdown()}\n", flush=True)
    return sections


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / (1 << 20):.0f} GiB RAM"
    tools = []
    for argv in (["curl", "--version"], ["openssl", "version"]):
        with contextlib.suppress(OSError):
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
            tools.append(" ".join(out.split()[:2]))
    return (
        f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        f"{memory}, Linux {platform.release()}, Python {platform.python_version()}, "
        + ", ".join(tools)
    )


def _notes() -> str:
    """The hand-written part of the page, below the marker, kept from run to run."""
    try:
        text = OUTPUT.read_text()
    except OSError:
        return ""
    _, found, notes = text.partition(NOTES_MARKER)
    return notes.strip() if found else ""


def _page(summary: str, details: str, packages: str, elapsed: float, commands: list[str]) -> str:
    notes = _notes()
    return (
        "# Performance\n\n"
        "Written by `make bench` (`python -m bench`; `make bench-quick` prints the same figures "
        "from smaller runs and writes nothing). Every number below comes from one run, on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed / 60:.0f} minutes, "
        f"on {_machine()}.\n\n"
        "Each figure has a baseline measured in the same run, and the ratio to it is what to "
        "compare between runs: the machines are shared, so absolute numbers vary by tens of "
        "percent. A figure given as `median (min-max)` is over the rounds. Unit tests never "
        "assert timings; these benchmarks hold the goals of issue 11.\n\n"
        "The daemon runs from a production install: `pip install .` into a scratch venv "
        f"(`.bench-venv/`), which holds {packages}.\n\n"
        f"## Summary\n\n{summary}\n\nEach benchmark also runs alone (`--quick`, `--help`): "
        + ", ".join(f"`{command}`" for command in commands)
        + f".\n\n{details}\n"
        f"{NOTES_MARKER}\n\n{notes}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
