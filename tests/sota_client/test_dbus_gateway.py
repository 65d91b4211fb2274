"""The D-Bus gateway on a real dbus-daemon, with the interpreter, the journal and the simulator:
what the GENIVI SWLM sees of the daemon, and what Core receives from its reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from jeepney import DBusAddress, HeaderFields, new_method_call, new_method_return
from jeepney.low_level import Message

from sota_client._config_schema import DBusConfig
from sota_client._report_timeout import ReportTimeout
from sota_client._store import UpdateState
from sota_client.gateways._dbus import CHANNEL, DBusGateway
from sota_client.gateways._dbus_connection import DBusConnection, DBusError
from sota_client.sim import CoreSimulator
from swlm_sdk import Backoff
from swlm_sdk.protocol import DownloadComplete, StartDownload

from .daemon_fixtures import DEVICE, Changes, Daemon, running_daemon
from .dbus_fixtures import Bus, dbus_bus

pytestmark = pytest.mark.anyio
__all__ = ["dbus_bus"]  # the fixture, imported to be used

IMAGE = b"a GENIVI update image\n" * 32
SWLM_NAME = "org.genivi.SoftwareLoadingManager"
SWLM_PATH = "/org/genivi/SoftwareLoadingManager"
CLIENT = DBusAddress("/org/genivi/SotaClient", "org.genivi.SotaClient", "org.genivi.SotaClient")
OP_ID = "0c24f1ca-2a9e-4c0f-a730-fd29f759db89"
FAST = Backoff(0.05, 0.2)


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        simulator.add_package("libats", "2.0.0", data=IMAGE)
        yield simulator


@dataclass
class FakeSwlm:
    """The GENIVI SWLM's side: takes ``downloadComplete`` (answers ``true``), reports later."""

    connection: DBusConnection
    images: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)  # path, interface, member, sig
    changes: Changes = field(default_factory=Changes)
    hold: anyio.Event | None = None  # while set, downloadComplete is not answered
    packages_reply: tuple[str, tuple[Any, ...]] = ("as", (["bluez_driver", "bluez_apps"],))

    async def handle(self, message: Message) -> Message | None:
        fields = message.header.fields
        member = fields.get(HeaderFields.member)
        self.calls.append(
            (
                fields.get(HeaderFields.path),
                fields.get(HeaderFields.interface),
                member,
                fields.get(HeaderFields.signature),
            )
        )
        self.changes.changed()
        if member == "downloadComplete":
            if self.hold is not None:
                await self.hold.wait()
            self.images.append(message.body)
            self.changes.changed()
            return new_method_return(message, "b", (True,))
        if member == "getInstalledPackages":
            return new_method_return(message, *self.packages_reply)
        return None

    async def report(self, update_id: str, results: list[dict[str, Any]]) -> Message:
        call = new_method_call(CLIENT, "updateReport", "saa{sv}", (update_id, results))
        return await self.connection.call(call, timeout=10)

    async def wait_for_images(self, count: int) -> None:
        await self.changes.wait_until(lambda: len(self.images) >= count)


@asynccontextmanager
async def swlm_on(bus: Bus, **options: Any) -> AsyncIterator[FakeSwlm]:
    holder: list[FakeSwlm] = []

    async def handle(message: Message) -> Message | None:
        return await holder[0].handle(message)

    async with DBusConnection.open(bus.address, method_handler=handle) as connection:
        swlm = FakeSwlm(connection, **options)
        holder.append(swlm)
        assert await connection.request_name(SWLM_NAME, 0) == 1
        yield swlm


@asynccontextmanager
async def gateway_on(
    bus: Bus, d: Daemon, *, backoff: Backoff = FAST, **config: Any
) -> AsyncIterator[DBusGateway]:
    d.journal.event_channels = (CHANNEL,)
    gateway = DBusGateway(
        DBusConfig(**{"timeout": 5, **config}),
        d.journal,
        execute=d.interpreter.execute,
        submit=d.interpreter.submit,
        address=bus.address,
        watch_interval=0.05,
        backoff=backoff,
    )
    d.services.subscribers.append(gateway.publish)
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.serve)
        with anyio.fail_after(10):
            await gateway.connected.wait()
        yield gateway
        tg.cancel_scope.cancel()


