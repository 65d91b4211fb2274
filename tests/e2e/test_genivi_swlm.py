"""Tests of the GENIVI SWLM stand-in: on a private bus it does what the recorded genivi_swm did."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jeepney import (
    DBusAddress,
    HeaderFields,
    MatchRule,
    Message,
    MessageType,
    new_error,
    new_method_call,
    new_method_return,
)
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

pytestmark = pytest.mark.e2e

STUB = Path(__file__).with_name("genivi_swlm.py")
NAME = "org.genivi.SoftwareLoadingManager"
SWLM = DBusAddress("/org/genivi/SoftwareLoadingManager", bus_name=NAME, interface=NAME)
CLIENT = "org.genivi.SotaClient"
CLIENT_PATH = "/org/genivi/SotaClient"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
DEADLINE = 5.0
DECLINED = {"id": "N/A", "result_code": 13, "result_text": "Installation declined by user"}


def client_xml(update_report: tuple[str, str], initiate_download: str) -> str:
    """The client's introspection, with the in-arg types it advertises."""
    report_id, report_results = update_report
    return f"""<node name="{CLIENT_PATH}">
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg direction="out" type="s"/></method>
  </interface>
  <interface name="{CLIENT}">
    <method name="initiateDownload"><arg direction="in" type="{initiate_download}"/></method>
    <method name="updateReport">
      <arg direction="in" type="{report_id}" name="update_id"/>
      <arg direction="in" type="{report_results}" name="operations_results"/>
    </method>
  </interface>
</node>
"""


TYPED_XML = client_xml(("s", "aa{sv}"), "s")
VARIANT_XML = client_xml(("v", "v"), "v")


@dataclass
class Call:
    """One call the fake client received."""

    member: str
    path: str
    interface: str | None
    signature: str
    body: tuple[Any, ...]
    queued_owners: list[str] = field(default_factory=list)


class FakeClient(threading.Thread):
    """Plays the SOTA client: owns its name, answers Introspect, records what the SWLM calls."""

    def __init__(self, address: str, introspection: str | None = TYPED_XML) -> None:
        super().__init__(daemon=True)
        self.introspection = introspection
        self.conn = open_dbus_connection(bus=address)
        granted = self.conn.send_and_get_reply(
            message_bus.RequestName(CLIENT, 3), timeout=DEADLINE
        ).body[0]
        assert granted == 1
        self.unique_name: str = self.conn.unique_name
        self.calls: queue.Queue[Call] = queue.Queue()
        self.received: list[Call] = []
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    message = self.conn.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if message.header.message_type is MessageType.method_call:
                    self.answer(message)
        except BaseException as exc:
            self.failure = exc

    def answer(self, message: Message) -> None:
        fields = message.header.fields
        call = Call(
            member=fields[HeaderFields.member],
            path=fields[HeaderFields.path],
            interface=fields.get(HeaderFields.interface),
            signature=fields.get(HeaderFields.signature, ""),
            body=tuple(message.body),
        )
        if call.member == "Introspect":
            if self.introspection is None:
                reply = new_error(message, "org.example.Error.NoIntrospection", "s", ("no",))
            else:
                reply = new_method_return(message, "s", (self.introspection,))
        elif call.member in ("initiateDownload", "updateReport"):
            if call.member == "updateReport":
                # While it reports, the SWLM is queued for our name (GENIVI's quirk).
                owners = self.conn.send_and_get_reply(
                    message_bus.ListQueuedOwners(CLIENT), timeout=DEADLINE
                )
                call.queued_owners = list(owners.body[0])
            reply = new_method_return(message)
        else:
            reply = new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s", ("?",))
        self.conn.send(reply)
        self.received.append(call)
        self.calls.put(call)

    def next_call(self, member: str, timeout: float = DEADLINE) -> Call:
        """The next call named ``member`` (Introspect calls before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                call = self.calls.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {member} call within {timeout} s") from None
            if call.member == member:
                return call

    def members(self) -> list[str]:
        return [call.member for call in self.received]

    def stop(self) -> None:
        self.stopping.set()
        self.join(DEADLINE)
        self.conn.close()
        assert self.failure is None, self.failure


class Stub:
    """The stand-in SWLM as a process, its event lines collected from stdout."""

    def __init__(self, address: str, *args: str) -> None:
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address)
        self.proc = subprocess.Popen(
            [sys.executable, str(STUB), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self.read_events, daemon=True),
            threading.Thread(target=self.read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        self.ready = self.wait_for("ready", timeout=15.0)

    def read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.events.append(json.loads(line))
                self.changed.notify_all()

    def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def named(self, event: str) -> list[dict[str, Any]]:
        with self.changed:
            return [e for e in self.events if e["event"] == event]

    def wait_for(self, event: str, timeout: float = DEADLINE, **match: Any) -> dict[str, Any]:
        """The first event line named ``event`` with the given fields, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for item in self.events:
                    if item["event"] == event and all(item.get(k) == v for k, v in match.items()):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self.readers_alive()):
                    raise AssertionError(
                        f"no {event} {match} within {timeout} s; events: {self.events}; "
                        f"stderr: {''.join(self.stderr)}"
                    )
                self.changed.wait(min(remaining, 0.1))

    def readers_alive(self) -> bool:
        return any(reader.is_alive() for reader in self.readers)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(DEADLINE)
        for reader in self.readers:
            reader.join(DEADLINE)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


