"""The GENIVI set-up of 2016, end to end: the daemon as a process with ``gateway.rvi`` and
``gateway.dbus``, an RVI node that pushes updates in chunks (the fake of the tests), and the
GENIVI SWLM stand-in on a private bus. Every case ends in one report at the RVI backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from sota_client.sim import CoreSimulator
from tests.sota_client.daemon_fixtures import free_port
from tests.sota_client.dbus_fixtures import Bus, bus_env, dbus_bus
from tests.sota_client.rvi_node import BACKEND_SERVICES, Backend, RviNode

from .genivi_fixtures import Genivi, genivi, image
from .harness import DEVICE, DaemonProcess, MakeDaemon

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]
__all__ = ["dbus_bus", "genivi"]  # the fixtures, imported to be used

DEADLINE = 30.0
REPORT = BACKEND_SERVICES["report"]


def rvi_daemon(
    make_daemon: MakeDaemon, sim: CoreSimulator, bus: Bus, node: RviNode, workdir: Path
) -> tuple[DaemonProcess, str]:
    edge = f"127.0.0.1:{free_port()}"
    daemon = make_daemon(
        sim.url,
        core={"polling": False},
        gateway={"socket": False, "dbus": True, "rvi": True},
        dbus={"timeout": 5},
        rvi={"client": node.url, "storage_dir": str(workdir / "rvi"), "timeout": 20},
        network={"rvi_edge_server": edge},
        device={"package_manager": "off"},
    )
    return daemon, f"http://{edge}/"


async def started(daemon: DaemonProcess, bus: Bus) -> None:
    await anyio.to_thread.run_sync(lambda: daemon.start(env=bus_env(bus)))
    await anyio.to_thread.run_sync(
        lambda: daemon.wait_log(lambda text: "Registered 6 services" in text)
    )


async def swlm_started(make: Callable[..., Genivi], *options: str) -> Genivi:
    return await anyio.to_thread.run_sync(lambda: make(*options).start())


def reports(node: RviNode) -> list[tuple[str, list[tuple[str, int]]]]:
    return [
        (
            body["update_report"]["update_id"],
            [(r["id"], r["result_code"]) for r in body["update_report"]["operation_results"]],
        )
        for body in node.bodies(REPORT)
    ]


async def test_an_update_offered_over_rvi_is_pushed_installed_and_reported_with_its_code(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any, workdir: Path
) -> None:
    """notify → updateAvailable → initiateDownload → DownloadStarted → chunks → finish →
    downloadComplete → the SWLM's report under its manifest id → the backend gets it under
    the update's id, with code 4."""
    update_id = str(uuid.uuid4())
    data, op_ids = image("libats", 4)
    node = RviNode()
    async with node.running():
        daemon, edge = rvi_daemon(make_daemon, sim, dbus_bus, node, workdir)
        swlm = await swlm_started(genivi)
        await started(daemon, dbus_bus)
        async with Backend.at(edge) as backend:
            node.push_on_start(backend, {update_id: data})
            assert (await backend.notify(update_id)).ok
            await node.wait_for(lambda: node.bodies(REPORT), within=DEADLINE)
    assert reports(node) == [(update_id, [(op_ids[0], 4)])]
    assert all(answer.ok for answer in node.pushed[update_id])
    offered = swlm.events("updateAvailable")
    assert [(o["update_id"], o["request_confirmation"]) for o in offered] == [(update_id, False)]
    assert sim.reports(DEVICE) == []  # over RVI, not to Core's HTTP API


async def test_a_declined_update_is_reported_13_under_its_own_id(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any, workdir: Path
) -> None:
    """D7: the user declines; the SWLM reports code 13 with operation id "N/A", which becomes
    the update's id; nothing is downloaded."""
    update_id = str(uuid.uuid4())
    node = RviNode()
    async with node.running():
        daemon, edge = rvi_daemon(make_daemon, sim, dbus_bus, node, workdir)
        await swlm_started(genivi, "--decline")
        await started(daemon, dbus_bus)
        async with Backend.at(edge) as backend:
            assert (await backend.notify(update_id, request_confirmation=True)).ok
            await node.wait_for(lambda: node.bodies(REPORT), within=DEADLINE)
    assert reports(node) == [(update_id, [(update_id, 13)])]
    assert node.bodies(BACKEND_SERVICES["start"]) == []


async def test_getpackages_sends_the_swlm_packages_in_the_servers_form(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any, workdir: Path
) -> None:
    """/sota/getpackages → getInstalledPackages(true, false), answered ``as`` by GENIVI → the
    installed software at the backend's packages service."""
    packages = BACKEND_SERVICES["packages"]
    node = RviNode()
    async with node.running():
        daemon, edge = rvi_daemon(make_daemon, sim, dbus_bus, node, workdir)
        await swlm_started(genivi)
        await started(daemon, dbus_bus)
        async with Backend.at(edge) as backend:
            assert (await backend.notify(str(uuid.uuid4()), request_confirmation=True)).ok
            assert (await backend.getpackages()).ok
            await node.wait_for(lambda: node.bodies(packages), within=DEADLINE)
    (body,) = node.bodies(packages)
    assert body["device"] == DEVICE
    assert [p["name"] for p in body["installed_software"]["packages"]] == [
        "bluez_driver",
        "bluez_apps",
    ]
    assert body["installed_software"]["firmwares"] == []
