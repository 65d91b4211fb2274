"""A clean-room stand-in for the GENIVI Software Loading Manager (``genivi_swm`` at ``987c2f7``).

It reproduces on the session bus what the real SWLM was seen to do
(``gateways-observed.md``), so that tests prove the daemon against an unchanged SWLM; it must
not be adapted to the daemon. Run: ``python genivi_swlm.py [options]`` with
``DBUS_SESSION_BUS_ADDRESS`` set.

Options:

* ``--client NAME``: the SOTA client's bus name (default ``org.genivi.SotaClient``); its path
  and interface follow the GENIVI rule (path ``/`` + name with dots as slashes, interface =
  name).
* ``--decline``: the "user" declines updates that ask for confirmation (default: approves).
* ``--packages A,B``: what ``getInstalledPackages`` returns (default ``bluez_driver,bluez_apps``).
* ``--state PATH``: JSON list of finished operation ids, kept across restarts like GENIVI's
  database (default: kept in memory only). ``--reset`` empties it first (GENIVI's ``-r``).
* ``--timeout S``: D-Bus call timeout (default 25, dbus-python's).
* ``--install-seconds S``: how long an operation without ``time_ms`` takes (default 0.2).
* ``--log PATH``: append the event lines (below) to this file too.

Exported on ``/org/genivi/SoftwareLoadingManager``, interface
``org.genivi.SoftwareLoadingManager``, as dbus-python does without ``in_signature``: the
introspection declares every in-arg ``v`` and no out-arg, calls are accepted plainly typed or
variant-wrapped, a wrong argument count gets ``org.freedesktop.DBus.Python.TypeError`` and an
unknown method ``org.freedesktop.DBus.Error.UnknownMethod``. Methods (each replies ``b`` true
at once, then works):

* ``updateAvailable(update_id, description, signature, request_confirmation)``: with
  confirmation the "user" answers (see ``--decline``) as through ``updateConfirmation``;
  without, it calls the client's ``initiateDownload(update_id)``.
* ``updateConfirmation(update_id, approved)``: approved, ``initiateDownload(update_id)``;
  declined, ``updateReport(update_id, [{id: "N/A", result_code: 13, result_text: "Installation
  declined by user"}])``.
* ``downloadComplete(update_image, signature)``: queues the image and installs it (below).
* ``operationResult(transaction_id, result_code, result_text)``: the workers' callback; the
  stub's workers are simulated inside it, but an outside call completes the active operation
  as it would in GENIVI.
* ``getInstalledPackages(include_packages, include_module_firmware)``: replies ``as``.

The image (our stand-in for GENIVI's squashfs ``.upd``) is the update manifest itself, a JSON
file::

    {"updateId": "libats", "name": "...", "description": "...",
     "operations": [{"id": "<uuid>", "operation": "installPackage",
                     "result_code": 0, "result_text": "...", "time_ms": 200}]}

``updateId``, ``name`` and ``description`` are mandatory; ``result_code`` (default 0) is what
the simulated worker returns, ``result_text`` is optional, ``time_ms`` is the operation's
install time (default ``--install-seconds``). ``operation`` must be a GENIVI operation keyword.
An operation without ``id`` is skipped; one whose id is already finished gets code 1
"Operation already processed" without running (these results come first in the report, as in
GENIVI). Each operation's id is recorded as finished when it completes, whatever its code.
When all have run, ``updateReport(updateId, results)`` goes to the client.

GENIVI's queue is reproduced as it is: an image that arrives while an update is being installed
waits in the queue; when the running update ends, GENIVI loads the waiting image *instead of*
reporting (the report is lost) and does not start it until another ``downloadComplete``. So two
images back to back give no report for either, and the SWLM stays one image behind until it
is restarted. A worker result code outside 0-19 makes GENIVI raise inside its callback: the
operation is recorded as finished, no report is sent, and the SWLM is wedged for good.

Deliberate simplification: an image that cannot be read or is not a valid manifest (not JSON,
a mandatory field missing, an unknown operation keyword, wrongly typed fields) is a "corrupt
image": an unpacking error is logged and no report is ever sent for it, but unlike GENIVI with a
broken ``update_manifest.json`` the stub does not wedge: it stays usable for the next image (as
GENIVI does when the image does not mount). The HMI and the worker processes are not on the bus,
and the workers' own bugs (missing arguments, ``reboot``) are not reproduced.

Each call to the client goes as GENIVI's ``swm.dbus_method`` sends it: ``RequestName(client,
0)`` (the quirk: the SWLM queues for the client's name, and owns it if the client is absent),
``GetNameOwner``, ``Introspect`` on the client's path, the call to that owner typed from the
introspection (advertised ``s``/``aa{sv}`` are sent as such, advertised ``v`` as variants, no
usable introspection as ``s`` + ``aa{sv}``), then ``ReleaseName``. A failed call is logged, not
retried. While it waits for a reply the stub handles nothing else, as the real one; with the
client absent it calls itself and waits out the timeout, twice.

Event lines, one JSON object per line on stdout (flushed) and in ``--log``:

* ``{"event": "ready", "unique_name": ":1.5"}`` once it owns its name;
* ``{"event": "updateAvailable", "update_id", "description", "signature",
  "request_confirmation"}``, ``{"event": "userConfirmation", "update_id", "approved"}``,
  ``{"event": "updateConfirmation", "update_id", "approved"}``,
  ``{"event": "getInstalledPackages", "packages"}``,
  ``{"event": "operationResult", "transaction_id", "result_code", "result_text"}``,
  ``{"event": "unknownMethod", "path", "interface", "member"}``;
* ``{"event": "downloadComplete", "image", "signature", "accepted"}``: ``accepted`` is false
  when the image has to wait in the queue (another update in progress);
* ``{"event": "manifest", "image", "update_id", "run": [op ids], "already_processed": [...]}``,
  ``{"event": "corrupt", "image", "error"}``, ``{"event": "operation", "update_id", "id",
  "result_code", "result_text"}``, ``{"event": "report_lost", "update_id", "results",
  "next_image"}``, ``{"event": "wedged", "update_id", "id", "error"}``;
* ``{"event": "introspected", "method", "signature"}``: the in-args the client advertises for
  ``method`` (``null`` when unknown; then ``"error"`` says why);
* ``{"event": "initiateDownload", "update_id", "signature", "reply"}`` and ``{"event":
  "report", "update_id", "results": [{"id", "result_code", "result_text"}], "signature",
  "reply"}``: ``signature`` is what was sent (``null`` if nothing was), ``reply`` is ``"ok"``
  or the error;
* ``{"event": "stopped"}`` on SIGTERM or SIGINT (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageFlag,
    MessageType,
    new_error,
    new_method_call,
    new_method_return,
)
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

NAME = "org.genivi.SoftwareLoadingManager"
PATH = "/org/genivi/SoftwareLoadingManager"
CLIENT = "org.genivi.SotaClient"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
TYPE_ERROR = "org.freedesktop.DBus.Python.TypeError"
NO_REPLY = "org.freedesktop.DBus.Error.NoReply"

ALREADY_PROCESSED = 1
USER_DECLINED = 13
VALID_CODES = range(20)

# GENIVI's settings.OPERATIONS keywords.
OPERATIONS = frozenset(
    {
        "installPackage",
        "upgradePackage",
        "removePackage",
        "startComponents",
        "stopComponents",
        "reboot",
        "createDiskPartition",
        "resizeDiskPartition",
        "deleteDiskPartition",
        "writeDiskPartition",
        "patchDiskPartition",
        "flashModuleFirmwareEcu1",
    }
)

# The exported methods and their argument names, in GENIVI's Python order.
METHODS: dict[str, tuple[str, ...]] = {
    "updateAvailable": ("update_id", "description", "signature", "request_confirmation"),
    "updateConfirmation": ("update_id", "approved"),
    "downloadComplete": ("update_image", "signature"),
    "operationResult": ("transaction_id", "result_code", "result_text"),
    "getInstalledPackages": ("include_packegs", "include_module_firmware"),
}

DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)
INTROSPECTABLE_XML = (
    f'  <interface name="{INTROSPECTABLE}">\n'
    '    <method name="Introspect">\n'
    '      <arg direction="out" type="s" />\n'
    "    </method>\n"
    "  </interface>\n"
)


class CallFailed(Exception):
    """A D-Bus call got an error reply, no reply in time, or could not be marshalled."""


class NotSent(CallFailed):
    """The call could not be marshalled, so nothing went on the wire."""


class CorruptImage(Exception):
    """The image cannot be read as an update manifest."""


class Wedged(Exception):
    """GENIVI raised inside its operation callback: it will never report this update."""


@dataclass
class Operation:
    op_id: str
    result_code: int
    result_text: str
    seconds: float


@dataclass
class Manifest:
    image: str
    update_id: str
    operations: deque[Operation]
    results: list[dict[str, Any]] = field(default_factory=list)
    active: Operation | None = None


def result(op_id: str, code: int, text: str) -> dict[str, Any]:
    return {"id": op_id, "result_code": code, "result_text": text}


def introspection_xml(path: str) -> str:
    """What dbus-python answers: typed ``v`` in-args for our object, children elsewhere."""
    if path == PATH:
        methods = "".join(
            f'    <method name="{name}">\n'
            + "".join(f'      <arg direction="in"  type="v" name="{arg}" />\n' for arg in args)
            + "    </method>\n"
            for name, args in METHODS.items()
        )
        return (
            f'{DOCTYPE}<node name="{path}">\n{INTROSPECTABLE_XML}'
            f'  <interface name="{NAME}">\n{methods}  </interface>\n</node>\n'
        )
    prefix = path.rstrip("/") + "/"
    if PATH.startswith(prefix):
        child = PATH[len(prefix) :].split("/")[0]
        children = f'  <node name="{child}"/>\n'
        return f'{DOCTYPE}<node name="{path}">\n{INTROSPECTABLE_XML}{children}</node>\n'
    return f'{DOCTYPE}<node name="{path}">\n</node>\n'


def split_signature(signature: str) -> list[str]:
    """The complete types of a D-Bus signature, e.g. ``"saa{sv}"`` -> ``["s", "aa{sv}"]``."""
    types: list[str] = []
    pos = 0
    while pos < len(signature):
        end = pos
        while end < len(signature) and signature[end] == "a":
            end += 1
        if end == len(signature):
            raise CallFailed(f"bad signature {signature!r}")
        if signature[end] in "({":
            close = ")" if signature[end] == "(" else "}"
            depth = 0
            while end < len(signature):
                if signature[end] in "({":
                    depth += 1
                elif signature[end] in ")}":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            if end == len(signature) or signature[end] != close:
                raise CallFailed(f"bad signature {signature!r}")
        types.append(signature[pos : end + 1])
        pos = end + 1
    return types


def guess_signature(value: Any) -> str:
    """dbus-python's guess for the values the SWLM sends (dict values are variant_level 1)."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, str):
        return "s"
    if isinstance(value, dict):
        if not value:
            raise CallFailed("Unable to guess signature from an empty dict")
        return "a{sv}"
    if isinstance(value, list):
        if not value:
            raise CallFailed("Unable to guess signature from an empty list")
        return "a" + guess_signature(value[0])
    raise CallFailed(f"cannot guess a D-Bus type for {value!r}")


