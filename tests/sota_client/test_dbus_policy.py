"""docs/dbus/org.genivi.SotaClient.conf is the policy the daemon needs on a system bus: with it
the daemon owns its name there, without it the bus refuses (a bus that denies by default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from jeepney import DBusAddress, new_method_call

from sota_client.gateways._dbus_connection import DBusConnection, DBusError

from .dbus_fixtures import Bus, start_bus

pytestmark = pytest.mark.anyio

POLICY = Path(__file__).parents[2] / "docs" / "dbus" / "org.genivi.SotaClient.conf"
# A system bus as Debian configures it: nobody owns or calls anything unless a policy says so.
SYSTEM_BUS = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{{address}}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  </policy>
  {include}
</busconfig>
"""


def system_bus(include: bool) -> Iterator[Bus]:
    directory = Path(tempfile.mkdtemp(prefix="sota-sys-"))
    text = SYSTEM_BUS.format(include=f"<include>{POLICY}</include>" if include else "")
    try:
        with start_bus(directory, config_text=text) as bus:
            yield bus
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def with_policy() -> Iterator[Bus]:
    yield from system_bus(include=True)


@pytest.fixture
def without_policy() -> Iterator[Bus]:
    yield from system_bus(include=False)


CLIENT = DBusAddress("/org/genivi/SotaClient", "org.genivi.SotaClient", "org.genivi.SotaClient")


@pytest.mark.skipif(os.geteuid() != 0, reason="the policy grants root; CI runs as root")
async def test_with_the_policy_the_daemon_owns_its_name_and_root_may_call_it(
    with_policy: Bus,
) -> None:
    async def answer(message: object) -> None:
        return None

    async with (
        DBusConnection.open(with_policy.address, method_handler=answer) as daemon,
        DBusConnection.open(with_policy.address) as caller,
    ):
        assert await daemon.request_name("org.genivi.SotaClient", 0x2) == 1
        with pytest.raises(DBusError) as other:
            await daemon.request_name("org.example.NotOurs", 0x2)
        ping = new_method_call(
            DBusAddress(CLIENT.object_path, CLIENT.bus_name, "org.freedesktop.DBus.Peer"), "Ping"
        )
        await caller.call(ping, timeout=5)
    assert other.value.name == "org.freedesktop.DBus.Error.AccessDenied"


async def test_without_the_policy_the_name_is_refused(without_policy: Bus) -> None:
    async with DBusConnection.open(without_policy.address) as daemon:
        with pytest.raises(DBusError) as refused:
            await daemon.request_name("org.genivi.SotaClient", 0x2)
    assert refused.value.name == "org.freedesktop.DBus.Error.AccessDenied"
