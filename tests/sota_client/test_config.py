"""The 2016 TOML config format: defaults, aliases, legacy keys, credentials, errors, printing."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_client._cli import _overrides, build_parser
from sota_client._config import (
    MAX_DOTS,
    MAX_FILE_SIZE,
    AuthConfig,
    Config,
    ConfigError,
    CoreConfig,
    DBusConfig,
    DeviceConfig,
    GatewayConfig,
    NetworkConfig,
    PackageManager,
    RviConfig,
    _Document,
    config_to_toml,
    default_config,
    load_config,
    parse_config,
    parse_socket_addr,
)

TOML_DIR = Path(__file__).parent / "toml"
DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"
SECTIONS: dict[str, Any] = {
    "auth": AuthConfig,
    "core": CoreConfig,
    "dbus": DBusConfig,
    "device": DeviceConfig,
    "gateway": GatewayConfig,
    "network": NetworkConfig,
    "rvi": RviConfig,
}
ALL_KEYS = {(name, f) for name, cls in SECTIONS.items() for f in cls.__struct_fields__}

#: One non-default value for every key: (section, key, TOML literal, flag text, parsed value).
#: ``{tmp}`` stands for a per-test temporary directory. test_cli.py uses it for the flags.
SAMPLES: list[tuple[str, str, str, str, Any]] = [
    ("auth", "server", '"https://auth.example.com"', "https://auth.example.com", None),
    ("auth", "client_id", '"id-1"', "id-1", None),
    ("auth", "client_secret", '"s3cret"', "s3cret", None),
    ("auth", "credentials_file", '"{tmp}/creds/c.toml"', "{tmp}/creds/c.toml", None),
    (
        "core",
        "server",
        '"https://core.example.com:8443/base"',
        "https://core.example.com:8443/base",
        None,
    ),
    ("core", "polling", "false", "false", False),
    ("core", "polling_sec", "30", "30", 30),
    ("core", "timeout", "2.5", "2.5", 2.5),
    ("dbus", "name", '"org.example.Sota"', "org.example.Sota", None),
    ("dbus", "path", '"/org/example/Sota"', "/org/example/Sota", None),
    ("dbus", "interface", '"org.example.SotaIface"', "org.example.SotaIface", None),
    ("dbus", "software_manager", '"org.example.Swlm"', "org.example.Swlm", None),
    ("dbus", "software_manager_path", '"/org/example/Swlm"', "/org/example/Swlm", None),
    ("dbus", "timeout", "-5", "-5", -5),
    ("dbus", "bus", '"system"', "system", None),
    (
        "device",
        "uuid",
        '"9ea653bc-3486-44cd-aa86-d936bd957e52"',
        "9ea653bc-3486-44cd-aa86-d936bd957e52",
        None,
    ),
    ("device", "vin", '"WVW00000000000001"', "WVW00000000000001", None),
    ("device", "packages_dir", '"/var/lib/sota/pkgs"', "/var/lib/sota/pkgs", None),
    (
        "device",
        "package_manager",
        '"File:/Var/Db"',
        "File:/Var/Db",
        PackageManager("file", "/Var/Db"),
    ),
    ("device", "certificates_path", '"/etc/ssl/ca.pem"', "/etc/ssl/ca.pem", None),
    ("device", "system_info", '""', "", "off"),
    ("device", "state_dir", '"/srv/sota"', "/srv/sota", None),
    ("device", "max_download_size", "1048576", "1048576", 1048576),
    ("device", "max_concurrent_downloads", "4", "4", 4),
    ("device", "report_timeout", "0", "0", 0.0),
    ("device", "event_metadata", "false", "false", False),
    ("gateway", "console", "true", "true", True),
    ("gateway", "dbus", "true", "true", True),
    ("gateway", "http", "true", "true", True),
    ("gateway", "rvi", "true", "true", True),
    ("gateway", "socket", "true", "true", True),
    ("gateway", "websocket", "true", "true", True),
    ("network", "http_server", '"[::1]:8000"', "[::1]:8000", None),
    ("network", "rvi_edge_server", '"10.0.0.1:9081"', "10.0.0.1:9081", None),
    ("network", "socket_commands_path", '"/run/sota/c.sock"', "/run/sota/c.sock", None),
    ("network", "socket_events_path", '"/run/sota/e.sock"', "/run/sota/e.sock", None),
    ("network", "websocket_server", '"0.0.0.0:3013"', "0.0.0.0:3013", None),
    ("network", "socket_mode", '"0640"', "0640", 0o640),
    ("network", "socket_group", '"swlm"', "swlm", None),
    (
        "network",
        "local_api_origins",
        '["http://10.0.0.5:8080", "https://hmi.example.com"]',
        "http://10.0.0.5:8080,https://hmi.example.com",
        ("http://10.0.0.5:8080", "https://hmi.example.com"),
    ),
    ("rvi", "client", '"http://10.0.0.2:8901"', "http://10.0.0.2:8901", None),
    ("rvi", "storage_dir", '"/srv/rvi"', "/srv/rvi", None),
    ("rvi", "timeout", "120", "120", 120),
]


def expected_value(sample: tuple[str, str, str, str, Any], tmp: Path) -> Any:
    """The parsed value of a sample: None in the table means "the flag text itself"."""
    _, _, _, text, value = sample
    if value is None:
        return text.format(tmp=tmp)
    return None if value == "off" else value


def shipped(name: str, tmp_path: Path) -> Path:
    """A copy of tests/sota_client/toml/<name> whose credentials file lies under tmp_path."""
    text = (TOML_DIR / name).read_text()
    copy = tmp_path / name
    copy.write_text(
        text.replace("@CREDENTIALS_FILE@", str(tmp_path / "creds" / "credentials.toml"))
    )
    return copy


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


#: What each file error says is expected, after the 2016 text (written out here on purpose, not
#: taken from the code).
BOOL_FORM = "true or false, without quotes"
STRING_FORM = "a string in quotes"
U64_FORM = "a whole number from 0 to 18446744073709551615"
I32_FORM = "a whole number from -2147483648 to 2147483647"
I64_FORM = "a whole number from -9223372036854775808 to 9223372036854775807"
URL_FORM = "an absolute URL such as http://127.0.0.1:8080 or https://sota.example.com"
PACKAGE_MANAGER_FORM = "off, deb, rpm, file:PATH or otb:REPODIR"
SECONDS_FORM = "a number of seconds greater than 0, such as 20 or 2.5"
MODE_FORM = 'an octal file mode such as 0o660 or "0660"'
SIZE_FORM = "a whole number of bytes from 1 to 18446744073709551615"
SLOTS_FORM = "a whole number from 1 to 16"
REPORT_FORM = "a number of seconds such as 86400, or 0 for ever"
HTTP_ADDR_FORM = "IP:port such as 127.0.0.1:8888, or http://127.0.0.1:8888"
RVI_ADDR_FORM = "IP:port such as 127.0.0.1:9080, or http://127.0.0.1:9080"
WEBSOCKET_ADDR_FORM = "IP:port such as 127.0.0.1:3012, or ws://127.0.0.1:3012"

#: The gateway whose settings these are: only while it is on is a bad value an error.
GATEWAY_OF = {
    ("network", "http_server"): "http",
    ("network", "rvi_edge_server"): "rvi",
    ("network", "socket_commands_path"): "socket",
    ("network", "socket_events_path"): "socket",
    ("network", "socket_mode"): "socket",
    ("network", "socket_group"): "socket",
    ("network", "websocket_server"): "websocket",
    ("network", "local_api_origins"): "http",
    **{("rvi", key): "rvi" for key in ("client", "storage_dir", "timeout")},
    **{
        ("dbus", key): "dbus"
        for key in ("name", "path", "interface", "software_manager", "software_manager_path")
    },
    ("dbus", "timeout"): "dbus",
}


def with_gateway_on(section: str, key: str) -> str:
    """A ``[gateway]`` table (after the rest) switching on the gateway that uses the key, so
    that its errors are errors; empty for keys that are always checked."""
    gateway = GATEWAY_OF.get((section, key))
    return "" if gateway is None else f"[gateway]\n{gateway} = true\n"


def decode_error(key: str, problem: str, form: str | None) -> str:
    """A file error's text: the 2016 part, then what is expected (None: the problem says it)."""
    text = f"Toml decode error: {problem} for the key `{key}`"
    return text if form is None else f"{text}: expected {form}"


