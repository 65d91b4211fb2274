"""Events in the 2016 JSON forms: command replies (``variant``/``fields``) and the 0.1 envelope.

Replies use rustc-serialize's enum encoding: a unit variant is the bare string ``"Authenticated"``,
a tuple variant is ``{"variant":"Name","fields":[...]}``. The events socket wraps the two events
it carries as ``{"version":"0.1","event":"DownloadComplete","data":{...}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from .._errors import CommandRejected, ProtocolError
from ._json import convert, encode, load
from ._models import Package, UpdateReport, UpdateRequest

__all__ = [
    "ENVELOPE_VERSION",
    "AlreadyAuthenticated",
    "Authenticated",
    "AwaitingReboot",
    "DownloadComplete",
    "DownloadFailed",
    "DownloadProgress",
    "DownloadingUpdate",
    "ErrorEvent",
    "Event",
    "FoundInstalledPackages",
    "FoundSystemInfo",
    "InstallComplete",
    "InstallFailed",
    "InstallProgress",
    "InstalledPackagesSent",
    "InstalledSoftwareNeeded",
    "InstalledSoftwareSent",
    "InstallingUpdate",
    "NoUpdateRequests",
    "NotAuthenticated",
    "SystemInfoSent",
    "UnknownEvent",
    "UpdateAvailable",
    "UpdateReportSent",
    "UpdatesReceived",
    "decode_envelope",
    "decode_event",
    "decode_reply",
    "encode_envelope",
    "encode_event",
]

ENVELOPE_VERSION = "0.1"

_Shape = Literal["unit", "struct", "tuple"]


class Event(msgspec.Struct, frozen=True):
    """Base of every event. ``name`` is the 2016 variant name.

    ``shape`` says how the fields go on the wire: ``unit`` (no fields), ``struct`` (the event's
    fields form one JSON object) or ``tuple`` (each field is one positional value).
    """

    name: ClassVar[str] = ""
    shape: ClassVar[_Shape] = "unit"


class ErrorEvent(Event, frozen=True):
    """A command failed; ``text`` is the error display (``HTTP client error: ...``)."""

    name: ClassVar[str] = "Error"
    shape: ClassVar[_Shape] = "tuple"
    text: str


class Authenticated(Event, frozen=True):
    """A new access token was obtained."""

    name: ClassVar[str] = "Authenticated"


class NotAuthenticated(Event, frozen=True):
    """No token, or Core answered 401/403; the daemon authenticates again."""

    name: ClassVar[str] = "NotAuthenticated"


class AlreadyAuthenticated(Event, frozen=True):
    """``Authenticate`` while a token is held, or with no ``[auth]`` section."""

    name: ClassVar[str] = "AlreadyAuthenticated"


class UpdatesReceived(Event, frozen=True):
    """Core listed pending or in-flight updates, sorted by ``installPos``."""

    name: ClassVar[str] = "UpdatesReceived"
    shape: ClassVar[_Shape] = "tuple"
    requests: tuple[UpdateRequest, ...]


class UpdateAvailable(Event, frozen=True):
    """An update was announced over RVI."""

    name: ClassVar[str] = "UpdateAvailable"
    shape: ClassVar[_Shape] = "struct"
    update_id: str
    signature: str
    description: str
    request_confirmation: bool
    size: int


class NoUpdateRequests(Event, frozen=True):
    """Core has no pending or in-flight update for this device."""

    name: ClassVar[str] = "NoUpdateRequests"


class FoundInstalledPackages(Event, frozen=True):
    """The package manager's list of installed packages."""

    name: ClassVar[str] = "FoundInstalledPackages"
    shape: ClassVar[_Shape] = "tuple"
    packages: tuple[Package, ...]


class FoundSystemInfo(Event, frozen=True):
    """The raw output of the ``system_info`` command."""

    name: ClassVar[str] = "FoundSystemInfo"
    shape: ClassVar[_Shape] = "tuple"
    info: str


class DownloadingUpdate(Event, frozen=True):
    """A download has started."""

    name: ClassVar[str] = "DownloadingUpdate"
    shape: ClassVar[_Shape] = "tuple"
    update_id: str


class DownloadProgress(Event, frozen=True):
    """Addition: how far a download got; ``total`` is None when Core did not say.

    Sent only to the local API's clients (websocket, ``/events``), at most about once a second
    per download, never on the 0.1 Unix socket.
    """

    name: ClassVar[str] = "DownloadProgress"
    shape: ClassVar[_Shape] = "tuple"
    update_id: str
    received: int
    total: int | None


class InstallProgress(Event, frozen=True):
    """Addition: how far an SWLM's install got, as it said with ``SendInstallProgress``.

    The daemon's reply to that command, and published to the local API's clients (websocket,
    ``/events``); never sent on the 0.1 events socket.
    """

    name: ClassVar[str] = "InstallProgress"
    shape: ClassVar[_Shape] = "tuple"
    update_id: str
    percent: int
    text: str = ""


