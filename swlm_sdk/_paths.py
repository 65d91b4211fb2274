"""Where the two sockets are: explicit paths, else the daemon's TOML config, else the 2016 defaults.

Lookup order: an explicit path argument, then ``config`` (``--config PATH``), then the
``SOTA_CONFIG`` environment variable, then ``/tmp/sota-commands.socket`` and
``/tmp/sota-events.socket``. Only the ``[network]`` section of the config is read.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any, TypeAlias

import msgspec

from ._errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_COMMANDS_SOCKET",
    "DEFAULT_EVENTS_SOCKET",
    "SocketPaths",
    "StrPath",
    "check_socket_path",
    "read_socket_paths",
    "resolve_socket_paths",
]

StrPath: TypeAlias = str | os.PathLike[str]

DEFAULT_COMMANDS_SOCKET = "/tmp/sota-commands.socket"
DEFAULT_EVENTS_SOCKET = "/tmp/sota-events.socket"
CONFIG_ENV = "SOTA_CONFIG"

# sockaddr_un.sun_path is 108 bytes on Linux, one of which is the terminating NUL.
_MAX_SOCKET_PATH = 107
# A daemon config is a few hundred bytes; refuse to slurp something that is clearly not one.
_MAX_CONFIG_BYTES = 1 << 20


class SocketPaths(msgspec.Struct, frozen=True):
    """The commands socket (the daemon listens) and the events socket (the SWLM listens)."""

    commands: str = DEFAULT_COMMANDS_SOCKET
    events: str = DEFAULT_EVENTS_SOCKET


def check_socket_path(path: StrPath, what: str) -> str:
    """Return ``path`` as a str if it can name a Unix socket, else raise a clear ConfigError."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise ConfigError(f"{what} path must be text, got {type(text).__name__}")
    if not text:
        raise ConfigError(f"{what} path is empty")
    if "\0" in text:
        raise ConfigError(f"{what} path {text!r} contains a NUL byte")
    size = len(os.fsencode(text))
    if size > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"{what} path is {size} bytes long; a Unix socket path can have at most "
            f"{_MAX_SOCKET_PATH}: {text!r}"
        )
    return text


def _network_value(network: Mapping[str, Any], key: str, config: str) -> str | None:
    # toml 0.2.1 (2016) matched a key's exact name first, then the name with '_' -> '-'.
    for spelling in (key, key.replace("_", "-")):
        if spelling in network:
            value = network[spelling]
            if not isinstance(value, str):
                raise ConfigError(
                    f"{config}: [network] {spelling} must be a string, "
                    f"got {type(value).__name__} {value!r}"
                )
            return check_socket_path(value, f"{config}: [network] {spelling}")
    return None


def read_socket_paths(config: StrPath) -> SocketPaths:
    """Read ``socket_commands_path`` and ``socket_events_path`` from a daemon TOML config.

    Missing keys (or a missing ``[network]`` section) keep the 2016 defaults; the dashed
    spellings ``socket-commands-path``/``socket-events-path`` are accepted as in 2016.

    :raises ConfigError: the file cannot be read, is not TOML, or a value is not a path.
    """
    name = os.fspath(config)
    try:
        with open(name, "rb") as file:
            data = file.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {name}: {exc.strerror or exc}") from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"config {name} is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        document = tomllib.loads(data.decode())
    except UnicodeDecodeError:
        raise ConfigError(f"config {name} is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {name} is not valid TOML: {exc}") from None
    network = document.get("network", {})
    if not isinstance(network, dict):
        raise ConfigError(f"config {name}: [network] must be a table")
    return SocketPaths(
        commands=_network_value(network, "socket_commands_path", name) or DEFAULT_COMMANDS_SOCKET,
        events=_network_value(network, "socket_events_path", name) or DEFAULT_EVENTS_SOCKET,
    )


def resolve_socket_paths(
    *,
    commands_socket: StrPath | None = None,
    events_socket: StrPath | None = None,
    config: StrPath | None = None,
    environ: Mapping[str, str] | None = None,
) -> SocketPaths:
    """Find both socket paths: explicit argument > ``config`` > ``$SOTA_CONFIG`` > defaults.

    The config file is read only when a path is not given explicitly.

    :raises ConfigError: a path is unusable or the config file cannot be read.
    """
    if commands_socket is not None and events_socket is not None:
        base = SocketPaths()
    else:
        env = os.environ if environ is None else environ
        source = config if config is not None else env.get(CONFIG_ENV) or None
        base = read_socket_paths(source) if source is not None else SocketPaths()
    return SocketPaths(
        commands=check_socket_path(
            base.commands if commands_socket is None else commands_socket, "commands socket"
        ),
        events=check_socket_path(
            base.events if events_socket is None else events_socket, "events socket"
        ),
    )
