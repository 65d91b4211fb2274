"""The daemon configuration: the 2016 TOML format (plus a few additive keys) as a typed Config.

Every key is declared once, on its section's dataclass, with its default, its value *kind* (how it
is read from TOML and from a command-line flag, and written back) and its flag help. The decoder,
the ``--print`` writer and the command line are all generated from those declarations.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

from sota_client._errors import SotaError, io_error_text

__all__ = [
    "AuthConfig",
    "Config",
    "ConfigError",
    "CoreConfig",
    "DBusConfig",
    "DeviceConfig",
    "GatewayConfig",
    "NetworkConfig",
    "PackageManager",
    "RviConfig",
    "config_to_toml",
    "default_config",
    "load_config",
    "parse_config",
    "parse_socket_addr",
]

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = 1 << 20
"""Largest config or credentials file read, in bytes; real ones are a few KiB."""

MAX_DOTS = 4096
"""Most ``.`` outside comment lines that a file may hold: tomllib's time grows with the square
of a dotted key's length (``a.a.a...`` over 1 MiB takes hours); real configs have a few dozen."""


class ConfigError(SotaError):
    """The configuration cannot be used; the daemon must not start.

    ``str(error)`` is the whole one-line message for the user: where the problem is (file, line,
    ``[section] key``), then the 2016 error text, e.g.
    ``/etc/sota.toml:3: [core] polling: Toml decode error: expected a value of type `bool`, but
    found a value of type `string` for the key `polling```. ``message`` holds the 2016 text alone.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.line = line
        self.section = section
        self.key = key

    def __str__(self) -> str:
        where = _location(self.source, self.line, self.section, self.key)
        return _one_line(": ".join([*where, self.message]))


#: Control characters (and everything ``str.splitlines`` breaks at) as escapes, so that a key or
#: value from the file cannot break a message or a log line in two, or drive the terminal.
_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _one_line(text: str) -> str:
    return text if text.isprintable() else text.translate(_ESCAPES)


def _location(
    source: str | None, line: int | None, section: str | None, key: str | None
) -> list[str]:
    """The ``file:line`` and ``[section] key`` parts that prefix errors and warnings."""
    parts = []
    if source is not None:
        parts.append(source if line is None else f"{source}:{line}")
    where = " ".join(part for part in (f"[{section}]" if section else None, key) if part)
    if where:
        parts.append(where)
    return parts


# --------------------------------------------------------------------------------------------
# Value types that need more than a string


PackageManagerKind = Literal["off", "deb", "rpm", "file", "otb"]


@dataclass(frozen=True, slots=True)
class PackageManager:
    """``device.package_manager``: ``off``, ``deb``, ``rpm``, ``file:PATH`` or ``otb:REPODIR``.

    The keyword is case-insensitive; the path after it keeps its case (the 2016 client lower-cased
    the whole string and so mangled the path).
    """

    kind: PackageManagerKind
    path: str | None = None

    def __post_init__(self) -> None:
        if (self.path is not None) != (self.kind in ("file", "otb")):
            raise ValueError(f"package manager {self.kind!r} cannot have path {self.path!r}")

    @classmethod
    def parse(cls, text: str) -> PackageManager:
        """Read the config/flag form; ``ValueError("unknown package manager: <text>")`` if bad."""
        keyword, colon, path = text.partition(":")
        kind = keyword.lower()
        takes_path = kind in ("file", "otb")
        if kind in get_args(PackageManagerKind) and (bool(path) if takes_path else not colon):
            return cls(cast(PackageManagerKind, kind), path or None)
        raise ValueError(f"unknown package manager: {text}")

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


_PORT = re.compile(r"[0-9]{1,5}")


def parse_socket_addr(text: str) -> tuple[str, int]:
    """Split an ``IP:port`` (or ``[IPv6]:port``) address into host and port, for binding.

    Host names and URLs are refused, as by Rust's ``SocketAddr``: ``ValueError("invalid IP
    address syntax")``, the 2016 text.
    """
    host, colon, port = text.rpartition(":")
    try:
        if not colon or not _PORT.fullmatch(port) or int(port) > 0xFFFF:
            raise ValueError(text)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ipaddress.IPv6Address(host)
        else:
            ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError("invalid IP address syntax") from None
    return host, int(port)


# --------------------------------------------------------------------------------------------
# Value kinds: each reads a TOML value and a flag text, and writes TOML. A ValueError carries the
# 2016 error text; the caller adds where it happened.


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one type of value is read from the TOML file and from a flag, and written back."""

    expected: str  # toml 0.2.1's name of the type, for "expected a value of type `...`"
    accepts: tuple[type, ...]  # what tomllib may return for it
    check: Callable[[Any], Any]  # TOML value -> config value
    parse_text: Callable[[str], Any]  # flag text -> config value
    dump: Callable[[Any], str]  # config value -> TOML literal
    flag_label: str = ""  # "Invalid core-server URL: ..." (2016 flag error texts)
    flag_prefix: str = ""


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """A TOML basic string; control characters (which TOML forbids raw) are escaped."""
    return '"' + "".join(_toml_char(char) for char in text) + '"'


