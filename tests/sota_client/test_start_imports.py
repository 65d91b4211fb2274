"""The daemon's modules load no HTTP stack: the first request to Core loads h11 and the client,
after ``READY=1``. Checked in a fresh interpreter, so that what an earlier test imported does not
count. (tests/e2e/test_startup.py checks the gateways a config turns off, on the real process.)"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_the_daemon_modules_leave_the_http_client_unloaded() -> None:
    code = (
        "import json, sys\n"
        "import sota_client._cli, sota_client._daemon\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = json.loads(result.stdout)
    assert "sota_client._backend" in modules
    assert [m for m in modules if m.split(".")[0] == "h11" or m == "sota_client._http1"] == []
