"""Reading the D-Bus gateway's arguments as peers really send them: typed, or wrapped in variants.

jeepney gives a variant as ``(signature, value)`` and a dict entry's value the same way, so one
argument can arrive as ``s`` or ``v`` (a string inside), and ``aa{sv}`` as itself, ``av`` or
``v``. Everything here unwraps by signature, never by guessing from Python types, and says in
plain words what was wrong: those words go back to the caller in its D-Bus error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swlm_sdk.protocol import (
    InstalledFirmware,
    InstalledPackage,
    InstalledSoftware,
    OperationResult,
    ProtocolError,
    ResultCode,
)

__all__ = [
    "MAX_RESULTS",
    "MAX_TEXT",
    "ArgumentError",
    "installed_software",
    "operation_results",
    "split_signature",
    "string_argument",
]

MAX_RESULTS = 256  # operation results in one report; a manifest has a handful
MAX_TEXT = 4096  # characters of a result text kept, as the SDK keeps
MAX_PACKAGES = 100_000
_INTEGERS = frozenset("ynqiuxt")
_BASIC = frozenset("ybnqiuxtdsogh")


class ArgumentError(ValueError):
    """An argument that cannot be used; ``missing`` for one that is not there at all."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def split_signature(signature: str) -> list[str]:
    """The complete types of a message signature: ``"saa{sv}"`` → ``["s", "aa{sv}"]``."""
    types = []
    position = 0
    while position < len(signature):
        end = _type_end(signature, position)
        types.append(signature[position:end])
        position = end
    return types


def _type_end(signature: str, start: int) -> int:
    char = signature[start]
    if char == "a":
        if start + 1 >= len(signature):
            raise ArgumentError(f"the signature {signature!r} is malformed")
        return _type_end(signature, start + 1)
    if char in "({":
        close = ")" if char == "(" else "}"
        position = start + 1
        while position < len(signature) and signature[position] != close:
            position = _type_end(signature, position)
        if position >= len(signature):
            raise ArgumentError(f"the signature {signature!r} is malformed")
        return position + 1
    if char in _BASIC or char == "v":
        return start + 1
    raise ArgumentError(f"the signature {signature!r} is malformed")


def unwrap(signature: str, value: Any) -> tuple[str, Any]:
    """Take a value out of any depth of variants: ``("v", ("s", "x"))`` → ``("s", "x")``."""
    depth = 0
    while signature == "v":
        if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[0], str):
            raise ArgumentError("a variant could not be read")
        signature, value = value
        depth += 1
        if depth > 32:
            raise ArgumentError("variants are nested too deeply")
    return signature, value


def string_argument(signature: str, value: Any, what: str) -> str:
    """A string argument, plain (``s``) or in a variant."""
    signature, value = unwrap(signature, value)
    if signature != "s" or not isinstance(value, str):
        raise ArgumentError(f"{what} must be a string, not a value of type {signature!r}")
    return value


def operation_results(signature: str, value: Any, update_id: str) -> tuple[OperationResult, ...]:
    """The ``aa{sv}`` of ``updateReport``: each dict's ``id``, ``result_code`` and
    ``result_text``, values in variants or not.

    ``result_code`` may be any integer type or a verbal name (``INSTALL_FAILED``), and must be
    there: 2016 read every code as OK (reference §11.6, bug 51). A missing ``id`` is the update
    id, as 2016's single-result reports had.
    """
    signature, value = unwrap(signature, value)
    if not signature.startswith("a") or not isinstance(value, list):
        raise ArgumentError(
            f"the operation results must be an array of dicts (aa{{sv}}), not {signature!r}"
        )
    if len(value) > MAX_RESULTS:
        raise ArgumentError(f"more than {MAX_RESULTS} operation results")
    element = signature[1:]
    return tuple(
        _operation_result(element, item, number, update_id)
        for number, item in enumerate(value, start=1)
    )


