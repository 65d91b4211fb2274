"""The D-Bus gateway (``gateway.dbus``): the GENIVI Software Loading Manager's contract.

The daemon owns ``dbus.name`` and exports ``initiateDownload(s)`` and ``updateReport(s, aa{sv})``
at ``dbus.path``, with introspection data, because the GENIVI SWLM types its calls from it. A
downloaded update is handed to the SWLM with ``downloadComplete(s image, s signature)`` from the
journal's outbox, so it survives the SWLM being away and the daemon restarting, and one at a
time: the GENIVI SWLM silently drops a second one while it is busy. Its report names its
manifest's id, which Core does not know; it is mapped back to the update handed over. 2016's
gateway told Core "success" for every report (reference §11.6, bug 51); here the SWLM's codes go
through.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import quoteattr

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from jeepney import DBusAddress, HeaderFields, MatchRule, new_error, new_method_call
from jeepney import new_method_return as _new_method_return
from jeepney.low_level import Message

from swlm_sdk import Backoff
from swlm_sdk._killpoints import kill_point
from swlm_sdk.protocol import (
    Command,
    DownloadComplete,
    Event,
    InstalledSoftware,
    ProtocolError,
    SendUpdateReport,
    StartDownload,
    UpdateAvailable,
    UpdateReport,
    decode_envelope,
    encode_envelope,
)

from .._config_schema import DBusConfig
from .._errors import SotaError, one_line
from .._handover import kept_download_complete
from .._ids import id_problem, shown_id
from .._reports import encode_report
from .._store import FINAL_STATES, Journal, OutboxEvent, UpdateRecord
from .._warn_once import WarnOnce
from ._dbus_args import (
    ArgumentError,
    installed_software,
    operation_results,
    split_signature,
    string_argument,
)
from ._dbus_connection import DBusConnection, DBusError, bus_address
from ._socket import Execute

__all__ = ["CHANNEL", "DBusGateway"]

logger = logging.getLogger(__name__)

CHANNEL = "dbus"
"""The journal outbox channel of the events this gateway delivers."""

#: RequestName: take the name from an owner that allows it, else queue for it. The GENIVI SWLM
#: queues itself for our name before each call (core-server-and-dbus.md §6, item 8).
_REPLACE_EXISTING = 0x2
_PRIMARY_OWNER, _IN_QUEUE, _EXISTS, _ALREADY_OWNER = 1, 2, 3, 4
_OWNER_KEY = "dbus_swlm_owner"  # the SWLM's unique name at the last hand-over
_INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
_MAX_CALLS_TO_SWLM = 16  # updateAvailable calls in flight; more are dropped with a warning
_MAX_ANNOUNCED = 1024
_BACKOFF = Backoff(1.0, 60.0)  # reconnecting, and handing an update over again
# Events that may free the SWLM or give it work (a report that came another way frees it).
_WAKING = frozenset({"DownloadFailed", "UpdateReportSent"})
_HEX = frozenset("0123456789abcdef")


class DBusGateway:
    """Serves the ``[dbus]`` names on the configured bus and hands updates to the SWLM.

    ``execute`` runs a command and returns its final event; ``submit`` queues one (as the
    2016 gateway did: a D-Bus caller does not wait for a download).
    """

    def __init__(
        self,
        config: DBusConfig,
        journal: Journal,
        *,
        execute: Execute,
        submit: Callable[[Command], None],
        address: str | None = None,
        watch_interval: float = 1.0,
        max_watch_interval: float = 30.0,
        backoff: Backoff = _BACKOFF,
        clock: Callable[[], float] = time.time,
        event_metadata: bool = True,
    ) -> None:
        """:param address: the bus address; by default the one ``dbus.bus`` names.
        :param watch_interval: while the SWLM holds an update, the journal is looked at after
            this many seconds, then twice as long each time, up to ``max_watch_interval``, for
            a report that came another way (the commands socket, ``device.report_timeout``).
            Otherwise the deliverer sleeps until there is work: an event for the SWLM, the
            SWLM on the bus, a report, or a retry that falls due.
        :param event_metadata: ``device.event_metadata``, for the envelope of an update handed
            over again. ``downloadComplete(ss)`` never carries the metadata, but the envelope
            kept for it goes to the events socket if the D-Bus gateway is turned off."""
        self._config = config
        self._metadata = event_metadata
        self._journal = journal
        self._execute = execute
        self._submit = submit
        self._address = address
        self._timeout = float(config.timeout if config.timeout > 0 else 60)
        self._watch_interval = watch_interval
        self._max_watch_interval = max(max_watch_interval, watch_interval)
        self._backoff = backoff
        self._clock = clock
        self._swlm = DBusAddress(
            config.software_manager_path,
            bus_name=config.software_manager,
            interface=config.software_manager,  # GENIVI: the bus name is the interface name
        )
        self._bus_name = config.bus if config.bus in ("session", "system") else "configured"
        self.holder = f"the SWLM {config.software_manager} on the D-Bus {self._bus_name} bus"
        self._wake = anyio.Event()
        self._connection: DBusConnection | None = None
        self._owner: str | None = None  # the SWLM's unique name now, from NameOwnerChanged
        self._swlm_appeared = False
        self._name_was_held = False
        self._waiting: tuple[str | None, str] | None = None  # (next update, the one held)
        self._tg: TaskGroup | None = None
        self._calls = 0
        self._announced: dict[str, None] = {}  # ids told to the SWLM with updateAvailable
        self._handing: str | None = None  # the update whose downloadComplete is on its way
        self._warn = WarnOnce(logger)
        self.connected = anyio.Event()  # set once the name is ours (the first time)
        self._owned = anyio.Event()  # the name is ours in this connection to the bus

    # -- running ----------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, own the name and deliver, for ever; reconnect with backoff if the bus
        goes away. Ready at once: a bus that is not up yet never holds up the daemon."""
        task_status.started()
        failures = 0
        while True:
            try:
                address = self._address or bus_address(self._config.bus)
                async with (
                    DBusConnection.open(address, method_handler=self._on_call) as connection,
                    anyio.create_task_group() as tg,
                ):
                    self._tg = tg
                    self._connection = connection
                    self._owned = anyio.Event()
                    await self._watch_swlm(connection)
                    await self._own_name(connection)
                    failures = 0
                    self._warn.reset()
                    tg.start_soon(self._deliver_forever, connection)
                    await connection.closed()
                    tg.cancel_scope.cancel()
                problem = connection.close_reason or "the bus closed the connection"
            except Exception as exc:  # the bus went away, the journal failed, or a bug
                error = _single(exc)
                if not isinstance(error, SotaError):
                    logger.error("The D-Bus gateway failed unexpectedly", exc_info=error)
                problem = f"{error}" if isinstance(error, SotaError) else repr(error)
            finally:
                self._connection = None
                self._tg = None
            failures += 1
            self._warn(
                "bus",
                "The D-Bus gateway has no bus (%s); trying again in %.0f s",
                one_line(problem),
                self._backoff.delay(failures),
            )
            await self._backoff.wait(failures)

    async def _own_name(self, connection: DBusConnection) -> None:
        name = self._config.name
        code = await connection.request_name(name, _REPLACE_EXISTING, timeout=self._timeout)
        if code in (_PRIMARY_OWNER, _ALREADY_OWNER):
            logger.info(
                "The D-Bus gateway owns %s on the %s bus, serving %s at %s",
                name,
                self._bus_name,
                self._config.interface,
                self._config.path,
            )
            self._owned.set()
            self.connected.set()
        elif code == _IN_QUEUE:
            # Another process holds it without allowing replacement (the GENIVI SWLM does so
            # for a moment before each call): calls reach us once it lets go.
            logger.warning(
                "Another process owns the D-Bus name %s; the daemon takes it over as soon as "
                "that process lets it go (if it never does, stop it)",
                name,
            )
            rule = MatchRule(
                type="signal",
                sender="org.freedesktop.DBus",
                interface="org.freedesktop.DBus",
                member="NameAcquired",
            )
            await connection.add_match(rule, self._name_acquired, timeout=self._timeout)
        else:
            raise SotaError(f"couldn't own the D-Bus name {name} (RequestName answered {code})")

    def _name_acquired(self, message: Message) -> None:
        if message.body and message.body[0] == self._config.name and not self._owned.is_set():
            logger.info("The D-Bus gateway now owns %s", self._config.name)
            # Calls to the name went to its holder meanwhile: the GENIVI SWLM holds it while it
            # reports, so a report may have been lost (see _hand_over_again_if_lost).
            self._name_was_held = True
            self._owned.set()
            self.connected.set()
            self._wake.set()

    async def _watch_swlm(self, connection: DBusConnection) -> None:
        """Follow the SWLM's name: deliver when it appears, hand over again when it restarts."""
        rule = MatchRule(
            type="signal",
            sender="org.freedesktop.DBus",
            interface="org.freedesktop.DBus",
            member="NameOwnerChanged",
            path="/org/freedesktop/DBus",
        )
        rule.add_arg_condition(0, self._config.software_manager)
        await connection.add_match(rule, self._swlm_owner_changed, timeout=self._timeout)
        self._owner = await connection.name_has_owner(
            self._config.software_manager, timeout=self._timeout
        )

    def _swlm_owner_changed(self, message: Message) -> None:
        _, _, new = message.body
        self._owner = new or None
        if new:
            logger.info("The SWLM %s is on the bus (%s)", self._config.software_manager, new)
            self._swlm_appeared = True  # what waits for it goes now, whatever its backoff
        self._wake.set()

    # -- events from the daemon -------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """A subscriber: wake the deliverer for an outbox event; announce an update that
        RVI made available (``updateAvailable``, as 2016 did)."""
        if isinstance(event, DownloadComplete) or event.name in _WAKING:
            self._wake.set()
        elif isinstance(event, UpdateAvailable):
            self._announce(event)

    def _announce(self, event: UpdateAvailable) -> None:
        tg = self._tg
        if tg is None or self._calls >= _MAX_CALLS_TO_SWLM:
            self._warn(
                "announce",
                "couldn't tell the SWLM that update %s is available: %s",
                shown_id(event.update_id),
                "the D-Bus gateway has no bus" if tg is None else "too many calls in flight",
            )
            return
        self._announced[event.update_id] = None
        while len(self._announced) > _MAX_ANNOUNCED:
            del self._announced[next(iter(self._announced))]
        self._calls += 1
        tg.start_soon(self._call_update_available, event)

    async def _call_update_available(self, event: UpdateAvailable) -> None:
        try:
            # 2016's order; the GENIVI SWLM declares description and signature swapped.
            await self._call_swlm(
                "updateAvailable",
                "sssb",
                (event.update_id, event.signature, event.description, event.request_confirmation),
            )
        except DBusError as exc:
            self._warn(
                "announce", "couldn't tell the SWLM about update %s: %s", event.update_id, exc
            )
        finally:
            self._calls -= 1

    async def installed_software(self) -> InstalledSoftware:
        """Ask the SWLM what is installed (``getInstalledPackages(true, false)``).

        :raises SotaError: no bus, no SWLM, no answer in time, or an answer of a shape that is
            neither the GENIVI SWLM's ``as`` nor the 2016 pair of ``aa{sv}``.
        """
        reply = await self._call_swlm("getInstalledPackages", "bb", (True, False))
        signature = reply.header.fields.get(HeaderFields.signature, "")
        try:
            return installed_software(signature, reply.body)
        except (ArgumentError, TypeError, IndexError) as exc:
            raise SotaError(f"the SWLM's list of installed packages is unusable: {exc}") from None

    async def _call_swlm(self, method: str, signature: str, body: tuple[Any, ...]) -> Message:
        connection = self._connection
        if connection is None:
            raise DBusError("org.freedesktop.DBus.Error.Disconnected", "the gateway has no bus")
        message = new_method_call(self._swlm, method, signature, body)
        return await connection.call(message, timeout=self._timeout)

    # -- handing updates to the SWLM --------------------------------------------------------

    def outstanding(self) -> UpdateRecord | None:
        """The update the SWLM holds and has not reported, if any: until it reports (or its
        ``device.report_timeout`` ends), it gets no other."""
        for record in self._journal.handed_over():
            if record.holder == self.holder:
                return record
        return None

    async def _deliver_forever(self, connection: DBusConnection) -> None:
        # Not before the name is ours: the SWLM's report would go to whoever holds it.
        await self._owned.wait()
        look = self._watch_interval  # the next look at the journal while the SWLM holds one
        looking_at: tuple[str, float] | None = None  # the update held at the last look
        while True:
            self._wake = anyio.Event()
            retry_at: float | None = None
            name_was_held, self._name_was_held = self._name_was_held, False
            held = self.outstanding()
            if held is not None:
                self._hand_over_again_if_lost(held, name_was_held)
            held = self.outstanding()
            if held is not None:
                self._note_waiting(held)
                if looking_at != (held.update_id, held.since):
                    looking_at, look = (held.update_id, held.since), self._watch_interval
                wait = look
                look = min(look * 2, self._max_watch_interval)
            else:
                looking_at = None
                wait = math.inf  # publish() or the bus wakes us
                due = self._journal.due_events(math.inf, 1, CHANNEL)
                if due and (due[0].next_attempt_at <= self._clock() or self._swlm_appeared):
                    self._swlm_appeared = False
                    retry_at = await self._deliver(connection, due[0])
                    if retry_at is None:
                        continue
                elif due:
                    retry_at = due[0].next_attempt_at
                if retry_at is not None:
                    wait = max(0.0, retry_at - self._clock())
            with anyio.move_on_after(wait):
                await self._wake.wait()

    def _note_waiting(self, held: UpdateRecord) -> None:
        """Say once (at DEBUG) which update waits for which report: the SWLM gets one at a
        time, and this is what an integrator reads when an update seems to stand still."""
        due = self._journal.due_events(math.inf, 1, CHANNEL)
        note = None if not due else (due[0].update_id, held.update_id)
        if note is not None and note != self._waiting:
            logger.debug(
                "Update %s waits until the SWLM reports update %s (or its report_timeout ends)",
                *note,
            )
        self._waiting = note

    def _hand_over_again_if_lost(self, held: UpdateRecord, name_was_held: bool) -> None:
        """Hand the update over again when its report may be lost (the GENIVI SWLM answers an
        image it already installed with ``ALREADY_PROCESSED``, so this is safe with it).

        That is when the SWLM restarted since it took the update (a new unique name), and when
        the daemon had to wait for its own name: the GENIVI SWLM takes the daemon's name for the
        time of each call it makes, so one that reported while the daemon was down called
        itself, and its report is gone.
        """
        given_to = self._journal.setting(_OWNER_KEY)
        restarted = self._owner is not None and given_to is not None and self._owner != given_to
        if not restarted and not name_was_held:
            return
        record = self._journal.download(held.update_id)
        if record is None or record.path is None:
            return
        why = (
            f"the SWLM {self._config.software_manager} restarted ({self._owner}, was {given_to})"
            if restarted
            else f"another process held {self._config.name}, so a report may have gone there"
        )
        logger.info(
            "Update %s was handed over and not reported, and %s; handing it over again",
            held.update_id,
            why,
        )
        event = kept_download_complete(
            self._journal, held.update_id, record.path, metadata=self._metadata
        )
        payload = encode_envelope(event)
        self._journal.hand_over_again(held.update_id, DownloadComplete.name, payload, CHANNEL)

    async def _deliver(self, connection: DBusConnection, item: OutboxEvent) -> float | None:
        """Hand one kept event over; None when it is done with, else when to try again."""
        try:
            event = decode_envelope(item.payload)
        except ProtocolError as exc:
            self._journal.set_aside_event(item.id, f"it cannot be read back: {exc}")
            logger.error("Event %d for the SWLM is set aside: it cannot be read back", item.id)
            return None
        if not isinstance(event, DownloadComplete):
            # The GENIVI contract has no call for it: the daemon reports the failure itself.
            self._journal.event_delivered(item.id)
            return None
        if self._owner is None:
            self._owner = await connection.name_has_owner(
                self._config.software_manager, timeout=self._timeout
            )
        owner = self._owner
        if owner is None:
            return self._failed(
                item,
                "no_swlm",
                f"the SWLM {self._config.software_manager} is not on the bus; update "
                f"{event.update_id} is handed to it once it appears",
            )
        message = new_method_call(
            self._swlm, "downloadComplete", "ss", (event.update_image, event.signature)
        )
        # Before the call: killed once it went out, the daemon still knows who has the image.
        self._journal.set_setting(_OWNER_KEY, owner)
        self._handing = event.update_id
        try:
            reply = await connection.call(message, timeout=self._timeout)
        except DBusError as exc:
            return self._failed(item, exc.name, f"downloadComplete for {event.update_id}: {exc}")
        finally:
            self._handing = None
        if reply.body == (False,):
            return self._failed(
                item,
                "refused",
                f"the SWLM answered false to downloadComplete for {event.update_id}",
            )
        kill_point("events.delivered")  # the SWLM has it and the journal does not know yet
        self._journal.event_delivered(item.id, holder=self.holder)
        self._warn.reset()
        logger.info(
            "Handed update %s to the SWLM %s (downloadComplete %s)",
            event.update_id,
            self._config.software_manager,
            event.update_image,
        )
        return None

    def _failed(self, item: OutboxEvent, kind: str, problem: str) -> float:
        delay = self._backoff.delay(item.attempts + 1)
        retry_at = self._clock() + delay
        self._journal.event_failed(item.id, retry_at, problem)
        self._warn(
            kind,
            "couldn't hand an update to the SWLM: %s; kept, next try in %.0f s",
            problem,
            delay,
        )
        return retry_at

    # -- calls from the SWLM ----------------------------------------------------------------

    async def _on_call(self, message: Message) -> Message | None:
        fields = message.header.fields
        path = fields.get(HeaderFields.path, "")
        interface = fields.get(HeaderFields.interface)
        member = fields.get(HeaderFields.member, "")
        signature = fields.get(HeaderFields.signature, "")
        if interface == _INTROSPECTABLE and member == "Introspect":
            return _new_method_return(message, "s", (self._introspection(path),))
        if path != self._config.path:
            return self._error(
                message, "org.freedesktop.DBus.Error.UnknownObject", f"no object at {path}"
            )
        if interface not in (None, self._config.interface) or member not in (
            "initiateDownload",
            "updateReport",
        ):
            return self._error(
                message,
                "org.freedesktop.DBus.Error.UnknownMethod",
                f"no method {member}({signature}) on interface {interface or '(any)'} at {path}",
            )
        try:
            types = split_signature(signature)
            if member == "initiateDownload":
                return await self._initiate_download(message, types)
            return await self._update_report(message, types)
        except ArgumentError as exc:
            kind = "MissingArgument" if exc.missing else "MalformedArgument"
            self._warn(f"call:{kind}", "Refused a D-Bus %s call: %s", member, exc)
            return self._error(message, f"{self._config.interface}.Error.{kind}", str(exc))

    async def _initiate_download(self, message: Message, types: list[str]) -> Message:
        if not types:
            raise ArgumentError("initiateDownload needs an update id", missing=True)
        update_id = string_argument(types[0], message.body[0], "the update id")
        _check_id(update_id)
        logger.info("The SWLM asked to download update %s", update_id)
        self._submit(StartDownload(update_id))
        return _new_method_return(message)

    async def _update_report(self, message: Message, types: list[str]) -> Message:
        if len(types) < 2:
            raise ArgumentError(
                "updateReport needs an update id and the operation results", missing=True
            )
        reported_id = string_argument(types[0], message.body[0], "the update id")
        update_id = self._update_of(reported_id)
        if update_id is None:
            logger.warning(
                "The SWLM reported update %s, which the daemon did not hand to it and does not "
                "know; the report is refused",
                shown_id(reported_id),
            )
            return self._error(
                message,
                f"{self._config.interface}.Error.UnknownUpdate",
                f"no update {reported_id} waits for a report: the daemon handed none to the "
                "SWLM that is not reported yet",
            )
        results = operation_results(types[1], message.body[1], update_id)
        # Core wants a UUID for each operation (GENIVI's decline report says "N/A").
        results = tuple(
            r if _is_uuid(r.id) else msgspec.structs.replace(r, id=update_id) for r in results
        )
        report = UpdateReport(update_id, results)
        if update_id != reported_id:
            logger.info(
                "The SWLM reported %s, its manifest's id for update %s (the one it was handed); "
                "reporting it to Core as %s",
                shown_id(reported_id),
                update_id,
                update_id,
            )
        event = await self._execute(SendUpdateReport(report))
        if self._holds(update_id, encode_report(report)):
            self._wake.set()  # the SWLM is free for the next update
            return _new_method_return(message)
        text = getattr(event, "text", "the report was not accepted")
        return self._error(message, f"{self._config.interface}.Error.ReportRefused", text)

    def _update_of(self, reported_id: str) -> str | None:
        """The update an SWLM report is about.

        An id the journal knows (not final), or one the SWLM was told of with
        ``updateAvailable`` (a decline comes before any download), is that update; a report
        for one Core already has is answered from the journal. Any other id is the manifest's
        own (``libats``): the report is about the update handed to the SWLM, or the one being
        handed to it (a quick SWLM reports before the daemon has its answer to the hand-over).
        """
        if id_problem(reported_id) is None:
            record = self._journal.update(reported_id)
            if record is not None or reported_id in self._announced:
                return reported_id
        held = self.outstanding()
        return self._handing if held is None else held.update_id

    def _holds(self, update_id: str, payload: bytes) -> bool:
        """Whether the journal has this report: queued for Core, or accepted by it."""
        pending = self._journal.pending_report(update_id)
        if pending is not None:
            return pending.payload == payload
        record = self._journal.update(update_id)
        return record is not None and record.state in FINAL_STATES and record.report == payload

    def _error(self, message: Message, name: str, text: str) -> Message:
        return new_error(message, name, "s", (text,))

    def _introspection(self, path: str) -> str:
        """Introspection data: the interface at ``dbus.path``; the way down to it above."""
        own = self._config.path
        children = ""
        if path != own:
            prefix = path.rstrip("/") + "/"
            if own.startswith(prefix):
                child = own[len(prefix) :].split("/", 1)[0]
                children = f"  <node name={quoteattr(child)}/>\n"
            return _DOCTYPE + f"<node>\n{children}</node>\n"
        return _DOCTYPE + _OBJECT_XML.format(interface=quoteattr(self._config.interface))


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) task-group exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _check_id(update_id: str) -> None:
    problem = id_problem(update_id)
    if problem is not None:
        raise ArgumentError(f"invalid update id {shown_id(update_id)}: {problem}")


def _is_uuid(text: str) -> bool:
    parts = text.lower().split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(c in _HEX for p in parts for c in p)


_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)
_OBJECT_XML = """<node>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
  </interface>
  <interface name={interface}>
    <method name="initiateDownload">
      <arg name="update_id" type="s" direction="in"/>
    </method>
    <method name="updateReport">
      <arg name="update_id" type="s" direction="in"/>
      <arg name="operations_results" type="aa{{sv}}" direction="in"/>
    </method>
  </interface>
</node>
"""
