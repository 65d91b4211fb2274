"""Runs the daemon as a real process against the simulator, as an integrator would.

Readiness is the daemon's own ``READY=1`` on a ``NOTIFY_SOCKET`` the test binds (the systemd
``Type=notify`` contract), so no test sleeps to wait for start-up.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEVICE = "123e4567-e89b-12d3-a456-426655440000"
READY_TIMEOUT = 30.0


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def auth_section(
    url: str, workdir: Path, client_id: str = "device", client_secret: str = "secret"
) -> dict[str, str]:
    """An ``[auth]`` section for the simulator at ``url``, with its credentials file."""
    return {
        "server": url,
        "client_id": client_id,
        "client_secret": client_secret,
        "credentials_file": str(workdir / "credentials.toml"),
    }


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def daemon_config(
    workdir: Path, core_url: str, device: str, sections: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """A test daemon's config: everything under ``workdir``, the socket gateway on, polls every
    second, then ``sections`` merged in key by key."""
    config: dict[str, dict[str, Any]] = {
        "core": {"server": core_url, "polling_sec": 1},
        "device": {
            "uuid": device,
            "packages_dir": str(workdir / "packages"),
            "state_dir": str(workdir / "state"),
            "system_info": "",
            "certificates_path": str(workdir / "no-ca.pem"),
        },
        "gateway": {"socket": True},
        "network": {
            "socket_commands_path": str(workdir / "cmd.sock"),
            "socket_events_path": str(workdir / "ev.sock"),
        },
    }
    for name, keys in sections.items():
        config.setdefault(name, {}).update(keys)
    return config


class DaemonProcess:
    """One ``sota_client`` process with its config, log file and notify socket."""

    def __init__(self, workdir: Path, core_url: str, **sections: dict[str, Any]) -> None:
        self.workdir = workdir
        self.commands_socket = workdir / "cmd.sock"
        self.events_socket = workdir / "ev.sock"
        self.packages_dir = workdir / "packages"
        self.state_dir = workdir / "state"
        self.config_path = write_config(
            workdir / "sota.toml", daemon_config(workdir, core_url, DEVICE, sections)
        )
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.statuses: list[str] = []
        self._notify: socket.socket | None = None

    def start(
        self,
        *,
        stdin: int | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        open_files: int | None = None,
    ) -> DaemonProcess:
        """Start the process and return once it said READY=1.

        :param env: more environment variables (``SOTA_KILL_AT``, say).
        :param open_files: start it with this soft limit on open files.
        """
        notify_path = str(self.workdir / f"notify{self.runs}")
        self.runs += 1
        self._close_notify()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        self._notify = notify
        base = {
            **os.environ,
            "NOTIFY_SOCKET": notify_path,
            "SOTA_LOG": "debug",
            "PYTHONUNBUFFERED": "1",
        }
        environment = {**base, **(env or {})}
        environment.pop("SOTA_CONFIG", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sota_client", "--config", str(self.config_path)],
                stdin=stdin,
                stdout=subprocess.PIPE if stdin == subprocess.PIPE else log,
                stderr=log,
                env=environment,
                preexec_fn=None if open_files is None else _soft_open_files(open_files),
            )
        try:
            self._wait_ready(notify)
        except BaseException:
            self._close_notify()
            raise
        return self

    def _close_notify(self) -> None:
        notify = self._notify
        if notify is not None:
            self.drain_notifications()
            path = notify.getsockname()
            notify.close()
            os.unlink(path)
            self._notify = None

    def drain_notifications(self) -> list[str]:
        """Every sd_notify message received since the last call, also kept in ``statuses``."""
        notify = self._notify
        got: list[str] = []
        if notify is None:
            return got
        notify.setblocking(False)
        while True:
            try:
                got.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
        notify.setblocking(True)
        self.statuses += got
        return got

    def _wait_ready(self, notify: socket.socket) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        notify.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                message = notify.recv(4096).decode()
            except TimeoutError:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"the daemon exited with {self.proc.returncode}:\n{self.log()}"
                    ) from None
                continue
            self.statuses.append(message)
            if "READY=1" in message.split("\n"):
                return
        raise AssertionError(f"no READY=1 within {READY_TIMEOUT} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and return its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
            self._close_notify()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            return status
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the daemon did not stop on {sig!r}:\n{self.log()}") from None

    def kill(self) -> None:
        """``kill -9``: no clean-up at all, as in a power cut of the process."""
        self.stop(signal.SIGKILL)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process ends (a kill point fired), or None at ``timeout``."""
        assert self.proc is not None
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_notify()
        return status

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """Wait until the log satisfies ``predicate`` (the daemon flushes every line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if predicate(text):
                return text
            if not self.running():
                break
            time.sleep(0.05)
        raise AssertionError(f"the log never matched:\n{self.log()}")


def _soft_open_files(limit: int) -> Callable[[], None]:
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    return apply


MakeDaemon = Callable[..., DaemonProcess]
"""The ``make_daemon`` fixture: ``make_daemon(core_url, section={key: value}, ...)``."""
