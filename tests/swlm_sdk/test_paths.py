"""Socket path lookup: explicit > --config > $SOTA_CONFIG > the 2016 defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from swlm_sdk import (
    DEFAULT_COMMANDS_SOCKET,
    DEFAULT_EVENTS_SOCKET,
    ConfigError,
    SocketPaths,
    read_socket_paths,
    resolve_socket_paths,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_2016_ones() -> None:
    assert resolve_socket_paths(environ={}) == SocketPaths(
        "/tmp/sota-commands.socket", "/tmp/sota-events.socket"
    )
    assert (DEFAULT_COMMANDS_SOCKET, DEFAULT_EVENTS_SOCKET) == (
        "/tmp/sota-commands.socket",
        "/tmp/sota-events.socket",
    )


def test_network_section(tmp_path: Path) -> None:
    config = write(
        tmp_path / "sota.toml",
        '[core]\nserver = "http://x"\n[network]\nsocket_commands_path = "/run/c.sock"\n'
        'socket_events_path = "/run/e.sock"\nhttp_server = "127.0.0.1:8888"\n',
    )
    assert read_socket_paths(config) == SocketPaths("/run/c.sock", "/run/e.sock")


def test_dashed_keys_and_partial_config(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", '[network]\nsocket-events-path = "/run/e.sock"\n')
    assert read_socket_paths(config) == SocketPaths(DEFAULT_COMMANDS_SOCKET, "/run/e.sock")
    # The exact spelling wins over the dashed one, as toml 0.2.1 looked it up first.
    both = write(
        tmp_path / "b.toml",
        '[network]\nsocket_events_path = "/a.sock"\nsocket-events-path = "/b.sock"\n',
    )
    assert read_socket_paths(both).events == "/a.sock"


def test_no_network_section_means_defaults(tmp_path: Path) -> None:
    assert read_socket_paths(write(tmp_path / "c.toml", "[core]\npolling = false\n")) == (
        SocketPaths()
    )


def test_lookup_order(tmp_path: Path) -> None:
    env_config = write(tmp_path / "env.toml", '[network]\nsocket_commands_path = "/env.sock"\n')
    arg_config = write(tmp_path / "arg.toml", '[network]\nsocket_commands_path = "/arg.sock"\n')
    env = {"SOTA_CONFIG": str(env_config)}
    assert resolve_socket_paths(environ=env).commands == "/env.sock"
    assert resolve_socket_paths(config=arg_config, environ=env).commands == "/arg.sock"
    explicit = resolve_socket_paths(commands_socket="/x.sock", config=arg_config, environ=env)
    assert explicit == SocketPaths("/x.sock", DEFAULT_EVENTS_SOCKET)
    assert resolve_socket_paths(environ={"SOTA_CONFIG": ""}) == SocketPaths()


def test_explicit_paths_never_read_the_config(tmp_path: Path) -> None:
    both = resolve_socket_paths(
        commands_socket="/c", events_socket="/e", config=tmp_path / "missing.toml"
    )
    assert both == SocketPaths("/c", "/e")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auth]", "is not valid TOML"),
        ("[network]\nsocket_commands_path = 5\n", "socket_commands_path must be a string"),
        ('[network]\nsocket_events_path = ""\n', "path is empty"),
        ("network = 3\n", r"\[network\] must be a table"),
        (f'[network]\nsocket_events_path = "/{"x" * 120}"\n', "at most 107"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=message):
        resolve_socket_paths(config=config)


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*missing\.toml"):
        resolve_socket_paths(config=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read config"):
        resolve_socket_paths(config=tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        read_socket_paths(binary)


def test_nul_in_path() -> None:
    with pytest.raises(ConfigError, match="NUL"):
        resolve_socket_paths(commands_socket="/a\0b", events_socket="/e")