class Bus:
    """A private session bus, and everything a test started on it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sota-g-"))
        self.daemon = subprocess.Popen(
            [
                "dbus-daemon",
                "--session",
                "--nofork",
                "--print-address=1",
                f"--address=unix:path={self.dir}/bus",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.daemon.stdout is not None
        self.address = self.daemon.stdout.readline().strip()
        assert self.address.startswith("unix:"), "dbus-daemon did not start"
        self.stubs: list[Stub] = []
        self.clients: list[FakeClient] = []
        self.conns: list[Any] = []

    def stub(self, *args: str) -> Stub:
        stub = Stub(self.address, *args)
        self.stubs.append(stub)
        return stub

    def client(self, introspection: str | None = TYPED_XML) -> FakeClient:
        client = FakeClient(self.address, introspection)
        self.clients.append(client)
        return client

    def connect(self) -> Any:
        conn = open_dbus_connection(bus=self.address)
        self.conns.append(conn)
        return conn

    def image(self, update_id: str = "libats", *operations: dict[str, Any], **extra: Any) -> str:
        """A stand-in ``.upd``: the manifest as a JSON file."""
        manifest = {"updateId": update_id, "name": "ATS", "description": "demo", **extra}
        manifest["operations"] = list(operations)
        path = self.dir / f"{update_id}-{uuid.uuid4().hex[:8]}.upd"
        path.write_text(json.dumps(manifest))
        return str(path)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for client in self.clients:
            client.stop()
        for stub in self.stubs:
            stub.stop()
            # Shown by pytest only when the test failed.
            print(f"--- stub stderr ---\n{''.join(stub.stderr)}")
        self.daemon.terminate()
        self.daemon.wait(DEADLINE)
        if self.daemon.stdout is not None:
            self.daemon.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bus() -> Iterator[Bus]:
    world = Bus()
    try:
        yield world
    finally:
        world.close()


def op(code: int = 0, **extra: Any) -> dict[str, Any]:
    """A manifest operation with a fresh id, as every GENIVI image needs."""
    return {"id": str(uuid.uuid4()), "operation": "installPackage", "result_code": code, **extra}


def call(conn: Any, member: str, signature: str, *body: Any) -> Message:
    message = new_method_call(SWLM, member, signature, body)
    return conn.send_and_get_reply(message, timeout=DEADLINE)


def returned(reply: Message) -> tuple[str, tuple[Any, ...]]:
    """The signature and body of a method return (fails on an error reply)."""
    assert reply.header.message_type is MessageType.method_return, reply.body
    return reply.header.fields.get(HeaderFields.signature, ""), tuple(reply.body)


def error_name(reply: Message) -> str:
    assert reply.header.message_type is MessageType.error
    return str(reply.header.fields[HeaderFields.error_name])


def variants(*values: Any) -> tuple[tuple[str, Any], ...]:
    """Arguments wrapped as dbus-python's proxy sends them to a ``v``-typed method."""
    return tuple(("b" if isinstance(v, bool) else "s", v) for v in values)