# ---------------------------------------------------------------------------------------------
# 10.1: the reference's config tests


def test_the_samples_cover_every_key() -> None:
    assert {(section, key) for section, key, *_ in SAMPLES} == ALL_KEYS


def test_empty_config_is_the_default() -> None:  # 10.1.1
    config = parse_config("")
    assert config == default_config() == Config()
    assert (config.auth, config.dbus, config.rvi) == (None, None, None)
    assert config.core == CoreConfig(server="http://127.0.0.1:8080", polling=True, polling_sec=10)
    assert config.device.uuid == "123e4567-e89b-12d3-a456-426655440000"
    assert config.device.vin == "V1234567890123456"
    assert config.device.packages_dir == "/tmp/"
    assert config.device.package_manager == PackageManager("off")
    assert config.device.certificates_path == "/tmp/sota_certificates"
    assert config.device.system_info == "system_info.sh"
    assert config.gateway == GatewayConfig(
        console=False, dbus=False, http=False, rvi=False, socket=False, websocket=False
    )
    network = config.network
    assert (network.http_server, network.rvi_edge_server) == ("127.0.0.1:8888", "127.0.0.1:9080")
    assert network.socket_commands_path == "/tmp/sota-commands.socket"
    assert network.socket_events_path == "/tmp/sota-events.socket"
    assert network.websocket_server == "127.0.0.1:3012"


def test_additions_have_their_documented_defaults() -> None:
    config = default_config()
    assert config.core.timeout == 20.0
    assert config.device.state_dir == "/var/lib/sota"
    assert config.device.max_download_size == 4 * 1024**3 == 4294967296
    assert config.device.max_concurrent_downloads == 1
    assert config.device.report_timeout == 86400.0  # one day
    assert config.network.socket_mode == 0o660
    assert config.network.socket_group is None


def test_basic_config_written_out_parses_to_the_default() -> None:  # 10.1.2
    text = """
    [core]
    server = "http://127.0.0.1:8080"
    polling = true
    polling_sec = 10

    [device]
    uuid = "123e4567-e89b-12d3-a456-426655440000"
    vin = "V1234567890123456"
    packages_dir = "/tmp/"
    package_manager = "off"
    certificates_path = "/tmp/sota_certificates"
    system_info = "system_info.sh"

    [gateway]
    console = false
    dbus = false
    http = false
    rvi = false
    socket = false
    websocket = false

    [network]
    http_server = "127.0.0.1:8888"
    rvi_edge_server = "127.0.0.1:9080"
    socket_commands_path = "/tmp/sota-commands.socket"
    socket_events_path = "/tmp/sota-events.socket"
    websocket_server = "127.0.0.1:3012"
    """
    assert parse_config(text) == default_config()


def test_default_toml_has_all_seven_sections(tmp_path: Path) -> None:  # 10.1.3
    config = load_config(str(shipped("default.toml", tmp_path)))
    credentials = tmp_path / "creds" / "credentials.toml"
    assert config == Config(
        auth=AuthConfig(
            server="http://127.0.0.1:9001",
            client_id="client-id",
            client_secret="client-secret",
            credentials_file=str(credentials),
        ),
        core=CoreConfig(),
        dbus=DBusConfig(
            name="org.genivi.SotaClient",
            path="/org/genivi/SotaClient",
            interface="org.genivi.SotaClient",
            software_manager="org.genivi.SoftwareLoadingManager",
            software_manager_path="/org/genivi/SoftwareLoadingManager",
            timeout=60,
        ),
        device=DeviceConfig(),
        gateway=GatewayConfig(),
        network=NetworkConfig(),
        rvi=RviConfig(client="http://127.0.0.1:8901", storage_dir="/var/sota", timeout=20),
    )
    # The credentials file did not exist, so it was created from the config.
    assert (
        credentials.read_text()
        == '[auth]\nclient_id = "client-id"\nclient_secret = "client-secret"\n'
    )


def test_old_toml_polls_from_the_legacy_interval(tmp_path: Path) -> None:  # 10.1.4
    old = load_config(str(shipped("old.toml", tmp_path)))
    assert old.core.polling is True
    assert old.core.polling_sec == 10
    assert old == load_config(str(shipped("default.toml", tmp_path)))


