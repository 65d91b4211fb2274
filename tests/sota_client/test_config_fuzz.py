"""Property tests of the config reader: arbitrary text and bytes, and TOML documents generated from
the real sections and keys. Only ``ConfigError`` ever escapes, its text is one line, and whatever
parses prints back (``--print``) to an equal Config."""

from __future__ import annotations

import datetime
import json
import math
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from sota_client import _config_kinds as kinds
from sota_client._config import Config, ConfigError, config_to_toml, load_config, parse_config
from sota_client._config_kinds import PackageManager
from sota_client._config_schema import _SECTION_SETTINGS, _SECTIONS, _Setting

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: Documents take longer to generate; fewer of them keep this file at a few seconds.
FUZZ_DOCUMENTS = settings(FUZZ, max_examples=100)
CREDENTIALS = "@CREDENTIALS@"  # stands for a fresh path, substituted when the document is written


@contextmanager
def fresh_directory() -> Iterator[Path]:
    """A new directory per example: hypothesis runs many examples in one test call."""
    with tempfile.TemporaryDirectory(prefix="sota-fuzz-") as directory:
        yield Path(directory)


def outcome(parse: Callable[[], Config]) -> Config | None:
    """The Config, or None after a ConfigError, which must be one line; anything else fails."""
    try:
        return parse()
    except ConfigError as exc:
        text = str(exc)
    assert text.splitlines() == [text], text  # one line, not empty
    return None


def assert_round_trip(config: Config) -> None:
    assert parse_config(config_to_toml(config), "printed") == config


# ---------------------------------------------------------------------------------------------
# Arbitrary input


@FUZZ
@given(st.text())
def test_any_text(text: str) -> None:
    config = outcome(lambda: parse_config(text, "fuzz.toml"))
    if config is not None:
        assert_round_trip(config)


@FUZZ
@given(st.binary())
def test_any_file(data: bytes) -> None:
    with fresh_directory() as directory:
        path = directory / "sota.toml"
        path.write_bytes(data)
        config = outcome(lambda: load_config(str(path)))
        if config is not None:
            assert_round_trip(config)


# ---------------------------------------------------------------------------------------------
# TOML values and documents


def toml_string(text: str) -> str:
    """A TOML basic string written independently of the code under test."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    pairs = (f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items())
    return "{" + ", ".join(pairs) + "}"


_scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.times(),
)
#: Any TOML value, of any type.
any_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), _scalars | st.lists(_scalars, max_size=1), max_size=2),
)


@st.composite
def _package_managers(draw: st.DrawFn) -> tuple[str, PackageManager]:
    """Any keyword in any case, with a path after ``file:`` and ``otb:``."""
    kind: Any = draw(st.sampled_from(["off", "deb", "rpm", "file", "otb"]))
    upper = draw(st.lists(st.booleans(), min_size=len(kind), max_size=len(kind)))
    text = "".join(char.upper() if up else char for char, up in zip(kind, upper, strict=True))
    if kind in ("off", "deb", "rpm"):
        return text, PackageManager(kind)
    path = draw(st.text(min_size=1, max_size=10))
    return f"{text}:{path}", PackageManager(kind, path)


def _file_modes() -> st.SearchStrategy[tuple[Any, int]]:
    def forms(mode: int) -> st.SearchStrategy[tuple[Any, int]]:
        digits = f"{mode:o}"
        texts = [digits, "0o" + digits, *(digits.zfill(n) for n in range(len(digits) + 1, 5))]
        return st.sampled_from([mode, *texts]).map(lambda value: (value, mode))

    return st.integers(0, 0o7777).flatmap(forms)


_hosts = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z]{2,4}){0,2}", fullmatch=True)
_urls = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "HTTP", "rvi+http"]),
    st.one_of(_hosts, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map("[{}]".format)),
    st.one_of(st.just(""), st.integers(0, 65535).map(":{}".format)),
    st.sampled_from(["", "/", "/base", "/a/b?q=1"]),
)
_bare_addrs = st.one_of(
    st.builds("{}:{}".format, st.ip_addresses(v=4), st.integers(0, 65535)),
    st.builds("[{}]:{}".format, st.ip_addresses(v=6), st.integers(0, 65535)),
)


def _addrs(*schemes: str) -> st.SearchStrategy[str]:
    """``IP:port``, or a URL ``scheme://IP:port`` in any case, with an optional trailing ``/``."""
    cased = st.sampled_from([form for s in schemes for form in (s, s.upper())])
    urls = st.builds("{}://{}{}".format, cased, _bare_addrs, st.sampled_from(["", "/"]))
    return _bare_addrs | urls


