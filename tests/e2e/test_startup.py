"""A default start (socket gateway on, package manager off) imports nothing that the config turns
off: each such module costs start-up time (D-Bus alone pulls jeepney and ``urllib.request``).

The daemon's own ``-X importtime`` profile (``PYTHONPROFILEIMPORTTIME``) names every module it
imported, so the check runs on the real process, as started by systemd, with no hooks in it.
"""

from __future__ import annotations

import pytest

from sota_client.sim import CoreSimulator

from .harness import MakeDaemon

pytestmark = pytest.mark.e2e

#: Modules of gateways that are off by default, of the package managers, and what they pull in.
OFF_BY_DEFAULT = (
    "sota_client.gateways._broadcast",
    "sota_client.gateways._dbus",
    "sota_client.gateways._hmi",
    "sota_client.gateways._http",
    "sota_client.gateways._local_http",
    "sota_client.gateways._rvi",
    "sota_client.gateways._websocket",
    "sota_client.pacman",
    "jeepney",
    "wsproto",
    "httpx",  # the daemon has its own HTTP client (_http1); httpx is only a test dependency
    "httpcore",
)


def test_a_default_start_imports_no_gateway_that_is_off(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(sim.url).start(env={"PYTHONPROFILEIMPORTTIME": "1"})
    daemon.stop()
    imported = {
        line.rpartition("|")[2].strip()
        for line in daemon.log().splitlines()
        if line.startswith("import time:")
    }
    assert "sota_client.gateways._socket" in imported  # the profile covers the daemon's imports
    assert sorted(imported.intersection(OFF_BY_DEFAULT)) == []