def test_both_polling_keys_are_an_error(tmp_path: Path) -> None:  # 10.1.5
    path = shipped("polling.toml", tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (
        f"{path}:7: [device] polling_interval: "
        "Bad Config: core.polling_sec and device.polling_interval both set"
    )
    assert (
        caught.value.message == "Bad Config: core.polling_sec and device.polling_interval both set"
    )


def test_dashed_spellings_of_both_polling_keys_conflict_too() -> None:
    with pytest.raises(ConfigError, match="both set"):
        parse_config("[core]\npolling-sec = 1\n[device]\npolling-interval = 2\n")


@pytest.mark.parametrize("polling", ["", "polling = true", "polling = false"])
def test_polling_interval_zero_turns_polling_off(polling: str) -> None:  # 10.1.6
    config = parse_config(f"[core]\n{polling}\n[device]\npolling_interval = 0\n")
    assert config.core.polling is False
    assert config.core.polling_sec == 10


def test_polling_interval_turns_polling_on_even_over_polling_false() -> None:  # 2016 item 12, kept
    config = parse_config("[core]\npolling = false\n[device]\npolling-interval = 25\n")
    assert (config.core.polling, config.core.polling_sec) == (True, 25)


def test_polling_interval_is_not_kept_and_is_type_checked() -> None:
    assert not hasattr(parse_config("[device]\npolling_interval = 3\n").device, "polling_interval")
    with pytest.raises(ConfigError, match="for the key `polling_interval`"):
        parse_config('[device]\npolling_interval = "3"\n')
    with pytest.raises(ConfigError, match="-3 is out of range for `u64`"):
        parse_config("[device]\npolling_interval = -3\n")


def test_dashed_alias_sets_the_key() -> None:  # 10.1.7
    assert parse_config("[core]\npolling-sec = 5\n").core.polling_sec == 5


@pytest.mark.parametrize(
    "sample", [s for s in SAMPLES if "_" in s[1]], ids=lambda s: f"{s[0]}.{s[1]}"
)
@pytest.mark.parametrize("dashed", [False, True], ids=["underscores", "dashes"])
def test_every_key_is_read_by_name_and_by_dashed_alias(
    sample: tuple[str, str, str, str, Any], dashed: bool, tmp_path: Path
) -> None:
    section, key, literal, *_ = sample
    name = key.replace("_", "-") if dashed else key
    config = parse_config(f"[{section}]\n{name} = {literal.format(tmp=tmp_path)}\n")
    assert getattr(getattr(config, section), key) == expected_value(sample, tmp_path)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{s[0]}.{s[1]}")
def test_every_key_is_read_from_its_section(
    sample: tuple[str, str, str, str, Any], tmp_path: Path
) -> None:
    section, key, literal, *_ = sample
    config = parse_config(f"[{section}]\n{key} = {literal.format(tmp=tmp_path)}\n")
    assert getattr(getattr(config, section), key) == expected_value(sample, tmp_path)
    # ... and nothing else changed.
    others = msgspec.structs.replace(
        getattr(config, section), **{key: getattr(SECTIONS[section](), key)}
    )
    assert others == SECTIONS[section]()


def test_the_exact_spelling_beats_the_alias_which_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config("[core]\npolling_sec = 1\npolling-sec = 2\n", "sota.toml")
    assert config.core.polling_sec == 1
    assert warnings_of(caplog) == ["sota.toml:3: [core] polling-sec: unknown key ignored"]


def test_type_error_keeps_the_2016_text() -> None:  # 10.1.8
    with pytest.raises(ConfigError) as caught:
        parse_config('[core]\npolling = "yes"\n', "/etc/sota.toml")
    the_2016_text = (
        "Toml decode error: expected a value of type `bool`, but found a value of type `string` "
        "for the key `polling`"
    )
    assert str(caught.value) == (
        f"/etc/sota.toml:2: [core] polling: {the_2016_text}: expected true or false, without quotes"
    )
    assert caught.value.message.startswith(the_2016_text + ": ")
    error = caught.value
    assert (error.source, error.line, error.section, error.key) == (
        "/etc/sota.toml",
        2,
        "core",
        "polling",
    )


@pytest.mark.parametrize(
    ("section", "key", "literal", "expected", "found", "form"),
    [
        ("core", "polling", "1", "bool", "integer", BOOL_FORM),
        ("gateway", "socket", '"true"', "bool", "string", BOOL_FORM),
        ("core", "polling_sec", "true", "integer", "boolean", U64_FORM),
        ("core", "polling_sec", '"10"', "integer", "string", U64_FORM),
        ("core", "polling_sec", "1.5", "integer", "float", U64_FORM),
        ("device", "uuid", "5", "string", "integer", STRING_FORM),
        ("device", "vin", "[1]", "string", "array", STRING_FORM),
        ("device", "vin", "{ a = 1 }", "string", "table", STRING_FORM),
        ("device", "vin", "1979-05-27", "string", "datetime", STRING_FORM),
        ("device", "package_manager", "false", "string", "boolean", PACKAGE_MANAGER_FORM),
        ("device", "system_info", "0", "string", "integer", 'a string in quotes ("" for none)'),
        ("network", "http_server", "8888", "string", "integer", HTTP_ADDR_FORM),
        ("network", "websocket_server", "3012", "string", "integer", WEBSOCKET_ADDR_FORM),
        ("core", "server", "8080", "string", "integer", URL_FORM),
        ("core", "timeout", '"20"', "float", "string", SECONDS_FORM),
        ("core", "timeout", "true", "float", "boolean", SECONDS_FORM),
        ("network", "socket_mode", "true", "integer", "boolean", MODE_FORM),
        ("rvi", "timeout", "2.0", "integer", "float", I64_FORM),
        ("dbus", "timeout", '"60"', "integer", "string", I32_FORM),
        ("device", "max_download_size", '"4G"', "integer", "string", SIZE_FORM),
        ("device", "max_download_size", "4e9", "integer", "float", SIZE_FORM),
        ("device", "max_concurrent_downloads", "true", "integer", "boolean", SLOTS_FORM),
        ("device", "report_timeout", '"1d"', "float", "string", REPORT_FORM),
    ],
)
def test_types_are_strict(
    section: str, key: str, literal: str, expected: str, found: str, form: str
) -> None:
    text = f"[{section}]\n{key} = {literal}\n{with_gateway_on(section, key)}"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.toml")
    the_2016_text = (
        f"Toml decode error: expected a value of type `{expected}`, "
        f"but found a value of type `{found}` for the key `{key}`"
    )
    assert str(caught.value) == f"f.toml:2: [{section}] {key}: {the_2016_text}: expected {form}"


@pytest.mark.parametrize(
    ("section", "key", "literal", "problem"),
    [
        ("core", "polling_sec", "-1", "-1 is out of range for `u64` (0..=18446744073709551615)"),
        ("core", "polling_sec", "18446744073709551616", "is out of range for `u64`"),
        ("dbus", "timeout", "2147483648", "2147483648 is out of range for `i32`"),
        ("dbus", "timeout", "-2147483649", "-2147483649 is out of range for `i32`"),
        ("rvi", "timeout", "9223372036854775808", "is out of range for `i64`"),
        ("core", "timeout", "0", "expected a positive number of seconds, but found 0"),
        ("core", "timeout", "-1.5", "expected a positive number of seconds, but found -1.5"),
        ("core", "timeout", "inf", "expected a positive number of seconds, but found inf"),
        ("core", "timeout", "nan", "expected a positive number of seconds, but found nan"),
        (
            "device",
            "report_timeout",
            "-1",
            "expected a number of seconds of 0 or more, but found -1",
        ),
        ("device", "report_timeout", "-0.5", "expected a number of seconds of 0 or more, but "),
        ("device", "report_timeout", "inf", "expected a number of seconds of 0 or more"),
        ("device", "report_timeout", "nan", "expected a number of seconds of 0 or more"),
        ("network", "socket_mode", "0o10000", "expected a file mode between 0o0 and 0o7777"),
        ("network", "socket_mode", "-1", "expected a file mode between 0o0 and 0o7777"),
        ("network", "socket_mode", '"0999"', "expected an octal file mode such as 0o660"),
        ("network", "socket_mode", '"rw-rw----"', "expected an octal file mode such as 0o660"),
        (
            "device",
            "max_download_size",
            "0",
            "expected a size in bytes between 1 and 18446744073709551615, but found 0",
        ),
        ("device", "max_download_size", "-1", "expected a size in bytes between 1 and "),
        (
            "device",
            "max_download_size",
            "18446744073709551616",
            "expected a size in bytes between 1 and 18446744073709551615, "
            "but found 18446744073709551616",
        ),
        (
            "device",
            "max_concurrent_downloads",
            "0",
            "expected a number of downloads between 1 and 16, but found 0",
        ),
        (
            "device",
            "max_concurrent_downloads",
            "17",
            "expected a number of downloads between 1 and 16, but found 17",
        ),
        ("core", "polling_sec", "0x1" + "0" * 5000, "a number too long to show is out of range"),
    ],
)
def test_numbers_are_range_checked(section: str, key: str, literal: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[{section}]\n{key} = {literal}\n{with_gateway_on(section, key)}")
    message = caught.value.message
    assert problem in message
    assert message.startswith("Toml decode error: ")
    if problem.startswith("expected "):  # our own text for an addition: it says what is wanted
        assert message.endswith(f" for the key `{key}`")
    else:  # the 2016 text, then what is expected
        expected = U64_FORM if key == "polling_sec" else I32_FORM if section == "dbus" else I64_FORM
        assert message.endswith(f" for the key `{key}`: expected {expected}")


def test_report_timeout_takes_0_which_core_timeout_refuses() -> None:
    assert parse_config("[device]\nreport_timeout = 0\n").device.report_timeout == 0.0
    assert parse_config("[device]\nreport-timeout = 90\n").device.report_timeout == 90.0
    with pytest.raises(ConfigError, match="expected a positive number of seconds, but found 0"):
        parse_config("[core]\ntimeout = 0\n")


@pytest.mark.parametrize(
    ("flag", "value", "error"),
    [
        ("0", 0.0, None),
        ("0.25", 0.25, None),
        ("86400", 86400.0, None),
        ("-1", None, "expected a number of seconds of 0 or more, but found -1.0"),
        ("inf", None, "invalid float literal"),
        ("1 day", None, "invalid float literal"),
    ],
)
def test_report_timeout_flag(flag: str, value: float | None, error: str | None) -> None:
    parser = build_parser()
    assert "change how long an update handed to an SWLM may wait for its report (0: for ever)" in (
        " ".join(parser.format_help().split())
    )
    assert "--device-report-timeout SECONDS" in parser.format_help()
    flags = vars(parser.parse_args([f"--device-report-timeout={flag}"]))
    if error is None:
        assert _overrides(flags) == {("device", "report_timeout"): value}
        assert load_config(None, overrides=_overrides(flags)).device.report_timeout == value
    else:
        with pytest.raises(ConfigError) as caught:
            _overrides(flags)
        assert str(caught.value) == f"Invalid device-report-timeout: {error}"


def test_an_addition_out_of_range_names_file_line_section_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[device]\nuuid = "u"\nmax-concurrent-downloads = 17\n', "/etc/sota.toml")
    assert str(caught.value) == (
        "/etc/sota.toml:3: [device] max_concurrent_downloads: Toml decode error: expected a "
        "number of downloads between 1 and 16, but found 17 for the key `max_concurrent_downloads`"
    )


@pytest.mark.parametrize(
    ("section", "key", "literal", "value"),
    [
        ("core", "polling_sec", "0", 0),
        ("core", "polling_sec", "18446744073709551615", 2**64 - 1),
        ("dbus", "timeout", "-2147483648", -(2**31)),
        ("dbus", "timeout", "2147483647", 2**31 - 1),
        ("rvi", "timeout", "-9223372036854775808", -(2**63)),
        ("core", "timeout", "1", 1.0),
        ("core", "timeout", "0.25", 0.25),
        ("device", "report_timeout", "0", 0.0),
        ("device", "report_timeout", "0.0", 0.0),
        ("device", "report_timeout", "86400", 86400.0),
        ("device", "report_timeout", "0.5", 0.5),
        ("network", "socket_mode", "0o7777", 0o7777),
        ("network", "socket_mode", "0", 0),
        ("network", "socket_mode", "416", 0o640),
        ("network", "socket_mode", '"0o755"', 0o755),
        ("network", "socket_mode", '"600"', 0o600),
        ("device", "max_download_size", "1", 1),
        ("device", "max_download_size", "18446744073709551615", 2**64 - 1),
        ("device", "max_concurrent_downloads", "1", 1),
        ("device", "max_concurrent_downloads", "16", 16),
    ],
)
def test_numbers_at_the_limits_are_accepted(
    section: str, key: str, literal: str, value: Any
) -> None:
    config = parse_config(f"[{section}]\n{key} = {literal}\n")
    assert getattr(getattr(config, section), key) == value


def test_unknown_sections_and_keys_are_warned_about_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:  # 10.1.9
    text = "top = 1\n[foo]\nbar = 2\n[core]\npolling_secs = 3\n[device]\nauto_download = false\n"
    assert parse_config(text, "/etc/sota.toml") == default_config()
    assert sorted(warnings_of(caplog)) == [
        "/etc/sota.toml:1: top: unknown key ignored",
        "/etc/sota.toml:2: [foo]: unknown section ignored",
        "/etc/sota.toml:5: [core] polling_secs: unknown key ignored",
        "/etc/sota.toml:7: [device] auto_download: unknown key ignored",
    ]


def test_a_config_with_only_an_unknown_section_gives_the_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:  # 10.13.5
    assert parse_config("[foo]\n") == default_config()
    assert warnings_of(caplog) == ["<string>:1: [foo]: unknown section ignored"]


def test_a_known_section_must_be_a_table() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("core = 1\n", "f.toml")
    assert str(caught.value) == (
        "f.toml: [core]: Toml decode error: expected a value of type `table`, "
        "but found a value of type `integer` for the key `core`"
    )


def test_optional_sections_exist_only_when_present() -> None:
    config = parse_config("[dbus]\n[rvi]\n")
    assert config.dbus == DBusConfig()
    assert config.rvi == RviConfig()
    assert config.rvi.timeout is None
    assert config.auth is None


# ---------------------------------------------------------------------------------------------
# URLs, addresses, package managers, system_info


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("bad-url", "relative URL without a base"),
        ("127.0.0.1:8080", "relative URL without a base"),
        ("/api/v1", "relative URL without a base"),
        ("", "relative URL without a base"),
        ("http://", "empty host"),
        ("http:///path", "empty host"),
        ("localhost:8080", "empty host"),
        ("http://host:99999", "invalid port number"),
        ("http://host:port", "invalid port number"),
        ("http://[::1", "invalid IPv6 address"),
        ("http://[zz::1]/", "invalid IPv6 address"),
        ("http://a b/", "invalid domain character"),
    ],
)
def test_bad_urls_are_refused_with_the_url_crate_text(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[core]\nserver = "{url}"\n', "f.toml")
    assert str(caught.value) == (
        f"f.toml:2: [core] server: Toml decode error: Url parse error: {problem} "
        f"for the key `server`: expected {URL_FORM}"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "https://sota-core.gw.prod01.advancedtelematic.com",
        "http://[::1]:8080/x",
        "https://user:pw@host.example/path?q=1",
    ],
)
def test_good_urls_are_kept_as_written(url: str) -> None:
    assert parse_config(f'[rvi]\nclient = "{url}"\n').rvi == RviConfig(client=url)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("1.2.3.4:80", "1.2.3.4", 80),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:80", "::1", 80),
        ("[fe80::1]:65535", "fe80::1", 65535),
        ("http://127.0.0.1:8888", "127.0.0.1", 8888),  # the 2016 guide's form
        ("http://127.0.0.1:8888/", "127.0.0.1", 8888),
        ("HTTP://[::1]:80", "::1", 80),
    ],
)
def test_socket_addresses(text: str, host: str, port: int) -> None:
    assert parse_socket_addr(text) == (host, port)
    config = parse_config(f'[network]\nhttp_server = "{text}"\n[gateway]\nhttp = true\n')
    assert config.network.http_server == text  # kept as written, for --print