def _operation_result(signature: str, value: Any, number: int, update_id: str) -> OperationResult:
    entries = _dict_entries(signature, value, f"operation result {number}")
    if "result_code" not in entries:
        raise ArgumentError(f"operation result {number} has no result_code", missing=True)
    code = _result_code(*entries["result_code"], number)
    op_id = update_id
    if "id" in entries:
        op_id = string_argument(*entries["id"], f"the id of operation result {number}")
    text = ""
    if "result_text" in entries:
        text = string_argument(*entries["result_text"], f"the result_text of result {number}")
    return OperationResult(op_id, code, text[:MAX_TEXT])


def _dict_entries(signature: str, value: Any, what: str) -> dict[str, tuple[str, Any]]:
    """A dict with string keys, each value with its signature (``a{sv}``, ``a{ss}``...)."""
    signature, value = unwrap(signature, value)
    if not (signature.startswith("a{s") and signature.endswith("}")) or not isinstance(value, dict):
        raise ArgumentError(f"{what} must be a dict with string keys (a{{sv}}), not {signature!r}")
    value_signature = signature[3:-1]
    return {str(key): (value_signature, item) for key, item in value.items()}


def _result_code(signature: str, value: Any, number: int) -> ResultCode:
    signature, value = unwrap(signature, value)
    try:
        if signature in _INTEGERS and isinstance(value, int):
            return ResultCode.parse(value)
        if signature == "s" and isinstance(value, str):
            return ResultCode.parse(value)
    except ProtocolError as exc:
        raise ArgumentError(f"the result_code of operation result {number}: {exc}") from None
    raise ArgumentError(
        f"the result_code of operation result {number} must be an integer or a name such as "
        f"INSTALL_FAILED, not a value of type {signature!r}"
    )


def installed_software(signature: str, body: Sequence[Any]) -> InstalledSoftware:
    """The reply to ``getInstalledPackages``: the GENIVI SWLM's ``as`` (package names), or the
    2016 client's pair of ``aa{sv}`` (packages, then firmwares)."""
    types = split_signature(signature)
    if types == ["as"]:
        names = body[0]
        if len(names) > MAX_PACKAGES:
            raise ArgumentError(f"more than {MAX_PACKAGES} packages")
        if not all(isinstance(name, str) and name for name in names):
            raise ArgumentError("a package name is empty")
        return InstalledSoftware(
            packages=tuple(InstalledPackage(name, name, "", 0) for name in names)
        )
    if len(types) == 2 and all(kind.startswith("a") for kind in types):
        packages = tuple(
            InstalledPackage(
                _text(entries, "package_id"),
                _text(entries, "name"),
                _text(entries, "description"),
                _number(entries, "last_modified"),
            )
            for entries in _dicts(types[0], body[0], "package")
        )
        firmwares = tuple(_firmware(entries) for entries in _dicts(types[1], body[1], "firmware"))
        return InstalledSoftware(packages=packages, firmwares=firmwares)
    raise ArgumentError(
        f"getInstalledPackages answered {signature!r}; expected 'as' (package names) or "
        "'aa{sv}aa{sv}' (packages and firmwares)"
    )


def _firmware(entries: dict[str, tuple[str, Any]]) -> InstalledFirmware:
    return InstalledFirmware(
        _text(entries, "module"), _text(entries, "firmware_id"), _number(entries, "last_modified")
    )


def _dicts(signature: str, value: Any, what: str) -> list[dict[str, tuple[str, Any]]]:
    if not isinstance(value, list):
        raise ArgumentError(f"the {what}s must be an array")
    if len(value) > MAX_PACKAGES:
        raise ArgumentError(f"more than {MAX_PACKAGES} {what}s")
    return [
        _dict_entries(signature[1:], item, f"{what} {number}")
        for number, item in enumerate(value, start=1)
    ]


def _text(entries: dict[str, tuple[str, Any]], key: str) -> str:
    if key not in entries:
        return ""
    return string_argument(*entries[key], key)


def _number(entries: dict[str, tuple[str, Any]], key: str) -> int:
    if key not in entries:
        return 0
    signature, value = unwrap(*entries[key])
    if signature not in _INTEGERS or not isinstance(value, int):
        raise ArgumentError(f"{key} must be an integer, not a value of type {signature!r}")
    return value
