"""A/B firmware updates across power cuts and reboots end in exactly one report at Core.

``examples/swlm_flash`` flashes the inactive slot and returns ``RebootNeeded``; the update
counts only once the device has rebooted into the new slot and it is confirmed, or it is rolled
back. That spans several boots, each of which a power cut can end at any step: the daemon,
the SWLM and the simulated bootloader (the boot state) must agree afterwards. The harness is
in ``reboot.py``; every run there is checked for one report, the slots and the boot state.
"""

from __future__ import annotations

import functools
import os

import pytest

from sota_client.sim import CoreSimulator
from swlm_sdk import ResultCode

from .crash import Kill, kill_points
from .reboot import Plan, RebootOutcome, RebootRun, clean_run, run_kills

pytestmark = [pytest.mark.e2e]

WORKERS = int(os.environ.get("SOTA_CRASH_WORKERS", "4"))
ROLLED_BACK = "rolled back to slot a after 2 unconfirmed boots"

HEALTHY = Plan("healthy")
UNCONFIRMED = Plan("unconfirmed", confirm_by_hand=True, max_tries=2, ok=False, text=ROLLED_BACK)
BY_HAND = Plan("by-hand", confirm_by_hand=True, confirm=True)
ROT = Plan("rot", rot=True, ok=False, text="slot b failed its check (it reads back with sha256")


@functools.cache
def clean(plan: Plan) -> RebootOutcome:
    """The run of ``plan`` without kills, once per session: checked, and its trace is where
    the kill points of that plan come from."""
    return clean_run(plan)


def after_install(outcome: RebootOutcome) -> list[Kill]:
    """The kill points a clean run passed after the reboot that followed the install; the
    install's own are the same in every plan, and killed in the healthy one."""
    return kill_points(outcome)[outcome.cuts[0].passed :]


def cuts(outcome: RebootOutcome) -> list[tuple[int, str, int, str | None, int, int]]:
    """Each cut as (boot, why, reports at Core, daemon state, the SWLM's count of boots into
    the update, the bootloader's tries of the new slot)."""
    return [
        (
            c.boot,
            c.why,
            c.reports,
            c.daemon,
            (c.swlm or {}).get("boots", 0),
            c.boot_state["trial"]["tries"],
        )
        for c in outcome.cuts
    ]


def killed_nowhere(outcomes: list[RebootOutcome]) -> list[str]:
    """Runs whose kills did not all fire: a point the run never reached is a test bug."""
    return [" then ".join(o.kills) for o in outcomes if not o.killed]


@pytest.mark.timeout(600)
def test_a_power_cut_at_any_step_of_a_flash_ends_in_one_report() -> None:
    """The SWLM is killed at each point of a healthy update (flash, announce, reboot, confirm,
    report), the device loses power there and boots again: one report, and the device runs
    the new slot unless the install itself was cut short."""
    outcome = clean(HEALTHY)
    # The operator reboots once the daemon, too, knows that the update awaits its reboot.
    assert cuts(outcome) == [(0, "reboot", 0, "awaiting_reboot", 0, 0)]
    assert outcome.result[0] == ResultCode.OK
    assert outcome.result[1].endswith("runs from slot b, confirmed in boot 1")
    points = kill_points(outcome)
    names = [point.name for point in points]
    assert {point.process for point in points} == {"swlm"}
    assert {
        "flash.slot.emptied",
        "flash.slot.written",
        "flash.trial.set",
        "swlm.journal.awaiting_reboot",
        "swlm.reboot.announced",
        "swlm.journal.boot_counted",
        "flash.booted",
        "flash.confirmed",
        "swlm.boot.decided",
        "swlm.report.acknowledged",
    } <= set(names)
    outcomes = run_kills([(HEALTHY, [point]) for point in points], workers=WORKERS)
    assert killed_nowhere(outcomes) == []
    # Cut short between "installing" on disk and its result on disk: rolled back, reported
    # INTERNAL_ERROR. Before it, the daemon hands the update over again; after, it boots.
    first, last = names.index("swlm.journal.installing"), names.index("swlm.install.done")
    codes = [o.result[0] for o in outcomes]
    expected = [ResultCode.OK] * len(points)
    expected[first : last + 1] = [ResultCode.INTERNAL_ERROR] * (last + 1 - first)
    assert dict(zip(map(str, points), codes, strict=True)) == dict(
        zip(map(str, points), expected, strict=True)
    )


@pytest.mark.timeout(120)
def test_an_update_nobody_confirms_is_rolled_back_after_max_tries_boots() -> None:
    """By hand and never confirmed: boots 1 and 2 run the new slot with no report; at boot 3
    the bootloader fell back and the SWLM reports that, once."""
    outcome = clean(UNCONFIRMED)
    assert cuts(outcome) == [
        (0, "reboot", 0, "awaiting_reboot", 0, 0),
        (1, "reboot", 0, "awaiting_reboot", 1, 1),
        (2, "reboot", 0, "awaiting_reboot", 2, 2),
    ]
    assert [c.boot_state["booted"] for c in outcome.cuts] == ["a", "b", "b"]
    assert outcome.boots == 3
    assert outcome.result == (ResultCode.INSTALL_FAILED, ROLLED_BACK)
    state = outcome.boot_state
    assert (state["active"], state["booted"], state["trial"]["status"]) == ("a", "a", "fell_back")


