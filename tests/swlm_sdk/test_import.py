"""``import swlm_sdk`` stays light: no httpx, no daemon (checked in a fresh interpreter)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_import_pulls_neither_httpx_nor_the_daemon() -> None:
    code = (
        "import json, sys, swlm_sdk, swlm_sdk.app, swlm_sdk.sync, swlm_sdk.testing;"
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
    assert "swlm_sdk" in modules
    banned = [m for m in modules if m.split(".")[0] in ("httpx", "httpcore", "sota_client")]
    assert banned == []
