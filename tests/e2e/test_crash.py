"""Every update ends in exactly one report at Core, whatever step the daemon or the SWLM is
killed at: one run per kill point, then random kills.

``make soak`` runs thousands of random kills (``SOTA_SOAK_RUNS``); ``SOTA_SOAK_SEED`` replays
a run. Each run's figures are appended to ``$SOTA_CRASH_STATS`` (JSON lines) when it is set,
which is where docs/reliability.md takes its numbers from.
"""

from __future__ import annotations

import json
import os
import random
import threading

import pytest

from .crash import CrashRun, Kill, Outcome, Scenario, kill_points, run_points

pytestmark = [pytest.mark.e2e]

SCENARIOS = [
    Scenario("swlm"),
    Scenario("package-manager", package_manager="file"),
    Scenario("download-fails", failing=True, updates=1),
]
RANDOM_RUNS = int(os.environ.get("SOTA_SOAK_RUNS", "150"))  # with every point: >= 200 kills
WORKERS = int(os.environ.get("SOTA_CRASH_WORKERS", "4"))
_stats_lock = threading.Lock()


def record(scenario: Scenario, kill: Kill, outcome: Outcome) -> None:
    path = os.environ.get("SOTA_CRASH_STATS")
    if not path:
        return
    line = {
        "scenario": scenario.name,
        "kill": str(kill),
        "killed": outcome.killed,
        "seconds": round(outcome.seconds, 2),
    }
    with _stats_lock, open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


def clean_run(scenario: Scenario) -> Outcome:
    crash = CrashRun(scenario)
    try:
        return crash.run(trace=True)
    finally:
        crash.cleanup()


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_a_kill_at_every_step_loses_nothing_and_reports_once(scenario: Scenario) -> None:
    points = kill_points(clean_run(scenario))
    processes = {"daemon", "swlm"} if scenario.swlm else {"daemon"}
    assert {point.process for point in points} == processes
    names = {point.name for point in points}
    assert "report.accepted" in names  # Core accepted; the daemon has not recorded it
    if scenario.swlm:
        assert {"events.delivered", "swlm.report.acknowledged", "swlm.install.done"} <= names
        # The daemon's DownloadComplete has the image's SHA-256: the App checks it first.
        assert "swlm.image.checked" in names
    elif not scenario.failing:
        assert {"journal.download_checkpoint", "install.done"} <= names
    results = run_points(
        scenario,
        points,
        workers=WORKERS,
        report=lambda kill, outcome: record(scenario, kill, outcome),
    )
    missed = [str(kill) for kill, outcome in results if not outcome.killed]
    assert missed == []  # each point was really reached, and killed there


@pytest.mark.timeout(3600 * 24)
def test_random_kills_lose_nothing_and_report_once() -> None:
    seed = int(os.environ.get("SOTA_SOAK_SEED", str(random.randrange(1 << 32))))
    print(f"random kills: SOTA_SOAK_SEED={seed} SOTA_SOAK_RUNS={RANDOM_RUNS}")
    rng = random.Random(seed)
    durations = {scenario.name: clean_run(scenario).seconds for scenario in SCENARIOS}
    plans: dict[str, list[Kill]] = {scenario.name: [] for scenario in SCENARIOS}
    for _ in range(RANDOM_RUNS):
        scenario = rng.choices(SCENARIOS, weights=[3, 2, 1])[0]
        process = rng.choice(["daemon", "swlm"]) if scenario.swlm else "daemon"
        delay = rng.uniform(0.2, 0.9 * durations[scenario.name])  # inside the run
        plans[scenario.name].append(Kill(process, delay=round(delay, 2)))
    killed = 0
    for scenario in SCENARIOS:
        results = run_points(
            scenario,
            plans[scenario.name],
            workers=WORKERS,
            report=lambda kill, outcome, s=scenario: record(s, kill, outcome),  # type: ignore[misc]
        )
        killed += sum(outcome.killed for _, outcome in results)
    assert killed >= RANDOM_RUNS // 2  # most random moments fall inside a run
