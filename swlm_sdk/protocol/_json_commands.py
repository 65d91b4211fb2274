"""Commands in their 2016 JSON form (reference 2.5), as the HTTP and websocket gateways take them.

rustc-serialize's enum encoding: a unit command is a bare string (``"GetUpdateRequests"``),
others ``{"variant": "StartDownload", "fields": ["<id>"]}``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .._errors import ProtocolError
from ._commands import (
    Authenticate,
    Command,
    GetUpdateRequests,
    ListInstalledPackages,
    ListSystemInfo,
    SendInstalledPackages,
    SendInstalledSoftware,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
)
from ._json import convert, load
from ._models import ClientCredentials, InstalledSoftware, Package, UpdateReport

__all__ = ["JSON_COMMAND_EXAMPLE", "decode_json_command"]

T = TypeVar("T")

JSON_COMMAND_EXAMPLE = '{"variant":"GetUpdateRequests","fields":[]}'
_EXAMPLE = JSON_COMMAND_EXAMPLE


_UNIT: dict[str, type[Command]] = {
    cls.name: cls
    for cls in (GetUpdateRequests, ListInstalledPackages, ListSystemInfo, SendSystemInfo, Shutdown)
}
_ONE_FIELD = ("StartDownload", "StartInstall", "SendInstalledPackages", "SendInstalledSoftware")
_NAMES = (
    "Authenticate",
    *_UNIT,
    *_ONE_FIELD,
    "SendUpdateReport",
)


def decode_json_command(data: bytes | str) -> Command:
    """Read a command in its 2016 JSON form (rustc-serialize): ``"GetUpdateRequests"`` or
    ``{"variant":"StartDownload","fields":["<id>"]}``.

    As in 2016, extra keys are ignored and result codes may be names (``"OK"``); additions:
    numbers too, and ``Authenticate`` without its ``null``.

    :raises ProtocolError: the input is not a command; the message says why.
    """
    obj = load(data, "command")
    fields: Any = None
    if isinstance(obj, str):
        name = obj
    elif isinstance(obj, dict):
        variant = obj.get("variant")
        if not isinstance(variant, str):
            raise ProtocolError(f'a command object needs a string "variant", as in {_EXAMPLE}')
        name = variant
        fields = obj.get("fields")
    else:
        raise ProtocolError(
            f'a command must be a JSON string such as "GetUpdateRequests" or an object such as '
            f"{_EXAMPLE}"
        )
    if name not in _NAMES:
        shown = repr(name if len(name) <= 80 else name[:79] + "…")
        raise ProtocolError(f"unknown command {shown}; the commands are {', '.join(_NAMES)}")
    if fields is not None and not isinstance(fields, list):
        raise ProtocolError(f'command {name}: "fields" must be a list')
    if name in _UNIT:
        if fields:
            raise ProtocolError(f"command {name} takes no fields, got {len(fields)}")
        return _UNIT[name]()
    if name == "Authenticate":
        if not fields or (len(fields) == 1 and fields[0] is None):
            return Authenticate()
        _want_one(name, fields)
        return Authenticate(_field(fields, ClientCredentials, name))
    fields = _want_one(name, fields)
    if name == "StartDownload":
        return StartDownload(_field(fields, str, name))
    if name == "StartInstall":
        return StartInstall(_field(fields, str, name))
    if name == "SendInstalledPackages":
        packages = _field(fields, list[Package], name)
        return SendInstalledPackages(tuple(packages))
    if name == "SendInstalledSoftware":
        return SendInstalledSoftware(_field(fields, InstalledSoftware, name))
    return SendUpdateReport(_field(fields, UpdateReport, name))


def _want_one(name: str, fields: list[object] | None) -> list[object]:
    if fields is None:
        raise ProtocolError(f'command {name} needs "fields": [<its argument>]')
    if len(fields) != 1:
        raise ProtocolError(f"command {name} takes 1 field, got {len(fields)}")
    return fields


def _field(fields: list[object], type_: type[T], name: str) -> T:
    return convert(fields[0], type_, f"command {name}")