def result(code: Any, op_id: Any = ("s", OP_ID), text: str = "done") -> dict[str, Any]:
    return {"id": op_id, "result_code": code, "result_text": ("s", text)}


async def wait_for_core(sim: CoreSimulator, predicate: Callable[[], object]) -> None:
    with anyio.fail_after(20):
        await sim.wait_for_async(predicate)


async def download(d: Daemon, update_id: str) -> None:
    event = await d.execute(StartDownload(update_id))
    assert isinstance(event, DownloadComplete), event


async def test_introspection_shows_the_methods_typed_as_genivi_reads_them(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        gateway_on(dbus_bus, d),
        DBusConnection.open(dbus_bus.address) as peer,
    ):
        call = new_method_call(
            DBusAddress(CLIENT.object_path, CLIENT.bus_name, "org.freedesktop.DBus.Introspectable"),
            "Introspect",
        )
        (xml,) = (await peer.call(call, timeout=5)).body
        root = ET.fromstring(xml)
        (interface,) = [i for i in root.iter("interface") if i.get("name") == CLIENT.interface]
        methods = {
            m.get("name"): [a.get("type") for a in m.iter("arg")] for m in interface.iter("method")
        }
        assert methods == {"initiateDownload": ["s"], "updateReport": ["s", "aa{sv}"]}
        call = new_method_call(
            DBusAddress("/org", CLIENT.bus_name, "org.freedesktop.DBus.Introspectable"),
            "Introspect",
        )
        (xml,) = (await peer.call(call, timeout=5)).body
        assert [n.get("name") for n in ET.fromstring(xml).iter("node") if n.get("name")] == [
            "genivi"
        ]


async def test_a_report_under_the_manifest_id_reaches_core_under_its_own_id_with_its_code(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, log_waiter: Any
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    handed = log_waiter("Handed update")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d) as gateway,
    ):
        await download(d, update_id)
        await handed.wait()
        image, signature = swlm.images[0]
        # As 2016 called it: the SWLM's bus name as the interface, two strings.
        assert swlm.calls[0] == (SWLM_PATH, SWLM_NAME, "downloadComplete", "ss")
        assert await anyio.Path(image).read_bytes() == IMAGE
        assert signature == ""
        record = d.journal.update(update_id)
        assert record is not None
        assert record.state is UpdateState.DELIVERED
        assert record.holder == gateway.holder
        await swlm.report("libats", [result(("i", 4), text="rpm failed")])
        await wait_for_core(sim, lambda: sim.reports(DEVICE))
    (report,) = sim.reports(DEVICE)
    assert report.update_id == update_id
    assert [(r.id, r.result_code, r.result_text) for r in report.results] == [
        (OP_ID, 4, "rpm failed")
    ]


async def test_the_swlm_gets_one_update_at_a_time(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, log_waiter: Any
) -> None:
    first = sim.queue_update(DEVICE, "libats", "2.0.0")
    second = sim.queue_update(DEVICE, "libats", "2.0.0")
    held_back = log_waiter(f"Update {second} waits until the SWLM reports update {first}")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        await download(d, first)
        await download(d, second)
        await held_back.wait()
        # The second waits in the outbox while the first is not reported.
        assert d.journal.pending_events(CHANNEL) == 1
        assert len(swlm.images) == 1
        assert swlm.images[0][0].endswith(first)
        await swlm.report("manifest-a", [result(("i", 0))])
        await swlm.wait_for_images(2)
        assert swlm.images[1][0].endswith(second)
        await swlm.report("manifest-b", [result(("i", 0))])
        await wait_for_core(sim, lambda: len(sim.reports(DEVICE)) == 2)
    assert [r.update_id for r in sim.reports(DEVICE)] == [first, second]