class AwaitingReboot(Event, frozen=True):
    """Addition: the SWLM installed the update, which counts once the device has rebooted into
    it and the SWLM confirmed it (``SendRebootNeeded``); the daemon's reply, and published to
    the local API's clients. The report comes after the reboot."""

    name: ClassVar[str] = "AwaitingReboot"
    shape: ClassVar[_Shape] = "tuple"
    update_id: str
    text: str = ""


class DownloadComplete(Event, frozen=True):
    """An update image is on disk; the SWLM installs ``update_image`` and reports ``update_id``.

    ``update_id``, ``update_image`` and ``signature`` are the 0.1 fields. The others are an
    addition, each None when the daemon did not send it (a 2016 daemon, or
    ``device.event_metadata = false``), and then absent from the JSON, not null:

    ``sha256``
        the hex SHA-256 of the image, as the daemon computed it while downloading;
    ``size``
        the image's size in bytes;
    ``package``
        the package Core named for the update (its update list's ``packageId``).
    """

    name: ClassVar[str] = "DownloadComplete"
    shape: ClassVar[_Shape] = "struct"
    update_id: str
    update_image: str
    signature: str = ""
    sha256: str | None = None
    size: int | None = None
    package: Package | None = None

    @property
    def has_metadata(self) -> bool:
        """Whether any field beyond the three of 0.1 is set."""
        return self.sha256 is not None or self.size is not None or self.package is not None

    def without_metadata(self) -> DownloadComplete:
        """The event as 0.1 has it: the three 0.1 fields only."""
        return DownloadComplete(self.update_id, self.update_image, self.signature)


class DownloadFailed(Event, frozen=True):
    """A download failed; ``reason`` is the error display."""

    name: ClassVar[str] = "DownloadFailed"
    shape: ClassVar[_Shape] = "tuple"
    update_id: str
    reason: str


class InstallingUpdate(Event, frozen=True):
    """The local package manager started installing an update."""

    name: ClassVar[str] = "InstallingUpdate"
    shape: ClassVar[_Shape] = "tuple"
    update_id: str


class InstallComplete(Event, frozen=True):
    """The local package manager succeeded (including ALREADY_PROCESSED)."""

    name: ClassVar[str] = "InstallComplete"
    shape: ClassVar[_Shape] = "tuple"
    report: UpdateReport


class InstallFailed(Event, frozen=True):
    """The local package manager failed."""

    name: ClassVar[str] = "InstallFailed"
    shape: ClassVar[_Shape] = "tuple"
    report: UpdateReport


class UpdateReportSent(Event, frozen=True):
    """Core accepted an update report."""

    name: ClassVar[str] = "UpdateReportSent"


class InstalledPackagesSent(Event, frozen=True):
    """Core accepted the installed-package list."""

    name: ClassVar[str] = "InstalledPackagesSent"


class InstalledSoftwareSent(Event, frozen=True):
    """The installed software was sent over RVI."""

    name: ClassVar[str] = "InstalledSoftwareSent"


class SystemInfoSent(Event, frozen=True):
    """Core accepted the system information."""

    name: ClassVar[str] = "SystemInfoSent"


class InstalledSoftwareNeeded(Event, frozen=True):
    """The RVI backend asked for the installed software."""

    name: ClassVar[str] = "InstalledSoftwareNeeded"


class UnknownEvent(Event, frozen=True):
    """An event this SDK does not know, kept whole so that SWLMs survive new events.

    ``event`` is its name; ``data`` is the raw ``fields`` list of a reply or the ``data`` of an
    envelope; ``version`` is the envelope version, if it came in one.
    """

    event: str
    data: Any = None
    version: str | None = None


_EVENT_TYPES: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (
        ErrorEvent,
        Authenticated,
        NotAuthenticated,
        AlreadyAuthenticated,
        UpdatesReceived,
        UpdateAvailable,
        NoUpdateRequests,
        FoundInstalledPackages,
        FoundSystemInfo,
        DownloadingUpdate,
        DownloadProgress,
        DownloadComplete,
        DownloadFailed,
        InstallingUpdate,
        InstallProgress,
        InstallComplete,
        AwaitingReboot,
        InstallFailed,
        UpdateReportSent,
        InstalledPackagesSent,
        InstalledSoftwareSent,
        SystemInfoSent,
        InstalledSoftwareNeeded,
    )
}

# The only events the 2016 socket gateway published, and so the only ones with an envelope.
_ENVELOPED: tuple[type[Event], ...] = (DownloadComplete, DownloadFailed)


#: The fields of each event that 0.1 did not have: written only when set, after the 0.1 ones.
_OPTIONAL: dict[type[Event], tuple[str, ...]] = {
    DownloadComplete: ("sha256", "size", "package"),
}


