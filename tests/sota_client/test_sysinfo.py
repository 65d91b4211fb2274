"""The system_info runner against small real programs: no shell, no arguments, 2016 errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sota_client._errors import SotaError
from sota_client._sysinfo import SystemInfoError, run_system_info

from .pkgbuild import write_script

pytestmark = pytest.mark.anyio


async def test_returns_what_the_program_prints(tmp_path: Path) -> None:
    program = write_script(tmp_path, "system_info.sh", 'printf \'{"cpu":"x86","ü":1}\\n\'\n')
    assert await run_system_info(str(program)) == '{"cpu":"x86","ü":1}\n'


async def test_a_program_name_is_looked_up_in_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_script(tmp_path / "bin", "system_info.sh", "echo from-path\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert await run_system_info("system_info.sh") == "from-path\n"


async def test_no_shell_and_no_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(f"echo hi; touch {marker}")
    assert str(info.value) == (
        f"System info error: No such file or directory (os error 2): 'echo hi; touch {marker}'"
    )
    assert not marker.exists()


async def test_exit_status_and_stderr_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program = write_script(tmp_path, "info", "echo partial\necho 'lshw: not found' >&2\nexit 3\n")
    with caplog.at_level(logging.WARNING):
        assert await run_system_info(str(program)) == "partial\n"
    assert "exited with status 3" in caplog.text
    assert "lshw: not found" in caplog.text


async def test_turned_off() -> None:
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(None)
    assert str(info.value) == "System info error: system_info is turned off in the config"
    assert isinstance(info.value, SotaError)


async def test_empty_command() -> None:
    with pytest.raises(SystemInfoError, match=r"^System info error: the system_info command is"):
        await run_system_info("")


async def test_missing_program(tmp_path: Path) -> None:
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(str(tmp_path / "system_info.sh"))
    assert str(info.value) == (
        "System info error: No such file or directory (os error 2): "
        f"{str(tmp_path / 'system_info.sh')!r}"
    )


async def test_program_that_is_not_executable(tmp_path: Path) -> None:
    program = tmp_path / "info"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o644)
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(str(program))
    assert str(info.value).startswith("System info error: Permission denied (os error 13)")


async def test_invalid_utf8(tmp_path: Path) -> None:
    program = write_script(tmp_path, "info", "printf 'abc\\377def'\n")
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(str(program))
    assert str(info.value) == "From utf8 error: invalid utf-8 sequence of 1 bytes from index 3"


async def test_utf8_cut_short(tmp_path: Path) -> None:
    program = write_script(tmp_path, "info", "printf 'ab\\342\\202'\n")
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(str(program))
    assert str(info.value) == "From utf8 error: incomplete utf-8 byte sequence from index 2"


async def test_a_program_that_hangs_is_killed(tmp_path: Path) -> None:
    program = write_script(tmp_path, "info", "echo started\nsleep 3600\n")
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(str(program), timeout=0.5)
    assert str(info.value) == (
        f"System info error: {str(program)!r} did not finish within 0.5 s and was killed"
    )


async def test_too_much_output(tmp_path: Path) -> None:
    program = write_script(tmp_path, "info", "exec yes\n")
    with pytest.raises(SystemInfoError) as info:
        await run_system_info(str(program), max_bytes=4096)
    assert str(info.value) == (
        f"System info error: {str(program)!r} printed more than 4096 bytes and was stopped"
    )


async def test_output_of_exactly_the_limit_is_fine(tmp_path: Path) -> None:
    program = write_script(tmp_path, "info", "head -c 4096 /dev/zero | tr '\\0' x\n")
    assert await run_system_info(str(program), max_bytes=4096) == "x" * 4096