async def test_the_next_update_goes_out_after_the_report_deadline(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    first = sim.queue_update(DEVICE, "libats", "2.0.0")
    second = sim.queue_update(DEVICE, "libats", "2.0.0")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
        anyio.create_task_group() as tg,
    ):
        timeout = ReportTimeout(d.journal, 0.3, queued=d.reports.wake)
        tg.start_soon(timeout.run)
        await download(d, first)
        await download(d, second)
        await swlm.wait_for_images(2)  # the first never reported: its deadline passed
        await wait_for_core(sim, lambda: sim.reports(DEVICE))
        tg.cancel_scope.cancel()
    (report,) = [r for r in sim.reports(DEVICE) if r.update_id == first]
    assert report.results[0].result_code == 19  # GENERAL_ERROR: no report in time


async def test_an_update_waits_for_an_absent_swlm_and_goes_when_it_appears(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, log_waiter: Any
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    waiting = log_waiter("is not on the bus")
    handed = log_waiter("Handed update")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        gateway_on(dbus_bus, d, backoff=Backoff(600, 600)),  # only its appearance can wake it
    ):
        await download(d, update_id)
        await waiting.wait()
        assert d.journal.update_state(update_id) is UpdateState.DOWNLOADED
        async with swlm_on(dbus_bus):
            await handed.wait()
        assert d.journal.update_state(update_id) is UpdateState.DELIVERED


async def test_an_update_kept_for_an_absent_swlm_survives_a_daemon_restart(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    async with running_daemon(tmp_path, sim, event_outbox=True) as d, gateway_on(dbus_bus, d):
        await download(d, update_id)
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        await swlm.wait_for_images(1)
        assert swlm.images[0][0].endswith(update_id)


async def test_an_swlm_that_restarts_before_reporting_is_handed_the_update_again(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    async with running_daemon(tmp_path, sim, event_outbox=True) as d, gateway_on(dbus_bus, d):
        async with swlm_on(dbus_bus) as swlm:
            await download(d, update_id)
            await swlm.wait_for_images(1)
        async with swlm_on(dbus_bus) as restarted:
            await restarted.wait_for_images(1)
            await restarted.report("libats", [result(("i", 1))])
            await wait_for_core(sim, lambda: sim.reports(DEVICE))
    (report,) = sim.reports(DEVICE)
    assert report.results[0].result_code == 1


async def test_a_slow_swlm_does_not_hold_up_the_daemons_own_methods(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    first = sim.queue_update(DEVICE, "libats", "2.0.0")
    second = sim.queue_update(DEVICE, "libats", "2.0.0")
    hold = anyio.Event()
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus, hold=hold) as swlm,
        gateway_on(dbus_bus, d, timeout=1),
    ):
        await download(d, first)
        # While downloadComplete waits for its answer, the SWLM's own call is served.
        call = new_method_call(CLIENT, "initiateDownload", "s", (second,))
        assert (await swlm.connection.call(call, timeout=5)).body == ()
        await d.recorder.wait_for(
            lambda events: any(
                isinstance(e, DownloadComplete) and e.update_id == second for e in events
            )
        )
        hold.set()  # the first call timed out meanwhile: it is handed over again
        await swlm.wait_for_images(1)
        assert swlm.images[0][0].endswith(first)


async def test_a_report_before_downloadComplete_is_answered_is_about_that_update(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    # A quick SWLM reports, under its manifest's id, before the daemon has its answer.
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    hold = anyio.Event()
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus, hold=hold) as swlm,
        gateway_on(dbus_bus, d),
    ):
        await download(d, update_id)
        await swlm.changes.wait_until(lambda: any(c[2] == "downloadComplete" for c in swlm.calls))
        await swlm.report("libats", [result(("i", 0))])
        hold.set()
        await wait_for_core(sim, lambda: sim.reports(DEVICE))
        await swlm.wait_for_images(1)
        assert d.journal.update_state(update_id) is UpdateState.REPORTED
    (report,) = sim.reports(DEVICE)
    assert report.update_id == update_id


async def test_a_report_that_matches_nothing_handed_over_is_a_dbus_error(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, log_waiter: Any
) -> None:
    logged = log_waiter("the report is refused")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        with pytest.raises(DBusError) as caught:
            await swlm.report("libats", [result(("i", 0))])
        await logged.wait()
    assert caught.value.name == "org.genivi.SotaClient.Error.UnknownUpdate"
    assert "libats" in caught.value.text
    assert sim.reports(DEVICE) == []