@pytest.mark.parametrize(
    "text",
    [
        "localhost:80",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:99999",
        "1.2.3.4:+80",
        "1.2.3.4:8 0",
        "[::1]",
        "::1:80",
        ":80",
        "1.2.3:80",
        "http://localhost:80",
        "http://1.2.3.4",
        "http://1.2.3.4:80/path",
        "http://1.2.3.4:80//",
        "http://1.2.3.4:80?q",
        "http://user@1.2.3.4:80",
        "https://1.2.3.4:80",
        "http:/1.2.3.4:80",
    ],
)
def test_socket_addresses_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid IP address syntax$"):
        parse_socket_addr(text)
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[network]\nrvi_edge_server = "{text}"\n[gateway]\nrvi = true\n')
    assert caught.value.message == (
        "Toml decode error: invalid IP address syntax for the key `rvi_edge_server`: "
        "expected IP:port such as 127.0.0.1:9080, or http://127.0.0.1:9080"
    )


@pytest.mark.parametrize(
    ("text", "manager"),
    [
        ("off", PackageManager("off")),
        ("deb", PackageManager("deb")),
        ("rpm", PackageManager("rpm")),
        ("DEB", PackageManager("deb")),
        ("Off", PackageManager("off")),
        ("file:/tmp/Pkgs.List", PackageManager("file", "/tmp/Pkgs.List")),
        ("FILE:/Tmp/x", PackageManager("file", "/Tmp/x")),
        ("file:a:b", PackageManager("file", "a:b")),
        ("otb:/ostree/Repo", PackageManager("otb", "/ostree/Repo")),
    ],
)
def test_package_managers(text: str, manager: PackageManager) -> None:
    assert PackageManager.parse(text) == manager
    assert PackageManager.parse(str(manager)) == manager
    assert parse_config(f'[device]\npackage_manager = "{text}"\n').device.package_manager == manager


