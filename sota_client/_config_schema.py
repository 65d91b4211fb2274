"""The config schema: every section and key, declared once with its default, kind and flag.

Each key is a field of its section's struct, with its default; the ``_key(...)`` in its
``Annotated`` type holds its value kind (how it is read from TOML and from a flag, and written
back), its flag help, and the gateways that use it. ``_SECTION_SETTINGS``, built from those
declarations, is what the reader, the ``--print`` writer and the command line all work from,
so a new key needs only its field here. The sections are msgspec structs, not dataclasses:
creating a dataclass generates and compiles its methods, about 1.5 ms each at every start.
"""

# No ``from __future__ import annotations``: each key's metadata is read from its
# ``Annotated`` annotation at import, which needs the annotations evaluated.
from typing import Annotated, Any, get_args

import msgspec

from sota_client._config_kinds import (
    BOOL,
    DBUS_BUS,
    DOWNLOAD_SIZE,
    DOWNLOAD_SLOTS,
    FILE_MODE,
    HTTP_SERVER_ADDR,
    I32,
    I64,
    OPTIONAL_STRING,
    ORIGINS,
    PACKAGE_MANAGER,
    REPORT_SECONDS,
    RVI_EDGE_ADDR,
    SECONDS,
    STRING,
    U64,
    URL,
    WEBSOCKET_ADDR,
    Kind,
    PackageManager,
)

__all__ = [
    "GATEWAYS",
    "SECTION_GATEWAYS",
    "_SECTIONS",
    "_SECTION_SETTINGS",
    "AuthConfig",
    "Config",
    "CoreConfig",
    "DBusConfig",
    "DeviceConfig",
    "GatewayConfig",
    "NetworkConfig",
    "RviConfig",
    "_Setting",
]


class _Key(msgspec.Struct, frozen=True):
    """A key's metadata: its value kind, its flag's metavar and help, the gateways using it."""

    kind: Kind
    metavar: str
    help: str
    gateways: tuple[str, ...]


def _key(kind: Kind, metavar: str, help: str, *gateways: str) -> _Key:
    return _Key(kind, metavar, help, gateways)


# --------------------------------------------------------------------------------------------
# The sections. Field order is the order of --print and of the flags in --help.


class AuthConfig(msgspec.Struct, frozen=True):
    """``[auth]``: OAuth2 client credentials for Core. Without the section, no authentication."""

    server: Annotated[str, _key(URL, "URL", "change the auth server")] = "http://127.0.0.1:9001"
    client_id: Annotated[str, _key(STRING, "ID", "change the auth client id")] = "client-id"
    client_secret: Annotated[str, _key(STRING, "SECRET", "change the auth client secret")] = (
        "client-secret"
    )
    #: None (the default, or ``""``): no credentials file. 2016 required this key.
    credentials_file: Annotated[
        str | None, _key(OPTIONAL_STRING, "PATH", "change the auth credentials file")
    ] = None


class CoreConfig(msgspec.Struct, frozen=True):
    """``[core]``: the Core server and polling it for updates."""

    server: Annotated[str, _key(URL, "URL", "change the core server")] = "http://127.0.0.1:8080"
    polling: Annotated[bool, _key(BOOL, "BOOL", "toggle polling the core server for updates")] = (
        True
    )
    polling_sec: Annotated[int, _key(U64, "SECONDS", "change the core polling interval")] = 10
    #: Addition: HTTP connect/read timeout in seconds (2016: a fixed 20 s read timeout).
    timeout: Annotated[float, _key(SECONDS, "SECONDS", "change the core HTTP timeout")] = 20.0


class DBusConfig(msgspec.Struct, frozen=True):
    """``[dbus]``: names for the D-Bus gateway (required by the dbus and rvi gateways, and read
    leniently while both are off)."""

    name: Annotated[str, _key(STRING, "NAME", "change the dbus name")] = "org.genivi.SotaClient"
    path: Annotated[str, _key(STRING, "PATH", "change the dbus path")] = "/org/genivi/SotaClient"
    interface: Annotated[str, _key(STRING, "INTERFACE", "change the dbus interface")] = (
        "org.genivi.SotaClient"
    )
    software_manager: Annotated[
        str, _key(STRING, "NAME", "change the dbus software manager name")
    ] = "org.genivi.SoftwareLoadingManager"
    software_manager_path: Annotated[
        str, _key(STRING, "PATH", "change the dbus software manager path")
    ] = "/org/genivi/SoftwareLoadingManager"
    #: Seconds to wait for the SWLM's answer to a call (2016 passed it to libdbus as
    #: milliseconds, so its default 60 meant 60 ms: reference-client.md §11.6, bug 52).
    timeout: Annotated[int, _key(I32, "TIMEOUT", "change the dbus timeout")] = 60
    #: Addition: "session" (2016's only bus), "system", or a bus address.
    bus: Annotated[str, _key(DBUS_BUS, "BUS", "change the dbus bus")] = "session"


