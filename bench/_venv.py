"""The production install the daemon benchmarks run: a scratch venv with ``pip install .``
(not editable, no test or lint extras, ``.pyc`` files compiled by pip as on a device).

It lives in ``.bench-venv/`` at the top of the repository (it ignores itself for git) and is
reused while it is current: rebuilt when ``pyproject.toml`` changes (the dependencies), the
project alone reinstalled when a file of ``sota_client/`` or ``swlm_sdk/`` changes.
Run ``python -m bench._venv`` to build it and print its interpreter.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ._common import BenchError, clean_env

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench-venv"
STAMP = VENV / "bench-stamp.json"
SOURCES = ("sota_client", "swlm_sdk")


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _source_files() -> list[Path]:
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for top in SOURCES:
        files += [
            path
            for path in (ROOT / top).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        ]
    return files


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"pip install {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def chosen_python(python: Path | None) -> Path:
    """The interpreter a benchmark's ``--python`` names, else the production venv's."""
    return production_python() if python is None else python


def production_python(log: bool = True) -> Path:
    """The interpreter of the production venv, built or brought up to date first."""
    python = VENV / "bin" / "python"
    deps = _digest([ROOT / "pyproject.toml"])
    source = _digest(_source_files())
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    if not python.exists() or stamp.get("deps") != deps:
        if log:
            print(f"bench: building the production venv {VENV}", file=sys.stderr, flush=True)
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, env=clean_env())
        (VENV / ".gitignore").write_text("# made by bench/_venv.py\n*\n")
        _pip(python, ".")
    elif stamp.get("source") != source:
        if log:
            print("bench: reinstalling sota-client in the production venv", file=sys.stderr)
        _pip(python, "--no-deps", "--force-reinstall", ".")
    else:
        return python
    STAMP.write_text(json.dumps({"deps": deps, "source": source}))
    return python


def installed(python: Path) -> str:
    """``name==version`` of every package in ``python``'s environment, on one line."""
    done = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--exclude", "pip"],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    names = [line for line in done.stdout.split() if not line.startswith("setuptools")]
    return ", ".join(names)


if __name__ == "__main__":
    print(production_python())
