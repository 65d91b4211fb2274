"""Requests and log lines a minute while Core fails, and what is left once it recovers.

Starts the simulator and a real ``sota_client`` per scenario (all at once, each on its own
simulator), lets every request fail for ``--seconds``, counts what the daemon sent and logged,
then lifts the faults and checks that the update queued meanwhile ends with exactly one report.
On main before the fix the daemon made 59 polls a minute with ``polling_sec = 1`` and 38,958
(16.7 MB of log) with ``polling_sec = 0``. Run: ``.venv/bin/python -m bench.fault_rates``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sota_client.sim import AuthSettings, CoreSimulator, StatusFault
from tests.e2e.harness import DEVICE, DaemonProcess, auth_section


@dataclass(frozen=True)
class Scenario:
    name: str
    polling_sec: int
    fault: StatusFault
    auth: bool = False


SCENARIOS = [
    Scenario("every request 500, polling_sec = 1", 1, StatusFault(status=500, count=10**9)),
    Scenario("every request 500, polling_sec = 0", 0, StatusFault(status=500, count=10**9)),
    Scenario(
        "token endpoint 404, polling_sec = 1",
        1,
        StatusFault(status=404, route="token", count=10**9),
        auth=True,
    ),
]


@dataclass
class Result:
    requests: int = 0
    polls: int = 0
    tokens: int = 0
    log_lines: int = 0
    log_bytes: int = 0
    recovered_in: float = 0.0
    reports: int = 0


def measure(scenario: Scenario, seconds: float) -> Result:
    work = Path(tempfile.mkdtemp(prefix="sota-faults-"))
    auth = AuthSettings(client_id="device", client_secret="secret") if scenario.auth else None
    result = Result()
    try:
        with CoreSimulator(auth=auth) as sim:
            sim.add_package("nano", "2.2.6", data=b"x" * 4096)
            update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
            sim.inject(scenario.fault)
            sections: dict[str, dict[str, object]] = {
                "core": {"polling_sec": scenario.polling_sec},
                "device": {"package_manager": f"file:{work / 'installed.txt'}"},
            }
            if scenario.auth:
                sections["auth"] = dict(auth_section(sim.url, work))
            daemon = DaemonProcess(work, sim.url, **sections)
            daemon.start()
            base = len(sim.requests)
            log_start = len(daemon.log())
            time.sleep(seconds)  # the measurement window
            requests = sim.requests[base:]
            log = daemon.log()[log_start:]
            result.requests = len(requests)
            result.polls = sum(1 for r in requests if r.route == "updates")
            result.tokens = sum(1 for r in requests if r.route == "token")
            result.log_lines = log.count("\n")
            result.log_bytes = len(log.encode())
            sim.clear_faults()
            recovered = time.monotonic()
            sim.wait_for(
                lambda: any(r.update_id == update_id for r in sim.reports(DEVICE)), timeout=600
            )
            result.recovered_in = time.monotonic() - recovered
            time.sleep(2 * max(scenario.polling_sec, 1))  # would a second report follow?
            result.reports = sum(1 for r in sim.reports(DEVICE) if r.update_id == update_id)
            daemon.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="window (default 60)")
    args = parser.parse_args(argv)
    results: dict[str, Result] = {}

    def run(scenario: Scenario) -> None:
        results[scenario.name] = measure(scenario, args.seconds)

    threads = [threading.Thread(target=run, args=(s,)) for s in SCENARIOS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_minute = 60.0 / args.seconds
    print(
        "| while Core fails | requests/min | polls/min | token requests/min | log lines/min "
        "| log KiB/min | report after recovery | reports |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for scenario in SCENARIOS:
        r = results[scenario.name]
        print(
            f"| {scenario.name} | {r.requests * per_minute:.0f} | {r.polls * per_minute:.0f} "
            f"| {r.tokens * per_minute:.0f} | {r.log_lines * per_minute:.0f} "
            f"| {r.log_bytes * per_minute / 1024:.0f} | {r.recovered_in:.0f} s | {r.reports} |"
        )
    return 0 if all(r.reports == 1 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
