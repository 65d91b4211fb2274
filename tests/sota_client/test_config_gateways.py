"""Gateway settings: the listen-address forms, and lenient reading while a gateway is off.

A bad value for a gateway that is off is one warning (file:line, ``[section] key``, the problem,
the default used); once the file or a ``--gateway-x`` flag turns the gateway on, it is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_client._cli import main
from sota_client._config import (
    ConfigError,
    DBusConfig,
    NetworkConfig,
    RviConfig,
    config_to_toml,
    default_config,
    load_config,
    parse_config,
    parse_socket_addr,
)
from tests.sota_client.test_config import DOCS, GATEWAY_OF, RVI_ADDR_FORM, warnings_of

#: A bad value for every setting a gateway uses, and the problem it gives (after the 2016 part).
BAD_VALUES: dict[tuple[str, str], tuple[str, str]] = {
    ("network", "http_server"): (
        '"localhost:8888"',
        "invalid IP address syntax for the key `http_server`: "
        "expected IP:port such as 127.0.0.1:8888, or http://127.0.0.1:8888",
    ),
    ("network", "rvi_edge_server"): (
        '"http://localhost:9080"',
        f"invalid IP address syntax for the key `rvi_edge_server`: expected {RVI_ADDR_FORM}",
    ),
    ("network", "socket_commands_path"): (
        "1",
        "expected a value of type `string`, but found a value of type `integer` for the key "
        "`socket_commands_path`: expected a string in quotes",
    ),
    ("network", "socket_events_path"): (
        "[]",
        "expected a value of type `string`, but found a value of type `array` for the key "
        "`socket_events_path`: expected a string in quotes",
    ),
    ("network", "socket_mode"): (
        '"rw-rw----"',
        "expected an octal file mode such as 0o660, but found 'rw-rw----' for the key "
        "`socket_mode`",
    ),
    ("network", "socket_group"): (
        "0",
        "expected a value of type `string`, but found a value of type `integer` for the key "
        '`socket_group`: expected a string in quotes ("" for none)',
    ),
    ("network", "websocket_server"): (
        '"localhost:3012"',
        "invalid IP address syntax for the key `websocket_server`: "
        "expected IP:port such as 127.0.0.1:3012, or ws://127.0.0.1:3012",
    ),
    ("network", "local_api_origins"): (
        '["http://127.0.0.1:8888/hmi"]',
        "expected web origins such as http://127.0.0.1:8888 (scheme, host and port, no path), "
        "but found 'http://127.0.0.1:8888/hmi' for the key `local_api_origins`",
    ),
    ("rvi", "client"): (
        '"rvi-node:8901"',
        "Url parse error: empty host for the key `client`: expected an absolute URL such as "
        "http://127.0.0.1:8080 or https://sota.example.com",
    ),
    ("rvi", "storage_dir"): (
        "false",
        "expected a value of type `string`, but found a value of type `boolean` for the key "
        "`storage_dir`: expected a string in quotes",
    ),
    ("rvi", "timeout"): (
        '"20"',
        "expected a value of type `integer`, but found a value of type `string` for the key "
        "`timeout`: expected a whole number from -9223372036854775808 to 9223372036854775807",
    ),
    **{
        ("dbus", key): (
            "1",
            "expected a value of type `string`, but found a value of type `integer` for the key "
            f"`{key}`: expected a string in quotes",
        )
        for key in ("name", "path", "interface", "software_manager", "software_manager_path")
    },
    ("dbus", "timeout"): (
        "2147483648",
        "2147483648 is out of range for `i32` (-2147483648..=2147483647) for the key `timeout`: "
        "expected a whole number from -2147483648 to 2147483647",
    ),
}
#: The default each warning says is used, as TOML.
DEFAULTS_SHOWN = {
    ("network", "http_server"): '"127.0.0.1:8888"',
    ("network", "rvi_edge_server"): '"127.0.0.1:9080"',
    ("network", "socket_commands_path"): '"/tmp/sota-commands.socket"',
    ("network", "socket_events_path"): '"/tmp/sota-events.socket"',
    ("network", "socket_mode"): "0o660",
    ("network", "socket_group"): "(none)",
    ("network", "websocket_server"): '"127.0.0.1:3012"',
    ("network", "local_api_origins"): "[]",
    ("rvi", "client"): '"http://127.0.0.1:8901"',
    ("rvi", "storage_dir"): '"/var/sota"',
    ("rvi", "timeout"): "(none)",
    ("dbus", "name"): '"org.genivi.SotaClient"',
    ("dbus", "path"): '"/org/genivi/SotaClient"',
    ("dbus", "interface"): '"org.genivi.SotaClient"',
    ("dbus", "software_manager"): '"org.genivi.SoftwareLoadingManager"',
    ("dbus", "software_manager_path"): '"/org/genivi/SoftwareLoadingManager"',
    ("dbus", "timeout"): "60",
}
SECTION_DEFAULTS = {"network": NetworkConfig(), "rvi": RviConfig(), "dbus": DBusConfig()}
GATEWAY_SETTINGS = sorted(GATEWAY_OF)
ALL_GATEWAYS = ("console", "dbus", "http", "rvi", "socket", "websocket")


def test_every_gateway_setting_has_a_bad_value() -> None:
    assert set(BAD_VALUES) == set(DEFAULTS_SHOWN) == set(GATEWAY_OF)


def because(section: str, key: str) -> str:
    if section == "dbus":  # the rvi gateway uses [dbus] too
        return "because the dbus and rvi gateways are off"
    if key == "local_api_origins":  # both local-API gateways use it
        return "because the http and websocket gateways are off"
    return f"because the {GATEWAY_OF[section, key]} gateway is off"


# ---------------------------------------------------------------------------------------------
# The listen-address forms


@pytest.mark.parametrize(
    ("key", "text", "host", "port"),
    [
        ("http_server", "127.0.0.1:8888", "127.0.0.1", 8888),
        ("http_server", "http://127.0.0.1:8080", "127.0.0.1", 8080),
        ("http_server", "http://0.0.0.0:8888/", "0.0.0.0", 8888),
        ("http_server", "http://[::1]:8888", "::1", 8888),
        ("rvi_edge_server", "http://127.0.0.1:9080", "127.0.0.1", 9080),  # the guide's form
        ("rvi_edge_server", "[::]:9080", "::", 9080),
        ("websocket_server", "127.0.0.1:3012", "127.0.0.1", 3012),
        ("websocket_server", "ws://127.0.0.1:3012", "127.0.0.1", 3012),
        ("websocket_server", "WS://[fe80::1]:3012/", "fe80::1", 3012),
        ("websocket_server", "http://127.0.0.1:3012", "127.0.0.1", 3012),
    ],
)
def test_a_listen_address_is_ip_port_or_a_url_of_one(
    key: str, text: str, host: str, port: int
) -> None:
    gateway = GATEWAY_OF["network", key]
    config = parse_config(f'[gateway]\n{gateway} = true\n[network]\n{key} = "{text}"\n')
    assert getattr(config.network, key) == text  # as written
    assert parse_socket_addr(text) == (host, port)  # what the gateway binds
    assert f'{key} = "{text}"\n' in config_to_toml(config)  # --print keeps the text


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("http_server", "ws://127.0.0.1:8888"),  # ws:// is for the websocket gateway only
        ("rvi_edge_server", "ws://127.0.0.1:9080"),
        ("websocket_server", "localhost:3012"),  # 2016 passed any text to the ws crate
    ],
)
def test_other_url_forms_are_refused(key: str, text: str) -> None:
    gateway = GATEWAY_OF["network", key]
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[gateway]\n{gateway} = true\n[network]\n{key} = "{text}"\n', "f.toml")
    assert str(caught.value).startswith(
        f"f.toml:4: [network] {key}: Toml decode error: invalid IP address syntax for the key "
        f"`{key}`: expected IP:port such as "
    )


@pytest.mark.parametrize(
    "text",
    [
        "https://sota-core.gw.prod01.advancedtelematic.com",  # the guide's own example
        "wss://127.0.0.1:3012",
        "ws://localhost:3012",
        "ws://127.0.0.1:3012/socket",
    ],
)
def test_a_url_as_websocket_server_is_a_warning_even_with_the_gateway_on(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The 2016 guide describes websocket_server as Core's websocket server; it is local."""
    with caplog.at_level(logging.WARNING):
        config = parse_config(
            f'[gateway]\nwebsocket = true\n[network]\nwebsocket_server = "{text}"\n', "f.toml"
        )
    assert config.network.websocket_server == "127.0.0.1:3012"
    assert [r.getMessage() for r in caplog.records] == [
        f"f.toml:4: [network] websocket_server: Toml decode error: {text!r} is a URL, but this "
        "is the local address the websocket gateway listens on (the 2016 guide calls it the "
        "Core server's websocket, wrongly) for the key `websocket_server`; using the default "
        '"127.0.0.1:3012" instead'
    ]


