"""Power cuts for the A/B firmware example ``examples/swlm_flash``: the crash harness of
``crash.py`` on a device that reboots.

A device is a work directory: two slot files (slot a holds the factory image), the boot state
(the bootloader's environment) and a boot id file (the kernel's boot id). The daemon and
``swlm_flash.py`` run as real processes against the Core simulator. A power cut SIGKILLs both,
writes a new boot id and starts both again; a restart keeps the boot id. The device is cut
either because a kill point fired (``SOTA_KILL_AT``, always in the SWLM) or because the SWLM
waits for a reboot (its journal says so), which is when its operator reboots it. Kill points
are counted over the whole run, across the SWLM's many starts, so that ``flash.booted@2`` is
the bootloader's work in the first boot after the install, whichever process does it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sota_client.sim import CoreSimulator
from swlm_sdk import ResultCode

from .crash import DEADLINE, REPO, CrashRun, Kill, Outcome, Scenario
from .harness import DEVICE

FLASH_DIR = REPO / "examples" / "swlm_flash"
if str(FLASH_DIR) not in sys.path:  # the example is a script, imported the way it runs
    sys.path.insert(0, str(FLASH_DIR))
import swlm_flash  # noqa: E402

FLASH = FLASH_DIR / "swlm_flash.py"
SWLM_CLI = [sys.executable, "-m", "swlm_sdk"]
IMAGE_SIZE = 64 << 10
SLOT_SIZE = 128 << 10
FACTORY = b"factory firmware 1.0\n" * 1000
FIRMWARE = "fw"
MAX_BOOTS = 10  # a run that needs more is stuck in a boot loop
INTERRUPTED = "the install was interrupted"
TOOL_TIMEOUT = 60.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Plan:
    """How the device runs: the SWLM's options, and what its operator does at each boot."""

    name: str
    max_tries: int = 3
    confirm_by_hand: bool = False
    confirm: bool = False  # run `swlm_flash.py confirm` once the SWLM awaits a confirmation
    restarts: int = 0  # restarts (no reboot) of both processes in a boot before rebooting
    rot: bool = False  # slot b changes after the install: it fails its check after the reboot
    ok: bool = True  # the verdict of a run without kills
    text: str = ""  # a part of that verdict's report text


@dataclass(frozen=True)
class Cut:
    """The device just before one power cut (or restart)."""

    boot: int
    why: str  # "killed", "reboot" or "restart"
    reports: int  # at the simulator, for the update
    daemon: str | None  # the daemon's state for the update
    swlm: dict[str, Any] | None  # the SWLM's journal entry for the update
    boot_state: dict[str, Any]
    passed: int  # kill points the SWLM passed before it, in all its starts


@dataclass
class RebootOutcome(Outcome):
    """What one run saw, with the device at each cut and the confirm commands it ran."""

    kills: list[str] = field(default_factory=list)  # where the SWLM was to be killed
    cuts: list[Cut] = field(default_factory=list)
    confirms: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    boots: int = 0  # the boot the run ended in (0: the one of the install)
    result: tuple[int, str] = (-1, "")  # the code and text of the report at Core
    boot_state: dict[str, Any] = field(default_factory=dict)  # at the end


