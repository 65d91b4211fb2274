"""The daemon's modules load no HTTP stack: the first request to Core loads h11 and the client,
after ``READY=1``. Checked in a fresh interpreter, so that what an earlier test imported does not
count. (tests/e2e/test_startup.py checks the gateways a config turns off, on the real process.)"""

import ast
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


def test_no_module_of_the_daemon_or_the_sdk_declares_a_dataclass() -> None:
    """Their value types are msgspec structs: a dataclass generates and compiles its methods
    when its module loads (about 1.5 ms each here, 25 of them were a sixth of the start),
    a struct is made in C (0.03 ms). docs/performance.md, "Start-up"."""
    declared = []
    for package in ("sota_client", "swlm_sdk"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef) and any(
                    "dataclass" in ast.unparse(decorator) for decorator in node.decorator_list
                ):
                    declared.append(f"{path.relative_to(REPO)}: {node.name}")
    assert declared == []
