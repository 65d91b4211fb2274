"""The daemon as a process with ``gateway.dbus`` next to the GENIVI SWLM stand-in, on a private
bus, against the simulator: each case ends in exactly one report at Core, under Core's id, with
the code the SWLM sent (core-server-and-dbus.md §7.2)."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from sota_client.sim import CoreSimulator
from tests.sota_client.dbus_fixtures import Bus, bus_env, dbus_bus

from .genivi_fixtures import genivi, image
from .harness import DEVICE, DaemonProcess, MakeDaemon

pytestmark = pytest.mark.e2e
__all__ = ["dbus_bus", "genivi"]  # the fixtures, imported to be used

DEADLINE = 30.0


def dbus_daemon(
    make_daemon: MakeDaemon, sim: CoreSimulator, bus: Bus, **device: Any
) -> DaemonProcess:
    daemon = make_daemon(
        sim.url,
        gateway={"socket": False, "dbus": True},
        dbus={"timeout": 5},
        device={"package_manager": "off", **device},
    )
    return daemon.start(env=bus_env(bus))


def reports_of(sim: CoreSimulator, update_id: str) -> list[list[tuple[str, int]]]:
    return [
        [(r.id, r.result_code) for r in report.results]
        for report in sim.reports(DEVICE)
        if report.update_id == update_id
    ]


def test_the_swlm_report_reaches_core_under_its_update_id_with_the_swlm_code(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """D3 and D4: the manifest says "libats", Core's id is a UUID; the code is 4, not 0."""
    data, op_ids = image("libats", 0, 4)
    sim.add_package("libats", "2.0.0", data=data)
    swlm = genivi().start()
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    dbus_daemon(make_daemon, sim, dbus_bus)
    sim.wait_for(lambda: reports_of(sim, update_id), timeout=DEADLINE)
    assert reports_of(sim, update_id) == [[(op_ids[0], 0), (op_ids[1], 4)]]
    assert len(sim.reports(DEVICE)) == 1
    swlm.wait_for(lambda: swlm.events("report"))
    (introspected,) = swlm.events("introspected")[:1]
    assert introspected["signature"] == "saa{sv}"  # typed from the daemon's XML
    (report,) = swlm.events("report")
    assert report["update_id"] == "libats"
    assert report["reply"] == "ok"