def _same(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    return values.map(lambda value: (value, value))


def _integers(low: int, high: int) -> st.SearchStrategy[tuple[Any, Any]]:
    return _same(st.integers(low, high))


#: For each value kind: valid values as ``(what the file says, what the Config holds)``. A new
#: kind must be added here, or test_every_kind_has_valid_values fails.
VALID: dict[int, st.SearchStrategy[tuple[Any, Any]]] = {
    id(kinds.STRING): _same(st.text(max_size=20)),
    id(kinds.OPTIONAL_STRING): st.text(max_size=20).map(lambda text: (text, text or None)),
    id(kinds.URL): _same(_urls),
    id(kinds.HTTP_SERVER_ADDR): _same(_addrs("http")),
    id(kinds.RVI_EDGE_ADDR): _same(_addrs("http")),
    id(kinds.WEBSOCKET_ADDR): _same(_addrs("http", "ws")),
    id(kinds.PACKAGE_MANAGER): _package_managers(),
    id(kinds.BOOL): _same(st.booleans()),
    id(kinds.U64): _integers(0, 2**64 - 1),
    id(kinds.I32): _integers(-(2**31), 2**31 - 1),
    id(kinds.I64): _integers(-(2**63), 2**63 - 1),
    id(kinds.SECONDS): st.one_of(
        st.floats(min_value=0, exclude_min=True, allow_infinity=False), st.integers(1, 10**9)
    ).map(lambda value: (value, float(value))),
    id(kinds.REPORT_SECONDS): st.one_of(
        st.floats(min_value=0, allow_infinity=False), st.integers(0, 10**9)
    ).map(lambda value: (value, float(value))),
    id(kinds.FILE_MODE): _file_modes(),
    id(kinds.DOWNLOAD_SIZE): _integers(1, 2**64 - 1),
    id(kinds.DOWNLOAD_SLOTS): _integers(1, 16),
    id(kinds.DBUS_BUS): st.sampled_from(
        ["session", "system", "unix:path=/run/dbus/system_bus_socket", "unix:abstract=/tmp/x"]
    ).map(lambda bus: (bus, bus)),
    id(kinds.ORIGINS): st.lists(
        st.builds(
            "{}://{}{}".format,
            st.sampled_from(["http", "https"]),
            st.sampled_from(["127.0.0.1", "localhost", "hmi.example.com", "[::1]"]),
            st.sampled_from(["", ":8888", ":3012"]),
        ),
        max_size=3,
    ).map(lambda origins: (origins, tuple(origins))),
}


#: The legacy key, read like a u64 and mapped onto ``core`` (key ``""``: not kept in [device]).
_POLLING_INTERVAL = _Setting("device", "polling_interval", kinds.U64, None, "", "")
#: Per section: ``(setting, key in the Config)`` for every key a document may set.
_KEYS: dict[str, list[tuple[_Setting, str]]] = {
    name: [(setting, setting.key) for setting in settings_]
    + ([(_POLLING_INTERVAL, "")] if name == "device" else [])
    for name, settings_ in _SECTION_SETTINGS.items()
}


def _valid_values(setting: _Setting) -> st.SearchStrategy[tuple[Any, Any]]:
    if (setting.section, setting.key) == ("auth", "credentials_file"):
        # Never a random path: the reader would create the file there.
        return st.sampled_from([("", None), (CREDENTIALS, CREDENTIALS)])
    if setting is _POLLING_INTERVAL:  # 0 means something else: make it common
        return st.just((0, 0)) | VALID[id(setting.kind)]
    return VALID[id(setting.kind)]


def _literals(setting: _Setting) -> st.SearchStrategy[Any]:
    """Anything for the key: a valid value or any TOML value (never a random credentials path)."""
    others = any_values
    if (setting.section, setting.key) == ("auth", "credentials_file"):
        others = any_values.filter(lambda value: not isinstance(value, str))
    return _valid_values(setting).map(lambda pair: pair[0]) | others


def _spellings(key: str) -> list[str]:
    return sorted({key, key.replace("_", "-")})


def _unknown_keys(section: str) -> st.SearchStrategy[dict[str, Any]]:
    known = frozenset(spelling for s, _ in _KEYS[section] for spelling in _spellings(s.key))
    names = st.text(max_size=12).filter(lambda name: name not in known)
    return st.dictionaries(names, any_values, max_size=3)


# Built once: strategies made inside a draw are validated again each time, which is slow.
VALID_VALUES = {(s.section, s.key): _valid_values(s) for keys in _KEYS.values() for s, _ in keys}
LITERALS = {(s.section, s.key): _literals(s) for keys in _KEYS.values() for s, _ in keys}
KEY_CHOICES = {
    name: st.lists(st.sampled_from(keys), unique=True, max_size=5) for name, keys in _KEYS.items()
}
UNKNOWN_KEYS = {name: _unknown_keys(name) for name in _SECTIONS}
_unknown_section_names = st.text(max_size=12).filter(lambda name: name not in _SECTIONS)
UNKNOWN_SECTIONS = st.dictionaries(
    _unknown_section_names, st.dictionaries(st.text(max_size=5), any_values, max_size=2), max_size=2
)
UNKNOWN_TOP_KEYS = st.dictionaries(_unknown_section_names, _scalars, max_size=2)
LAYOUTS = st.sampled_from(["table", "inline", "dotted"])


def test_every_kind_has_valid_values() -> None:
    for settings_ in _SECTION_SETTINGS.values():
        for setting in settings_:
            assert id(setting.kind) in VALID, f"{setting.section}.{setting.key}: no strategy"


@dataclass
class Section:
    """One table of a generated document and how it is written."""

    name: str
    layout: str  # "table" ([name]), "inline" (name = {...}) or "dotted" (name.key = ...)
    entries: list[tuple[str, Any]] = field(default_factory=list)  # (spelling, value), in order


@dataclass
class Document:
    sections: list[Section]
    top: list[tuple[str, Any]]  # unknown top-level keys
    expected: Config | None = None  # for valid documents: the Config it must give
    conflict: bool = False  # polling_interval beside polling_sec: the 2016 error

    def text(self, credentials: str) -> str:
        def line(key: str, value: Any, prefix: str = "") -> str:
            return f"{prefix}{toml_string(key)} = {toml_value(value)}"

        root = [line(key, value) for key, value in self.top]
        tables = []
        for section in self.sections:
            entries = [(k, credentials if v == CREDENTIALS else v) for k, v in section.entries]
            if section.layout == "inline":
                root.append(f"{toml_string(section.name)} = {toml_value(dict(entries))}")
            elif section.layout == "dotted":
                root += [
                    line(key, value, f"{toml_string(section.name)}.") for key, value in entries
                ]
            else:
                tables.append(f"[{toml_string(section.name)}]")
                tables += [line(key, value) for key, value in entries]
        return "\n".join(root + tables) + "\n"


@st.composite
def documents(draw: st.DrawFn, *, valid: bool) -> Document:
    """A document over the real sections: keys by either spelling (or both), unknown keys and
    sections, the legacy ``device.polling_interval``; ``valid`` values only, or any."""
    sections: list[Section] = []
    built: dict[str, Any] = {}
    core_polling_sec_given = False
    interval: int | None = None
    for name in draw(st.lists(st.sampled_from(sorted(_SECTIONS)), unique=True)):
        section = Section(name, draw(LAYOUTS))
        values: dict[str, Any] = {}
        for setting, key in draw(KEY_CHOICES[name]):
            spellings = _spellings(setting.key)
            chosen = draw(st.sampled_from([[spellings[0]], [spellings[-1]], spellings]))
            for spelling in chosen:
                winner = spelling == setting.key or setting.key not in chosen
                if valid and winner:
                    literal, parsed = draw(VALID_VALUES[setting.section, setting.key])
                else:  # or the spelling that loses: it is only reported, never decoded
                    literal, parsed = draw(LITERALS[setting.section, setting.key]), None
                section.entries.append((spelling, literal))
                if winner and key:
                    values[key] = parsed
                elif winner:
                    interval = parsed
            if (name, setting.key) == ("core", "polling_sec"):
                core_polling_sec_given = True
        section.entries += list(draw(UNKNOWN_KEYS[name]).items())
        section.entries = draw(st.permutations(section.entries))
        if section.layout == "dotted" and not section.entries:
            section.layout = "table"  # no keys: a dotted layout would leave the section out
        sections.append(section)
        built[name] = values
    extra_sections = draw(UNKNOWN_SECTIONS)
    sections += [
        Section(name, "table", list(keys.items())) for name, keys in extra_sections.items()
    ]
    top = [item for item in draw(UNKNOWN_TOP_KEYS).items() if item[0] not in extra_sections]
    document = Document(draw(st.permutations(sections)), top)
    if valid:
        document.conflict = interval is not None and core_polling_sec_given
        document.expected = _expected(built, interval)
    return document


def _expected(built: dict[str, dict[str, Any]], interval: int | None) -> Config:
    """What a valid document means, worked out from the documented rules."""
    if interval is not None:
        core = built.setdefault("core", {})
        core["polling"] = interval > 0
        if interval > 0:
            core["polling_sec"] = interval
    return Config(**{name: replace(_SECTIONS[name], **values) for name, values in built.items()})


@FUZZ_DOCUMENTS
@given(documents(valid=False))
def test_any_document_over_the_real_keys(document: Document) -> None:
    with fresh_directory() as directory:
        text = document.text(str(directory / "creds" / "credentials.toml"))
        config = outcome(lambda: parse_config(text, "fuzz.toml"))
        if config is not None:
            assert_round_trip(config)


@FUZZ_DOCUMENTS
@given(documents(valid=True))
def test_a_valid_document_means_what_the_documentation_says(document: Document) -> None:
    with fresh_directory() as directory:
        credentials = str(directory / "creds" / "credentials.toml")
        text = document.text(credentials)
        if document.conflict:
            with pytest.raises(ConfigError, match="both set"):
                parse_config(text, "fuzz.toml")
            return
        config = parse_config(text, "fuzz.toml")
        assert document.expected is not None
        expected = document.expected
        if expected.auth is not None and expected.auth.credentials_file == CREDENTIALS:
            expected = replace(expected, auth=replace(expected.auth, credentials_file=credentials))
        assert config == expected
        assert_round_trip(config)


# ---------------------------------------------------------------------------------------------
# The [auth] credentials file


def _with_credentials(path: Path) -> str:
    return (
        '[auth]\nclient_id = "a"\nclient_secret = "b"\n'
        f"credentials_file = {json.dumps(str(path))}\n"
    )


def _credential(table: dict[str, Any], key: str) -> Any:
    """The value the reader must take: the exact spelling, else the dashed one."""
    return table.get(key, table.get(key.replace("_", "-")))


@FUZZ
@given(st.binary())
def test_any_credentials_file(data: bytes) -> None:
    with fresh_directory() as directory:
        path = directory / "credentials.toml"
        path.write_bytes(data)
        config = outcome(lambda: parse_config(_with_credentials(path)))
        if config is not None:  # then it is a TOML file with the two strings, which won
            assert config.auth is not None
            stored = tomllib.loads(data.decode())["auth"]
            assert config.auth.client_id == _credential(stored, "client_id")
            assert config.auth.client_secret == _credential(stored, "client_secret")
        assert path.read_bytes() == data  # an existing file is never rewritten


@FUZZ
@given(
    st.booleans(),
    st.dictionaries(
        st.sampled_from(["client_id", "client-id", "client_secret", "client-secret", "other"]),
        st.text(max_size=10) | any_values,
    ),
)
def test_a_credentials_file_over_its_keys(with_header: bool, table: dict[str, Any]) -> None:
    with fresh_directory() as directory:
        path = directory / "credentials.toml"
        lines = [f"{toml_string(key)} = {toml_value(value)}\n" for key, value in table.items()]
        path.write_text(("[auth]\n" if with_header else "") + "".join(lines))
        config = outcome(lambda: parse_config(_with_credentials(path)))
        wanted = (_credential(table, "client_id"), _credential(table, "client_secret"))
        usable = with_header and all(isinstance(value, str) for value in wanted)
        assert (config is not None) == usable
        if config is not None:
            assert config.auth is not None
            assert (config.auth.client_id, config.auth.client_secret) == wanted
