"""``import swlm_sdk`` in a fresh interpreter, less the bare interpreter's start; no httpx.

Runs ``python -I -c "import swlm_sdk"``, ``python -I -c pass`` and ``python -I -c "import
msgspec"`` (the floor: the protocol's types are msgspec structs) in turns, ``--runs`` times
each, in the production install (``bench._venv``), from exec to exit, and reports the
differences of the medians to the bare start. A run in which ``import swlm_sdk`` brought in httpx
fails the benchmark. Run: ``.venv/bin/python -m bench.sdk_import [--quick] [--python PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from ._common import BenchError, Row, Section, clean_env, run_main, spread, time_exec
from ._venv import chosen_python

IMPORT = "import sys, swlm_sdk; sys.exit(3 if 'httpx' in sys.modules else 0)"
COUNT = (
    "import sys; before = set(sys.modules); import swlm_sdk; print(len(set(sys.modules) - before))"
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 runs")
    parser.add_argument("--runs", type=int, help="runs of each (default 20; quick 10)")
    parser.add_argument("--python", type=Path, help="the venv's interpreter (default: production)")
    return parser


def collect(argv: list[str] | None = None) -> Section:
    args = parser().parse_args(argv)
    runs = args.runs or (10 if args.quick else 20)
    python = chosen_python(args.python)
    bare, sdk, floor = [], [], []
    with tempfile.TemporaryDirectory(prefix="sota-import-") as cwd:
        where = Path(cwd)
        done = subprocess.run(
            [str(python), "-I", "-c", IMPORT], cwd=where, env=clean_env(), check=False
        )
        if done.returncode == 3:
            raise BenchError("import swlm_sdk imported httpx")
        for n in range(runs + 1):  # the first of each warms the caches
            times = (
                time_exec([str(python), "-I", "-c", "pass"], where),
                time_exec([str(python), "-I", "-c", IMPORT], where),
                time_exec([str(python), "-I", "-c", "import msgspec"], where),
            )
            if n:
                bare.append(times[0])
                sdk.append(times[1])
                floor.append(times[2])
        modules = subprocess.run(
            [str(python), "-I", "-c", COUNT],
            cwd=where,
            env=clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    import_ms = (statistics.median(sdk) - statistics.median(bare)) * 1000
    floor_ms = (statistics.median(floor) - statistics.median(bare)) * 1000
    bare_ms = spread([b * 1000 for b in bare], "{:.1f}")
    rows = [
        Row(
            f"`import swlm_sdk`, fresh interpreter, median of {runs} less the bare start",
            f"{import_ms:.1f} ms ({modules} modules, no httpx)",
            f"`import msgspec` alone: {floor_ms:.1f} ms (bare start {bare_ms} ms)",
            f"{import_ms / floor_ms:.2f}x msgspec's" if floor_ms > 0 else "-",
            "≤ 30 ms, with no httpx",
            import_ms <= 30,
        )
    ]
    return Section("Importing the SDK", "python -m bench.sdk_import", rows)


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


if __name__ == "__main__":
    raise SystemExit(main())