@pytest.mark.timeout(120)
def test_a_confirm_after_the_rollback_is_refused_and_reports_nothing() -> None:
    """A confirm that comes once the rollback is reported must not turn it into a success:
    both tools exit 1 and say why, and Core still has the one failure report."""

    def confirm_late(run: RebootRun, sim: CoreSimulator) -> None:
        del sim
        state_dir = str(run.state_dir)
        run.outcome.confirms += [
            run.swlm_cli("confirm", "--state-dir", state_dir, run.update_id),
            run.flash_tool("confirm", "--state-dir", state_dir),
        ]

    outcome = clean_run(UNCONFIRMED, then=confirm_late)
    assert outcome.result == (ResultCode.INSTALL_FAILED, ROLLED_BACK)
    sdk, flash = outcome.confirms
    assert sdk.returncode == 1, sdk
    assert "already reported: INSTALL_FAILED" in sdk.stderr, sdk
    assert ROLLED_BACK in sdk.stderr, sdk
    assert flash.returncode == 1, flash
    assert "no slot is on trial" in flash.stderr, flash
    assert outcome.boot_state["active"] == "a"


@pytest.mark.timeout(120)
def test_a_confirm_in_time_makes_the_update_count() -> None:
    """By hand, confirmed in the first boot into the new slot: one OK report, slot b stays."""
    outcome = clean(BY_HAND)
    assert cuts(outcome) == [(0, "reboot", 0, "awaiting_reboot", 0, 0)]
    (confirm,) = outcome.confirms
    assert confirm.returncode == 0, confirm
    assert confirm.stdout == "fw 2.0 runs from slot b, confirmed in boot 1\n"
    assert outcome.result == (ResultCode.OK, "fw 2.0 runs from slot b, confirmed in boot 1")
    assert outcome.boots == 1


@pytest.mark.timeout(120)
def test_restarts_are_not_reboots() -> None:
    """The SWLM and the daemon restarted in each boot (same boot id): neither the SDK nor the
    bootloader counts a boot for it, so the rollback still comes at boot 3, not earlier."""
    outcome = clean_run(
        Plan("restarts", confirm_by_hand=True, max_tries=2, restarts=1, ok=False, text=ROLLED_BACK)
    )
    assert cuts(outcome) == [
        (boot, why, 0, "awaiting_reboot", boot, boot)
        for boot in range(3)
        for why in ("restart", "reboot")
    ]
    assert outcome.result == (ResultCode.INSTALL_FAILED, ROLLED_BACK)


@pytest.mark.timeout(600)
def test_a_power_cut_on_the_rollback_path_ends_in_one_failure_report() -> None:
    """Killed at each step after the reboot when nobody confirms (the count of boots, the
    check, the verdict, the report); killed in the rollback hooks themselves, where the slot
    is switched back (``flash.rolled_back``): when the install was cut short, when the
    bootloader missed a boot (its tries lag the SDK's count), and when slot b fails its check
    after the reboot. One failure report each, the device back on slot a."""
    rot = clean(ROT)
    assert cuts(rot) == [(0, "reboot", 0, "awaiting_reboot", 0, 0)]
    assert rot.result[0] == ResultCode.INSTALL_FAILED
    assert rot.result[1].startswith("slot b failed its check (it reads back with sha256")
    points = after_install(clean(UNCONFIRMED))
    assert "swlm.boot.decided" in {point.name for point in points}
    # The bootloader falls back first: the SDK's rollback finds nothing left to switch.
    assert "flash.rolled_back" not in {point.name for point in points}
    runs = [(UNCONFIRMED, [point]) for point in points]
    runs += [
        (UNCONFIRMED, [Kill("swlm", "flash.trial.set"), Kill("swlm", "flash.rolled_back")]),
        (
            UNCONFIRMED,
            [Kill("swlm", "swlm.journal.boot_counted"), Kill("swlm", "flash.rolled_back")],
        ),
        (ROT, [Kill("swlm", "flash.rolled_back")]),
        (ROT, [Kill("swlm", "swlm.boot.decided")]),
    ]
    outcomes = run_kills(runs, workers=WORKERS)
    assert killed_nowhere(outcomes) == []
    interrupted, lagging, rot_killed, rot_decided = outcomes[len(points) :]
    assert interrupted.result[0] == ResultCode.INTERNAL_ERROR
    assert lagging.result == (ResultCode.INSTALL_FAILED, ROLLED_BACK)
    assert rot_killed.result[0] == rot_decided.result[0] == ResultCode.INSTALL_FAILED
    assert all(o.result[0] == ResultCode.INSTALL_FAILED for o in outcomes[: len(points)])


@pytest.mark.timeout(600)
def test_a_power_cut_on_the_confirm_path_ends_in_one_report() -> None:
    """Killed at each step after the reboot when the operator confirms by hand (the SWLM's
    automatic check, the confirm, the report): the confirm is asked again in the next boot
    if its answer was lost, and the update ends in one OK report."""
    points = after_install(clean(BY_HAND))
    assert {"swlm.journal.checked", "flash.confirmed", "swlm.boot.decided"} <= {
        point.name for point in points
    }
    outcomes = run_kills([(BY_HAND, [point]) for point in points], workers=WORKERS)
    assert killed_nowhere(outcomes) == []
    assert [o.result[0] for o in outcomes] == [ResultCode.OK] * len(points)
    # A kill that lost the answer costs a confirm and a boot: never a second report.
    assert all(1 <= len(o.confirms) <= 2 and o.boots <= 2 for o in outcomes)