def _toml_char(char: str) -> str:
    if char in _TOML_ESCAPES:
        return _TOML_ESCAPES[char]
    return f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char


def _same(value: Any) -> Any:
    return value


def _none_if_empty(text: str) -> str | None:
    """An empty string switches an optional setting off (``system_info = ""``)."""
    return text or None


_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_FORBIDDEN_HOST_CHARS = frozenset(" \t\n\r#%/:<>?@[\\]^|")


def _check_url(text: str) -> str:
    """An absolute URL with a host; the messages are those of the ``url`` crate 1.2."""
    if not _URL_SCHEME.match(text):
        raise ValueError("Url parse error: relative URL without a base")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        bad = "invalid IPv6 address" if "[" in text else "invalid port number"
        raise ValueError(f"Url parse error: {bad}") from None
    if not parts.hostname:
        raise ValueError("Url parse error: empty host")
    if "[" not in parts.netloc and _FORBIDDEN_HOST_CHARS.intersection(parts.hostname):
        raise ValueError("Url parse error: invalid domain character")
    return text


def _check_socket_addr(text: str) -> str:
    parse_socket_addr(text)
    return text


def _parse_package_manager(text: str) -> PackageManager:
    try:
        return PackageManager.parse(text)
    except ValueError as exc:
        raise ValueError(f"Parse error: {exc}") from None


def _parse_bool(text: str) -> bool:
    """Rust's ``bool::from_str``: exactly ``true`` or ``false``."""
    if text not in ("true", "false"):
        raise ValueError("provided string was not `true` or `false`")
    return text == "true"


def _int_kind(rust_type: str, low: int, high: int, what: str = "") -> _Kind:
    """An integer checked against the range of the Rust type the 2016 client used.

    ``what`` (for additions, whose range is narrower than a Rust type's) names the value in
    ``expected <what> between <low> and <high>, but found <value>``, in the file and in flags.
    """

    def out_of_range(value: int) -> ValueError:
        shown = _int_text(value)
        if what:
            return ValueError(f"expected {what} between {low} and {high}, but found {shown}")
        return ValueError(f"{shown} is out of range for `{rust_type}` ({low}..={high})")

    def check(value: int) -> int:
        if not low <= value <= high:
            raise out_of_range(value)
        return value

    def parse_text(text: str) -> int:
        # Rust's ParseIntError texts; Python's int() is laxer (spaces, underscores).
        if not text:
            raise ValueError("cannot parse integer from empty string")
        if not re.fullmatch(r"[+-]?[0-9]+" if low < 0 else r"\+?[0-9]+", text):
            raise ValueError("invalid digit found in string")
        value = int(text)
        if what and not low <= value <= high:
            raise out_of_range(value)
        if value > high:
            raise ValueError("number too large to fit in target type")
        if value < low:
            raise ValueError("number too small to fit in target type")
        return value

    return _Kind("integer", (int,), check, parse_text, str)


