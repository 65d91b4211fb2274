"""``import swlm_sdk`` stays light: no httpx, no daemon, and no I/O layer until a name of it is
used (checked in a fresh interpreter, so what an earlier test imported does not count)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]

#: The SDK's I/O layer (anyio's users): loaded only on first use of one of their names.
LAZY_MODULES = ("swlm_sdk._client", "swlm_sdk._sync", "swlm_sdk._app", "swlm_sdk._listener")


def modules_after(code: str) -> list[str]:
    """The names in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_import_pulls_neither_httpx_nor_the_daemon() -> None:
    modules = modules_after("import swlm_sdk, swlm_sdk.app, swlm_sdk.sync, swlm_sdk.testing")
    assert "swlm_sdk" in modules
    banned = [m for m in modules if m.split(".")[0] in ("httpx", "httpcore", "sota_client")]
    assert banned == []


@pytest.mark.parametrize("statement", ["import swlm_sdk", "import swlm_sdk.protocol"])
def test_import_leaves_the_io_layer_unloaded(statement: str) -> None:
    modules = modules_after(statement)
    assert [m for m in modules if m in LAZY_MODULES or m.split(".")[0] in ("anyio", "httpx")] == []


def test_every_public_name_resolves() -> None:
    code = (
        "import swlm_sdk\n"
        "missing = [n for n in swlm_sdk.__all__ if n not in dir(swlm_sdk)]\n"
        "assert not missing, missing\n"
        "for name in swlm_sdk.__all__:\n"
        "    assert getattr(swlm_sdk, name) is not None, name\n"
        "from swlm_sdk import App, Client, EventListener, sync\n"
        "assert sync is swlm_sdk.sync and App.__module__ == 'swlm_sdk._app'\n"
        "try:\n"
        "    swlm_sdk.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')"
    )
    assert "swlm_sdk._app" in modules_after(code)
