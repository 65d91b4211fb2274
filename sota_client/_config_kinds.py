"""Config value kinds: how one value is checked when read from TOML or a flag, and written back.

The 2016 client's checks came from Rust types (the ``url`` crate, ``SocketAddr``, integer
widths); each kind keeps their error texts, which integrators' scripts and the tests match, and
adds the expected form in words. A ``ValueError`` carries the problem; the reader says where.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "BOOL",
    "DBUS_BUS",
    "DOWNLOAD_SIZE",
    "DOWNLOAD_SLOTS",
    "FILE_MODE",
    "HTTP_SERVER_ADDR",
    "I32",
    "I64",
    "OPTIONAL_STRING",
    "ORIGINS",
    "PACKAGE_MANAGER",
    "REPORT_SECONDS",
    "RVI_EDGE_ADDR",
    "SECONDS",
    "STRING",
    "U64",
    "URL",
    "WEBSOCKET_ADDR",
    "Explained",
    "Kind",
    "NotALocalAddress",
    "PackageManager",
    "PackageManagerKind",
    "parse_socket_addr",
    "toml_string",
]


class Explained(ValueError):
    """A problem whose text already says what was expected (``expected ..., but found ...``):
    the reader adds no ``expected <form>`` after it."""


class NotALocalAddress(Explained):
    """A URL where a local listen address belongs, as the 2016 guide printed for
    ``websocket_server``: the default is used, with a warning, even while the gateway is on."""


class Kind(msgspec.Struct, frozen=True):
    """How one type of value is read from the TOML file and from a flag, and written back."""

    expected: str  # toml 0.2.1's name of the type, for "expected a value of type `...`"
    accepts: tuple[type, ...]  # what tomllib may return for it
    check: Callable[[Any], Any]  # TOML value -> config value
    parse_text: Callable[[str], Any]  # flag text -> config value
    dump: Callable[[Any], str]  # config value -> TOML literal
    form: str  # what a good value looks like, after "expected " in file errors
    flag_label: str = ""  # "Invalid core-server URL: ..." (2016 flag error texts)
    flag_prefix: str = ""


# --------------------------------------------------------------------------------------------
# Values that need more than a string


PackageManagerKind = Literal["off", "deb", "rpm", "file", "otb"]


class PackageManager(msgspec.Struct, frozen=True):
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
#: ``scheme://rest`` with at most one trailing ``/``; ``rest`` must then be ``IP:port``.
_LISTEN_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*?)/?", re.DOTALL)
_ADDR_ERROR = "invalid IP address syntax"  # Rust's AddrParseError text, as in 2016


def parse_socket_addr(text: str, *, schemes: tuple[str, ...] = ("http", "ws")) -> tuple[str, int]:
    """Split a local listen address into host and port, for binding.

    The 2016 form is ``IP:port`` or ``[IPv6]:port``, as Rust's ``SocketAddr`` reads it. The URL
    form the 2016 guide printed, ``http://IP:port`` (``ws://`` for the websocket gateway), is
    accepted too, with an optional trailing ``/`` but no other path; ``schemes`` are the URL
    schemes allowed (any case). Host names are refused, as in 2016: ``ValueError("invalid IP
    address syntax")``.
    """
    if url := _LISTEN_URL.fullmatch(text):
        if url[1].lower() not in schemes:
            raise ValueError(_ADDR_ERROR)
        text = url[2]
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
        raise ValueError(_ADDR_ERROR) from None
    return host, int(port)


# --------------------------------------------------------------------------------------------
# Checks and parsers: each raises ValueError with the 2016 text (or an Explained one of ours)


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
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


def _int_kind(rust_type: str, low: int, high: int, what: str = "", unit: str = "") -> Kind:
    """An integer checked against the range of the Rust type the 2016 client used.

    ``what`` (for additions, whose range is narrower than a Rust type's) names the value in
    ``expected <what> between <low> and <high>, but found <value>``, in the file and in flags;
    ``unit`` goes into the expected form: ``a whole number of bytes from 1 to ...``.
    """

    def out_of_range(value: int) -> ValueError:
        shown = _int_text(value)
        if what:
            return Explained(f"expected {what} between {low} and {high}, but found {shown}")
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

    form = f"a whole number{unit and ' of ' + unit} from {low} to {high}"
    return Kind("integer", (int,), check, parse_text, str, form)


def _int_text(value: int) -> str:
    """``str(value)``, shortened when Python refuses to convert it (over 4300 digits)."""
    try:
        return str(value)
    except ValueError:
        return "a number too long to show"


def _seconds_kind(*, zero: bool, form: str) -> Kind:
    """A finite number of seconds (a TOML integer or float), > 0, or >= 0 if ``zero``."""
    wanted = "a number of seconds of 0 or more" if zero else "a positive number of seconds"

    def check(value: float) -> float:
        if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
            raise Explained(f"expected {wanted}, but found {value}")
        return float(value)

    def parse_text(text: str) -> float:
        if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
            raise ValueError("invalid float literal")
        return check(float(text))

    return Kind("float", (int, float), check, parse_text, repr, form)


def _check_file_mode(value: int | str) -> int:
    """A permission mode: a TOML integer (``0o660``) or an octal string (``"0660"``)."""
    if isinstance(value, str):
        digits = value.removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", digits):
            raise Explained(f"expected an octal file mode such as 0o660, but found {value!r}")
        value = int(digits, 8)
    if not 0 <= value <= 0o7777:
        raise Explained(f"expected a file mode between 0o0 and 0o7777, but found {value:#o}")
    return value


def _listen_addr_kind(example: str, scheme: str) -> Kind:
    """A local listen address: ``IP:port``, or ``http://IP:port`` (also ``scheme://``)."""
    schemes = tuple(dict.fromkeys(("http", scheme)))

    def check(text: str) -> str:
        try:
            parse_socket_addr(text, schemes=schemes)
        except ValueError:
            if scheme == "ws" and _LISTEN_URL.fullmatch(text):
                raise NotALocalAddress(
                    f"{text!r} is a URL, but this is the local address the websocket gateway "
                    f"listens on (the 2016 guide calls it the Core server's websocket, wrongly)"
                ) from None
            raise
        return text  # kept as written, for --print

    return Kind(
        "string",
        (str,),
        check,
        check,
        toml_string,
        f"IP:port such as {example}, or {scheme}://{example}",
        flag_prefix="Parse error: couldn't parse SocketAddr: ",
    )


# --------------------------------------------------------------------------------------------
# The kinds the sections use


STRING = Kind("string", (str,), _same, _same, toml_string, "a string in quotes")
OPTIONAL_STRING = Kind(
    "string",
    (str,),
    _none_if_empty,
    _none_if_empty,
    lambda v: toml_string(v or ""),
    'a string in quotes ("" for none)',
)
URL = Kind(
    "string",
    (str,),
    _check_url,
    _check_url,
    toml_string,
    "an absolute URL such as http://127.0.0.1:8080 or https://sota.example.com",
    flag_label=" URL",
)
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def _check_origins(value: list[Any] | str) -> tuple[str, ...]:
    """Web origins (``scheme://host[:port]``, no path), as a TOML array or comma-separated."""
    items = value.split(",") if isinstance(value, str) else value
    origins = []
    for item in items:
        if not isinstance(item, str):
            raise Explained(f"expected an array of origins in quotes, but found {item!r}")
        origin = item.strip().rstrip("/")
        if not _ORIGIN.fullmatch(origin):
            raise Explained(
                f"expected web origins such as http://127.0.0.1:8888 (scheme, host and port, "
                f"no path), but found {item!r}"
            )
        origins.append(origin)
    return tuple(origins)


def _dump_origins(value: tuple[str, ...]) -> str:
    return "[" + ", ".join(toml_string(origin) for origin in value) + "]"


ORIGINS = Kind(
    "array",
    (list,),
    _check_origins,
    _check_origins,
    _dump_origins,
    'an array of web origins such as ["http://127.0.0.1:8888"]',
)
HTTP_SERVER_ADDR = _listen_addr_kind("127.0.0.1:8888", "http")
RVI_EDGE_ADDR = _listen_addr_kind("127.0.0.1:9080", "http")
WEBSOCKET_ADDR = _listen_addr_kind("127.0.0.1:3012", "ws")
PACKAGE_MANAGER = Kind(
    "string",
    (str,),
    _parse_package_manager,
    _parse_package_manager,
    lambda v: toml_string(str(v)),
    "off, deb, rpm, file:PATH or otb:REPODIR",
)
BOOL = Kind(
    "bool",
    (bool,),
    _same,
    _parse_bool,
    lambda v: "true" if v else "false",
    "true or false, without quotes",
    flag_label=" boolean",
)


def _check_dbus_bus(text: str) -> str:
    if text in ("session", "system") or text.startswith("unix:"):
        return text
    raise ValueError(f"unknown D-Bus bus: {text}")


DBUS_BUS = Kind(
    "string",
    (str,),
    _check_dbus_bus,
    _check_dbus_bus,
    toml_string,
    'session, system, or a D-Bus address such as "unix:path=/run/dbus/system_bus_socket"',
)
U64 = _int_kind("u64", 0, 2**64 - 1)
I32 = _int_kind("i32", -(2**31), 2**31 - 1)
I64 = _int_kind("i64", -(2**63), 2**63 - 1)
DOWNLOAD_SIZE = _int_kind("u64", 1, 2**64 - 1, "a size in bytes", "bytes")
DOWNLOAD_SLOTS = _int_kind("u64", 1, 16, "a number of downloads")
SECONDS = _seconds_kind(zero=False, form="a number of seconds greater than 0, such as 20 or 2.5")
REPORT_SECONDS = _seconds_kind(zero=True, form="a number of seconds such as 86400, or 0 for ever")
FILE_MODE = Kind(
    "integer",
    (int, str),
    _check_file_mode,
    _check_file_mode,
    lambda v: f"0o{v:o}",
    'an octal file mode such as 0o660 or "0660"',
)