def _int_text(value: int) -> str:
    """``str(value)``, shortened when Python refuses to convert it (over 4300 digits)."""
    try:
        return str(value)
    except ValueError:
        return "a number too long to show"


def _check_seconds(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected a positive number of seconds, but found {value}")
    return float(value)


def _parse_seconds(text: str) -> float:
    if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
        raise ValueError("invalid float literal")
    return _check_seconds(float(text))


def _check_file_mode(value: int | str) -> int:
    """A permission mode: a TOML integer (``0o660``) or an octal string (``"0660"``)."""
    if isinstance(value, str):
        digits = value.removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", digits):
            raise ValueError(f"expected an octal file mode such as 0o660, but found {value!r}")
        value = int(digits, 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(f"expected a file mode between 0o0 and 0o7777, but found {value:#o}")
    return value


_STRING = _Kind("string", (str,), _same, _same, _toml_string)
_OPTIONAL_STRING = _Kind(
    "string", (str,), _none_if_empty, _none_if_empty, lambda v: _toml_string(v or "")
)
_URL = _Kind("string", (str,), _check_url, _check_url, _toml_string, flag_label=" URL")
_SOCKET_ADDR = _Kind(
    "string",
    (str,),
    _check_socket_addr,
    _check_socket_addr,
    _toml_string,
    flag_prefix="Parse error: couldn't parse SocketAddr: ",
)
_PACKAGE_MANAGER = _Kind(
    "string",
    (str,),
    _parse_package_manager,
    _parse_package_manager,
    lambda v: _toml_string(str(v)),
)
_BOOL = _Kind(
    "bool", (bool,), _same, _parse_bool, lambda v: "true" if v else "false", flag_label=" boolean"
)
_U64 = _int_kind("u64", 0, 2**64 - 1)
_I32 = _int_kind("i32", -(2**31), 2**31 - 1)
_I64 = _int_kind("i64", -(2**63), 2**63 - 1)
_DOWNLOAD_SIZE = _int_kind("u64", 1, 2**64 - 1, "a size in bytes")
_DOWNLOAD_SLOTS = _int_kind("u64", 1, 16, "a number of downloads")
_SECONDS = _Kind("float", (int, float), _check_seconds, _parse_seconds, repr)
_FILE_MODE = _Kind("integer", (int, str), _check_file_mode, _check_file_mode, lambda v: f"0o{v:o}")


def _key(kind: _Kind, metavar: str, help: str) -> dict[str, Any]:
    """Field metadata: the value kind, and the flag's metavar and help text."""
    return {"kind": kind, "metavar": metavar, "help": help}


# --------------------------------------------------------------------------------------------
# The sections. Field order is the order of --print and of the flags in --help.


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``[auth]``: OAuth2 client credentials for Core. Without the section, no authentication."""

    server: str = field(
        default="http://127.0.0.1:9001", metadata=_key(_URL, "URL", "change the auth server")
    )
    client_id: str = field(
        default="client-id", metadata=_key(_STRING, "ID", "change the auth client id")
    )
    client_secret: str = field(
        default="client-secret", metadata=_key(_STRING, "SECRET", "change the auth client secret")
    )
    #: None (the default, or ``""``): no credentials file. 2016 required this key.
    credentials_file: str | None = field(
        default=None,
        metadata=_key(_OPTIONAL_STRING, "PATH", "change the auth credentials file"),
    )


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """``[core]``: the Core server and polling it for updates."""

    server: str = field(
        default="http://127.0.0.1:8080", metadata=_key(_URL, "URL", "change the core server")
    )
    polling: bool = field(
        default=True, metadata=_key(_BOOL, "BOOL", "toggle polling the core server for updates")
    )
    polling_sec: int = field(
        default=10, metadata=_key(_U64, "SECONDS", "change the core polling interval")
    )
    #: Addition: HTTP connect/read timeout in seconds (2016: a fixed 20 s read timeout).
    timeout: float = field(
        default=20.0, metadata=_key(_SECONDS, "SECONDS", "change the core HTTP timeout")
    )


@dataclass(frozen=True, slots=True)
class DBusConfig:
    """``[dbus]``: names for the D-Bus gateway (required by the dbus and rvi gateways)."""

    name: str = field(
        default="org.genivi.SotaClient", metadata=_key(_STRING, "NAME", "change the dbus name")
    )
    path: str = field(
        default="/org/genivi/SotaClient", metadata=_key(_STRING, "PATH", "change the dbus path")
    )
    interface: str = field(
        default="org.genivi.SotaClient",
        metadata=_key(_STRING, "INTERFACE", "change the dbus interface"),
    )
    software_manager: str = field(
        default="org.genivi.SoftwareLoadingManager",
        metadata=_key(_STRING, "NAME", "change the dbus software manager name"),
    )
    software_manager_path: str = field(
        default="/org/genivi/SoftwareLoadingManager",
        metadata=_key(_STRING, "PATH", "change the dbus software manager path"),
    )
    #: Passed to libdbus as milliseconds, as in 2016.
    timeout: int = field(default=60, metadata=_key(_I32, "TIMEOUT", "change the dbus timeout"))


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """``[device]``: the device's identity, where packages go and how they are installed."""

    uuid: str = field(
        default="123e4567-e89b-12d3-a456-426655440000",
        metadata=_key(_STRING, "UUID", "change the device uuid"),
    )
    vin: str = field(
        default="V1234567890123456", metadata=_key(_STRING, "VIN", "change the device vin")
    )
    packages_dir: str = field(
        default="/tmp/", metadata=_key(_STRING, "PATH", "change the downloaded packages directory")
    )
    package_manager: PackageManager = field(
        default=PackageManager("off"),
        metadata=_key(_PACKAGE_MANAGER, "MANAGER", "change the package manager"),
    )
    certificates_path: str = field(
        default="/tmp/sota_certificates",
        metadata=_key(_STRING, "PATH", "change the CA certificates path"),
    )
    #: None (``""`` in the file or the flag): no system information is gathered.
    system_info: str | None = field(
        default="system_info.sh",
        metadata=_key(_OPTIONAL_STRING, "PATH", 'change the system info command ("" for none)'),
    )
    #: Addition: where the daemon keeps its journal (downloads, unsent reports and events).
    state_dir: str = field(
        default="/var/lib/sota", metadata=_key(_STRING, "PATH", "change the state directory")
    )
    #: Addition: the largest update image downloaded, in bytes; a larger one is DownloadFailed.
    max_download_size: int = field(
        default=4 << 30,
        metadata=_key(_DOWNLOAD_SIZE, "BYTES", "change the largest update image downloaded"),
    )
    #: Addition: downloads run at most this many at a time, queued in Core's installPos order.
    max_concurrent_downloads: int = field(
        default=1,
        metadata=_key(_DOWNLOAD_SLOTS, "COUNT", "change how many downloads run at a time (1-16)"),
    )


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """``[gateway]``: which ways of talking to SWLMs and UIs are switched on."""

    console: bool = field(default=False, metadata=_key(_BOOL, "BOOL", "toggle the console gateway"))
    dbus: bool = field(default=False, metadata=_key(_BOOL, "BOOL", "toggle the dbus gateway"))
    http: bool = field(default=False, metadata=_key(_BOOL, "BOOL", "toggle the http gateway"))
    rvi: bool = field(default=False, metadata=_key(_BOOL, "BOOL", "toggle the rvi gateway"))
    socket: bool = field(default=False, metadata=_key(_BOOL, "BOOL", "toggle the socket gateway"))
    websocket: bool = field(
        default=False, metadata=_key(_BOOL, "BOOL", "toggle the websocket gateway")
    )


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """``[network]``: local addresses of the gateways."""

    http_server: str = field(
        default="127.0.0.1:8888",
        metadata=_key(_SOCKET_ADDR, "ADDR", "change the http gateway address"),
    )
    rvi_edge_server: str = field(
        default="127.0.0.1:9080",
        metadata=_key(_SOCKET_ADDR, "ADDR", "change the rvi edge server address"),
    )
    socket_commands_path: str = field(
        default="/tmp/sota-commands.socket",
        metadata=_key(_STRING, "PATH", "change the commands socket path"),
    )
    socket_events_path: str = field(
        default="/tmp/sota-events.socket",
        metadata=_key(_STRING, "PATH", "change the events socket path"),
    )
    websocket_server: str = field(
        default="127.0.0.1:3012",
        metadata=_key(_STRING, "ADDR", "change the websocket gateway address"),
    )
    #: Addition: permissions of the commands socket.
    socket_mode: int = field(
        default=0o660, metadata=_key(_FILE_MODE, "MODE", "change the commands socket mode")
    )
    #: Addition: group owning the commands socket; None leaves it to the daemon's group.
    socket_group: str | None = field(
        default=None, metadata=_key(_OPTIONAL_STRING, "GROUP", "change the commands socket group")
    )


@dataclass(frozen=True, slots=True)
class RviConfig:
    """``[rvi]``: the RVI node (required by the rvi gateway)."""

    client: str = field(
        default="http://127.0.0.1:8901", metadata=_key(_URL, "URL", "change the rvi client URL")
    )
    storage_dir: str = field(
        default="/var/sota", metadata=_key(_STRING, "PATH", "change the rvi storage directory")
    )
    #: Seconds without a chunk before a transfer is dropped; None: never.
    timeout: int | None = field(
        default=None, metadata=_key(_I64, "TIMEOUT", "change the rvi timeout")
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
    kind: _Kind
    default: Any
    metavar: str
    help: str

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
_SECTION_SETTINGS: dict[str, tuple[_Setting, ...]] = {
    name: tuple(
        _Setting(
            name, f.name, f.metadata["kind"], f.default, f.metadata["metavar"], f.metadata["help"]
        )
        for f in dataclasses.fields(section)
    )
    for name, section in _SECTIONS.items()
}
#: Flags applied after the credentials file is read, so that they beat it (and are never saved).
_LATE_OVERRIDES = frozenset({("auth", "client_id"), ("auth", "client_secret")})
_CREDENTIAL_KEYS = ("client_id", "client_secret")


def default_config() -> Config:
    """The configuration used when no file is given (2016 ``Config::default()``)."""
    return Config()


def parse_config(text: str, source: str = "<string>") -> Config:
    """Read a config from TOML text; ``source`` names it in messages.

    Like loading a file, this runs the ``[auth] credentials_file`` bootstrap (it may read or
    create that file).
    """
    return _resolve(text, source, {})


def load_config(
    path: str | None, *, overrides: Mapping[tuple[str, str], Any] | None = None
) -> Config:
    """Read the config file at ``path`` (or the defaults if None) and apply ``overrides``.

    ``overrides`` maps ``(section, key)`` to an already-parsed value, as the command-line flags
    do. An override for an absent optional section creates that section from its defaults.
    Overrides apply before the credentials bootstrap, except ``client_id`` and ``client_secret``,
    which apply after it and are never written to the credentials file.
    """
    if path is None:
        logger.warning("No config file given. Falling back to defaults.")
        return _resolve("", "<defaults>", overrides or {})
    logger.info("Loading config file: %s", path)
    with _io_errors(path):
        data = _read_file(path)
    return _resolve(_utf8(data, path), path, overrides or {})


def config_to_toml(config: Config) -> str:
    """Write ``config`` as TOML that reads back to an equal ``Config`` (used by ``--print``).

    Absent optional sections and unset optional keys are left out; a switched-off
    ``system_info`` is written as ``""``.
    """
    blocks = []
    for name in _SECTIONS:
        section = getattr(config, name)
        if section is None:
            continue
        lines = [f"[{name}]"]
        for setting in _SECTION_SETTINGS[name]:
            value = getattr(section, setting.key)
            if value is not None or setting.default is not None:
                lines.append(f"{setting.key} = {setting.kind.dump(value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# --------------------------------------------------------------------------------------------
# Reading


@contextmanager
def _io_errors(path: str) -> Iterator[None]:
    """Turn an ``OSError`` about ``path`` into a ConfigError with the 2016 text."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(io_error_text(exc), source=path) from exc


def _read_file(path: str) -> bytes:
    """The bytes of the regular file at ``path`` (a symlink to one is fine), if not too large.

    A config path can name anything: it is opened non-blocking (a FIFO would wait for a writer),
    checked with ``fstat`` on the open descriptor (no race with a rename), and read for at most
    ``MAX_FILE_SIZE + 1`` bytes (``/proc`` files report size 0; a file may be growing).

    :raises ConfigError: not a regular file, or larger than ``MAX_FILE_SIZE``.
    :raises OSError: it cannot be opened or read; a directory is ``IsADirectoryError`` (2016).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        # Opening a Unix socket, or a device without a driver, fails with ENXIO or ENODEV.
        if exc.errno in (errno.ENXIO, errno.ENODEV) and not _names_a_regular_file(path):
            raise ConfigError("not a regular file", source=path) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise ConfigError("not a regular file", source=path)
        # O_NONBLOCK does nothing to a regular file's reads: no EAGAIN loop is needed.
        data = bytearray()
        while len(data) <= MAX_FILE_SIZE and (chunk := os.read(fd, MAX_FILE_SIZE + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(
            f"larger than 1 MiB ({MAX_FILE_SIZE} bytes); is this the right file?", source=path
        )
    return bytes(data)


def _names_a_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # let the caller report its own error


def _utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("IO error: stream did not contain valid UTF-8", source=source) from None


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    """tomllib's result; anything it raises (deep nesting is a RecursionError) is a ConfigError."""
    if text.count(".") > MAX_DOTS and _dots_outside_comment_lines(text) > MAX_DOTS:
        raise ConfigError(
            f"Toml parser errors: more than {MAX_DOTS} dots outside comments "
            "(dotted keys this long take the parser minutes); is this the right file?",
            source=source,
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Toml parser errors: {exc}", source=source) from exc
    except RecursionError:
        problem = "arrays or tables nested too deeply"
    except MemoryError:
        problem = "out of memory"
    except Exception as exc:  # tomllib lets int()'s ValueError for 4301+ digits through
        problem = f"{type(exc).__name__}: {exc}".partition("; use sys.")[0]
    raise ConfigError(f"Toml parser errors: {problem}", source=source)


def _dots_outside_comment_lines(text: str) -> int:
    """Dots on lines that are not only a comment (those can hold no key)."""
    return sum(
        line.count(".") for line in text.splitlines() if not line.lstrip(" \t").startswith("#")
    )


_ABSENT: Any = object()
_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")


def _take(table: dict[str, Any], key: str) -> Any:
    """Remove and return ``key``, or its dashed alias (``polling-sec``), as toml 0.2.1 did.

    The exact spelling wins; a leftover alias is then reported as an unknown key.
    """
    if key in table:
        return table.pop(key)
    return table.pop(key.replace("_", "-"), _ABSENT)


def _toml_type(value: object) -> str:
    """toml 0.2.1's name for the type of a value, for type errors."""
    names = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array"}
    return names.get(type(value), "table" if isinstance(value, dict) else "datetime")


@dataclass(frozen=True, slots=True)
class _Document:
    """One TOML text being decoded: makes errors and warnings that say where, with line numbers."""

    source: str
    text: str
    #: ``(section, key)`` (key None: the header) -> its first line; built on first use.
    _lines: dict[tuple[str, str | None], int] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def line_of(self, section: str, key: str | None) -> int | None:
        """Best-effort line of ``key`` in ``[section]`` (or of the header); for messages only."""
        if self._lines is None:  # one pass for all: a file can hold 100,000 unknown keys
            object.__setattr__(self, "_lines", self._index_lines())
        assert self._lines is not None
        if key is None:
            return self._lines.get((section, None))
        found = [self._lines.get((section, name)) for name in (key, key.replace("_", "-"))]
        return min((line for line in found if line is not None), default=None)

    def _index_lines(self) -> dict[tuple[str, str | None], int]:
        lines: dict[tuple[str, str | None], int] = {}
        current = ""
        for number, line in enumerate(self.text.splitlines(), 1):
            if header := _HEADER.match(line):
                current = header[1]
                lines.setdefault((current, None), number)
            elif "=" in line:
                name = line.partition("=")[0].strip().strip("\"'")
                lines.setdefault((current, name), number)
        return lines

    def error(self, section: str, key: str | None, message: str) -> ConfigError:
        line = self.line_of(section, key)
        return ConfigError(message, source=self.source, line=line, section=section, key=key)

    def warn(self, section: str, key: str | None, what: str) -> None:
        where = _location(self.source, self.line_of(section, key), section, key)
        logger.warning("%s: %s", _one_line(": ".join(where)), what)

    def value(self, section: str, key: str, kind: _Kind, raw: Any) -> Any:
        """Check one TOML value; errors keep the 2016 ``Toml decode error: ...`` text."""
        if raw is _ABSENT:
            problem = f"expected a value of type `{kind.expected}`"
        elif not isinstance(raw, kind.accepts) or (
            isinstance(raw, bool) and bool not in kind.accepts
        ):
            found = _toml_type(raw)
            problem = (
                f"expected a value of type `{kind.expected}`, but found a value of type `{found}`"
            )
        else:
            try:
                return kind.check(raw)
            except ValueError as exc:
                problem = str(exc)
        raise self.error(section, key, f"Toml decode error: {problem} for the key `{key}`")

    def table(self, tables: dict[str, Any], name: str) -> dict[str, Any] | None:
        """A copy of section ``name``, or None if absent."""
        table = tables.pop(name, None)
        if table is None or isinstance(table, dict):
            return None if table is None else dict(table)
        found = _toml_type(table)
        raise self.error(
            name,
            None,
            f"Toml decode error: expected a value of type `table`, but found a value of type "
            f"`{found}` for the key `{name}`",
        )

    def decode(self, tables: dict[str, Any]) -> tuple[Config, set[tuple[str, str]]]:
        """Build a Config from parsed TOML; also return which ``(section, key)`` the file set."""
        sections = {name: self.table(tables, name) for name in _SECTIONS}
        self._map_polling_interval(sections)
        for name, leftover in tables.items():
            if isinstance(leftover, dict):
                self.warn(name, None, "unknown section ignored")
            else:
                self.warn("", name, "unknown key ignored")
        built: dict[str, Any] = {}
        given: set[tuple[str, str]] = set()
        for name, table in sections.items():
            if table is None:
                continue
            values = {}
            for setting in _SECTION_SETTINGS[name]:
                raw = _take(table, setting.key)
                if raw is not _ABSENT:
                    values[setting.key] = self.value(name, setting.key, setting.kind, raw)
                    given.add((name, setting.key))
            for key in table:
                self.warn(name, key, "unknown key ignored")
            built[name] = replace(_SECTIONS[name], **values)
        return Config(**built), given

    def _map_polling_interval(self, sections: dict[str, dict[str, Any] | None]) -> None:
        """The one legacy mapping: ``device.polling_interval`` -> ``core.polling(_sec)``.

        As in 2016, N > 0 turns polling on (even over ``polling = false``) every N seconds, 0
        turns it off, and setting it beside ``core.polling_sec`` is an error.
        """
        device = sections["device"]
        interval = _ABSENT if device is None else _take(device, "polling_interval")
        if interval is _ABSENT:
            return
        seconds = self.value("device", "polling_interval", _U64, interval)
        core = sections["core"] or {}
        if "polling_sec" in core or "polling-sec" in core:
            raise self.error(
                "device",
                "polling_interval",
                "Bad Config: core.polling_sec and device.polling_interval both set",
            )
        core["polling"] = seconds > 0
        if seconds > 0:
            core["polling_sec"] = seconds
        sections["core"] = core


def _resolve(text: str, source: str, overrides: Mapping[tuple[str, str], Any]) -> Config:
    """Decode, apply the overrides, and settle the credentials: the whole load pipeline."""
    config, given = _Document(source, text).decode(_parse_toml(text, source))
    config = _override(config, overrides)
    if config.auth is not None:
        in_file = {key for section, key in given if section == "auth"}
        late = {
            key: value for (name, key), value in overrides.items() if (name, key) in _LATE_OVERRIDES
        }
        config = replace(config, auth=_settle_auth(config.auth, source, in_file, late))
    return config


def _override(config: Config, overrides: Mapping[tuple[str, str], Any]) -> Config:
    """Apply flag values; a flag for an absent section creates it from defaults (2016 ignored
    such flags). The late credential flags only do the latter: they apply after the file."""
    sections: dict[str, Any] = {}
    for (name, key), value in overrides.items():
        section = sections.get(name) or getattr(config, name) or _SECTIONS[name]
        late = (name, key) in _LATE_OVERRIDES
        sections[name] = section if late else replace(section, **{key: value})
    return replace(config, **sections)


# --------------------------------------------------------------------------------------------
# The [auth] credentials file


def _settle_auth(
    auth: AuthConfig, source: str, given: set[str], late: Mapping[str, str]
) -> AuthConfig:
    """Read (or create) the credentials file, then apply the late flags.

    An existing file's ``client_id``/``client_secret`` beat the config's. A missing file is
    created from the config's values, but only if the config file sets both: placeholder
    credentials saved there would later override a corrected config.
    """
    known = given.intersection(_CREDENTIAL_KEYS)
    path = auth.credentials_file
    if path is not None:
        stored = _read_credentials(path)
        if stored is None and known == set(_CREDENTIAL_KEYS):
            stored = _create_credentials(path, auth.client_id, auth.client_secret)
        elif stored is None:
            logger.warning(
                "%s: [auth]: client_id and client_secret are not both set; "
                "not creating the credentials file %s",
                source,
                path,
            )
        if stored is not None:
            auth = replace(auth, **stored)
            known.update(_CREDENTIAL_KEYS)
    auth = replace(auth, **late)
    for key in _CREDENTIAL_KEYS:
        if key not in known and key not in late:
            logger.warning("%s: [auth] %s not set; using %r", source, key, getattr(auth, key))
    return auth


def _read_credentials(path: str) -> dict[str, str] | None:
    """``client_id`` and ``client_secret`` from the file's ``[auth]`` table; None if no file."""
    try:
        data = _read_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(io_error_text(exc), source=path) from exc
    text = _utf8(data, path)
    document = _Document(path, text)
    table = document.table(_parse_toml(text, path), "auth")
    if table is None:
        raise ConfigError("Bad Config: no [auth] section", source=path)
    return {
        key: document.value("auth", key, _STRING, _take(table, key)) for key in _CREDENTIAL_KEYS
    }


def _create_credentials(path: str, client_id: str, client_secret: str) -> dict[str, str]:
    """Write a new credentials file, mode 0600 from the moment it exists (no umask window)."""
    text = f"[auth]\nclient_id = {_toml_string(client_id)}\nclient_secret = "
    text += f"{_toml_string(client_secret)}\n"
    with _io_errors(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # created since we looked (theirs wins), or a dangling symlink
            stored = _read_credentials(path)
            if stored is None:
                raise
            return stored
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    logger.info("Created credentials file %s", path)
    return {"client_id": client_id, "client_secret": client_secret}
