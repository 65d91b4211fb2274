"""Run the ``device.system_info`` program and return what it prints (sent to Core as-is)."""

from __future__ import annotations

import logging

from ._errors import SotaError, one_line
from ._process import SpawnError, run_bounded

__all__ = ["SystemInfoError", "run_system_info"]

logger = logging.getLogger("sota_client.sysinfo")


class SystemInfoError(SotaError):
    """The system information could not be gathered; the message is the ``Error`` event text.

    ``System info error: ...`` for a program that is off, missing, too slow or too verbose, and
    ``From utf8 error: ...`` for output that is not UTF-8, as in 2016.
    """


async def run_system_info(
    command: str | None,
    *,
    timeout: float = 60,  # noqa: ASYNC109 - the program's deadline: it is killed when it passes
    max_bytes: int = 1 << 20,
) -> str:
    """Run ``command`` (a program name looked up in ``PATH``, or a path) and return its output.

    As in 2016 the program gets no arguments and no shell, and its exit status and standard
    error are ignored (a failing status is logged). Cancelling the caller kills the program.

    :param command: the configured program; None when ``system_info`` is turned off.
    :param timeout: seconds before the program is killed.
    :param max_bytes: the most output accepted.
    :raises SystemInfoError: turned off, cannot be started, timed out, too much output, or
        output that is not UTF-8.
    """
    if command is None:
        raise SystemInfoError("System info error: system_info is turned off in the config")
    if not command:
        raise SystemInfoError("System info error: the system_info command is empty")
    try:
        result = await run_bounded(
            [command], time_limit=timeout, max_output=max_bytes, kill_on_overflow=True
        )
    except SpawnError as exc:
        raise SystemInfoError(f"System info error: {exc.reason}: {command!r}") from exc
    if result.overflowed:
        raise SystemInfoError(
            f"System info error: {command!r} printed more than {max_bytes} bytes and was stopped"
        )
    if result.timed_out:
        raise SystemInfoError(f"System info error: {command!r} {result.describe_end()}")
    if result.returncode != 0:
        logger.warning(
            "system_info program %r %s (its output is used anyway): %s",
            command,
            result.describe_end(),
            one_line(result.stderr_text()[-2000:]),
        )
    try:
        return result.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SystemInfoError(f"From utf8 error: {_rust_utf8_error(exc)}") from None


def _rust_utf8_error(exc: UnicodeDecodeError) -> str:
    """The display of Rust's ``Utf8Error``, which 2016 put in the ``Error`` event."""
    if exc.reason == "unexpected end of data":
        return f"incomplete utf-8 byte sequence from index {exc.start}"
    return f"invalid utf-8 sequence of {exc.end - exc.start} bytes from index {exc.start}"
