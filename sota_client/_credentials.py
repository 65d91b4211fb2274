"""The ``[auth] credentials_file`` bootstrap: read the device's credentials, or save them once.

As in 2016 this runs while the config loads (``--print`` too): an existing file's credentials
beat the config's, and a missing file is created from the config, mode 0600 from the start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from msgspec.structs import replace

from sota_client._config_errors import ConfigError
from sota_client._config_kinds import STRING, toml_string
from sota_client._config_reader import (
    _Document,
    decode_utf8,
    io_errors,
    parse_toml,
    read_file,
    take,
)
from sota_client._config_schema import AuthConfig
from sota_client._errors import io_error_text

__all__ = ["CREDENTIAL_KEYS", "LATE_OVERRIDES", "settle_auth"]

logger = logging.getLogger("sota_client.config")

#: Flags applied after the credentials file is read, so that they beat it (and are never saved).
LATE_OVERRIDES = frozenset({("auth", "client_id"), ("auth", "client_secret")})
CREDENTIAL_KEYS = ("client_id", "client_secret")


def settle_auth(
    auth: AuthConfig, source: str, given: set[str], late: Mapping[str, str]
) -> AuthConfig:
    """Read (or create) the credentials file, then apply the late flags.

    An existing file's ``client_id``/``client_secret`` beat the config's. A missing file is
    created from the config's values, but only if the config file sets both (``given`` holds
    the ``[auth]`` keys it sets): placeholder credentials saved there would later override a
    corrected config.
    """
    known = given.intersection(CREDENTIAL_KEYS)
    path = auth.credentials_file
    if path is not None:
        stored = _read_credentials(path)
        if stored is None and known == set(CREDENTIAL_KEYS):
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
            known.update(CREDENTIAL_KEYS)
    auth = replace(auth, **late)
    for key in CREDENTIAL_KEYS:
        if key not in known and key not in late:
            logger.warning("%s: [auth] %s not set; using %r", source, key, getattr(auth, key))
    return auth


def _read_credentials(path: str) -> dict[str, str] | None:
    """``client_id`` and ``client_secret`` from the file's ``[auth]`` table; None if no file."""
    try:
        data = read_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(io_error_text(exc), source=path) from exc
    text = decode_utf8(data, path)
    document = _Document(path, text)
    table = document.table(parse_toml(text, path), "auth")
    if table is None:
        raise ConfigError("Bad Config: no [auth] section", source=path)
    return {key: document.value("auth", key, STRING, take(table, key)) for key in CREDENTIAL_KEYS}


def _create_credentials(path: str, client_id: str, client_secret: str) -> dict[str, str]:
    """Write a new credentials file, mode 0600 from the moment it exists (no umask window)."""
    text = f"[auth]\nclient_id = {toml_string(client_id)}\nclient_secret = "
    text += f"{toml_string(client_secret)}\n"
    with io_errors(path):
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