def typed_results(*results: dict[str, Any]) -> list[dict[str, tuple[str, Any]]]:
    """Report results as they arrive in ``aa{sv}``: values are variants, codes int32."""
    return [
        {
            "id": ("s", r["id"]),
            "result_code": ("i", r["result_code"]),
            "result_text": ("s", r["result_text"]),
        }
        for r in results
    ]


def test_introspection_declares_every_in_arg_as_variant(bus: Bus) -> None:
    """dbus-python without in_signature: ``v`` in-args and no out-args, as GENIVI exports them."""
    bus.stub()
    conn = bus.connect()
    address = DBusAddress(SWLM.object_path, bus_name=NAME, interface=INTROSPECTABLE)
    reply = conn.send_and_get_reply(new_method_call(address, "Introspect"), timeout=DEADLINE)
    root = ET.fromstring(returned(reply)[1][0])
    [interface] = [i for i in root.iter("interface") if i.get("name") == NAME]
    methods = {m.get("name"): list(m.iter("arg")) for m in interface.iter("method")}
    assert set(methods) >= {
        "updateAvailable",
        "updateConfirmation",
        "downloadComplete",
        "getInstalledPackages",
    }
    assert len(methods["updateAvailable"]) == 4
    for args in methods.values():
        assert {(a.get("direction"), a.get("type")) for a in args} == {("in", "v")}


@pytest.mark.parametrize(
    ("args", "packages"),
    [((), ["bluez_driver", "bluez_apps"]), (("--packages", "a_1,b_2"), ["a_1", "b_2"])],
)
def test_get_installed_packages_replies_a_string_array(
    bus: Bus, args: tuple[str, ...], packages: list[str]
) -> None:
    """GENIVI answers ``as``, not the IDL's struct arrays, to plain and variant-wrapped calls."""
    bus.stub(*args)
    conn = bus.connect()
    assert returned(call(conn, "getInstalledPackages", "bb", True, False)) == ("as", (packages,))
    plain = call(conn, "getInstalledPackages", "vv", *variants(True, False))
    assert returned(plain) == ("as", (packages,))


def test_unknown_method_and_wrong_argument_count_are_errors(bus: Bus) -> None:
    """A method GENIVI lacks gets UnknownMethod; a wrong arity dbus-python's TypeError."""
    bus.stub()
    conn = bus.connect()
    assert error_name(call(conn, "abortDownload", "s", "u1")) == (
        "org.freedesktop.DBus.Error.UnknownMethod"
    )
    assert error_name(call(conn, "downloadComplete", "s", "/x.upd")) == (
        "org.freedesktop.DBus.Python.TypeError"
    )


