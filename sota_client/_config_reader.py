"""Reading a config file: bounded file reads, tomllib, and decoding the tables into a Config.

tomllib gives no line numbers, so errors and warnings find ``[section] key`` again in the text
(``_Document``). Settings of a gateway that is off are read leniently: a bad value is a warning
and the default is used, so that a 2016 config with a stale, unused address still starts.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec
from msgspec.structs import replace

from sota_client._config_errors import ConfigError, location, one_line
from sota_client._config_kinds import U64, Explained, Kind, NotALocalAddress
from sota_client._config_schema import (
    _SECTION_SETTINGS,
    _SECTIONS,
    GATEWAYS,
    SECTION_GATEWAYS,
    Config,
    _Setting,
)
from sota_client._errors import io_error_text

__all__ = [
    "ABSENT",
    "MAX_DOTS",
    "MAX_FILE_SIZE",
    "_Document",
    "decode_config",
    "decode_utf8",
    "io_errors",
    "parse_toml",
    "read_config_text",
    "read_file",
    "take",
]

logger = logging.getLogger("sota_client.config")

MAX_FILE_SIZE = 1 << 20
"""Largest config or credentials file read, in bytes; real ones are a few KiB."""

MAX_DOTS = 4096
"""Most ``.`` outside comment lines that a file may hold: tomllib's time grows with the square
of a dotted key's length (``a.a.a...`` over 1 MiB takes hours); real configs have a few dozen."""


# --------------------------------------------------------------------------------------------
# Bytes and TOML


@contextmanager
def io_errors(path: str) -> Iterator[None]:
    """Turn an ``OSError`` about ``path`` into a ConfigError with the 2016 text."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(io_error_text(exc), source=path) from exc


def read_config_text(path: str) -> str:
    """The text of the config file at ``path``; every failure is a ConfigError."""
    with io_errors(path):
        data = read_file(path)
    return decode_utf8(data, path)


def read_file(path: str) -> bytes:
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


def decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("IO error: stream did not contain valid UTF-8", source=source) from None


def parse_toml(text: str, source: str) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------
# Tables to a Config


ABSENT: Any = object()
_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")


def take(table: dict[str, Any], key: str) -> Any:
    """Remove and return ``key``, or its dashed alias (``polling-sec``), as toml 0.2.1 did.

    The exact spelling wins; a leftover alias is then reported as an unknown key.
    """
    if key in table:
        return table.pop(key)
    return table.pop(key.replace("_", "-"), ABSENT)


def _peek(table: dict[str, Any], key: str) -> Any:
    """What :func:`take` would return, leaving the table as it is."""
    return table[key] if key in table else table.get(key.replace("_", "-"), ABSENT)


def _toml_type(value: object) -> str:
    """toml 0.2.1's name for the type of a value, for type errors."""
    names = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array"}
    return names.get(type(value), "table" if isinstance(value, dict) else "datetime")


def _checked(key: str, kind: Kind, raw: Any) -> tuple[Any, str | None, bool]:
    """``(value, None, False)``, or ``(None, message, use_default)``: the 2016 ``Toml decode
    error: <problem> for the key `<key>``` followed, unless the problem already says it, by
    ``: expected <form>``; ``use_default`` for a known mistake that is a warning, never fatal."""
    expected = f": expected {kind.form}"
    use_default = False
    if raw is ABSENT:  # only the credentials file requires keys
        problem, expected = f"expected a value of type `{kind.expected}`", ""
    elif not isinstance(raw, kind.accepts) or (isinstance(raw, bool) and bool not in kind.accepts):
        found = _toml_type(raw)
        problem = f"expected a value of type `{kind.expected}`, but found a value of type `{found}`"
    else:
        try:
            return kind.check(raw), None, False
        except Explained as exc:
            problem, expected = str(exc), ""
            use_default = isinstance(exc, NotALocalAddress)
        except ValueError as exc:
            problem = str(exc)
    return None, f"Toml decode error: {problem} for the key `{key}`{expected}", use_default


def _because_off(gateways: tuple[str, ...]) -> str:
    """``because the rvi gateway is off`` / ``because the dbus and rvi gateways are off``."""
    if len(gateways) == 1:
        return f"because the {gateways[0]} gateway is off"
    return f"because the {', '.join(gateways[:-1])} and {gateways[-1]} gateways are off"