def test_parse_socket_addr_takes_the_schemes_it_is_told() -> None:
    assert parse_socket_addr("ws://1.2.3.4:5") == ("1.2.3.4", 5)
    assert parse_socket_addr("http://1.2.3.4:5", schemes=("http",)) == ("1.2.3.4", 5)
    with pytest.raises(ValueError, match=r"^invalid IP address syntax$"):
        parse_socket_addr("ws://1.2.3.4:5", schemes=("http",))


@settings(max_examples=200, deadline=None)
@given(
    st.ip_addresses(),
    st.integers(0, 65535),
    st.sampled_from(["", "http://", "ws://", "HTTP://"]),
    st.sampled_from(["", "/"]),
)
def test_any_ip_and_port_splits_back(address: object, port: int, scheme: str, slash: str) -> None:
    host = str(address)
    shown = f"[{host}]" if ":" in host else host
    text = f"{scheme}{shown}:{port}{slash if scheme else ''}"
    assert parse_socket_addr(text) == (host, port)


def test_a_flag_takes_the_url_form_too() -> None:
    config = load_config(None, overrides={("network", "rvi_edge_server"): "http://127.0.0.1:1"})
    assert config.network.rvi_edge_server == "http://127.0.0.1:1"


# ---------------------------------------------------------------------------------------------
# Lenient while the gateway is off


