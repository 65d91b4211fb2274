"""How the managers that drive a command-line tool (dpkg, rpm, otbpkg) run it and read results."""

from __future__ import annotations

import os
from collections.abc import Sequence

from swlm_sdk.protocol import ResultCode

from .._process import ProcessResult, SpawnError, run_bounded
from ._base import InstallOutcome, PackageManagerError

__all__ = [
    "LIST_MAX_OUTPUT",
    "LIST_TIMEOUT",
    "failure_text",
    "path_argument",
    "run_install",
    "run_listing",
    "tool_env",
]

#: Seconds a listing may take; it changes nothing, so it is not shielded and may be killed.
LIST_TIMEOUT = 300.0
#: A listing longer than this is refused rather than cut (a cut list would be a wrong list).
LIST_MAX_OUTPUT = 16 << 20
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# How much of a failing tool's standard error goes into an error message.
_STDERR_IN_MESSAGE = 2000


def tool_env() -> dict[str, str]:
    """The daemon's environment with untranslated messages and the system directories in PATH.

    The results are told apart by English phrases (``already installed``), which a localised
    dpkg or rpm would print in another language. dpkg refuses to run unless ``ldconfig`` and
    ``start-stop-daemon`` are in PATH, which a PATH without the sbin directories (a plain
    user's, say) lacks, so those are added at the end when missing.
    """
    env = dict(os.environ)
    env["LC_ALL"] = "C.UTF-8"
    env.pop("LANGUAGE", None)
    path = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if entry]
    path += [entry for entry in _SYSTEM_PATH if entry not in path]
    env["PATH"] = os.pathsep.join(path)
    return env


async def run_listing(argv: Sequence[str], *, time_limit: float) -> str:
    """Run a listing command and return its standard output.

    :raises PackageManagerError: the tool could not be run, failed, timed out, printed too
        much, or printed something that is not UTF-8.
    """
    tool = argv[0]
    try:
        result = await run_bounded(
            argv,
            time_limit=time_limit,
            max_output=LIST_MAX_OUTPUT,
            kill_on_overflow=True,
            env=tool_env(),
        )
    except SpawnError as exc:
        raise PackageManagerError(f"Package error: Error fetching packages: {exc}") from exc
    if result.overflowed:
        raise PackageManagerError(
            f"Package error: {tool} listed more than {LIST_MAX_OUTPUT} bytes and was stopped"
        )
    if result.returncode != 0:
        stderr = result.stderr_text().strip()[-_STDERR_IN_MESSAGE:]
        detail = f": {stderr}" if stderr else ""
        raise PackageManagerError(
            f"Package error: Error fetching packages: {tool} {result.describe_end()}{detail}"
        )
    try:
        return result.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageManagerError(
            f"Parse error: Error parsing package: {tool} printed invalid UTF-8: {exc}"
        ) from None


async def run_install(argv: Sequence[str], *, time_limit: float) -> ProcessResult | InstallOutcome:
    """Run an installer shielded from cancellation; an outcome already if it could not start."""
    try:
        return await run_bounded(argv, time_limit=time_limit, shield=True, env=tool_env())
    except SpawnError as exc:
        return InstallOutcome(ResultCode.GENERAL_ERROR, str(exc))


def failure_text(result: ProcessResult) -> str:
    """The 2016 ``stdout: <out>\\nstderr: <err>`` text, led by how it ended unless by exit code."""
    text = f"stdout: {result.stdout_text()}\nstderr: {result.stderr_text()}"
    if result.timed_out or result.overflowed or result.killed:
        return f"{result.argv[0]} {result.describe_end()}\n{text}"
    return text


def path_argument(path: str) -> str:
    """Keep a relative path that starts with ``-`` from being read as an option."""
    return f"./{path}" if path.startswith("-") else path
