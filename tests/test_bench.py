"""The benchmarks still run (``make bench`` is not part of ``make test``): each of the cheap ones
once, with tiny sizes and one round, in this venv. Only the rows are checked, never a timing."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import commands, daemon_e2e, daemon_idle, scale, sdk_import

pytestmark = pytest.mark.e2e

PYTHON = ["--python", sys.executable]


def _rows(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out
    assert "| what | measured | baseline, same run | ratio | goal | met |" in out
    return out


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="no curl")
def test_downloads(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--size-mib", "2", "--big-mib", "4", "--rounds", "1", *PYTHON]
    assert daemon_e2e.main(argv) == 0
    out = _rows(capsys)
    assert "2 MiB update, simulator → daemon → `packages_dir`" in out
    assert "CPU (user+sys) of that download vs `curl -o` + `openssl dgst -sha256`" in out
    assert "peak RSS (VmHWM) during a 2 MiB and a 4 MiB download" in out
    assert "the same download vs the disk's durable rate" in out
    shm = Path("/dev/shm")
    on_tmpfs = "the same download with `packages_dir` and curl's file on tmpfs" in out
    assert on_tmpfs == (shm.is_dir() and os.access(shm, os.W_OK))


def test_idle(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--starts", "1", "--rounds", "1", "--window", "1", "--polls", "1", *PYTHON]
    assert daemon_idle.main(argv) == 0
    out = _rows(capsys)
    for what in ("idle RSS", "exec → `READY=1`", "CPU per poll with nothing pending"):
        assert f"| {what}" in out


def test_commands_and_import(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["--rounds", "1", "--count", "5", *PYTHON]) == 0
    assert "| `ls` round trip on the commands socket" in _rows(capsys)
    assert sdk_import.main(["--runs", "1", *PYTHON]) == 0
    assert "| `import swlm_sdk`, fresh interpreter" in _rows(capsys)


def test_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale.main(["--updates", "2,4", "--events", "5,10", *PYTHON]) == 0
    out = _rows(capsys)
    assert "| one poll returning N updates" in out
    assert "| N undelivered events in the journal" in out


def test_a_misbehaving_daemon_fails_loudly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No sota_client next to the interpreter: exit status 1 and a message, no table."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.symlink_to(sys.executable)
    assert commands.main(["--rounds", "1", "--count", "1", "--python", str(fake)]) == 1
    captured = capsys.readouterr()
    assert "bench: FAILED" in captured.err
    assert "| what |" not in captured.out


def test_the_page_keeps_the_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "performance.md"
    page.write_text(f"# old figures\n\n{bench_main.NOTES_MARKER}\n\n## Profiles\n\nkept\n")
    monkeypatch.setattr(bench_main, "OUTPUT", page)
    text = bench_main._page("| summary |", "## details\n", "anyio==4", 60.0, ["python -m bench.x"])
    assert "old figures" not in text
    assert text.index("| summary |") < text.index(bench_main.NOTES_MARKER)
    assert text.endswith("## Profiles\n\nkept\n")
