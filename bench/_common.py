"""What the benchmarks share: the summary rows, statistics, a daemon process launcher, CPU and
memory readings of another process, and the failure that ends a benchmark loudly."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import DEVICE, daemon_config, write_config

__all__ = [
    "DEVICE",
    "BenchError",
    "Daemon",
    "Row",
    "Section",
    "cpu_seconds",
    "proc_kib",
    "run_main",
    "spread",
    "unix_round_trip",
    "write_random",
]

READY_TIMEOUT = 30.0
MiB = 1 << 20


class BenchError(Exception):
    """The daemon (or a baseline) misbehaved: a wrong size, no READY=1, an error reply. The
    benchmark stops with this message and a non-zero exit status."""


@dataclass(frozen=True)
class Row:
    """One line of the summary table: issue 11's table, with the baseline of this run."""

    what: str
    measured: str
    baseline: str
    ratio: str
    goal: str
    met: bool | None = None  # None: no goal to meet (information)

    def markdown(self) -> str:
        met = {True: "yes", False: "**no**", None: ""}[self.met]
        cells = (self.what, self.measured, self.baseline, self.ratio, self.goal, met)
        return "| " + " | ".join(cells) + " |"


SUMMARY_HEADER = (
    "| what | measured | baseline, same run | ratio | goal | met |\n|---|---|---|---|---|---|"
)


@dataclass
class Section:
    """What one benchmark found: its summary rows and its detailed markdown."""

    title: str
    command: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [SUMMARY_HEADER, *(row.markdown() for row in self.rows)] if self.rows else []
        text = "\n".join(parts)
        if self.details:
            text += ("\n\n" if text else "") + "\n\n".join(self.details)
        return text


def run_main(collect: Callable[[list[str] | None], Section], argv: list[str] | None) -> int:
    """A benchmark's ``main``: print its section; on :class:`BenchError` say why, return 1."""
    try:
        section = collect(argv)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    print(section.markdown())
    return 0


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    """``median (min-max)``, or the one value."""
    if len(values) == 1:
        return fmt.format(values[0])
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})"


def write_random(path: Path, size: int) -> str:
    """A file of ``size`` random bytes; returns its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` and all its threads, dead ones included: the same
    sum as ``/proc/PID/stat``'s utime + stime, read from the process's CPU clock, which
    counts nanoseconds where ``/proc`` counts 10 ms ticks."""
    clock = (~pid << 3) | 2  # the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    try:
        return time.clock_gettime(clock)
    except OSError as exc:
        raise BenchError(f"cannot read the CPU clock of process {pid}: {exc}") from exc


def proc_kib(pid: int, field_name: str) -> int:
    """A ``/proc/PID/status`` figure in KiB: ``VmRSS``, ``VmHWM``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise BenchError(f"process {pid} is gone ({exc})") from exc
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field_name} in /proc/{pid}/status")


def unix_round_trip(path: Path, request: bytes) -> tuple[float, bytes]:
    """One command as an SWLM sends it (connect, send, half-close, read to EOF): seconds and
    the reply. A blocking socket, so the client costs the same for every server."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return time.perf_counter() - start, b"".join(chunks)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would change which code a child runs or how it logs."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "SOTA_", "RUST_LOG")) and key != "NOTIFY_SOCKET"
    }
    env.update(extra)
    return env


