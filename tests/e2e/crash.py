"""The crash harness: Core (the simulator), the daemon and an SWLM as real processes, one of
them SIGKILLed at a chosen step of an update's life and started again.

Kill points are named steps (``swlm_sdk._killpoints``): every journal transaction of the daemon
and of the SDK, Core's acceptance of a report before the daemon records it, an event delivered
before the daemon records it, the install before its result is recorded. A clean run with
``SOTA_KILL_TRACE`` lists them; one run per point then kills there (``SOTA_KILL_AT``). Random
runs kill at a random moment instead. After the restart, whatever happened, every update must
end with exactly one report at Core, its image intact, and a resumed download must start from
the daemon's last checkpoint, never refetch what it had verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sota_client.sim import CoreSimulator, StatusFault
from swlm_sdk import ResultCode

from .harness import DEVICE, DaemonProcess

SWLM_PROGRAM = Path(__file__).with_name("crash_swlm.py")
REPO = Path(__file__).resolve().parents[2]
CHECKPOINT_STEP = 1 << 20
DEADLINE = 90.0


@dataclass(frozen=True)
class Scenario:
    """What the device does: which updates, and who installs them."""

    name: str
    package_manager: str = "off"  # "off": the SWLM installs; "file": the daemon does
    updates: int = 2
    size: int = 3 << 20  # 3 MiB: checkpoints at 1 and 2 MiB
    failing: bool = False  # Core answers every download 404: DownloadFailed, reported by the daemon

    @property
    def swlm(self) -> bool:
        return self.package_manager == "off" and not self.failing


@dataclass(frozen=True)
class Kill:
    """Where to kill: ``process`` at the ``nth`` pass of point ``name``, or after ``delay`` s."""

    process: str  # "daemon" or "swlm"
    name: str = "random"
    nth: int = 1
    delay: float = 0.0

    def __str__(self) -> str:
        if self.name == "random":
            return f"{self.process}@{self.delay:.2f}s"
        return f"{self.process}:{self.name}@{self.nth}"


@dataclass
class Outcome:
    """What one run saw."""

    killed: bool = False
    traces: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def kill_points(outcome: Outcome) -> list[Kill]:
    """Every (process, point, occurrence) a clean traced run passed."""
    points = []
    for process, names in outcome.traces.items():
        seen: Counter[str] = Counter()
        for name in names:
            seen[name] += 1
            points.append(Kill(process, name, seen[name]))
    return points


class CrashRun:
    """One run of a scenario in its own directory, with its own simulator on its own port."""

    def __init__(self, scenario: Scenario, seed: int = 0) -> None:
        self.scenario = scenario
        self.workdir = Path(tempfile.mkdtemp(prefix="sota-crash-"))
        self.rng = random.Random(seed)
        self.daemon: DaemonProcess | None = None
        self.swlm: subprocess.Popen[bytes] | None = None
        self.update_ids: list[str] = []
        self.expected: dict[str, str] = {}
        self._cut_short: set[str] = set()  # installs the killed SWLM had not finished

    # -- the run ---------------------------------------------------------------------------

    def run(self, kill: Kill | None = None, *, trace: bool = False) -> Outcome:
        """Carry the scenario's updates to their reports, killing once as ``kill`` says."""
        started = time.monotonic()
        outcome = Outcome()
        traces = {p: self.workdir / f"trace-{p}" for p in ("daemon", "swlm")} if trace else {}
        try:
            with CoreSimulator() as sim:
                self._prepare(sim)
                envs = {p: self._env(p, kill, traces.get(p)) for p in ("daemon", "swlm")}
                if self.scenario.swlm:
                    self._start_swlm(envs["swlm"])
                self.daemon = self._daemon(sim)
                self.daemon.start(env=envs["daemon"])
                if kill is not None:
                    outcome.killed = self._kill(kill, sim)
                    self._restart(kill.process)
                self._wait_until_done(sim)
                self._stop()
                self._check(sim, kill)
        except BaseException:
            self._stop()
            print(self.logs())
            raise
        outcome.traces = {
            p: path.read_text().split() for p, path in traces.items() if path.exists()
        }
        outcome.seconds = time.monotonic() - started
        return outcome

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _prepare(self, sim: CoreSimulator) -> None:
        for n in range(self.scenario.updates):
            data = self.rng.randbytes(self.scenario.size)
            sim.add_package(f"pkg{n}", "1.0", data=data)
            update_id = sim.queue_update(DEVICE, f"pkg{n}", "1.0")
            self.update_ids.append(update_id)
            self.expected[update_id] = hashlib.sha256(data).hexdigest()
        (self.workdir / "expected.json").write_text(json.dumps(self.expected))
        if self.scenario.failing:
            sim.inject(StatusFault(status=404, route="download", count=10_000))

    def _env(self, process: str, kill: Kill | None, trace: Path | None) -> dict[str, str]:
        env = {"PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
        if trace is not None:
            env["SOTA_KILL_TRACE"] = str(trace)
        if kill is not None and kill.process == process and kill.name != "random":
            env["SOTA_KILL_AT"] = f"{kill.name}@{kill.nth}"
        return env

    def _daemon(self, sim: CoreSimulator) -> DaemonProcess:
        manager = self.scenario.package_manager
        if manager == "file":
            manager = f"file:{self.workdir / 'installed.txt'}"
        return DaemonProcess(
            self.workdir, sim.url, device={"package_manager": manager}, core={"polling_sec": 1}
        )

    def _start_swlm(self, env: dict[str, str]) -> None:
        config = self.workdir / "swlm.toml"
        config.write_text(
            "[network]\n"
            f'socket_commands_path = "{self.workdir / "cmd.sock"}"\n'
            f'socket_events_path = "{self.workdir / "ev.sock"}"\n'
        )
        with (self.workdir / "swlm.log").open("ab") as log:
            self.swlm = subprocess.Popen(
                [
                    sys.executable,
                    str(SWLM_PROGRAM),
                    str(config),
                    str(self.workdir / "swlm-state"),
                    str(self.workdir / "installed"),
                    str(self.workdir / "expected.json"),
                ],
                stdout=log,
                stderr=log,
                env={**os.environ, **env},
            )

    def _kill(self, kill: Kill, sim: CoreSimulator) -> bool:
        """Let the kill happen; False if the run finished without passing the point."""
        if kill.name == "random":
            time.sleep(kill.delay)  # a random moment, on purpose: not a synchronisation
            proc = self._proc(kill.process)
            if proc is None or proc.poll() is not None:
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return True
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            proc = self._proc(kill.process)
            if proc is not None and proc.poll() is not None:
                assert proc.returncode == -signal.SIGKILL, self.logs()
                return True
            if self._done(sim):
                # The last points come right after the last commit: the process may be
                # dying this very moment.
                if proc is None:
                    return False
                try:
                    return proc.wait(2.0) == -signal.SIGKILL
                except subprocess.TimeoutExpired:
                    return False
            time.sleep(0.02)
        raise AssertionError(f"neither {kill} nor the end came within {DEADLINE} s")

    def _proc(self, process: str) -> subprocess.Popen[bytes] | None:
        if process == "swlm":
            return self.swlm
        return None if self.daemon is None else self.daemon.proc

    def _restart(self, process: str) -> None:
        if process == "swlm":
            if self.swlm is not None and self.swlm.poll() is not None:
                self._note_cut_short()
                self._start_swlm(self._env("swlm", None, None))
        else:
            assert self.daemon is not None
            if self.daemon.running():
                return
            self.daemon.wait_exit(30)
            self.daemon.start(env=self._env("daemon", None, None))

    def _wait_until_done(self, sim: CoreSimulator) -> None:
        deadline = time.monotonic() + DEADLINE
        while not self._done(sim):
            if time.monotonic() > deadline:
                raise AssertionError(f"the updates did not finish within {DEADLINE} s")
            assert self.daemon is not None
            assert self.daemon.running(), "the daemon died"
            time.sleep(0.02)

    def _done(self, sim: CoreSimulator) -> bool:
        reported = {r.update_id for r in sim.reports(DEVICE)}
        if not reported.issuperset(self.update_ids):
            return False
        states = self.daemon_states()
        if any(states.get(u) != "reported" for u in self.update_ids):
            return False
        if self.scenario.swlm:
            swlm = self.swlm_states()
            return all(swlm.get(u) == "sent" for u in self.update_ids)
        return True

    def _stop(self) -> None:
        if self.swlm is not None and self.swlm.poll() is None:
            self.swlm.send_signal(signal.SIGTERM)
            try:
                self.swlm.wait(30)
            except subprocess.TimeoutExpired:
                self.swlm.kill()
                self.swlm.wait()
        if self.daemon is not None and self.daemon.proc is not None:
            self.daemon.stop()  # also closes its notify socket when it has exited already

    # -- what is on disk -------------------------------------------------------------------

    def daemon_states(self) -> dict[str, str]:
        path = self.workdir / "state" / "sota.db"
        if not path.exists():
            return {}
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                return dict(db.execute("SELECT update_id, state FROM updates").fetchall())
            finally:
                db.close()
        except sqlite3.OperationalError:  # not created yet, or mid-migration
            return {}

    def swlm_states(self) -> dict[str, str]:
        path = self.workdir / "swlm-state" / "swlm-journal.json"
        try:
            document = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {key: entry["state"] for key, entry in document.get("updates", {}).items()}

    def logs(self) -> str:
        parts = []
        for name in ("daemon.log", "swlm.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    # -- the promise -----------------------------------------------------------------------

    def _check(self, sim: CoreSimulator, kill: Kill | None) -> None:
        context = f"{self.scenario.name} {kill}:\n{self.logs()}"
        for update_id in self.update_ids:
            reports = [r for r in sim.reports(DEVICE) if r.update_id == update_id]
            assert [r.status for r in reports] == [204], f"reports of {update_id}: {context}"
            (result,) = reports[0].results
            assert result.result_code in self._allowed_codes(kill, update_id), context
            if result.result_code == ResultCode.OK and self.scenario.swlm:
                image = (self.workdir / "installed" / update_id).read_bytes()
                assert hashlib.sha256(image).hexdigest() == self.expected[update_id], context
            self._check_download(sim, update_id, kill, context)
        assert self.daemon_states() == dict.fromkeys(self.update_ids, "reported"), context
        assert not list((self.workdir / "packages").glob("*.part")), context
        assert "Traceback" not in self.logs(), context

    def _allowed_codes(self, kill: Kill | None, update_id: str) -> set[int]:
        if self.scenario.failing:
            return {ResultCode.GENERAL_ERROR}
        if kill is not None and kill.process == "swlm" and update_id in self._cut_short:
            return {ResultCode.OK, ResultCode.INTERNAL_ERROR}  # "the install was interrupted"
        return {ResultCode.OK}

    def _note_cut_short(self) -> None:
        """Before the SWLM restarts: the updates its journal says the killed run was installing
        (installs run while reports go out, so a kill at any point may cut one short)."""
        self._cut_short = {u for u, state in self.swlm_states().items() if state == "installing"}

    def _check_download(
        self, sim: CoreSimulator, update_id: str, kill: Kill | None, context: str
    ) -> None:
        requests = [r for r in sim.requests if r.route == "download" and update_id in r.path]
        daemon_killed = kill is not None and kill.process == "daemon"
        if self.scenario.failing:
            assert 1 <= len(requests) <= (2 if daemon_killed else 1), context
            return
        assert 1 <= len(requests) <= (2 if daemon_killed else 1), context
        assert "range" not in requests[0].headers, context
        for resumed in requests[1:]:
            offset = resumed.headers.get("range", "bytes=0-").removeprefix("bytes=")
            start = int(offset.rstrip("-"))
            # Only from a checkpoint: what was verified is never fetched again.
            assert start % CHECKPOINT_STEP == 0, context
            if kill is not None and kill.name == "journal.download_checkpoint":
                assert start > 0, context


def run_points(
    scenario: Scenario,
    kills: list[Kill],
    *,
    workers: int = 4,
    report: Callable[[Kill, Outcome], None] | None = None,
) -> list[tuple[Kill, Outcome]]:
    """Run one crash run per kill, ``workers`` at a time; raise the first failure."""
    from concurrent.futures import ThreadPoolExecutor

    def one(kill: Kill) -> tuple[Kill, Outcome]:
        crash = CrashRun(scenario, seed=zlib.crc32(str(kill).encode()))
        try:
            outcome = crash.run(kill)
        finally:
            crash.cleanup()
        if report is not None:
            report(kill, outcome)
        return kill, outcome

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, kills))