class _Document(msgspec.Struct):
    """One TOML text being decoded: makes errors and warnings that say where, with line numbers."""

    source: str
    text: str
    #: ``(section, key)`` (key None: the header) -> its first line; built on first use.
    _lines: dict[tuple[str, str | None], int] | None = None

    def line_of(self, section: str, key: str | None) -> int | None:
        """Best-effort line of ``key`` in ``[section]`` (or of the header); for messages only."""
        if self._lines is None:  # one pass for all: a file can hold 100,000 unknown keys
            self._lines = self._index_lines()
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
        where = location(self.source, self.line_of(section, key), section, key)
        logger.warning("%s", one_line(": ".join([*where, what])))

    def value(self, section: str, key: str, kind: Kind, raw: Any) -> Any:
        """Check one TOML value; a bad one is a ConfigError (see ``_checked`` for its text)."""
        value, problem, _ = _checked(key, kind, raw)
        if problem is not None:
            raise self.error(section, key, problem)
        return value

    def setting(self, setting: _Setting, raw: Any, on: frozenset[str]) -> Any:
        """Check the value of ``setting``. While every gateway using it is off, a bad value is a
        warning and ``ABSENT`` is returned (the default applies); otherwise a ConfigError."""
        value, problem, use_default = _checked(setting.key, setting.kind, raw)
        if problem is None:
            return value
        if not use_default and (not setting.gateways or on.intersection(setting.gateways)):
            raise self.error(setting.section, setting.key, problem)
        default = "(none)" if setting.default is None else setting.kind.dump(setting.default)
        because = "instead" if use_default else _because_off(setting.gateways)
        self.warn(setting.section, setting.key, f"{problem}; using the default {default} {because}")
        return ABSENT

    def table(
        self, tables: dict[str, Any], name: str, on: frozenset[str] | None = None
    ) -> dict[str, Any] | None:
        """A copy of section ``name``, or None if absent. With ``on``, the gateways switched on,
        a section only gateways that are off use is ignored with a warning if it is no table."""
        table = tables.pop(name, None)
        if table is None or isinstance(table, dict):
            return None if table is None else dict(table)
        found = _toml_type(table)
        message = (
            f"Toml decode error: expected a value of type `table`, but found a value of type "
            f"`{found}` for the key `{name}`"
        )
        gateways = SECTION_GATEWAYS.get(name, ())
        if on is not None and gateways and not on.intersection(gateways):
            self.warn(name, None, f"{message}; ignoring the section {_because_off(gateways)}")
            return None
        raise self.error(name, None, message)

    def decode(
        self, tables: dict[str, Any], forced_gateways: Mapping[str, bool]
    ) -> tuple[Config, set[tuple[str, str]]]:
        """Build a Config from parsed TOML; also return which ``(section, key)`` the file set.

        ``forced_gateways`` are the ``[gateway]`` switches given as flags: they beat the file
        in deciding which settings are read leniently.
        """
        on = self._gateways_on(tables.get("gateway"), forced_gateways)
        sections = {name: self.table(tables, name, on) for name in _SECTIONS}
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
                raw = take(table, setting.key)
                if raw is not ABSENT and (value := self.setting(setting, raw, on)) is not ABSENT:
                    values[setting.key] = value
                    given.add((name, setting.key))
            for key in table:
                self.warn(name, key, "unknown key ignored")
            built[name] = replace(_SECTIONS[name], **values)
        return Config(**built), given

    @staticmethod
    def _gateways_on(gateway: Any, forced: Mapping[str, bool]) -> frozenset[str]:
        """The gateways switched on by the flags, or else by the file.

        Looked up before ``[gateway]`` is decoded, so that errors still come in section order;
        a switch that is not a boolean counts as off here and is an error when decoded.
        """
        table = gateway if isinstance(gateway, dict) else {}
        return frozenset(name for name in GATEWAYS if forced.get(name, _peek(table, name)) is True)

    def _map_polling_interval(self, sections: dict[str, dict[str, Any] | None]) -> None:
        """The one legacy mapping: ``device.polling_interval`` -> ``core.polling(_sec)``.

        As in 2016, N > 0 turns polling on (even over ``polling = false``) every N seconds, 0
        turns it off, and setting it beside ``core.polling_sec`` is an error.
        """
        device = sections["device"]
        interval = ABSENT if device is None else take(device, "polling_interval")
        if interval is ABSENT:
            return
        seconds = self.value("device", "polling_interval", U64, interval)
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


def decode_config(
    text: str, source: str, forced_gateways: Mapping[str, bool]
) -> tuple[Config, set[tuple[str, str]]]:
    """Parse and decode a config text; also return which ``(section, key)`` the file set."""
    return _Document(source, text).decode(parse_toml(text, source), forced_gateways)