class Daemon:
    """One ``sota_client`` process started by the console script of ``python``'s venv (the
    production install, or the dev venv), with the default log level, in ``workdir``.

    :meth:`start` returns the seconds from exec to ``READY=1`` on a notify socket it binds.
    """

    def __init__(
        self,
        python: Path,
        workdir: Path,
        core_url: str,
        *,
        device: str = DEVICE,
        polling: bool = True,
        **sections: dict[str, Any],
    ) -> None:
        self.python = python.absolute()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.commands_socket = workdir / "cmd.sock"
        self.events_socket = workdir / "ev.sock"
        self.packages_dir = workdir / "packages"
        self.state_dir = workdir / "state"
        self.journal_path = self.state_dir / "sota.db"
        self.log_path = workdir / "daemon.log"
        sections = {**sections, "core": {"polling": polling, **sections.get("core", {})}}
        config = daemon_config(workdir, core_url, device, sections)
        self.config_path = write_config(workdir / "sota.toml", config)
        self.proc: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self._starts = 0

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"the daemon is not running:\n{self.log_tail()}")
        return self.proc.pid

    def start(self) -> float:
        """Start the daemon; the seconds from exec to READY=1. The notify socket stays bound
        (and read) while the daemon runs, as systemd's does."""
        script = self.python.parent / "sota_client"
        if not script.exists():
            raise BenchError(f"{script} does not exist: is sota-client installed there?")
        self._close_notify()
        notify_path = self.workdir / f"notify{self._starts}"
        self._starts += 1
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        self._notify = notify
        env = clean_env(NOTIFY_SOCKET=str(notify_path))
        with self.log_path.open("ab") as log:
            start = time.perf_counter()
            self.proc = subprocess.Popen(
                [str(script), "--config", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        try:
            elapsed = self._wait_ready(notify, start)
        except BaseException:
            self.kill()
            raise
        threading.Thread(target=self._drain, args=(notify,), daemon=True).start()
        return elapsed

    @staticmethod
    def _drain(notify: socket.socket) -> None:
        while True:
            try:
                notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:  # closed
                return

    def _close_notify(self) -> None:
        notify, self._notify = self._notify, None
        if notify is not None:
            path = notify.getsockname()
            notify.close()
            os.unlink(path)

    def _wait_ready(self, notify: socket.socket, start: float) -> float:
        assert self.proc is not None
        while time.perf_counter() - start < READY_TIMEOUT:
            try:
                message = notify.recv(4096).decode()
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise BenchError(
                        f"the daemon exited with {self.proc.returncode} before READY=1:\n"
                        f"{self.log_tail()}"
                    ) from None
                continue
            if "READY=1" in message.split("\n"):
                return time.perf_counter() - start
        raise BenchError(f"no READY=1 within {READY_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM; the daemon must exit cleanly within 30 s."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is not None:
            raise BenchError(f"the daemon died with {proc.returncode}:\n{self.log_tail()}")
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"the daemon did not stop on SIGTERM:\n{self.log_tail()}") from None
        self.proc = None
        self._close_notify()
        if status != 0:
            raise BenchError(f"the daemon exited with {status} on SIGTERM:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._close_notify()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.stop()
        else:
            self.kill()

    def command(self, text: str) -> tuple[float, bytes]:
        """One command on the commands socket: seconds and the reply."""
        try:
            return unix_round_trip(self.commands_socket, text.encode())
        except OSError as exc:
            raise BenchError(f"the command {text!r} failed: {exc}\n{self.log_tail()}") from exc

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Helper:
    """A small Python program (a baseline: an echo server, a poller, a sleeper) run by
    ``python`` in ``cwd``; it prints one line when it is ready."""

    def __init__(self, python: Path, code: str, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(python.absolute()), "-I", "-c", code, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            assert self.proc.stderr is not None
            raise BenchError(f"a baseline program failed:\n{self.proc.stderr.read().decode()}")

    @property
    def pid(self) -> int:
        if self.proc.poll() is not None:
            assert self.proc.stderr is not None
            error = self.proc.stderr.read().decode()
            raise BenchError(f"a baseline program died with {self.proc.returncode}:\n{error}")
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def require(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            raise BenchError(f"{program} is not installed (it is a baseline)")


def time_exec(argv: Sequence[str], cwd: Path) -> float:
    """Seconds from exec to exit of a program that must succeed."""
    argv = [os.path.abspath(argv[0]) if os.sep in argv[0] else argv[0], *argv[1:]]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed with {done.returncode}: {done.stderr.decode()}")
    return elapsed