def _field_values(event: Event) -> list[Any]:
    return [getattr(event, field) for field in event.__struct_fields__]


def _struct_data(event: Event) -> Any:
    """What a ``struct`` event's JSON object is made from: the event itself, or, for one with
    fields 0.1 did not have, a dict of its fields in order without those that are None (so a
    0.1 event is byte for byte what 0.1 wrote)."""
    optional = _OPTIONAL.get(type(event))
    if optional is None:
        return event
    return {
        field: value
        for field in event.__struct_fields__
        if (value := getattr(event, field)) is not None or field not in optional
    }


def encode_event(event: Event) -> bytes:
    """The event's JSON as a 2016 reply: ``"Authenticated"`` or ``{"variant":..,"fields":[..]}``."""
    if isinstance(event, UnknownEvent):
        if event.data is None:
            return encode(event.event)
        return encode({"variant": event.event, "fields": event.data})
    if event.shape == "unit":
        return encode(event.name)
    fields = [_struct_data(event)] if event.shape == "struct" else _field_values(event)
    return b'{"variant":' + encode(event.name) + b',"fields":' + encode(fields) + b"}"


def decode_event(data: bytes | str) -> Event:
    """Read an event in the reply form; an unknown variant becomes an :class:`UnknownEvent`.

    :raises ProtocolError: the input is not an event (the message says why).
    """
    obj = load(data, "event")
    fields: Any = None
    if isinstance(obj, str):
        name = obj
    elif isinstance(obj, dict):
        variant = obj.get("variant")
        if not isinstance(variant, str):
            raise ProtocolError('event object has no string "variant"')
        name = variant
        fields = obj.get("fields", [])
        if not isinstance(fields, list):
            raise ProtocolError(f'event {name}: "fields" must be a list')
    else:
        raise ProtocolError("event must be a JSON string or object")

    cls = _EVENT_TYPES.get(name)
    if cls is None:
        return UnknownEvent(event=name, data=fields)
    if cls.shape == "unit":
        if fields:
            raise ProtocolError(f"event {name} takes no fields, got {len(fields)}")
        return cls()
    if fields is None:
        raise ProtocolError(f"event {name} needs fields")
    if cls.shape == "struct":
        if len(fields) != 1:
            raise ProtocolError(f"event {name} takes 1 field, got {len(fields)}")
        return convert(fields[0], cls, f"event {name}")
    names = cls.__struct_fields__
    if len(fields) != len(names):
        raise ProtocolError(f"event {name} takes {len(names)} fields, got {len(fields)}")
    return convert(dict(zip(names, fields, strict=True)), cls, f"event {name}")


def decode_reply(data: bytes | str) -> Event:
    """Read the daemon's answer on the commands socket: an event, or an error text.

    :raises CommandRejected: the daemon answered with text such as ``Unknown Command: ...``.
    :raises ProtocolError: the answer looks like JSON but is not an event.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ProtocolError("reply is not valid UTF-8") from None
    else:
        text = data
    if not text.strip():
        raise ProtocolError("empty reply: the daemon closed the connection without answering")
    if text.lstrip()[:1] not in ('"', "{"):
        raise CommandRejected(text)
    return decode_event(text)


def encode_envelope(event: DownloadComplete | DownloadFailed) -> bytes:
    """The events-socket form: ``{"version":"0.1","event":"DownloadComplete","data":{...}}``."""
    if not isinstance(event, _ENVELOPED):
        raise TypeError(f"only DownloadComplete and DownloadFailed have an envelope, not {event}")
    return (
        b'{"version":"'
        + ENVELOPE_VERSION.encode()
        + b'","event":'
        + encode(event.name)
        + b',"data":'
        + encode(_struct_data(event))
        + b"}"
    )


def decode_envelope(data: bytes | str) -> Event:
    """Read one message from the events socket.

    A known event becomes its typed class; any other event name becomes an
    :class:`UnknownEvent`, so an SWLM keeps working when the daemon publishes new events.

    :raises ProtocolError: the input is not an envelope (the message says why).
    """
    obj = load(data, "envelope")
    if not isinstance(obj, dict):
        raise ProtocolError("envelope must be a JSON object")
    version, name = obj.get("version"), obj.get("event")
    if not isinstance(version, str):
        raise ProtocolError('envelope has no string "version"')
    if not isinstance(name, str):
        raise ProtocolError('envelope has no string "event"')
    if "data" not in obj:
        raise ProtocolError(f'envelope for {name} has no "data"')
    cls = _EVENT_TYPES.get(name)
    if cls not in _ENVELOPED or cls is None:
        return UnknownEvent(event=name, data=obj["data"], version=version)
    return convert(obj["data"], cls, f"envelope {name} data")
