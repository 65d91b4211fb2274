"""The packages' ``/etc/sota.toml`` (``distro/sota.toml``): every key of the schema and of
docs/configuration.md is there, commented out at its default, except the few the packaged units
depend on; it loads with the daemon's own reader, and so does every commented line uncommented,
to exactly the defaults: the comments are right."""

from __future__ import annotations

import configparser
import logging
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sota_client._config import Config, parse_config
from sota_client._config_schema import _SECTION_SETTINGS, _SECTIONS

REPO = Path(__file__).parents[2]
CONFIG = REPO / "distro" / "sota.toml"
DOC = REPO / "docs" / "configuration.md"
UNIT = REPO / "distro" / "systemd" / "sota_client.service"
#: What the package sets: the units' sockets, group and state directory, and the socket gateway
#: the example SWLMs talk to.
SET = {
    ("gateway", "socket"): True,
    ("network", "socket_commands_path"): "/run/sota/commands.socket",
    ("network", "socket_events_path"): "/run/sota/events.socket",
    ("network", "socket_group"): "sota",
    ("device", "packages_dir"): "/var/lib/sota/packages/",
}
#: Shown at the value it behaves as: absent (None) means 300 seconds (docs/configuration.md).
SHOWN_AS = {("rvi", "timeout"): 300}
#: ``#key = value`` and ``#[section]`` are settings; ``# text`` is prose.
COMMENTED = re.compile(r"^#(?=[^\s#])", re.MULTILINE)


def uncommented() -> str:
    return COMMENTED.sub("", CONFIG.read_text())


def sections(text: str) -> dict[str, list[str]]:
    """Section -> the keys written in it, commented out or not (comment lines of prose aside)."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.removeprefix("#") if COMMENTED.match(line) else line
        if header := re.fullmatch(r"\[(\w+)\]", line):
            current = header[1]
            found.setdefault(current, [])
        elif key := re.match(r"(\w+) = ", line):
            found[current].append(key[1])
    return found


def value(config: Config, section: str, key: str) -> Any:
    return getattr(getattr(config, section), key)


def test_every_key_of_the_schema_is_in_its_section_once() -> None:
    written = sections(CONFIG.read_text())
    assert sorted(written) == sorted(_SECTION_SETTINGS)
    for section, settings in _SECTION_SETTINGS.items():
        assert sorted(written[section]) == sorted(s.key for s in settings), section


def documented_keys() -> dict[str, set[str]]:
    """The keys of each section's table in docs/configuration.md."""
    keys: dict[str, set[str]] = {}
    for match in re.finditer(r"^### `\[(\w+)\]`.*?\n(.*?)(?=^##)", DOC.read_text(), re.M | re.S):
        rows = re.findall(r"^\| `(\w+)` \|", match[2], re.MULTILINE)
        keys[match[1]] = set(rows)
    return keys


def test_every_documented_key_is_in_it() -> None:
    documented = documented_keys()
    assert sorted(documented) == sorted(_SECTION_SETTINGS)
    written = sections(CONFIG.read_text())
    for section, keys in documented.items():
        # polling_interval is the legacy spelling of polling_sec: in prose, never as a setting
        # (both set is an error).
        missing = keys - set(written[section]) - {"polling_interval"}
        assert not missing, f"[{section}] {missing}"
    assert re.search(r"^# polling_interval: ", CONFIG.read_text(), re.MULTILINE)


def test_each_setting_has_a_description_above_it() -> None:
    """A setting follows its description (``# text``), or the setting it shares it with."""
    previous = ""
    for line in CONFIG.read_text().splitlines():
        if re.match(r"#?\w+ = ", line):
            assert re.match(r"# \S|#?\w+ = ", previous), f"{line!r} has no description"
        previous = line


def test_it_loads_with_the_daemons_reader_to_the_defaults_but_what_the_package_sets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sota_client"):
        config = parse_config(CONFIG.read_text(), str(CONFIG))
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert config.auth is None
    assert config.dbus is None
    assert config.rvi is None
    for section in ("core", "device", "gateway", "network"):
        for setting in _SECTION_SETTINGS[section]:
            expected = SET.get((section, setting.key), setting.default)
            assert value(config, section, setting.key) == expected, (section, setting.key)


def test_every_commented_line_uncommented_loads_to_the_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sota_client"):
        config = parse_config(uncommented(), "uncommented sota.toml")
    # The placeholder credentials are warned about; nothing is unknown or ignored.
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "unknown" in m or "ignored" in m or "using" in m], messages
    for section, settings in _SECTION_SETTINGS.items():
        assert getattr(config, section) is not None, section
        for setting in settings:
            key = (section, setting.key)
            expected = SET.get(key, SHOWN_AS.get(key, setting.default))
            assert value(config, section, setting.key) == expected, key
    # The shown values are the documented behaviour of the absent key.
    assert config.rvi is not None
    assert msgspec.structs.replace(config.rvi, timeout=None) == _SECTIONS["rvi"]


def test_the_units_depend_on_what_it_sets() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    config = parse_config(CONFIG.read_text(), str(CONFIG))
    runtime = f"/run/{service['RuntimeDirectory']}/"
    assert config.network.socket_commands_path.startswith(runtime)
    assert config.network.socket_events_path.startswith(runtime)
    assert config.device.packages_dir.startswith(f"/var/lib/{service['StateDirectory']}/")
    assert config.device.state_dir == f"/var/lib/{service['StateDirectory']}"
    assert config.network.socket_group == service["Group"]
    assert "--config /etc/sota.toml" in service["ExecStart"]