def test_report_comes_later_under_the_manifest_id_after_introspection(bus: Bus) -> None:
    """The recorded trace: reply true at once, then Introspect, then an ``saa{sv}`` report."""
    log = bus.dir / "swlm.log"
    stub = bus.stub("--install-seconds", "0.5", "--log", str(log))
    client = bus.client()
    conn = bus.connect()
    first, second = op(0), op(4, result_text="install failed")
    image = bus.image("libats", first, second)

    assert returned(call(conn, "downloadComplete", "ss", image, "")) == ("b", (True,))
    assert client.received == []  # the install runs after the reply

    report = client.next_call("updateReport")
    assert client.members() == ["Introspect", "updateReport"]
    introspect = client.received[0]
    assert (introspect.path, introspect.interface) == (CLIENT_PATH, INTROSPECTABLE)
    assert (report.path, report.interface, report.signature) == (CLIENT_PATH, CLIENT, "saa{sv}")
    expected = [
        {"id": first["id"], "result_code": 0, "result_text": "Operation successful"},
        {"id": second["id"], "result_code": 4, "result_text": "install failed"},
    ]
    assert report.body == ("libats", typed_results(*expected))
    # GENIVI requests the client's name before calling it, and releases it afterwards.
    assert report.queued_owners == [client.unique_name, stub.ready["unique_name"]]
    event = stub.wait_for("report", update_id="libats")
    assert event == {
        "event": "report",
        "update_id": "libats",
        "results": expected,
        "signature": "saa{sv}",
        "reply": "ok",
    }
    assert stub.named("introspected") == [
        {"event": "introspected", "method": "updateReport", "signature": "saa{sv}"}
    ]
    owners = conn.send_and_get_reply(message_bus.ListQueuedOwners(CLIENT), timeout=DEADLINE)
    assert list(owners.body[0]) == [client.unique_name]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert event in logged
    assert logged[0]["event"] == "ready"


@pytest.mark.parametrize(
    ("introspection", "signature"),
    [(VARIANT_XML, "vv"), (None, "saa{sv}")],
    ids=["advertises-v", "introspection-fails"],
)
def test_report_typing_follows_the_client_introspection(
    bus: Bus, introspection: str | None, signature: str
) -> None:
    """Advertised ``v`` gets variants; a failed introspection gets dbus-python's guess."""
    stub = bus.stub()
    client = bus.client(introspection)
    conn = bus.connect()
    operation = op(0, result_text="done")
    returned(call(conn, "downloadComplete", "ss", bus.image("libats", operation), ""))

    report = client.next_call("updateReport")
    assert report.signature == signature
    results = typed_results({"id": operation["id"], "result_code": 0, "result_text": "done"})
    if signature == "vv":
        assert report.body == (("s", "libats"), ("aa{sv}", results))
    else:
        assert report.body == ("libats", results)
    assert stub.wait_for("report")["signature"] == signature


def test_update_available_without_confirmation_initiates_the_download(bus: Bus) -> None:
    """``updateAvailable(id, sig, desc, false)`` in the client's order: initiateDownload(id)."""
    stub = bus.stub()
    client = bus.client()
    conn = bus.connect()
    reply = call(conn, "updateAvailable", "sssb", "u-1", "sig", "desc", False)
    assert returned(reply) == ("b", (True,))

    start = client.next_call("initiateDownload")
    assert (start.signature, start.body) == ("s", ("u-1",))
    assert client.members() == ["Introspect", "initiateDownload"]
    assert stub.wait_for("initiateDownload")["reply"] == "ok"


def test_operation_result_from_outside_completes_the_active_operation(bus: Bus) -> None:
    """``operationResult`` is GENIVI's worker callback: it ends whichever operation is active."""
    stub = bus.stub()
    client = bus.client()
    conn = bus.connect()
    slow = op(0, time_ms=60_000)
    returned(call(conn, "downloadComplete", "ss", bus.image("libats", slow), ""))
    stub.wait_for("manifest", update_id="libats")

    reply = call(conn, "operationResult", "iis", 1, 6, "removal failed")
    assert returned(reply) == ("b", (True,))
    report = client.next_call("updateReport")
    assert report.body == (
        "libats",
        typed_results({"id": slow["id"], "result_code": 6, "result_text": "removal failed"}),
    )


