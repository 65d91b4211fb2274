"""The daemon configuration: the 2016 TOML format (plus a few additive keys) as a typed Config.

This module is the whole config API and its one pipeline: read the file, decode it, apply the
command-line flags, then settle the ``[auth]`` credentials. The parts live in their own modules:
``_config_schema`` (sections and keys), ``_config_kinds`` (value checks and TOML literals),
``_config_reader`` (file, tomllib, decoding, line numbers), ``_config_writer`` (``--print``),
``_credentials`` (the credentials file) and ``_config_errors`` (``ConfigError``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from msgspec.structs import replace

from sota_client._config_errors import ConfigError
from sota_client._config_kinds import PackageManager, parse_socket_addr
from sota_client._config_reader import MAX_DOTS as MAX_DOTS
from sota_client._config_reader import MAX_FILE_SIZE as MAX_FILE_SIZE
from sota_client._config_reader import _Document as _Document
from sota_client._config_reader import decode_config, read_config_text
from sota_client._config_schema import _SECTION_SETTINGS as _SECTION_SETTINGS
from sota_client._config_schema import _SECTIONS as _SECTIONS
from sota_client._config_schema import (
    AuthConfig,
    Config,
    CoreConfig,
    DBusConfig,
    DeviceConfig,
    GatewayConfig,
    NetworkConfig,
    RviConfig,
)
from sota_client._config_schema import _Setting as _Setting
from sota_client._config_writer import config_to_toml
from sota_client._credentials import LATE_OVERRIDES, settle_auth

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

logger = logging.getLogger("sota_client.config")


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
    path: str | None,
    *,
    overrides: Mapping[tuple[str, str], Any] | None = None,
    quiet: bool = False,
    credentials: bool = True,
) -> Config:
    """Read the config file at ``path`` (or the defaults if None) and apply ``overrides``.

    ``overrides`` maps ``(section, key)`` to an already-parsed value, as the command-line flags
    do. An override for an absent optional section creates that section from its defaults.
    Overrides apply before the credentials bootstrap, except ``client_id`` and ``client_secret``,
    which apply after it and are never written to the credentials file. ``[gateway]`` overrides
    also decide, before the file is decoded, which gateways' settings are read leniently.
    ``quiet`` leaves out the lines saying which file is read or that the defaults are used
    (for commands whose output is a report); warnings about the file's content remain.
    ``credentials=False`` skips the credentials bootstrap, which may read or create the
    credentials file: for commands that only read, like ``sota_client status``.
    """
    if path is None:
        if not quiet:
            logger.warning("No config file given. Falling back to defaults.")
        return _resolve("", "<defaults>", overrides or {}, credentials=credentials)
    if not quiet:
        logger.info("Loading config file: %s", path)
    return _resolve(read_config_text(path), path, overrides or {}, credentials=credentials)


def _resolve(
    text: str,
    source: str,
    overrides: Mapping[tuple[str, str], Any],
    *,
    credentials: bool = True,
) -> Config:
    """Decode, apply the overrides, and settle the credentials: the whole load pipeline."""
    gateways = {key: value for (name, key), value in overrides.items() if name == "gateway"}
    config, given = decode_config(text, source, gateways)
    config = _override(config, overrides)
    if config.auth is not None and credentials:
        in_file = {key for section, key in given if section == "auth"}
        late = {
            key: value for (name, key), value in overrides.items() if (name, key) in LATE_OVERRIDES
        }
        config = replace(config, auth=settle_auth(config.auth, source, in_file, late))
    return config


def _override(config: Config, overrides: Mapping[tuple[str, str], Any]) -> Config:
    """Apply flag values; a flag for an absent section creates it from defaults (2016 ignored
    such flags). The late credential flags only do the latter: they apply after the file."""
    sections: dict[str, Any] = {}
    for (name, key), value in overrides.items():
        section = sections.get(name) or getattr(config, name) or _SECTIONS[name]
        late = (name, key) in LATE_OVERRIDES
        sections[name] = section if late else replace(section, **{key: value})
    return replace(config, **sections)
