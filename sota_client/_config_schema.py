"""The config schema: every section and key, declared once with its default, kind and flag.

Each key is a field of its section's dataclass; the field's metadata holds its value kind (how it
is read from TOML and from a flag, and written back), its flag help, and the gateways that use
it. ``_SECTION_SETTINGS``, built from those declarations, is what the reader, the ``--print``
writer and the command line all work from, so a new key needs only its field here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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


def _key(kind: Kind, metavar: str, help: str, *gateways: str) -> dict[str, Any]:
    """Field metadata: the value kind, the flag's metavar and help, the gateways using it."""
    return {"kind": kind, "metavar": metavar, "help": help, "gateways": gateways}


# --------------------------------------------------------------------------------------------
# The sections. Field order is the order of --print and of the flags in --help.


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``[auth]``: OAuth2 client credentials for Core. Without the section, no authentication."""

    server: str = field(
        default="http://127.0.0.1:9001", metadata=_key(URL, "URL", "change the auth server")
    )
    client_id: str = field(
        default="client-id", metadata=_key(STRING, "ID", "change the auth client id")
    )
    client_secret: str = field(
        default="client-secret", metadata=_key(STRING, "SECRET", "change the auth client secret")
    )
    #: None (the default, or ``""``): no credentials file. 2016 required this key.
    credentials_file: str | None = field(
        default=None,
        metadata=_key(OPTIONAL_STRING, "PATH", "change the auth credentials file"),
    )


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """``[core]``: the Core server and polling it for updates."""

    server: str = field(
        default="http://127.0.0.1:8080", metadata=_key(URL, "URL", "change the core server")
    )
    polling: bool = field(
        default=True, metadata=_key(BOOL, "BOOL", "toggle polling the core server for updates")
    )
    polling_sec: int = field(
        default=10, metadata=_key(U64, "SECONDS", "change the core polling interval")
    )
    #: Addition: HTTP connect/read timeout in seconds (2016: a fixed 20 s read timeout).
    timeout: float = field(
        default=20.0, metadata=_key(SECONDS, "SECONDS", "change the core HTTP timeout")
    )


@dataclass(frozen=True, slots=True)
class DBusConfig:
    """``[dbus]``: names for the D-Bus gateway (required by the dbus and rvi gateways, and read
    leniently while both are off)."""

    name: str = field(
        default="org.genivi.SotaClient", metadata=_key(STRING, "NAME", "change the dbus name")
    )
    path: str = field(
        default="/org/genivi/SotaClient", metadata=_key(STRING, "PATH", "change the dbus path")
    )
    interface: str = field(
        default="org.genivi.SotaClient",
        metadata=_key(STRING, "INTERFACE", "change the dbus interface"),
    )
    software_manager: str = field(
        default="org.genivi.SoftwareLoadingManager",
        metadata=_key(STRING, "NAME", "change the dbus software manager name"),
    )
    software_manager_path: str = field(
        default="/org/genivi/SoftwareLoadingManager",
        metadata=_key(STRING, "PATH", "change the dbus software manager path"),
    )
    #: Seconds to wait for the SWLM's answer to a call (2016 passed it to libdbus as
    #: milliseconds, so its default 60 meant 60 ms: reference-client.md §11.6, bug 52).
    timeout: int = field(default=60, metadata=_key(I32, "TIMEOUT", "change the dbus timeout"))
    #: Addition: "session" (2016's only bus), "system", or a bus address.
    bus: str = field(default="session", metadata=_key(DBUS_BUS, "BUS", "change the dbus bus"))


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """``[device]``: the device's identity, where packages go and how they are installed."""

    uuid: str = field(
        default="123e4567-e89b-12d3-a456-426655440000",
        metadata=_key(STRING, "UUID", "change the device uuid"),
    )
    vin: str = field(
        default="V1234567890123456", metadata=_key(STRING, "VIN", "change the device vin")
    )
    packages_dir: str = field(
        default="/tmp/", metadata=_key(STRING, "PATH", "change the downloaded packages directory")
    )
    package_manager: PackageManager = field(
        default=PackageManager("off"),
        metadata=_key(PACKAGE_MANAGER, "MANAGER", "change the package manager"),
    )
    certificates_path: str = field(
        default="/tmp/sota_certificates",
        metadata=_key(STRING, "PATH", "change the CA certificates path"),
    )
    #: None (``""`` in the file or the flag): no system information is gathered.
    system_info: str | None = field(
        default="system_info.sh",
        metadata=_key(OPTIONAL_STRING, "PATH", 'change the system info command ("" for none)'),
    )
    #: Addition: where the daemon keeps its journal (downloads, unsent reports and events).
    state_dir: str = field(
        default="/var/lib/sota", metadata=_key(STRING, "PATH", "change the state directory")
    )
    #: Addition: the largest update image downloaded, in bytes; a larger one is DownloadFailed.
    max_download_size: int = field(
        default=4 << 30,
        metadata=_key(DOWNLOAD_SIZE, "BYTES", "change the largest update image downloaded"),
    )
    #: Addition: downloads run at most this many at a time, queued in Core's installPos order.
    max_concurrent_downloads: int = field(
        default=1,
        metadata=_key(DOWNLOAD_SLOTS, "COUNT", "change how many downloads run at a time (1-16)"),
    )
    #: Addition: how long an update handed to an SWLM may wait for its report; 0: for ever.
    report_timeout: float = field(
        default=86400.0,
        metadata=_key(
            REPORT_SECONDS,
            "SECONDS",
            "change how long an update handed to an SWLM may wait for its report (0: for ever)",
        ),
    )
    #: Addition: ``DownloadComplete`` carries the image's sha256 and size and the package Core
    #: named, after the three 0.1 fields; False: the 0.1 fields only, for SWLMs that refuse
    #: fields they do not know.
    event_metadata: bool = field(
        default=True,
        metadata=_key(
            BOOL, "BOOL", "toggle the sha256, size and package in DownloadComplete events"
        ),
    )


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """``[gateway]``: which ways of talking to SWLMs and UIs are switched on."""

    console: bool = field(default=False, metadata=_key(BOOL, "BOOL", "toggle the console gateway"))
    dbus: bool = field(default=False, metadata=_key(BOOL, "BOOL", "toggle the dbus gateway"))
    http: bool = field(default=False, metadata=_key(BOOL, "BOOL", "toggle the http gateway"))
    rvi: bool = field(default=False, metadata=_key(BOOL, "BOOL", "toggle the rvi gateway"))
    socket: bool = field(default=False, metadata=_key(BOOL, "BOOL", "toggle the socket gateway"))
    websocket: bool = field(
        default=False, metadata=_key(BOOL, "BOOL", "toggle the websocket gateway")
    )


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """``[network]``: local addresses of the gateways; each key is read leniently while its
    gateway is off (see ``_Setting.gateways``)."""

    http_server: str = field(
        default="127.0.0.1:8888",
        metadata=_key(HTTP_SERVER_ADDR, "ADDR", "change the http gateway address", "http"),
    )
    rvi_edge_server: str = field(
        default="127.0.0.1:9080",
        metadata=_key(RVI_EDGE_ADDR, "ADDR", "change the rvi edge server address", "rvi"),
    )
    socket_commands_path: str = field(
        default="/tmp/sota-commands.socket",
        metadata=_key(STRING, "PATH", "change the commands socket path", "socket"),
    )
    socket_events_path: str = field(
        default="/tmp/sota-events.socket",
        metadata=_key(STRING, "PATH", "change the events socket path", "socket"),
    )
    websocket_server: str = field(
        default="127.0.0.1:3012",
        metadata=_key(WEBSOCKET_ADDR, "ADDR", "change the websocket gateway address", "websocket"),
    )
    #: Addition: permissions of the commands socket.
    socket_mode: int = field(
        default=0o660,
        metadata=_key(FILE_MODE, "MODE", "change the commands socket mode", "socket"),
    )
    #: Addition: group owning the commands socket; None leaves it to the daemon's group.
    socket_group: str | None = field(
        default=None,
        metadata=_key(OPTIONAL_STRING, "GROUP", "change the commands socket group", "socket"),
    )
    #: Addition: web pages (origins) allowed to use the HTTP and websocket gateways; empty:
    #: only the daemon's own pages, served by the HTTP gateway at ``http_server``.
    local_api_origins: tuple[str, ...] = field(
        default=(),
        metadata=_key(
            ORIGINS,
            "ORIGINS",
            "change the web origins allowed to use the local API (comma-separated)",
            "http",
            "websocket",
        ),
    )