class DeviceConfig(msgspec.Struct, frozen=True):
    """``[device]``: the device's identity, where packages go and how they are installed."""

    uuid: Annotated[str, _key(STRING, "UUID", "change the device uuid")] = (
        "123e4567-e89b-12d3-a456-426655440000"
    )
    vin: Annotated[str, _key(STRING, "VIN", "change the device vin")] = "V1234567890123456"
    packages_dir: Annotated[
        str, _key(STRING, "PATH", "change the downloaded packages directory")
    ] = "/tmp/"
    package_manager: Annotated[
        PackageManager, _key(PACKAGE_MANAGER, "MANAGER", "change the package manager")
    ] = PackageManager("off")
    certificates_path: Annotated[str, _key(STRING, "PATH", "change the CA certificates path")] = (
        "/tmp/sota_certificates"
    )
    #: None (``""`` in the file or the flag): no system information is gathered.
    system_info: Annotated[
        str | None, _key(OPTIONAL_STRING, "PATH", 'change the system info command ("" for none)')
    ] = "system_info.sh"
    #: Addition: where the daemon keeps its journal (downloads, unsent reports and events).
    state_dir: Annotated[str, _key(STRING, "PATH", "change the state directory")] = "/var/lib/sota"
    #: Addition: the largest update image downloaded, in bytes; a larger one is DownloadFailed.
    max_download_size: Annotated[
        int, _key(DOWNLOAD_SIZE, "BYTES", "change the largest update image downloaded")
    ] = 4 << 30
    #: Addition: downloads run at most this many at a time, queued in Core's installPos order.
    max_concurrent_downloads: Annotated[
        int, _key(DOWNLOAD_SLOTS, "COUNT", "change how many downloads run at a time (1-16)")
    ] = 1
    #: Addition: how long an update handed to an SWLM may wait for its report; 0: for ever.
    report_timeout: Annotated[
        float,
        _key(
            REPORT_SECONDS,
            "SECONDS",
            "change how long an update handed to an SWLM may wait for its report (0: for ever)",
        ),
    ] = 86400.0
    #: Addition: ``DownloadComplete`` carries the image's sha256 and size and the package Core
    #: named, after the three 0.1 fields; False: the 0.1 fields only, for SWLMs that refuse
    #: fields they do not know.
    event_metadata: Annotated[
        bool, _key(BOOL, "BOOL", "toggle the sha256, size and package in DownloadComplete events")
    ] = True


class GatewayConfig(msgspec.Struct, frozen=True):
    """``[gateway]``: which ways of talking to SWLMs and UIs are switched on."""

    console: Annotated[bool, _key(BOOL, "BOOL", "toggle the console gateway")] = False
    dbus: Annotated[bool, _key(BOOL, "BOOL", "toggle the dbus gateway")] = False
    http: Annotated[bool, _key(BOOL, "BOOL", "toggle the http gateway")] = False
    rvi: Annotated[bool, _key(BOOL, "BOOL", "toggle the rvi gateway")] = False
    socket: Annotated[bool, _key(BOOL, "BOOL", "toggle the socket gateway")] = False
    websocket: Annotated[bool, _key(BOOL, "BOOL", "toggle the websocket gateway")] = False