def test_a_bad_address_of_a_gateway_that_is_off_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = '[gateway]\nsocket = true\n\n[network]\nrvi_edge_server = "localhost:9080"\n'
    config = parse_config(text, "/etc/sota.toml")
    assert config.network.rvi_edge_server == "127.0.0.1:9080"
    assert warnings_of(caplog) == [
        "/etc/sota.toml:5: [network] rvi_edge_server: Toml decode error: invalid IP address "
        "syntax for the key `rvi_edge_server`: expected IP:port such as 127.0.0.1:9080, or "
        'http://127.0.0.1:9080; using the default "127.0.0.1:9080" because the rvi gateway is off'
    ]


@pytest.mark.parametrize(("section", "key"), GATEWAY_SETTINGS, ids="{0[0]}.{0[1]}".format)
def test_every_gateway_setting_is_lenient_while_its_gateway_is_off(
    section: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    literal, problem = BAD_VALUES[section, key]
    others = "".join(
        f"{name} = true\n" for name in ALL_GATEWAYS if name != GATEWAY_OF[section, key]
    )
    if section == "dbus":
        others = others.replace("rvi = true\n", "")
    if key == "local_api_origins":
        others = others.replace("websocket = true\n", "")
    config = parse_config(f"[{section}]\n{key} = {literal}\n[gateway]\n{others}", "f.toml")
    assert getattr(config, section) == SECTION_DEFAULTS[section]
    assert warnings_of(caplog) == [
        f"f.toml:2: [{section}] {key}: Toml decode error: {problem}; using the default "
        f"{DEFAULTS_SHOWN[section, key]} {because(section, key)}"
    ]


@pytest.mark.parametrize(("section", "key"), GATEWAY_SETTINGS, ids="{0[0]}.{0[1]}".format)
def test_every_gateway_setting_is_strict_while_its_gateway_is_on(
    section: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    literal, problem = BAD_VALUES[section, key]
    gateway = GATEWAY_OF[section, key]
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[{section}]\n{key} = {literal}\n[gateway]\n{gateway} = true\n", "f.toml")
    assert str(caught.value) == f"f.toml:2: [{section}] {key}: Toml decode error: {problem}"
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("key", ["name", "timeout"])
def test_the_rvi_gateway_makes_dbus_strict_too(key: str) -> None:
    literal, problem = BAD_VALUES["dbus", key]
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[dbus]\n{key} = {literal}\n[gateway]\nrvi = true\n")
    assert caught.value.message == f"Toml decode error: {problem}"


def test_only_the_bad_value_falls_back_to_its_default(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        '[rvi]\nclient = "nope"\nstorage_dir = "/srv/rvi"\n'
        '[network]\nrvi-edge-server = "::1:9080"\nhttp_server = "http://127.0.0.1:1"\n'
    )
    config = parse_config(text, "f.toml")
    assert config.rvi == RviConfig(storage_dir="/srv/rvi")
    assert config.network == NetworkConfig(http_server="http://127.0.0.1:1")
    assert [message.partition(": Toml")[0] for message in warnings_of(caplog)] == [
        "f.toml:5: [network] rvi_edge_server",  # the dashed spelling's line
        "f.toml:2: [rvi] client",
    ]


def test_a_section_of_a_gateway_that_is_off_need_not_be_a_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config('rvi = "yes"\ndbus = 1\n', "f.toml")
    assert (config.rvi, config.dbus) == (None, None)
    assert sorted(warnings_of(caplog)) == [
        "f.toml: [dbus]: Toml decode error: expected a value of type `table`, but found a value "
        "of type `integer` for the key `dbus`; ignoring the section because the dbus and rvi "
        "gateways are off",
        "f.toml: [rvi]: Toml decode error: expected a value of type `table`, but found a value "
        "of type `string` for the key `rvi`; ignoring the section because the rvi gateway is off",
    ]
    with pytest.raises(ConfigError, match=r"^f\.toml: \[rvi\]: Toml decode error: expected a "):
        parse_config('rvi = "yes"\n[gateway]\nrvi = true\n', "f.toml")


def test_settings_no_gateway_uses_stay_strict() -> None:
    with pytest.raises(ConfigError, match="for the key `server`"):
        parse_config('[core]\nserver = "nope"\n')
    with pytest.raises(ConfigError, match="for the key `console`"):
        parse_config('[gateway]\nconsole = "yes"\n')


def test_a_switch_that_is_no_boolean_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^f\.toml:2: \[gateway\] rvi: Toml decode error: "):
        parse_config('[gateway]\nrvi = "true"\n[rvi]\nclient = "nope"\n', "f.toml")


def test_a_lenient_warning_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    parse_config('[network]\nhttp_server = "nope"\n', "a\nb\x1b.toml")
    [warning] = warnings_of(caplog)
    assert warning.startswith(
        "a\\nb\\x1b.toml:2: [network] http_server: Toml decode error: invalid IP address syntax"
    )


# ---------------------------------------------------------------------------------------------
# Flags switch gateways too, and win over the file


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """main() configures the root logger: put it back afterwards, and read no outside config."""
    for name in ("SOTA_CONFIG", "SOTA_LOG", "RUST_LOG"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_gateway_overrides_decide_before_the_file_is_decoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sota.toml"
    path.write_text('[gateway]\nrvi = true\n[rvi]\nclient = "nope"\n')
    with pytest.raises(ConfigError, match=r":4: \[rvi\] client: "):
        load_config(str(path))
    config = load_config(str(path), overrides={("gateway", "rvi"): False})
    assert (config.gateway.rvi, config.rvi) == (False, RviConfig())
    assert len(warnings_of(caplog)) == 1
    path.write_text('[rvi]\nclient = "nope"\n')
    with pytest.raises(ConfigError, match=r":2: \[rvi\] client: "):
        load_config(str(path), overrides={("gateway", "rvi"): True})


@pytest.mark.parametrize(
    ("in_file", "flags", "fatal"),
    [
        ("false", [], False),
        ("false", ["--gateway-rvi", "true"], True),  # a flag turning it on: strict again
        ("true", [], True),
        ("true", ["--gateway-rvi=false"], False),  # a flag turning it off: lenient
        ("false", ["--gateway-http=true"], False),  # another gateway changes nothing
    ],
)
def test_a_gateway_flag_beats_the_file(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    in_file: str,
    flags: list[str],
    fatal: bool,
) -> None:
    path = tmp_path / "sota.toml"
    path.write_text(f'[gateway]\nrvi = {in_file}\n\n[network]\nrvi_edge_server = "nope"\n')
    code, out, err = main(["--print", f"--config={path}", *flags]), *capsys.readouterr()
    problem = (
        "Toml decode error: invalid IP address syntax for the key `rvi_edge_server`: "
        f"expected {RVI_ADDR_FORM}"
    )
    if fatal:
        assert (code, out) == (1, "")
        assert err.splitlines()[-1] == (
            f"sota_client: {path}:5: [network] rvi_edge_server: {problem}"
        )
    else:
        assert code == 0
        assert parse_config(out).network.rvi_edge_server == "127.0.0.1:9080"
        [warning] = [line for line in err.splitlines() if " WARN - " in line]
        assert warning.endswith(
            f" WARN - {path}:5: [network] rvi_edge_server: {problem}; "
            'using the default "127.0.0.1:9080" because the rvi gateway is off'
        )


def test_the_default_config_has_no_gateway_on() -> None:
    gateway = default_config().gateway
    assert not any(getattr(gateway, name) for name in ALL_GATEWAYS)


def test_the_doc_shows_the_warning_as_the_client_writes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = DOCS.read_text()
    section = doc[doc.index("### Gateways that are off") :]
    [example] = re.findall(r"```text\n(.*?)\n```", section[: section.index("\n#")], re.DOTALL)
    text = "\n" * 10 + '[network]\nrvi_edge_server = "localhost"\n'  # on line 12
    assert parse_config(text, "/etc/sota.toml").network == NetworkConfig()
    assert warnings_of(caplog) == [example]