@pytest.mark.parametrize(
    ("results", "name", "words"),
    [
        ([{"id": ("s", OP_ID), "result_text": ("s", "x")}], "MissingArgument", "no result_code"),
        ([result(("b", True))], "MalformedArgument", "must be an integer or a name"),
        ([result(("s", "NOT_A_CODE"))], "MalformedArgument", "unknown result code"),
        ([result(("i", 42))], "MalformedArgument", "expected a number from 0 to 19"),
    ],
)
async def test_bad_results_are_dbus_errors_naming_what_is_wrong(
    tmp_path: Path,
    sim: CoreSimulator,
    dbus_bus: Bus,
    results: list[dict[str, Any]],
    name: str,
    words: str,
    log_waiter: Any,
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    handed = log_waiter("Handed update")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        await download(d, update_id)
        await handed.wait()
        with pytest.raises(DBusError) as caught:
            await swlm.report("libats", results)
        assert d.journal.update_state(update_id) is UpdateState.DELIVERED  # still awaited
    assert caught.value.name == f"org.genivi.SotaClient.Error.{name}"
    assert words in caught.value.text
    assert sim.reports(DEVICE) == []


async def test_a_decline_with_op_id_na_reaches_core_with_code_13(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    """GENIVI's decline names the update as Core does and the operation "N/A"; Core wants a
    UUID there, so the operation takes the update's id."""
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        await download(d, update_id)
        await swlm.wait_for_images(1)
        decline = result(("i", 13), ("s", "N/A"), "Installation declined by user")
        await swlm.report(update_id, [decline])
        await wait_for_core(sim, lambda: sim.reports(DEVICE))
    (report,) = sim.reports(DEVICE)
    assert report.status == 204
    assert [(r.id, r.result_code) for r in report.results] == [(update_id, 13)]


async def test_the_same_report_again_is_answered_from_the_journal(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        await download(d, update_id)
        await swlm.wait_for_images(1)
        await swlm.report(update_id, [result(("i", 0))])
        await wait_for_core(sim, lambda: sim.reports(DEVICE))
        await swlm.report(update_id, [result(("i", 0))])  # no error, and no second POST
        with pytest.raises(DBusError) as caught:
            await swlm.report(update_id, [result(("i", 4))])
    assert len(sim.reports(DEVICE)) == 1
    assert caught.value.name == "org.genivi.SotaClient.Error.ReportRefused"
    assert "already reported" in caught.value.text


async def test_initiate_download_downloads_and_a_bad_id_is_refused(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus) as swlm,
        gateway_on(dbus_bus, d),
    ):
        call = new_method_call(CLIENT, "initiateDownload", "v", (("s", update_id),))
        assert (await swlm.connection.call(call, timeout=5)).body == ()
        await swlm.wait_for_images(1)
        bad = new_method_call(CLIENT, "initiateDownload", "s", ("../etc",))
        with pytest.raises(DBusError) as caught:
            await swlm.connection.call(bad, timeout=5)
        missing = new_method_call(CLIENT, "initiateDownload")
        with pytest.raises(DBusError) as none:
            await swlm.connection.call(missing, timeout=5)
    assert caught.value.name == "org.genivi.SotaClient.Error.MalformedArgument"
    assert "it starts with '.'" in caught.value.text
    assert none.value.name == "org.genivi.SotaClient.Error.MissingArgument"


async def test_unknown_methods_and_objects_are_dbus_errors(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        gateway_on(dbus_bus, d),
        DBusConnection.open(dbus_bus.address) as peer,
    ):
        with pytest.raises(DBusError) as method:
            await peer.call(new_method_call(CLIENT, "abortDownload", "s", ("x",)), timeout=5)
        elsewhere = DBusAddress("/org/genivi/Other", CLIENT.bus_name, CLIENT.interface)
        with pytest.raises(DBusError) as path:
            await peer.call(new_method_call(elsewhere, "initiateDownload", "s", ("x",)), timeout=5)
    assert method.value.name == "org.freedesktop.DBus.Error.UnknownMethod"
    assert path.value.name == "org.freedesktop.DBus.Error.UnknownObject"


@pytest.mark.parametrize(
    "reply",
    [
        ("as", (["bluez_driver", "bluez_apps"],)),
        (
            "aa{sv}aa{sv}",
            (
                [
                    {
                        "package_id": ("s", "bluez_driver"),
                        "name": ("s", "bluez"),
                        "last_modified": ("t", 7),
                    }
                ],
                [
                    {
                        "module": ("s", "ecu1"),
                        "firmware_id": ("s", "1.2.3"),
                        "last_modified": ("t", 9),
                    }
                ],
            ),
        ),
    ],
    ids=["genivi-as", "2016-pair"],
)
async def test_installed_packages_in_both_reply_forms(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, reply: tuple[str, tuple[Any, ...]]
) -> None:
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus, packages_reply=reply) as swlm,
        gateway_on(dbus_bus, d) as gateway,
    ):
        software = await gateway.installed_software()
        (call,) = swlm.calls
    assert call == (SWLM_PATH, SWLM_NAME, "getInstalledPackages", "bb")
    assert software.packages[0].package_id == "bluez_driver"
    if reply[0] == "as":
        assert [p.name for p in software.packages] == ["bluez_driver", "bluez_apps"]
    else:
        assert software.packages[0].last_modified == 7
        assert software.firmwares[0].firmware_id == "1.2.3"