@pytest.mark.parametrize("decline", [False, True], ids=["approve", "decline"])
def test_update_available_with_confirmation_asks_the_user(bus: Bus, decline: bool) -> None:
    """With confirmation the user answers: approval downloads, a decline reports code 13."""
    stub = bus.stub(*(["--decline"] if decline else []))
    client = bus.client()
    conn = bus.connect()
    returned(call(conn, "updateAvailable", "sssb", "u-2", "sig", "desc", True))

    if decline:
        report = client.next_call("updateReport")
        assert (report.signature, report.body) == ("saa{sv}", ("u-2", typed_results(DECLINED)))
        assert stub.wait_for("report")["results"] == [DECLINED]
    else:
        start = client.next_call("initiateDownload")
        assert start.body == ("u-2",)
    assert stub.wait_for("userConfirmation")["approved"] is not decline


@pytest.mark.parametrize("approved", [True, False])
def test_update_confirmation_downloads_or_reports_the_decline(bus: Bus, approved: bool) -> None:
    """``updateConfirmation`` as the HMI sends it, variant-wrapped by dbus-python."""
    bus.stub()
    client = bus.client()
    conn = bus.connect()
    reply = call(conn, "updateConfirmation", "vv", *variants("u-3", approved))
    assert returned(reply) == ("b", (True,))

    if approved:
        assert client.next_call("initiateDownload").body == ("u-3",)
    else:
        assert client.next_call("updateReport").body == ("u-3", typed_results(DECLINED))


def test_second_image_while_busy_loses_both_reports(bus: Bus) -> None:
    """The recorded bug: two downloadComplete back to back run only the first, report neither."""
    state = bus.dir / "state.json"
    stub = bus.stub("--install-seconds", "0.5", "--state", str(state))
    client = bus.client()
    conn = bus.connect()
    first, second = op(0), op(0)
    image_a, image_b = bus.image("a", first), bus.image("b", second)

    returned(call(conn, "downloadComplete", "ss", image_a, ""))
    returned(call(conn, "downloadComplete", "ss", image_b, ""))

    assert stub.wait_for("downloadComplete", image=image_a)["accepted"] is True
    assert stub.wait_for("downloadComplete", image=image_b)["accepted"] is False
    lost = stub.wait_for("report_lost", update_id="a")
    assert lost["next_image"] == image_b
    # Every message before this answer has been handled, and nothing is left scheduled.
    returned(call(conn, "getInstalledPackages", "bb", True, False))
    assert stub.named("report") == []
    assert client.received == []
    assert json.loads(state.read_text()) == [first["id"]]


def test_the_same_image_twice_reports_already_processed(bus: Bus) -> None:
    """Finished operation ids are kept, across restarts too: a resent image gets code 1."""
    state = bus.dir / "state.json"
    stub = bus.stub("--state", str(state))
    client = bus.client()
    conn = bus.connect()
    done, new = op(0), op(0)
    returned(call(conn, "downloadComplete", "ss", bus.image("early", done), ""))
    assert client.next_call("updateReport").body[1] == typed_results(
        {"id": done["id"], "result_code": 0, "result_text": "Operation successful"}
    )
    stub.wait_for("report", update_id="early")
    image = bus.image("libats", new, done)
    again = {"id": done["id"], "result_code": 1, "result_text": "Operation already processed"}
    ran = {"id": new["id"], "result_code": 0, "result_text": "Operation successful"}

    returned(call(conn, "downloadComplete", "ss", image, ""))
    # Already-processed results come first, as GENIVI collects them while loading.
    assert client.next_call("updateReport").body == ("libats", typed_results(again, ran))
    returned(call(conn, "downloadComplete", "ss", image, ""))
    twice = {**again, "id": new["id"]}
    assert client.next_call("updateReport").body == ("libats", typed_results(twice, again))
    stub.wait_for("report", update_id="libats", results=[twice, again])

    assert stub.stop() == 0
    restarted = bus.stub("--state", str(state))
    returned(call(conn, "downloadComplete", "ss", bus.image("late", done), ""))
    assert client.next_call("updateReport").body[1] == typed_results(again)
    restarted.wait_for("report", update_id="late")
    assert restarted.stop() == 0
    bus.stub("--state", str(state), "--reset")
    assert not state.exists()


