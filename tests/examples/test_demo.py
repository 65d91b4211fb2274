"""``make demo`` works: simulator, daemon and example SWLM carry one update end to end."""

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parents[2] / "examples" / "demo.py"


def test_the_demo_carries_one_update_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "sota_client is ready (sd_notify READY=1)" in out
    assert "the web HMI is at http://127.0.0.1:" in out
    assert "Downloading" in out
    assert "100% (" in out
    assert '"result_code":0' in out
    assert "update status now Finished" in out
    assert "installed packages now: ecu-main 1.1.0" in out
    assert "image verified: True" in out
    # The report waits for the reboot into the new slot and its confirmation.
    flashed = out.index("slot b is flashed and on trial; Core has no report yet: rebooting")
    assert flashed < out.index("report received: POST")
    assert "runs from slot b, confirmed in boot 1" in out
    assert out.rstrip().endswith("Demo finished: the update went from Core to the device and back.")
    assert not list(Path("/tmp").glob("sota-demo-*/sota.toml"))  # it cleaned up
    everything = result.stdout + result.stderr
    assert "couldn't notify systemd" not in everything  # the demo keeps reading its socket
    assert " WARN - " not in everything
    assert " ERROR - " not in everything
