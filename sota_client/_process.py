"""Run an external program without a shell, with a deadline, bounded output and optional shielding.

Package managers and the system_info command both go through :func:`run_bounded`.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, Process

__all__ = ["DEFAULT_MAX_OUTPUT", "ProcessResult", "SpawnError", "run_bounded"]

_Feed = Callable[[bytes], None]

#: How much of each output stream is kept (the tail), unless the caller asks otherwise.
DEFAULT_MAX_OUTPUT = 1 << 20

# After the program exits, how long to keep reading output that a lingering child (a service a
# maintainer script started in the background, say) may still hold open.
_DRAIN_GRACE = 5.0
# After a kill, how long to wait for the process to be reaped before giving up on it.
_REAP_GRACE = 10.0


class SpawnError(Exception):
    """The program could not be started at all (missing, not executable, bad argument)."""

    def __init__(self, program: str, cause: OSError | ValueError) -> None:
        if isinstance(cause, OSError) and cause.errno is not None:
            reason = f"{cause.strerror or os.strerror(cause.errno)} (os error {cause.errno})"
        else:
            reason = str(cause)
        super().__init__(f"cannot run {program!r}: {reason}")
        self.program = program
        #: The operating system's reason in the 2016 display form, e.g.
        #: ``No such file or directory (os error 2)``.
        self.reason = reason


class ProcessResult(msgspec.Struct, frozen=True):
    """What a finished (or killed) program left behind."""

    argv: tuple[str, ...]
    #: The exit status; negative if a signal ended the program (``-9`` after a kill).
    returncode: int
    #: The last ``max_output`` bytes of standard output.
    stdout: bytes
    stderr: bytes
    #: How many bytes at the start of each stream were dropped to honour ``max_output``.
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    #: The deadline passed and the program was killed.
    timed_out: bool = False
    #: Standard output went past ``max_output`` and ``kill_on_overflow`` killed the program.
    overflowed: bool = False
    #: The deadline the program ran under, in seconds.
    timeout: float = math.inf

    @property
    def killed(self) -> bool:
        """A signal ended the program (ours on a timeout, or anyone's)."""
        return self.returncode < 0

    def stdout_text(self) -> str:
        """Standard output as text; bad UTF-8 becomes U+FFFD and a cut head is marked."""
        return _text(self.stdout, self.stdout_dropped)

    def stderr_text(self) -> str:
        """Standard error as text; bad UTF-8 becomes U+FFFD and a cut head is marked."""
        return _text(self.stderr, self.stderr_dropped)

    def describe_end(self) -> str:
        """How the program ended, in words, for logs and result texts."""
        if self.timed_out:
            return f"did not finish within {self.timeout:g} s and was killed"
        if self.overflowed:
            return "wrote too much output and was killed"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"was killed by {name}"
        return f"exited with status {self.returncode}"


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return f"[{dropped} earlier bytes not kept]\n{text}" if dropped else text


class _Tail:
    """Keeps the last ``limit`` bytes written to it and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self.data)


async def run_bounded(
    argv: Sequence[str],
    *,
    time_limit: float,
    max_output: int = DEFAULT_MAX_OUTPUT,
    shield: bool = False,
    kill_on_overflow: bool = False,
    env: Mapping[str, str] | None = None,
) -> ProcessResult:
    """Run ``argv`` (no shell) and collect the tails of its output.

    The program gets ``/dev/null`` as standard input and its own process group, so that a
    timeout kills its children too. With ``shield=True`` cancelling the caller does not touch
    the program: it runs to its end or to ``time_limit``, because killing an installer half way
    (dpkg, rpm) leaves a broken package database. Without a shield, cancellation kills it.

    :param time_limit: seconds before the program (and its process group) gets SIGKILL. It is
        the program's own deadline, kept even under a shield, so not a caller's cancel scope.
    :param max_output: bytes kept of each stream; earlier bytes are dropped and counted.
    :param kill_on_overflow: kill the program as soon as standard output passes ``max_output``.
    :param env: the environment; the daemon's own when None.
    :raises SpawnError: the program could not be started.
    """
    if shield:
        with anyio.CancelScope(shield=True):
            return await _run(tuple(argv), time_limit, max_output, kill_on_overflow, env)
    return await _run(tuple(argv), time_limit, max_output, kill_on_overflow, env)


async def _run(
    argv: tuple[str, ...],
    time_limit: float,
    max_output: int,
    kill_on_overflow: bool,
    env: Mapping[str, str] | None,
) -> ProcessResult:
    if not argv:
        raise SpawnError("", ValueError("empty command"))
    try:
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        raise SpawnError(argv[0], exc) from exc

    out, err = _Tail(max_output), _Tail(max_output)
    overflowed = False

    def on_stdout(chunk: bytes) -> None:
        nonlocal overflowed
        out.feed(chunk)
        if kill_on_overflow and out.total > max_output and not overflowed:
            overflowed = True
            _kill_group(process)

    try:
        with anyio.move_on_after(time_limit) as deadline:
            await _collect(process, on_stdout, err.feed)
    finally:
        # Reached on timeout, on cancellation and on success alike; a process that is still
        # running here must not outlive us, and must be reaped even if we are being cancelled.
        with anyio.CancelScope(shield=True):
            await _finish(process)
    # None only if even SIGKILL did not end it within the grace (a process stuck in the kernel).
    returncode = -signal.SIGKILL if process.returncode is None else process.returncode
    return ProcessResult(
        argv=argv,
        returncode=returncode,
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        timed_out=deadline.cancelled_caught,
        overflowed=overflowed,
        timeout=time_limit,
    )


async def _collect(process: Process, on_stdout: _Feed, on_stderr: _Feed) -> None:
    """Read both streams until the program exits and its output ends (or the grace ends)."""
    assert process.stdout is not None
    assert process.stderr is not None
    drained = [anyio.Event(), anyio.Event()]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, process.stdout, on_stdout, drained[0])
        tg.start_soon(_drain, process.stderr, on_stderr, drained[1])
        await process.wait()
        with anyio.move_on_after(_DRAIN_GRACE):
            for event in drained:
                await event.wait()
        tg.cancel_scope.cancel()


async def _drain(stream: ByteReceiveStream, feed: _Feed, done: anyio.Event) -> None:
    try:
        async for chunk in stream:
            feed(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        done.set()


def _kill_group(process: Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # the group leader was reaped and its id reused: kill just ours
        if process.returncode is None:
            process.kill()


async def _finish(process: Process) -> None:
    if process.returncode is None:
        _kill_group(process)
    with anyio.move_on_after(_REAP_GRACE):
        await process.aclose()