@pytest.mark.parametrize(
    "text", ["yum", "", "file:", "file", "otb:", "deb:", "off:x", " deb", "debian"]
)
def test_unknown_package_managers(text: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown package manager: ") as caught:
        PackageManager.parse(text)
    assert str(caught.value) == f"unknown package manager: {text}"
    with pytest.raises(ConfigError) as error:
        parse_config(f'[device]\npackage_manager = "{text}"\n', "f.toml")
    assert str(error.value) == (
        f"f.toml:2: [device] package_manager: Toml decode error: Parse error: "
        f"unknown package manager: {text} for the key `package_manager`: "
        "expected off, deb, rpm, file:PATH or otb:REPODIR"
    )


def test_package_manager_values_are_consistent() -> None:
    assert str(PackageManager("file", "/x")) == "file:/x"
    assert str(PackageManager("rpm")) == "rpm"
    with pytest.raises(ValueError, match="cannot have path"):
        PackageManager("file")
    with pytest.raises(ValueError, match="cannot have path"):
        PackageManager("deb", "/x")


def test_system_info_is_on_by_default_and_an_empty_string_turns_it_off() -> None:
    assert parse_config("[device]\n").device.system_info == "system_info.sh"
    assert (
        parse_config('[device]\nsystem_info = "/usr/bin/info"\n').device.system_info
        == "/usr/bin/info"
    )
    assert parse_config('[device]\nsystem_info = ""\n').device.system_info is None


# ---------------------------------------------------------------------------------------------
# Syntax and I/O errors


def test_toml_syntax_error_keeps_the_2016_prefix() -> None:  # 10.13.3
    with pytest.raises(ConfigError) as caught:
        parse_config("auth]\n", "/etc/sota.toml")
    message = str(caught.value)
    assert message.startswith("/etc/sota.toml: Toml parser errors: ")
    assert "(at line 1, column 5)" in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: IO error: No such file or directory (os error 2)"


def test_directory_instead_of_a_file() -> None:  # 10.13.4
    with pytest.raises(ConfigError) as caught:
        load_config("/")
    assert str(caught.value) == "/: IO error: Is a directory (os error 21)"


def _load_error(path: Path) -> str:
    """The ConfigError text for ``path``; root reads any file, so as root a forked child that
    has dropped to "nobody" does the loading (no exec: it needs nothing from disk)."""
    if os.geteuid() != 0:
        with pytest.raises(ConfigError) as caught:
            load_config(str(path))
        return str(caught.value)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            os.setgid(65534)
            os.setuid(65534)
            load_config(str(path))
            message = "loaded"
        except ConfigError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"unexpected {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text("")
    path.chmod(0)
    tmp_path.chmod(0o755)
    assert _load_error(path) == f"{path}: IO error: Permission denied (os error 13)"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[device]\nvin = "\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: IO error: stream did not contain valid UTF-8"


def test_load_logs_the_file_it_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sota.toml"
    path.write_text("[core]\npolling_sec = 3\n")
    with caplog.at_level(logging.INFO):
        assert load_config(str(path)).core.polling_sec == 3
    assert f"Loading config file: {path}" in caplog.messages


def test_no_file_means_defaults_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert load_config(None) == default_config()
    assert warnings_of(caplog) == ["No config file given. Falling back to defaults."]


def test_config_error_renders_what_it_knows() -> None:
    assert str(ConfigError("boom")) == "boom"
    assert str(ConfigError("boom", source="f.toml")) == "f.toml: boom"
    assert (
        str(ConfigError("boom", source="f.toml", line=3, section="core"))
        == "f.toml:3: [core]: boom"
    )
    full = ConfigError("boom", source="f", line=1, section="core", key="server")
    assert str(full) == "f:1: [core] server: boom"
    assert full.message == "boom"


# ---------------------------------------------------------------------------------------------
# Hostile files: only a regular file of at most 1 MiB is read, and nothing hangs or blows up


def load_error(path: str | Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return str(caught.value)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_is_not_a_regular_file(device: str) -> None:
    assert load_error(device) == f"{device}: not a regular file"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "sota.toml"
    os.mkfifo(fifo)
    assert load_error(fifo) == f"{fifo}: not a regular file"


def test_a_unix_socket_is_not_a_regular_file(sock_dir: Path) -> None:
    path = sock_dir / "sota.toml"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert load_error(path) == f"{path}: not a regular file"


def test_a_symlink_to_a_config_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.toml"
    target.write_text("[core]\npolling_sec = 7\n")
    link = tmp_path / "sota.toml"
    link.symlink_to(target)
    assert load_config(str(link)).core.polling_sec == 7
    device_link = tmp_path / "zero.toml"
    device_link.symlink_to("/dev/zero")
    assert load_error(device_link) == f"{device_link}: not a regular file"


def test_a_file_of_exactly_1_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sota.toml"
    tail = b"\n[core]\npolling_sec = 4\n"
    path.write_bytes(b"#" * (MAX_FILE_SIZE - len(tail)) + tail)
    assert path.stat().st_size == MAX_FILE_SIZE == 1 << 20
    assert load_config(str(path)).core.polling_sec == 4


@pytest.mark.parametrize("size", [MAX_FILE_SIZE + 1, 2 * MAX_FILE_SIZE])
def test_a_larger_file_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "sota.toml"
    path.write_bytes(b"#" * (size - 1) + b"\n")
    assert load_error(path) == (
        f"{path}: larger than 1 MiB (1048576 bytes); is this the right file?"
    )


def test_a_file_whose_size_is_unknown_is_read_for_at_most_1_mib_and_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a /proc file (size 0) or one still growing: the read itself is bounded."""
    path = tmp_path / "sota.toml"
    path.write_bytes(b"#" * (3 * MAX_FILE_SIZE))
    real_fstat, real_read = os.fstat, os.read
    read: list[int] = []

    def fstat_says_empty(fd: int) -> os.stat_result:
        fields = list(real_fstat(fd))
        fields[stat.ST_SIZE] = 0
        return os.stat_result(fields)

    def counted_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "fstat", fstat_says_empty)
    monkeypatch.setattr(os, "read", counted_read)
    message = load_error(path)
    monkeypatch.undo()
    assert message == f"{path}: larger than 1 MiB (1048576 bytes); is this the right file?"
    assert sum(read) == MAX_FILE_SIZE + 1


def test_a_proc_file_is_read_although_its_size_is_zero() -> None:
    path = "/proc/self/status"
    assert os.stat(path).st_size == 0
    assert load_error(path).startswith(f"{path}: Toml parser errors: ")  # read, then parsed


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 500,
        "a = " + "[" * 500 + "]" * 500,
        "a = " + "{b = " * 500 + "1" + "}" * 500,
        "[core]\nserver = " + "[" * 100_000,
    ],
    ids=["arrays", "closed arrays", "inline tables", "100,000 arrays"],
)
def test_deep_nesting_is_one_error_line(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/sota.toml")
    assert str(caught.value) == (
        "/etc/sota.toml: Toml parser errors: arrays or tables nested too deeply"
    )


@pytest.mark.parametrize(
    ("raised", "problem"),
    [
        (MemoryError(), "out of memory"),
        (ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero"),
    ],
)
def test_any_parser_failure_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, problem: str
) -> None:
    def broken(text: str) -> dict[str, Any]:
        raise raised

    monkeypatch.setattr(tomllib, "loads", broken)
    with pytest.raises(ConfigError) as caught:
        parse_config("", "f.toml")
    assert str(caught.value) == f"f.toml: Toml parser errors: {problem}"


def test_an_integer_python_will_not_convert_is_one_error_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[core]\npolling_sec = 1" + "0" * 5000 + "\n", "f.toml")
    assert str(caught.value) == (
        "f.toml: Toml parser errors: ValueError: Exceeds the limit (4300 digits) for integer "
        "string conversion: value has 5001 digits"
    )


def test_very_long_dotted_keys_are_refused_before_parsing() -> None:
    """tomllib needs time quadratic in a dotted key's length: 1 MiB of ``a.a.a...`` takes
    hours. More dots than a config ever has are refused before tomllib sees them."""
    dots = "." * MAX_DOTS
    assert parse_config(f'# .\n[device]\nvin = "{dots}"\n').device.vin == dots
    assert parse_config(f"# {dots}.\n  #.\n[device]\n").device == DeviceConfig()  # comments
    for text in (f'[device]\nvin = "{dots}."\n', "a" + ".a" * 400_000 + " = 1\n"):
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "f.toml")
        assert str(caught.value) == (
            "f.toml: Toml parser errors: more than 4096 dots outside comments (dotted keys "
            "this long take the parser minutes); is this the right file?"
        )


def test_the_line_of_a_key_is_its_first_mention() -> None:
    text = '[device]\npackage_manager = "yum"\nvin = """\npackage_manager = "deb"\n"""\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.toml")
    assert caught.value.line == 2  # not line 4, inside the string


def test_an_error_is_one_line_whatever_the_file_holds() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[device]\npackage_manager = "yu\\nm\\u2028\\u001b[31m"\n', "a\nb.toml")
    assert str(caught.value) == (
        "a\\nb.toml:2: [device] package_manager: Toml decode error: Parse error: unknown "
        "package manager: yu\\nm\\u2028\\x1b[31m for the key `package_manager`: "
        f"expected {PACKAGE_MANAGER_FORM}"
    )
    assert caught.value.message.startswith("Toml decode error: ")  # the raw text is kept


def test_a_warning_is_one_line_whatever_the_file_holds(caplog: pytest.LogCaptureFixture) -> None:
    parse_config('[core]\n"polling\\nsec" = 1\n"\\r\\t" = 2\n', "f.toml")
    assert warnings_of(caplog) == [
        "f.toml: [core] polling\\nsec: unknown key ignored",
        "f.toml: [core] \\r\\t: unknown key ignored",
    ]


def test_many_unknown_keys_are_located_in_one_pass(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file can hold 100,000 unknown keys; searching the text once per warning took hours."""
    passes: list[str] = []
    index_lines = _Document._index_lines

    def counted(document: _Document) -> dict[tuple[str, str | None], int]:
        passes.append(document.source)
        return index_lines(document)

    monkeypatch.setattr(_Document, "_index_lines", counted)
    count = 2000
    text = "[core]\n" + "".join(f"k{i} = {i}\n" for i in range(count))
    assert parse_config(text, "f.toml") == default_config()
    assert passes == ["f.toml"]
    messages = warnings_of(caplog)
    assert len(messages) == count
    assert messages[0] == "f.toml:2: [core] k0: unknown key ignored"
    assert messages[-1] == f"f.toml:{count + 1}: [core] k{count - 1}: unknown key ignored"


# ---------------------------------------------------------------------------------------------
# 10.1.10 and 9.2: the [auth] credentials file


def auth_section(credentials: Path | None, **keys: str) -> str:
    lines = ["[auth]", *(f"{key} = {json.dumps(value)}" for key, value in keys.items())]
    if credentials is not None:
        lines.append(f"credentials_file = {json.dumps(str(credentials))}")
    return "\n".join(lines) + "\n"


def test_an_existing_credentials_file_overrides_the_config(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text('[auth]\nclient_id = "A"\nclient-secret = "B"\n')
    auth = parse_config(auth_section(credentials, client_id="X", client_secret="Y")).auth
    assert auth is not None
    assert (auth.client_id, auth.client_secret) == ("A", "B")


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_a_missing_credentials_file_is_created_0600(tmp_path: Path, umask: int) -> None:
    credentials = tmp_path / "deep" / "er" / "credentials.toml"
    old_umask = os.umask(umask)
    try:
        auth = parse_config(auth_section(credentials, client_id='i"d', client_secret="s\\t")).auth
    finally:
        os.umask(old_umask)
    assert auth == AuthConfig(
        client_id='i"d', client_secret="s\\t", credentials_file=str(credentials)
    )
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert credentials.read_text() == '[auth]\nclient_id = "i\\"d"\nclient_secret = "s\\\\t"\n'
    # Read back on the next start, and it beats the config from then on.
    again = parse_config(auth_section(credentials, client_id="new", client_secret="new")).auth
    assert again is not None
    assert (again.client_id, again.client_secret) == ('i"d', "s\\t")


def test_a_credentials_file_without_auth_section(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text('client_id = "A"\nclient_secret = "B"\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(credentials))
    assert str(caught.value) == f"{credentials}: Bad Config: no [auth] section"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            '[auth]\nclient_id = "A"\n',
            "expected a value of type `string` for the key `client_secret`",
        ),
        (
            '[auth]\nclient_id = 1\nclient_secret = "B"\n',
            "expected a value of type `string`, but found a value of type `integer` "
            "for the key `client_id`: expected a string in quotes",
        ),
    ],
)
def test_a_credentials_file_needs_both_strings(tmp_path: Path, content: str, problem: str) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(content)
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(credentials))
    assert caught.value.source == str(credentials)
    assert caught.value.message == f"Toml decode error: {problem}"


def test_a_credentials_file_with_bad_toml(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text("[auth\n")
    with pytest.raises(ConfigError, match=r"credentials\.toml: Toml parser errors: "):
        parse_config(auth_section(credentials))


def test_a_credentials_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(tmp_path))
    assert str(caught.value) == f"{tmp_path}: IO error: Is a directory (os error 21)"


def test_a_credentials_file_that_cannot_be_read(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    credentials = blocker / "credentials.toml"  # its parent is a regular file
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(credentials, client_id="a", client_secret="b"))
    assert str(caught.value) == f"{credentials}: IO error: Not a directory (os error 20)"


def test_a_credentials_file_that_cannot_be_created(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.symlink_to(tmp_path / "nowhere")  # reads as missing; O_EXCL refuses to follow it
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(credentials, client_id="a", client_secret="b"))
    assert str(caught.value) == f"{credentials}: IO error: File exists (os error 17)"
    assert not (tmp_path / "nowhere").exists()


def test_auth_without_credentials_file_just_uses_the_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # 2016 item 6: this panicked
    auth = parse_config(auth_section(None, client_id="a", client_secret="b")).auth
    assert auth == AuthConfig(client_id="a", client_secret="b", credentials_file=None)
    assert warnings_of(caplog) == []
    assert parse_config('[auth]\ncredentials_file = ""\nclient_id = "a"\n').auth == AuthConfig(
        client_id="a"
    )


def test_missing_credentials_fall_back_to_the_defaults_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:  # 2016 item 6: this panicked
    assert parse_config("[auth]\n", "f.toml").auth == AuthConfig()
    assert warnings_of(caplog) == [
        "f.toml: [auth] client_id not set; using 'client-id'",
        "f.toml: [auth] client_secret not set; using 'client-secret'",
    ]


def test_placeholder_credentials_are_never_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials.toml"
    auth = parse_config(auth_section(credentials, client_id="only-the-id"), "f.toml").auth
    assert auth == AuthConfig(client_id="only-the-id", credentials_file=str(credentials))
    assert not credentials.exists()
    assert warnings_of(caplog) == [
        "f.toml: [auth]: client_id and client_secret are not both set; "
        f"not creating the credentials file {credentials}",
        "f.toml: [auth] client_secret not set; using 'client-secret'",
    ]


def test_credentials_only_in_the_credentials_file_need_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text('[auth]\nclient_id = "A"\nclient_secret = "B"\n')
    auth = parse_config(auth_section(credentials, server="https://auth.example.com")).auth
    assert auth == AuthConfig("https://auth.example.com", "A", "B", str(credentials))
    assert warnings_of(caplog) == []


def test_overrides_apply_before_the_credentials_file_except_the_credentials(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sota.toml"
    path.write_text('[auth]\nclient_id = "file-id"\nclient_secret = "file-secret"\n')
    credentials = tmp_path / "c" / "credentials.toml"
    config = load_config(
        str(path),
        overrides={
            ("auth", "credentials_file"): str(credentials),
            ("auth", "client_id"): "flag-id",
        },
    )
    assert config.auth == AuthConfig(
        client_id="flag-id", client_secret="file-secret", credentials_file=str(credentials)
    )
    assert credentials.read_text() == (
        '[auth]\nclient_id = "file-id"\nclient_secret = "file-secret"\n'
    )


def test_an_override_creates_a_missing_optional_section() -> None:
    config = load_config(None, overrides={("rvi", "timeout"): 5, ("dbus", "name"): "x.y"})
    assert config.rvi == RviConfig(timeout=5)
    assert config.dbus == DBusConfig(name="x.y")
    assert load_config(None, overrides={("auth", "client_secret"): "s"}).auth == AuthConfig(
        client_secret="s"
    )


@pytest.mark.parametrize("kind", ["fifo", "device", "too large", "directory"])
def test_a_hostile_credentials_file_is_one_error_line(tmp_path: Path, kind: str) -> None:
    credentials = tmp_path / "credentials.toml"
    if kind == "fifo":
        os.mkfifo(credentials)
        problem = "not a regular file"
    elif kind == "device":
        credentials.symlink_to("/dev/zero")
        problem = "not a regular file"
    elif kind == "too large":
        credentials.write_bytes(b'[auth]\nclient_id = "' + b"x" * MAX_FILE_SIZE + b'"\n')
        problem = "larger than 1 MiB (1048576 bytes); is this the right file?"
    else:
        credentials.mkdir()
        problem = "IO error: Is a directory (os error 21)"
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(credentials, client_id="a", client_secret="b"))
    assert str(caught.value) == f"{credentials}: {problem}"


def test_a_credentials_file_nested_too_deeply(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text("[auth]\nclient_id = " + "[" * 1000 + "\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(auth_section(credentials))
    assert str(caught.value) == (
        f"{credentials}: Toml parser errors: arrays or tables nested too deeply"
    )


def test_a_symlinked_credentials_file_is_read(tmp_path: Path) -> None:
    target = tmp_path / "provisioned.toml"
    target.write_text('[auth]\nclient_id = "A"\nclient_secret = "B"\n')
    credentials = tmp_path / "credentials.toml"
    credentials.symlink_to(target)
    auth = parse_config(auth_section(credentials, client_id="X", client_secret="Y")).auth
    assert auth is not None
    assert (auth.client_id, auth.client_secret) == ("A", "B")


# ---------------------------------------------------------------------------------------------
# --print TOML


def test_printed_toml_of_the_defaults() -> None:
    text = config_to_toml(default_config())
    assert text.startswith("[core]\nserver = ")
    for optional in ("[auth]", "[dbus]", "[rvi]"):
        assert optional not in text
    assert "socket_mode = 0o660\n" in text
    assert "socket_group" not in text
    assert parse_config(text) == default_config()


@pytest.mark.parametrize("name", ["default.toml", "genivi.toml", "old.toml"])
def test_printed_toml_reloads_to_the_same_config(name: str, tmp_path: Path) -> None:
    config = load_config(str(shipped(name, tmp_path)))
    assert parse_config(config_to_toml(config)) == config


def test_printed_toml_of_optional_values() -> None:
    config = parse_config(
        '[device]\nsystem_info = ""\npackage_manager = "otb:/Repo"\n'
        '[network]\nsocket_group = "swlm"\n[rvi]\n[auth]\nclient_id = "a"\nclient_secret = "b"\n'
    )
    text = config_to_toml(config)
    assert 'system_info = ""\n' in text
    assert 'package_manager = "otb:/Repo"\n' in text
    assert 'socket_group = "swlm"\n' in text
    assert "credentials_file" not in text
    rvi = text[text.index("[rvi]") :]
    assert "timeout" not in rvi
    assert text.index("[auth]") == 0
    assert parse_config(text) == config


def test_printed_strings_are_escaped() -> None:
    nasty = 'a"b\\c\n\t\x00\x1f\x7f é 😀'
    config = Config(device=DeviceConfig(uuid=nasty, vin=""))
    assert parse_config(config_to_toml(config)).device.uuid == nasty


_texts = st.text()
_some_texts = st.text(min_size=1)
_urls = st.sampled_from(["http://127.0.0.1:8080", "https://a.example/x?y=1", "http://[::1]:1/"])
_bare_addrs = st.one_of(
    st.builds("{}:{}".format, st.ip_addresses(v=4), st.integers(0, 65535)),
    st.builds("[{}]:{}".format, st.ip_addresses(v=6), st.integers(0, 65535)),
)


def _addrs(scheme: str) -> st.SearchStrategy[str]:
    """``IP:port``, or the URL form with ``scheme`` and an optional trailing slash."""
    urls = st.builds("{}://{}{}".format, st.just(scheme), _bare_addrs, st.sampled_from(["", "/"]))
    return _bare_addrs | urls


_managers = st.one_of(
    st.builds(PackageManager, st.sampled_from(["off", "deb", "rpm"])),
    st.builds(PackageManager, st.sampled_from(["file", "otb"]), _some_texts),
)
configs = st.builds(
    Config,
    auth=st.none() | st.builds(AuthConfig, _urls, _texts, _texts, st.none()),
    core=st.builds(
        CoreConfig,
        _urls,
        st.booleans(),
        st.integers(0, 2**64 - 1),
        st.floats(min_value=0, exclude_min=True, allow_infinity=False),
    ),
    dbus=st.none()
    | st.builds(
        DBusConfig, _texts, _texts, _texts, _texts, _texts, st.integers(-(2**31), 2**31 - 1)
    ),
    device=st.builds(
        DeviceConfig,
        _texts,
        _texts,
        _texts,
        _managers,
        _texts,
        st.none() | _some_texts,
        _texts,
        st.integers(1, 2**64 - 1),
        st.integers(1, 16),
        st.floats(min_value=0, allow_infinity=False),
    ),
    gateway=st.builds(GatewayConfig, *[st.booleans()] * 6),
    network=st.builds(
        NetworkConfig,
        _addrs("http"),
        _addrs("http"),
        _texts,
        _texts,
        _addrs("ws") | _addrs("http"),
        st.integers(0, 0o7777),
        st.none() | _some_texts,
    ),
    rvi=st.none()
    | st.builds(RviConfig, _urls, _texts, st.none() | st.integers(-(2**63), 2**63 - 1)),
)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_any_config_survives_a_print_round_trip(config: Config) -> None:
    assert parse_config(config_to_toml(config)) == config


# ---------------------------------------------------------------------------------------------
# docs/configuration.md stays true


def doc_toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_the_doc_has_toml_examples() -> None:
    assert len(doc_toml_blocks()) >= 3


@pytest.mark.parametrize("block", doc_toml_blocks())
def test_every_toml_example_in_the_doc_parses(block: str, tmp_path: Path) -> None:
    block = re.sub(r'credentials_file = "[^"]*"', f'credentials_file = "{tmp_path}/c.toml"', block)
    config = parse_config(block, "configuration.md")
    assert config_to_toml(config)  # printable, hence complete


def test_the_guide_example_in_the_doc_means_what_the_guide_says(tmp_path: Path) -> None:
    [guide] = [b for b in doc_toml_blocks() if "auth-plus" in b]
    guide = guide.replace("/opt/sota/credentials.toml", str(tmp_path / "credentials.toml"))
    config = parse_config(guide)
    assert (config.core.polling, config.core.polling_sec) == (True, 10)
    assert config.device.package_manager == PackageManager("deb")
    assert config.gateway.websocket is True
    assert config.auth is not None
    assert config.auth.client_secret == "hr8nEWzQc9"
    assert config.rvi == RviConfig(timeout=20)


def test_the_doc_describes_every_key_in_its_section_table() -> None:
    text = DOCS.read_text()
    for name, cls in SECTIONS.items():
        start = text.index(f"### `[{name}]`")
        table = text[start : text.index("\n#", start + 1)]
        for key in cls.__struct_fields__:
            assert f"\n| `{key}` |" in table, f"{name}.{key} missing from the doc"