async def test_an_unexpected_installed_packages_reply_is_a_clear_error(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus
) -> None:
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        swlm_on(dbus_bus, packages_reply=("i", (3,))),
        gateway_on(dbus_bus, d) as gateway,
    ):
        with pytest.raises(Exception, match="getInstalledPackages answered 'i'"):
            await gateway.installed_software()


async def test_the_name_is_taken_once_its_holder_lets_go(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, log_waiter: Any
) -> None:
    """The GENIVI SWLM requests the client's name before calling it (flags 0): a daemon that
    starts meanwhile queues for it and gets it when the SWLM releases it."""
    async with (
        running_daemon(tmp_path, sim, event_outbox=True) as d,
        DBusConnection.open(dbus_bus.address) as squatter,
    ):
        assert await squatter.request_name(CLIENT.bus_name, 0) == 1
        d.journal.event_channels = (CHANNEL,)
        gateway = DBusGateway(
            DBusConfig(timeout=5),
            d.journal,
            execute=d.interpreter.execute,
            submit=d.interpreter.submit,
            address=dbus_bus.address,
            backoff=FAST,
        )
        async with anyio.create_task_group() as tg:
            queued = log_waiter("Another process owns the D-Bus name")
            await tg.start(gateway.serve)
            await queued.wait()
            assert not gateway.connected.is_set()
            release = new_method_call(
                DBusAddress(
                    "/org/freedesktop/DBus", "org.freedesktop.DBus", "org.freedesktop.DBus"
                ),
                "ReleaseName",
                "s",
                (CLIENT.bus_name,),
            )
            await squatter.call(release, timeout=5)
            with anyio.fail_after(10):
                await gateway.connected.wait()
            tg.cancel_scope.cancel()


class _FailsOnce:
    """The journal, except that its first ``due_events`` raises as a bug would."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    def due_events(self, *args: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the deliverer")
        return self._journal.due_events(*args)


async def test_a_bug_in_the_gateway_is_logged_and_the_gateway_starts_again(
    tmp_path: Path, sim: CoreSimulator, dbus_bus: Bus, log_waiter: Any
) -> None:
    update_id = sim.queue_update(DEVICE, "libats", "2.0.0")
    failed = log_waiter("The D-Bus gateway failed unexpectedly")
    async with running_daemon(tmp_path, sim, event_outbox=True) as d, swlm_on(dbus_bus) as swlm:
        d.journal.event_channels = (CHANNEL,)
        await download(d, update_id)
        gateway = DBusGateway(
            DBusConfig(timeout=5),
            _FailsOnce(d.journal),  # type: ignore[arg-type]
            execute=d.interpreter.execute,
            submit=d.interpreter.submit,
            address=dbus_bus.address,
            watch_interval=0.05,
            backoff=FAST,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.serve)
            await failed.wait()
            await swlm.wait_for_images(1)  # served again, and the update went
            tg.cancel_scope.cancel()