class NetworkConfig(msgspec.Struct, frozen=True):
    """``[network]``: local addresses of the gateways; each key is read leniently while its
    gateway is off (see ``_Setting.gateways``)."""

    http_server: Annotated[
        str, _key(HTTP_SERVER_ADDR, "ADDR", "change the http gateway address", "http")
    ] = "127.0.0.1:8888"
    rvi_edge_server: Annotated[
        str, _key(RVI_EDGE_ADDR, "ADDR", "change the rvi edge server address", "rvi")
    ] = "127.0.0.1:9080"
    socket_commands_path: Annotated[
        str, _key(STRING, "PATH", "change the commands socket path", "socket")
    ] = "/tmp/sota-commands.socket"
    socket_events_path: Annotated[
        str, _key(STRING, "PATH", "change the events socket path", "socket")
    ] = "/tmp/sota-events.socket"
    websocket_server: Annotated[
        str, _key(WEBSOCKET_ADDR, "ADDR", "change the websocket gateway address", "websocket")
    ] = "127.0.0.1:3012"
    #: Addition: permissions of the commands socket.
    socket_mode: Annotated[
        int, _key(FILE_MODE, "MODE", "change the commands socket mode", "socket")
    ] = 0o660
    #: Addition: group owning the commands socket; None leaves it to the daemon's group.
    socket_group: Annotated[
        str | None, _key(OPTIONAL_STRING, "GROUP", "change the commands socket group", "socket")
    ] = None
    #: Addition: web pages (origins) allowed to use the HTTP and websocket gateways; empty:
    #: only the daemon's own pages, served by the HTTP gateway at ``http_server``.
    local_api_origins: Annotated[
        tuple[str, ...],
        _key(
            ORIGINS,
            "ORIGINS",
            "change the web origins allowed to use the local API (comma-separated)",
            "http",
            "websocket",
        ),
    ] = ()


class RviConfig(msgspec.Struct, frozen=True):
    """``[rvi]``: the RVI node (required by the rvi gateway, and read leniently while it is
    off)."""

    client: Annotated[str, _key(URL, "URL", "change the rvi client URL")] = "http://127.0.0.1:8901"
    storage_dir: Annotated[str, _key(STRING, "PATH", "change the rvi storage directory")] = (
        "/var/sota"
    )
    #: Seconds without a chunk before a transfer is dropped; None: never.
    timeout: Annotated[int | None, _key(I64, "TIMEOUT", "change the rvi timeout")] = None


class Config(msgspec.Struct, frozen=True):
    """The whole configuration. ``auth``, ``dbus`` and ``rvi`` are None when their section is
    absent; the other sections always exist, with defaults for whatever the file leaves out."""

    auth: AuthConfig | None = None
    core: CoreConfig = CoreConfig()
    dbus: DBusConfig | None = None
    device: DeviceConfig = DeviceConfig()
    gateway: GatewayConfig = GatewayConfig()
    network: NetworkConfig = NetworkConfig()
    rvi: RviConfig | None = None


# --------------------------------------------------------------------------------------------
# The table every reader and writer works from.


class _Setting(msgspec.Struct, frozen=True):
    """One ``section.key`` with everything needed to read, write and override it."""

    section: str
    key: str
    kind: Kind
    default: Any
    metavar: str
    help: str
    #: The gateways that use this setting. While all of them are off, a bad value in the file
    #: is a warning and the default is used; () means the setting is always checked strictly.
    gateways: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The 2016 flag name without its dashes: ``core-polling-sec``."""
        return f"{self.section}-{self.key.replace('_', '-')}"


#: Section name -> its default instance (also used when a flag creates an absent section).
_SECTIONS: dict[str, Any] = {
    "auth": AuthConfig(),
    "core": CoreConfig(),
    "dbus": DBusConfig(),
    "device": DeviceConfig(),
    "gateway": GatewayConfig(),
    "network": NetworkConfig(),
    "rvi": RviConfig(),
}
#: The sections used only by gateways: every key is read leniently while these are off.
SECTION_GATEWAYS: dict[str, tuple[str, ...]] = {"dbus": ("dbus", "rvi"), "rvi": ("rvi",)}


def _settings(name: str, section: type[msgspec.Struct]) -> tuple[_Setting, ...]:
    """The settings of one section, from its fields' defaults and ``Annotated`` metadata."""
    defaults = section.__struct_defaults__
    assert len(defaults) == len(section.__struct_fields__), f"{name}: a key without a default"
    settings = []
    for key, default in zip(section.__struct_fields__, defaults, strict=True):
        meta = get_args(section.__annotations__[key])[1]
        assert isinstance(meta, _Key), f"{name}.{key} has no _key(...) metadata"
        gateways = SECTION_GATEWAYS.get(name, meta.gateways)
        settings.append(_Setting(name, key, meta.kind, default, meta.metavar, meta.help, gateways))
    return tuple(settings)


_SECTION_SETTINGS: dict[str, tuple[_Setting, ...]] = {
    name: _settings(name, type(section)) for name, section in _SECTIONS.items()
}
#: The gateway switches, the names of ``[gateway]``'s keys.
GATEWAYS: tuple[str, ...] = GatewayConfig.__struct_fields__