@dataclass(frozen=True, slots=True)
class RviConfig:
    """``[rvi]``: the RVI node (required by the rvi gateway, and read leniently while it is
    off)."""

    client: str = field(
        default="http://127.0.0.1:8901", metadata=_key(URL, "URL", "change the rvi client URL")
    )
    storage_dir: str = field(
        default="/var/sota", metadata=_key(STRING, "PATH", "change the rvi storage directory")
    )
    #: Seconds without a chunk before a transfer is dropped; None: never.
    timeout: int | None = field(
        default=None, metadata=_key(I64, "TIMEOUT", "change the rvi timeout")
    )


@dataclass(frozen=True, slots=True)
class Config:
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


@dataclass(frozen=True, slots=True)
class _Setting:
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
_SECTION_SETTINGS: dict[str, tuple[_Setting, ...]] = {
    name: tuple(
        _Setting(
            name,
            f.name,
            f.metadata["kind"],
            f.default,
            f.metadata["metavar"],
            f.metadata["help"],
            SECTION_GATEWAYS.get(name, f.metadata["gateways"]),
        )
        for f in dataclasses.fields(section)
    )
    for name, section in _SECTIONS.items()
}
#: The gateway switches, the names of ``[gateway]``'s keys.
GATEWAYS = tuple(f.name for f in dataclasses.fields(GatewayConfig))