def marshal(value: Any, type_: str) -> Any:
    """``value`` as jeepney sends it with D-Bus type ``type_``, as dbus-python would coerce it."""
    if type_ == "v":
        guessed = guess_signature(value)
        return (guessed, marshal(value, guessed))
    if type_ in ("s", "o", "g") and isinstance(value, str):
        return value
    if len(type_) == 1 and type_ in "ynqiuxt" and isinstance(value, int):
        return int(value)
    if type_ == "b" and isinstance(value, bool | int):
        return bool(value)
    if type_.startswith("a{") and isinstance(value, dict):
        key_type, value_type = split_signature(type_[2:-1])
        return {marshal(k, key_type): marshal(v, value_type) for k, v in value.items()}
    if type_.startswith("a") and not type_.startswith("a{") and isinstance(value, list):
        return [marshal(item, type_[1:]) for item in value]
    raise CallFailed(f"cannot marshal {value!r} as D-Bus type {type_!r}")


def marshal_args(advertised: str | None, args: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """The signature and body of a call typed from the callee's introspection, or guessed."""
    if advertised is None:
        types = [guess_signature(arg) for arg in args]
    else:
        types = split_signature(advertised)
        if len(types) != len(args):
            raise CallFailed(
                f"the callee advertises {advertised!r} for {len(args)} argument(s) of the call"
            )
    return "".join(types), tuple(marshal(arg, t) for arg, t in zip(args, types, strict=True))


def unwrap_variants(signature: str, body: Sequence[Any]) -> list[Any]:
    """The arguments as dbus-python hands them over: variant-wrapped ones unwrapped."""
    try:
        types = split_signature(signature)
    except CallFailed:
        types = []
    args = list(body)
    for index, type_ in enumerate(types[: len(args)]):
        value = args[index]
        while type_ == "v" and isinstance(value, tuple) and len(value) == 2:
            type_, value = value
        args[index] = value
    return args


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class SoftwareLoadingManager:
    """The SWLM state machine, driven by a single-threaded loop over one bus connection."""

    def __init__(self, options: argparse.Namespace, log_file: TextIO | None) -> None:
        self.options = options
        self.log_file = log_file
        self.client = str(options.client)
        self.client_path = "/" + self.client.replace(".", "/")
        self.state = Path(options.state) if options.state else None
        self.completed: list[str] = self.load_state()
        self.queue: deque[str] = deque()
        self.current: Manifest | None = None
        # The simulated worker's callback: when, and for which operation.
        self.timer: tuple[float, Operation] | None = None
        # Calls that came in while the stub was waiting for a reply, handled afterwards.
        self.pending: deque[Message] = deque()
        self.ready = False
        self.conn: Any = None

    # -- output --------------------------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=repr)
        # The file first: a line seen on stdout is then in the file too.
        if self.log_file is not None:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        try:
            print(line, flush=True)
        except OSError:
            pass

    @staticmethod
    def error(text: str) -> None:
        print(f"genivi_swlm: {text}", file=sys.stderr, flush=True)

    # -- state ---------------------------------------------------------------------------------

    def load_state(self) -> list[str]:
        if self.state is None:
            return []
        if self.options.reset:
            self.state.unlink(missing_ok=True)
        try:
            text = self.state.read_text()
        except OSError:
            return []
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{self.state}: not a JSON list")
        return [str(op_id) for op_id in data]

    def add_completed(self, op_id: str) -> None:
        self.completed.append(op_id)
        if self.state is not None:
            tmp = self.state.with_name(self.state.name + ".tmp")
            tmp.write_text(json.dumps(self.completed))
            tmp.replace(self.state)

    # -- bus plumbing --------------------------------------------------------------------------

    def call(self, message: Message) -> Message:
        """Send a call and wait for its reply; calls that come meanwhile wait in ``pending``."""
        serial = next(self.conn.outgoing_serial)
        try:
            self.conn.send(message, serial=serial)
        except (TypeError, ValueError, KeyError, struct.error) as exc:
            raise NotSent(f"cannot marshal the call: {describe(exc)}") from exc
        deadline = time.monotonic() + self.options.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                reply = self.conn.receive(timeout=remaining)
            except TimeoutError:
                raise CallFailed(
                    f"{NO_REPLY}: Did not receive a reply within {self.options.timeout:g} s"
                ) from None
            if reply.header.fields.get(HeaderFields.reply_serial) == serial:
                if reply.header.message_type is MessageType.error:
                    name = reply.header.fields.get(HeaderFields.error_name, "error")
                    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
                    raise CallFailed(f"{name}: {text}")
                return reply
            if reply.header.message_type is MessageType.method_call:
                self.pending.append(reply)
            elif reply.header.message_type is MessageType.signal:
                self.on_signal(reply)

    def bus_call(self, message: Message) -> Any:
        return self.call(message).body[0]

    def reply(
        self, message: Message, signature: str | None = None, body: tuple[Any, ...] = ()
    ) -> None:
        if not message.header.flags & MessageFlag.no_reply_expected:
            self.conn.send(new_method_return(message, signature, body))

    def reply_error(self, message: Message, name: str, text: str) -> None:
        if not message.header.flags & MessageFlag.no_reply_expected:
            self.conn.send(new_error(message, name, "s", (text,)))

    def introspect(self, owner: str, method: str) -> str | None:
        """The in-arg signature the client advertises for ``method``, or None (dbus-python)."""
        address = DBusAddress(self.client_path, bus_name=owner, interface=INTROSPECTABLE)
        try:
            xml = self.call(new_method_call(address, "Introspect")).body[0]
            root = ET.fromstring(xml)
        except (CallFailed, ET.ParseError, IndexError, TypeError) as exc:
            self.error(f"introspecting {self.client} failed: {describe(exc)}")
            self.emit("introspected", method=method, signature=None, error=describe(exc))
            return None
        for interface in root.iter("interface"):
            if interface.get("name") != self.client:
                continue
            for element in interface.iter("method"):
                if element.get("name") == method:
                    signature = "".join(
                        arg.get("type", "")
                        for arg in element.iter("arg")
                        if arg.get("direction", "in") == "in"
                    )
                    self.emit("introspected", method=method, signature=signature)
                    return signature
        self.emit("introspected", method=method, signature=None, error="method not advertised")
        return None

    def call_client(self, method: str, args: Sequence[Any]) -> tuple[str | None, str]:
        """GENIVI's ``swm.dbus_method``: returns the signature sent (if any) and the outcome."""
        sent: str | None = None
        requested = False
        try:
            self.bus_call(message_bus.RequestName(self.client, 0))
            requested = True
            owner = self.bus_call(message_bus.GetNameOwner(self.client))
            advertised = self.introspect(owner, method)
            signature, body = marshal_args(advertised, args)
            address = DBusAddress(self.client_path, bus_name=owner, interface=self.client)
            try:
                sent = signature
                self.call(new_method_call(address, method, signature, body))
            except NotSent:
                sent = None
                raise
            outcome = "ok"
        except CallFailed as exc:
            outcome = describe(exc)
            self.error(f"{self.client}.{method} failed: {outcome}")
        # Not in a finally: on SIGTERM mid-call the process just ends, and the bus releases.
        if requested:
            try:
                self.bus_call(message_bus.ReleaseName(self.client))
            except CallFailed as exc:
                self.error(f"ReleaseName({self.client}) failed: {describe(exc)}")
        return sent, outcome

    # -- what the SWLM does --------------------------------------------------------------------

    def initiate_download(self, update_id: Any) -> None:
        sent, outcome = self.call_client("initiateDownload", [update_id])
        self.emit("initiateDownload", update_id=update_id, signature=sent, reply=outcome)

    def distribute_update_result(self, update_id: Any, results: list[dict[str, Any]]) -> None:
        sent, outcome = self.call_client("updateReport", [update_id, results])
        self.emit("report", update_id=update_id, results=results, signature=sent, reply=outcome)

    def confirmation(self, update_id: Any, approved: Any) -> None:
        if approved:
            self.initiate_download(update_id)
        else:
            declined = result("N/A", USER_DECLINED, "Installation declined by user")
            self.distribute_update_result(update_id, [declined])

    def read_manifest(self, image: str) -> Manifest:
        try:
            document = json.loads(Path(image).read_bytes())
        except (OSError, ValueError) as exc:
            raise CorruptImage(f"cannot unpack {image}: {describe(exc)}") from exc
        if not isinstance(document, dict):
            raise CorruptImage(f"{image}: the manifest is not a JSON object")
        missing = [key for key in ("updateId", "name", "description") if key not in document]
        if missing:
            raise CorruptImage(f"{image}: mandatory {', '.join(missing)} not set")
        update_id = document["updateId"]
        operations = document.get("operations", [])
        if not isinstance(update_id, str) or not isinstance(operations, list):
            raise CorruptImage(f"{image}: updateId must be a string, operations a list")
        manifest = Manifest(image=image, update_id=update_id, operations=deque())
        for op in operations:
            if not isinstance(op, dict):
                raise CorruptImage(f"{image}: an operation is not a JSON object")
            op_id = op.get("id")
            if not op_id:
                self.error(f"{image}: an operation without id is skipped")
                continue
            if not isinstance(op_id, str):
                raise CorruptImage(f"{image}: operation id {op_id!r} is not a string")
            if op_id in self.completed:
                manifest.results.append(
                    result(op_id, ALREADY_PROCESSED, "Operation already processed")
                )
                continue
            if op.get("operation") not in OPERATIONS:
                raise CorruptImage(f"{image}: operation {op.get('operation')!r} not supported")
            code = op.get("result_code", 0)
            text = op.get(
                "result_text", "Operation successful" if code == 0 else "Operation failed"
            )
            time_ms = op.get("time_ms")
            if not isinstance(code, int) or isinstance(code, bool) or not isinstance(text, str):
                raise CorruptImage(f"{image}: {op_id}: result_code or result_text mistyped")
            if time_ms is None:
                seconds = float(self.options.install_seconds)
            elif (
                isinstance(time_ms, int | float) and not isinstance(time_ms, bool) and time_ms >= 0
            ):
                seconds = time_ms / 1000
            else:
                raise CorruptImage(f"{image}: {op_id}: time_ms must be a number >= 0")
            manifest.operations.append(Operation(op_id, code, text, seconds))
        return manifest

    def load_next_manifest(self) -> bool:
        self.current = None
        if not self.queue:
            return False
        image = self.queue.pop()
        try:
            manifest = self.read_manifest(image)
        except CorruptImage as exc:
            self.error(f"failed to load the update image: {exc}")
            self.emit("corrupt", image=image, error=str(exc))
            return False
        self.current = manifest
        self.emit(
            "manifest",
            image=image,
            update_id=manifest.update_id,
            run=[op.op_id for op in manifest.operations],
            already_processed=[r["id"] for r in manifest.results],
        )
        return True

    def start_operation(self, manifest: Manifest) -> bool:
        """Hand the next operation to its (simulated) worker; False when none is left."""
        if not manifest.operations:
            return False
        operation = manifest.operations.popleft()
        manifest.active = operation
        self.timer = (time.monotonic() + operation.seconds, operation)
        return True

    def start_next_manifest(self) -> bool:
        while self.load_next_manifest():
            manifest = self.current
            assert manifest is not None
            if self.start_operation(manifest):
                return True
            # Everything in it was already processed: report at once, then the next image.
            self.distribute_update_result(manifest.update_id, manifest.results)
        return False

    def start_next_operation(self) -> bool:
        manifest = self.current
        if manifest is None:
            return self.start_next_manifest()
        if manifest.active is not None:
            return True
        if not self.start_operation(manifest):
            # GENIVI's bug: a waiting image is loaded (not started) instead of a report.
            return self.load_next_manifest()
        return True

    def report_lost(self, manifest: Manifest) -> None:
        next_image = self.current.image if self.current is not None else None
        self.error(f"the report of {manifest.update_id} is lost: {next_image} was loaded instead")
        self.emit(
            "report_lost",
            update_id=manifest.update_id,
            results=manifest.results,
            next_image=next_image,
        )

    def complete_transaction(self, manifest: Manifest, code: Any, text: Any) -> None:
        operation = manifest.active
        if operation is None:
            self.error("operationResult: no active transaction")
            return
        self.add_completed(operation.op_id)
        if not isinstance(code, int) or isinstance(code, bool) or code not in VALID_CODES:
            # swm.result() maps it to SWMResult.SWM_GENERAL_ERROR, which does not exist.
            raise Wedged(f"invalid result code {code!r}: AttributeError SWM_GENERAL_ERROR")
        manifest.results.append(result(operation.op_id, code, str(text)))
        manifest.active = None
        self.timer = None
        self.emit(
            "operation",
            update_id=manifest.update_id,
            id=operation.op_id,
            result_code=code,
            result_text=str(text),
        )

    def operation_result(self, code: Any, text: Any) -> None:
        manifest = self.current
        if manifest is None:
            self.error("operationResult: no manifest to handle the callback")
            return
        try:
            self.complete_transaction(manifest, code, text)
        except Wedged as exc:
            active = manifest.active
            self.timer = None
            self.error(f"failed to process the operation result: {exc}")
            self.emit(
                "wedged",
                update_id=manifest.update_id,
                id=active.op_id if active else None,
                error=str(exc),
            )
            return
        if not self.start_next_operation():
            self.distribute_update_result(manifest.update_id, manifest.results)
        elif self.current is not manifest:
            self.report_lost(manifest)

    def fire_timer(self) -> None:
        if self.timer is None:
            return
        _, operation = self.timer
        self.timer = None
        if self.current is not None and self.current.active is operation:
            self.operation_result(operation.result_code, operation.result_text)

    # -- incoming calls ------------------------------------------------------------------------

    def on_signal(self, message: Message) -> None:
        fields = message.header.fields
        if (
            fields.get(HeaderFields.member) == "NameAcquired"
            and message.body
            and message.body[0] == NAME
        ):
            self.become_ready()

    def become_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.emit("ready", unique_name=self.conn.unique_name)

    def on_call(self, message: Message) -> None:
        fields = message.header.fields
        member = fields.get(HeaderFields.member)
        interface = fields.get(HeaderFields.interface)
        path = fields.get(HeaderFields.path)
        signature = fields.get(HeaderFields.signature, "")
        if member == "Introspect" and interface in (None, INTROSPECTABLE):
            self.reply(message, "s", (introspection_xml(path),))
            return
        if member == "Ping" and interface == PEER:
            self.reply(message)
            return
        if path != PATH or interface not in (None, NAME) or member not in METHODS:
            self.emit("unknownMethod", path=path, interface=interface, member=member)
            self.reply_error(
                message,
                UNKNOWN_METHOD,
                f'Method "{member}" with signature "{signature}" on interface "{interface}" '
                "doesn't exist",
            )
            return
        args = unwrap_variants(signature, message.body)
        expected = METHODS[member]
        if len(args) != len(expected):
            self.reply_error(
                message,
                TYPE_ERROR,
                f"TypeError: {member}() takes {len(expected)} arguments ({len(args)} given)",
            )
            return
        try:
            getattr(self, "on_" + member)(message, *args)
        except Exception:
            # dbus-python logs a method's exception and carries on; so does the stub.
            self.error(f"{member} raised:\n{traceback.format_exc()}")

    def on_updateAvailable(
        self, message: Message, update_id: Any, description: Any, signature: Any, confirm: Any
    ) -> None:
        self.emit(
            "updateAvailable",
            update_id=update_id,
            description=description,
            signature=signature,
            request_confirmation=confirm,
        )
        self.reply(message, "b", (True,))
        if confirm:
            approved = not self.options.decline
            self.emit("userConfirmation", update_id=update_id, approved=approved)
            self.confirmation(update_id, approved)
        else:
            self.initiate_download(update_id)

    def on_updateConfirmation(self, message: Message, update_id: Any, approved: Any) -> None:
        self.emit("updateConfirmation", update_id=update_id, approved=approved)
        self.reply(message, "b", (True,))
        self.confirmation(update_id, approved)

    def on_downloadComplete(self, message: Message, image: Any, signature: Any) -> None:
        accepted = self.current is None and not self.queue
        self.emit("downloadComplete", image=image, signature=signature, accepted=accepted)
        self.reply(message, "b", (True,))
        before = self.current
        self.queue.appendleft(str(image))
        self.start_next_operation()
        if before is not None and self.current is not before:
            self.report_lost(before)

    def on_operationResult(
        self, message: Message, transaction_id: Any, code: Any, text: Any
    ) -> None:
        self.emit(
            "operationResult", transaction_id=transaction_id, result_code=code, result_text=text
        )
        self.reply(message, "b", (True,))
        self.operation_result(code, text)

    def on_getInstalledPackages(self, message: Message, packages: Any, firmware: Any) -> None:
        self.emit("getInstalledPackages", packages=self.options.packages)
        self.reply(message, "as", (list(self.options.packages),))

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.conn = open_dbus_connection(bus="SESSION")
        try:
            granted = self.bus_call(message_bus.RequestName(NAME, 0))
            if granted in (1, 4):
                self.become_ready()
            else:
                self.error(f"{NAME} is owned by another process: queued for it")
            while True:
                if self.pending:
                    self.on_call(self.pending.popleft())
                    continue
                timeout = None
                if self.timer is not None:
                    timeout = max(0.0, self.timer[0] - time.monotonic())
                try:
                    message = self.conn.receive(timeout=timeout)
                except TimeoutError:
                    self.fire_timer()
                    continue
                if message.header.message_type is MessageType.method_call:
                    self.on_call(message)
                elif message.header.message_type is MessageType.signal:
                    self.on_signal(message)
        finally:
            self.conn.close()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--client", default=CLIENT, help="the SOTA client's bus name")
    parser.add_argument("--decline", action="store_true", help="the user declines updates")
    parser.add_argument(
        "--packages",
        default="bluez_driver,bluez_apps",
        type=lambda text: [name for name in text.split(",") if name],
        help="comma-separated getInstalledPackages answer",
    )
    parser.add_argument("--state", help="JSON file of finished operation ids")
    parser.add_argument("--reset", action="store_true", help="empty the state file first")
    parser.add_argument("--timeout", type=float, default=25.0, help="D-Bus call timeout (s)")
    parser.add_argument(
        "--install-seconds", type=float, default=0.2, help="time of an operation (s)"
    )
    parser.add_argument("--log", help="append the event lines to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    log_file = open(options.log, "a", encoding="utf-8") if options.log else None
    try:
        swlm = SoftwareLoadingManager(options, log_file)
        try:
            swlm.run()
        except (SystemExit, KeyboardInterrupt):
            swlm.emit("stopped")
            return 0
        except (OSError, ConnectionError) as exc:
            swlm.error(f"the bus connection failed: {describe(exc)}")
            return 1
    except (OSError, ValueError) as exc:
        print(f"genivi_swlm: cannot start: {describe(exc)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