def test_corrupt_images_get_no_report_and_the_next_image_does(bus: Bus) -> None:
    """Random bytes or a manifest without updateId: logged, never reported; not wedged."""
    stub = bus.stub()
    client = bus.client()
    conn = bus.connect()
    garbage = bus.dir / "garbage.upd"
    garbage.write_bytes(os.urandom(64) + b"\xff")
    no_id = bus.dir / "no_id.upd"
    no_id.write_text(json.dumps({"name": "n", "description": "d", "operations": [op()]}))

    for image in (str(garbage), str(no_id)):
        returned(call(conn, "downloadComplete", "ss", image, ""))
        assert stub.wait_for("corrupt", image=image)["error"]
    good = op(0)
    returned(call(conn, "downloadComplete", "ss", bus.image("good", good), ""))
    assert client.next_call("updateReport").body[0] == "good"
    stub.wait_for("report", update_id="good")
    assert len(stub.named("report")) == 1
    assert client.members() == ["Introspect", "updateReport"]


def test_absent_client_times_out_without_crashing(bus: Bus) -> None:
    """With no client GENIVI owns the client's name, calls itself, and waits out the timeout."""
    stub = bus.stub("--timeout", "0.5", "--install-seconds", "0")
    conn = bus.connect()
    returned(call(conn, "downloadComplete", "ss", bus.image("libats", op(0)), ""))

    event = stub.wait_for("report", update_id="libats")
    assert event["signature"] == "saa{sv}"  # guessed, and sent to itself
    assert "NoReply" in event["reply"]
    assert stub.wait_for("unknownMethod", member="updateReport")["path"] == CLIENT_PATH
    assert "NoReply" in stub.named("introspected")[0]["error"]
    assert returned(call(conn, "getInstalledPackages", "bb", True, False))[0] == "as"
    has_owner = conn.send_and_get_reply(message_bus.NameHasOwner(CLIENT), timeout=DEADLINE)
    assert has_owner.body == (False,)
    assert stub.proc.poll() is None


def test_invalid_result_code_wedges_it_without_a_report(bus: Bus) -> None:
    """A worker code outside 0-19 makes GENIVI raise: op recorded, no report, queue stuck."""
    state = bus.dir / "state.json"
    stub = bus.stub("--install-seconds", "0", "--state", str(state))
    client = bus.client()
    conn = bus.connect()
    bad = op(42)
    returned(call(conn, "downloadComplete", "ss", bus.image("bad", bad), ""))

    assert stub.wait_for("wedged")["id"] == bad["id"]
    waiting = bus.image("next", op(0))
    returned(call(conn, "downloadComplete", "ss", waiting, ""))
    assert stub.wait_for("downloadComplete", image=waiting)["accepted"] is False
    returned(call(conn, "getInstalledPackages", "bb", True, False))
    assert stub.named("report") == []
    assert client.received == []
    assert json.loads(state.read_text()) == [bad["id"]]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly(bus: Bus, signum: int) -> None:
    """SIGTERM and SIGINT end it with status 0 and release its name."""
    stub = bus.stub()
    conn = bus.connect()
    rule = MatchRule(
        type="signal",
        sender="org.freedesktop.DBus",
        interface="org.freedesktop.DBus",
        member="NameOwnerChanged",
    )
    rule.add_arg_condition(0, NAME)
    conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=DEADLINE)
    with conn.filter(rule) as changes:
        assert stub.stop(signum) == 0
        changed = conn.recv_until_filtered(changes, timeout=DEADLINE)
    assert changed.body == (NAME, stub.ready["unique_name"], "")
    assert stub.named("stopped")