class RebootRun(CrashRun):
    """One device, one update (a bundle of ``IMAGE_SIZE`` random bytes) carried to its report
    through as many power cuts as the plan and the kills make; its own simulator and dir."""

    def __init__(self, plan: Plan, seed: int = 0) -> None:
        super().__init__(Scenario(plan.name, updates=1, size=IMAGE_SIZE), seed)
        self.plan = plan
        self.slot_a = self.workdir / "slot-a"
        self.slot_b = self.workdir / "slot-b"
        self.boot_state = self.workdir / "boot-state.json"
        self.boot_id_file = self.workdir / "boot_id"
        self.state_dir = self.workdir / "swlm-state"
        self.trace = self.workdir / "trace-swlm"
        self.image = self.rng.randbytes(IMAGE_SIZE)
        self.kills: list[Kill] = []
        self.fired = 0  # how many of ``kills`` fired
        self.outcome = RebootOutcome()
        self._log_start = 0  # where the log of the SWLM's last start begins
        self._restarted = 0  # in this boot

    @property
    def update_id(self) -> str:
        (update_id,) = self.update_ids
        return update_id

    # -- the run ---------------------------------------------------------------------------

    def run(
        self,
        kill: Kill | None = None,
        *,
        trace: bool = False,
        kills: Sequence[Kill] = (),
        then: Callable[[RebootRun, CoreSimulator], None] | None = None,
    ) -> RebootOutcome:
        """Carry the update to its report, killing the SWLM at ``kill`` (or at each of
        ``kills`` in turn) and cutting the power after each kill; then, with both processes
        still up, ``then(self, sim)``; then check the promise. ``trace`` is ignored (it is
        CrashRun's): the SWLM's trace is always kept, since it counts the passes of each point
        over the SWLM's starts."""
        del trace
        started = time.monotonic()
        self.kills = [kill] if kill is not None else list(kills)
        self.outcome.kills = [str(k) for k in self.kills]
        try:
            with CoreSimulator() as sim:
                self._prepare(sim)
                self.daemon = self._daemon(sim)
                self._power_on()
                self._carry_on(sim)
                if then is not None:
                    then(self, sim)
                self._stop()
                self._check(sim, kill)
        except BaseException:
            self._stop()
            print(f"--- run {self.plan.name} {[str(k) for k in self.kills]} ---\n{self.logs()}")
            raise
        self.outcome.killed = self.fired == len(self.kills) > 0
        self.outcome.traces = {"swlm": self._passes()}
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def _prepare(self, sim: CoreSimulator) -> None:
        """The factory's device (1.0 in slot a, active), and update 2.0 queued at Core."""
        self.slot_a.write_bytes(FACTORY)
        self.slot_b.write_bytes(b"")
        factory = {"name": FIRMWARE, "version": "1.0", "sha256": sha(FACTORY)}
        self.boot_state.write_text(json.dumps({"active": "a", "a": factory, "b": None}))
        self.boot_id_file.write_text(f"{uuid.uuid4()}\n")
        bundle = swlm_flash.make_bundle(self.workdir / "fw-2.0.tar", FIRMWARE, "2.0", self.image)
        sim.add_package(FIRMWARE, "2.0", data=bundle.read_bytes())
        self.update_ids.append(sim.queue_update(DEVICE, FIRMWARE, "2.0"))

    def _power_on(self) -> None:
        self._start_swlm(self._swlm_env())
        assert self.daemon is not None
        self.daemon.start(env=self._env("daemon", None, None))

    def _swlm_env(self) -> dict[str, str]:
        env = self._env("swlm", None, self.trace)
        if self.fired < len(self.kills):
            kill = self.kills[self.fired]
            left = kill.nth - self._passes().count(kill.name)
            assert left > 0, f"{kill} was passed and did not fire:\n{self.logs()}"
            env["SOTA_KILL_AT"] = f"{kill.name}@{left}"
        return env

    def _passes(self) -> list[str]:
        """Every kill point the SWLM passed so far, in all its starts."""
        return self.trace.read_text().split() if self.trace.exists() else []

    def _start_swlm(self, env: dict[str, str]) -> None:
        argv = [
            sys.executable,
            str(FLASH),
            *("--config", str(self.workdir / "sota.toml")),
            *("--state-dir", str(self.state_dir)),
            *("--slot-a", str(self.slot_a), "--slot-b", str(self.slot_b)),
            *("--slot-size", str(SLOT_SIZE), "--boot-state", str(self.boot_state)),
            *("--max-tries", str(self.plan.max_tries)),
            *("--boot-id-file", str(self.boot_id_file)),
            *(["--confirm-by-hand"] if self.plan.confirm_by_hand else []),
        ]
        log_path = self.workdir / "swlm.log"
        with log_path.open("ab") as log:
            log.write(f"=== boot {self.outcome.boots}: {env.get('SOTA_KILL_AT', '')}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self.swlm = subprocess.Popen(
                argv, stdout=log, stderr=log, env={**self._environ(), **env}
            )

    @staticmethod
    def _environ() -> dict[str, str]:
        """This process's environment without kill points: a tool must not inherit one."""
        return {k: v for k, v in os.environ.items() if not k.startswith("SOTA_KILL")}

    def _carry_on(self, sim: CoreSimulator) -> None:
        """Until the update is reported (and the SWLM started up in full after it): cut the
        power when the SWLM dies at a kill point or waits for a reboot; confirm by hand when
        the plan says so."""
        deadline = time.monotonic() + DEADLINE
        while True:
            assert time.monotonic() < deadline, f"no report within {DEADLINE} s"
            assert self.daemon is not None
            assert self.daemon.running(), f"the daemon died:\n{self.logs()}"
            assert self.swlm is not None
            if self.swlm.poll() is not None:
                self._fired()
                self._power_cut(sim, "killed")
                continue
            if self._done(sim):
                if self._dying():
                    self._power_cut(sim, "killed")
                    continue
                if self._started_up():
                    return
            elif self._awaits_reboot():
                entry = self._entry()
                assert entry is not None
                if self.plan.confirm and entry.get("boots", 0) > 0:
                    self._confirm_by_hand()
                elif self._restarted < self.plan.restarts:
                    self._restarted += 1
                    self._power_cut(sim, "restart")
                else:
                    self._power_cut(sim, "reboot")
                continue
            time.sleep(0.02)  # polling a condition, with the deadline above

    def _fired(self) -> None:
        assert self.swlm is not None
        assert self.swlm.returncode == -signal.SIGKILL, f"the SWLM exited:\n{self.logs()}"
        assert self.fired < len(self.kills), f"the SWLM died, unasked:\n{self.logs()}"
        self.fired += 1

    def _dying(self) -> bool:
        """The update is done, but a kill point armed in the SWLM may fire right after the
        commit that made it so (``swlm.journal.sent``): wait a moment for it."""
        assert self.swlm is not None
        if self.fired == len(self.kills):
            return False
        try:
            self.swlm.wait(2.0)
        except subprocess.TimeoutExpired:
            return False
        self._fired()
        return True

    def _started_up(self) -> bool:
        """The SWLM's last start got as far as sending the package list, which comes after
        any report it would send: had it sent one twice, the simulator would have it now."""
        log = (self.workdir / "swlm.log").read_bytes()[self._log_start :]
        return b"installed-package list delivered" in log

    def _entry(self) -> dict[str, Any] | None:
        path = self.state_dir / "swlm-journal.json"
        try:
            document = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        entry: dict[str, Any] | None = document.get("updates", {}).get(self.update_id)
        return entry

    def _awaits_reboot(self) -> bool:
        """The SWLM told the daemon that the update needs a reboot, and found no verdict in
        this boot (or it is the boot of the install): time to reboot, or to confirm."""
        entry = self._entry()
        return (
            entry is not None
            and entry["state"] == "awaiting_reboot"
            and entry.get("announced", False)
            and entry["boot_id"] == self.boot_id()
            and (entry.get("boots", 0) == 0 or entry.get("checked", False))
            # The commit's own kill point is passed too: one armed there fires now or never.
            and self._passes()[-1:] in (["swlm.journal.announced"], ["swlm.journal.checked"])
        )

    def boot_id(self) -> str:
        return self.boot_id_file.read_text().strip()

    def device(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.boot_state.read_text())
        return state

    def _power_cut(self, sim: CoreSimulator, why: str) -> None:
        """SIGKILL whatever runs; a new boot id unless it is a restart; start both again."""
        assert self.swlm is not None
        assert self.daemon is not None
        if self.swlm.poll() is None:
            self.swlm.kill()
            self.swlm.wait()
            if self.fired < len(self.kills):
                kill = self.kills[self.fired]
                if self._passes().count(kill.name) >= kill.nth:  # it was dying there anyway
                    self.fired += 1
                    why = "killed"
        reports = [r for r in sim.reports(DEVICE) if r.update_id == self.update_id]
        daemon = self.daemon_states().get(self.update_id)
        state, passed = self.device(), len(self._passes())
        cut = Cut(self.outcome.boots, why, len(reports), daemon, self._entry(), state, passed)
        self.outcome.cuts.append(cut)
        self.daemon.kill()
        if self.plan.rot and cut.swlm is not None and cut.swlm["state"] == "awaiting_reboot":
            image = bytearray(self.slot_b.read_bytes())
            image[0] = self.image[0] ^ 0xFF  # the same rot at every cut
            self.slot_b.write_bytes(image)
        if why != "restart":
            self.outcome.boots += 1
            self._restarted = 0
            assert self.outcome.boots <= MAX_BOOTS, f"a boot loop:\n{self.logs()}"
            self.boot_id_file.write_text(f"{uuid.uuid4()}\n")
        self._power_on()

    def _confirm_by_hand(self) -> None:
        """``swlm_flash.py confirm``, as the operator does once the new slot runs; it may meet
        a kill point in the SWLM (its answer is then lost, and the loop cuts the power)."""
        done = self.flash_tool("confirm", "--state-dir", str(self.state_dir))
        self.outcome.confirms.append(done)
        if done.returncode == 0:
            return
        assert self.swlm is not None
        try:
            self.swlm.wait(10.0)  # it died at a kill point: its socket closed as it went
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the confirm failed: {done.stderr}\n{self.logs()}") from None

    # -- tools -----------------------------------------------------------------------------

    def flash_tool(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``swlm_flash.py <argv> --boot-state S --boot-id-file F``."""
        common = ["--boot-state", str(self.boot_state), "--boot-id-file", str(self.boot_id_file)]
        return self._tool([sys.executable, str(FLASH), *argv, *common])

    def swlm_cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``swlm <argv>``, the SDK's command line."""
        return self._tool([*SWLM_CLI, *argv])

    def _tool(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        env = {**self._environ(), **self._env("tool", None, None)}
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT, check=False
        )
        with (self.workdir / "swlm.log").open("a") as log:
            shown = " ".join(argv[1:])
            log.write(f"$ {shown} -> {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    # -- the promise -----------------------------------------------------------------------

    def verdict(self) -> tuple[ResultCode, str]:
        """The verdict this run must end in, and a part of its text: an install cut short
        (the journal said "installing" at the first cut) is INTERNAL_ERROR; else the plan's."""
        first = next((c for c in self.outcome.cuts if c.why == "killed"), None)
        if first is not None and first.swlm is not None and first.swlm["state"] == "installing":
            return ResultCode.INTERNAL_ERROR, INTERRUPTED
        if self.plan.ok:
            return ResultCode.OK, f"{FIRMWARE} 2.0 runs from slot b, confirmed"
        return ResultCode.INSTALL_FAILED, self.plan.text

    def _check(self, sim: CoreSimulator, kill: Kill | None) -> None:
        """Exactly one report, the verdict expected, the slots and the boot state to match."""
        del kill
        context = f"{self.plan.name} {[str(k) for k in self.kills]}:\n{self.logs()}"
        reports = [r for r in sim.reports(DEVICE) if r.update_id == self.update_id]
        assert [r.status for r in reports] == [204], context
        (result,) = reports[0].results
        self.outcome.result = (result.result_code, result.result_text)
        self.outcome.boot_state = state = self.device()
        code, text = self.verdict()
        assert (result.result_code, text in result.result_text) == (code, True), (
            result,
            context,
        )
        if code == ResultCode.OK:
            assert self.slot_b.read_bytes() == self.image, context
            assert (state["active"], state["trial"]["status"]) == ("b", "good"), context
        else:
            assert state["active"] == "a", context
            assert self.slot_a.read_bytes() == FACTORY, context
            assert state["trial"] is None or state["trial"]["status"] != "trying", context
        assert self.daemon_states() == {self.update_id: "reported"}, context
        assert self.swlm_states() == {self.update_id: "sent"}, context
        assert "Traceback" not in self.logs(), context


def clean_run(
    plan: Plan, then: Callable[[RebootRun, CoreSimulator], None] | None = None
) -> RebootOutcome:
    """One run of ``plan`` without kills; its outcome."""
    run = RebootRun(plan)
    try:
        return run.run(then=then)
    finally:
        run.cleanup()


def run_kills(
    runs: Sequence[tuple[Plan, Sequence[Kill]]], *, workers: int = 4
) -> list[RebootOutcome]:
    """One run per (plan, kills), ``workers`` at a time; raise the first failure."""

    def one(item: tuple[Plan, Sequence[Kill]]) -> RebootOutcome:
        plan, kills = item
        run = RebootRun(plan, seed=zlib.crc32(" ".join(map(str, kills)).encode()))
        try:
            return run.run(kills=kills)
        finally:
            run.cleanup()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, runs))