def test_two_updates_go_one_at_a_time_and_each_is_reported_once(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """D13: handed over back to back, the GENIVI SWLM would lose both reports."""
    first_image, first_ops = image("first", 0)
    second_image, second_ops = image("second", 0)
    sim.add_package("first", "1.0", data=first_image)
    sim.add_package("second", "1.0", data=second_image)
    swlm = genivi("--install-seconds", "1").start()
    first = sim.queue_update(DEVICE, "first", "1.0")
    second = sim.queue_update(DEVICE, "second", "1.0")
    dbus_daemon(make_daemon, sim, dbus_bus)
    sim.wait_for(lambda: len(sim.reports(DEVICE)) == 2, timeout=DEADLINE)
    assert reports_of(sim, first) == [[(first_ops[0], 0)]]
    assert reports_of(sim, second) == [[(second_ops[0], 0)]]
    assert [line["accepted"] for line in swlm.events("downloadComplete")] == [True, True]


def test_a_corrupt_image_is_reported_failed_at_the_deadline_and_the_next_one_goes(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """D12: the SWLM never reports an image it cannot unpack; the daemon does, once."""
    good, good_ops = image("good", 0)
    sim.add_package("corrupt", "1.0", data=b"\x00not a squashfs image\xff" * 8)
    sim.add_package("good", "1.0", data=good)
    swlm = genivi().start()
    corrupt = sim.queue_update(DEVICE, "corrupt", "1.0")
    following = sim.queue_update(DEVICE, "good", "1.0")
    dbus_daemon(make_daemon, sim, dbus_bus, report_timeout=2)
    sim.wait_for(lambda: len(sim.reports(DEVICE)) == 2, timeout=DEADLINE)
    (report,) = [r for r in sim.reports(DEVICE) if r.update_id == corrupt]
    assert [r.result_code for r in report.results] == [19]  # GENERAL_ERROR
    assert reports_of(sim, following) == [[(good_ops[0], 0)]]
    assert len(swlm.events("corrupt")) == 1


def test_an_update_waits_for_an_swlm_that_is_not_running_yet(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """D11: no ServiceUnknown failure report; the SWLM gets it when its name appears."""
    data, op_ids = image("late", 0)
    sim.add_package("late", "1.0", data=data)
    update_id = sim.queue_update(DEVICE, "late", "1.0")
    daemon = dbus_daemon(make_daemon, sim, dbus_bus)
    daemon.wait_log(lambda text: "is not on the bus" in text)
    assert sim.reports(DEVICE) == []
    genivi().start()
    sim.wait_for(lambda: reports_of(sim, update_id), timeout=DEADLINE)
    assert reports_of(sim, update_id) == [[(op_ids[0], 0)]]


def test_an_swlm_killed_during_the_install_gets_the_update_again_after_its_restart(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """The SWLM took the image and died before reporting: its restart is a new bus name, so
    the daemon hands the image over again, and Core gets one report."""
    data, op_ids = image("flaky", 0)
    sim.add_package("flaky", "1.0", data=data)
    slow = genivi("--install-seconds", "60").start()
    update_id = sim.queue_update(DEVICE, "flaky", "1.0")
    daemon = dbus_daemon(make_daemon, sim, dbus_bus)
    slow.wait_for(lambda: slow.events("downloadComplete"))
    slow.stop(signal.SIGKILL)
    genivi().start()
    daemon.wait_log(lambda text: "handing it over again" in text)
    sim.wait_for(lambda: reports_of(sim, update_id), timeout=DEADLINE)
    assert reports_of(sim, update_id) == [[(op_ids[0], 0)]]


def test_a_daemon_restart_keeps_the_update_and_the_swlm_gets_it_once(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """Downloaded while the SWLM was away, the daemon restarted: the journal still has it."""
    data, op_ids = image("kept", 0)
    sim.add_package("kept", "1.0", data=data)
    update_id = sim.queue_update(DEVICE, "kept", "1.0")
    daemon = dbus_daemon(make_daemon, sim, dbus_bus)
    daemon.wait_log(lambda text: "is not on the bus" in text)
    daemon.kill()
    swlm = genivi().start()
    daemon.start(env=bus_env(dbus_bus))
    sim.wait_for(lambda: reports_of(sim, update_id), timeout=DEADLINE)
    assert reports_of(sim, update_id) == [[(op_ids[0], 0)]]
    assert len(swlm.events("downloadComplete")) == 1


def test_an_update_kept_for_the_socket_goes_over_dbus_after_a_change_of_config(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any
) -> None:
    """Downloaded for an SWLM on the events socket that never listened; the integrator then
    moves to D-Bus: the kept DownloadComplete goes to the D-Bus SWLM."""
    data, op_ids = image("moved", 0)
    sim.add_package("moved", "1.0", data=data)
    update_id = sim.queue_update(DEVICE, "moved", "1.0")
    socket_only = make_daemon(sim.url, device={"package_manager": "off"}).start()
    socket_only.wait_log(lambda text: "couldn't deliver an event" in text)
    socket_only.stop()
    genivi().start()
    dbus_daemon(make_daemon, sim, dbus_bus)
    sim.wait_for(lambda: reports_of(sim, update_id), timeout=DEADLINE)
    assert reports_of(sim, update_id) == [[(op_ids[0], 0)]]


@pytest.mark.parametrize("point", ["events.delivered", "journal.event_delivered"])
def test_a_daemon_killed_as_it_hands_over_loses_nothing_and_reports_once(
    sim: CoreSimulator, make_daemon: MakeDaemon, dbus_bus: Bus, genivi: Any, point: str
) -> None:
    """D10: killed just after the SWLM took the image (before or after the journal knew). The
    SWLM installs and reports to the daemon's name, which it takes for the time of its call (a
    GENIVI quirk), so it calls itself and loses the report. The restarted daemon has to wait
    for its name, hands the update over again, and the SWLM answers ALREADY_PROCESSED."""
    data, op_ids = image("killed", 0)
    sim.add_package("killed", "1.0", data=data)
    swlm = genivi("--timeout", "8").start()  # its window to hold our name
    update_id = sim.queue_update(DEVICE, "killed", "1.0")
    daemon = make_daemon(
        sim.url,
        gateway={"socket": False, "dbus": True},
        dbus={"timeout": 5},
        device={"package_manager": "off"},
    )
    daemon.start(env={**bus_env(dbus_bus), "SOTA_KILL_AT": point})
    assert daemon.wait_exit(DEADLINE) == -signal.SIGKILL
    swlm.wait_for(lambda: swlm.events("introspected"))  # it holds the daemon's name now
    daemon.start(env=bus_env(dbus_bus))
    sim.wait_for(lambda: reports_of(sim, update_id), timeout=DEADLINE)
    assert reports_of(sim, update_id) == [[(op_ids[0], 1)]]
    swlm.wait_for(lambda: len(swlm.events("report")) == 2)
    assert [r["reply"] == "ok" for r in swlm.events("report")] == [False, True]
