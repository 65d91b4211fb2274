"""JSON helpers shared by the event and command codecs: 2016 escaping and error translation."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .._errors import ProtocolError
from ._codes import ResultCode

__all__ = ["convert", "encode", "load"]

T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    """Compact JSON exactly as rustc-serialize 0.3 wrote it.

    msgspec already matches it byte for byte except for DEL, which rustc-serialize escaped.
    """
    data = _ENCODER.encode(value)
    if b"\x7f" in data:  # DEL is never part of a multi-byte UTF-8 sequence
        data = data.replace(b"\x7f", b"\\u007f")
    return data


def load(data: bytes | str, what: str) -> Any:
    """Parse untrusted JSON text into builtins, or raise ProtocolError naming ``what``."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply") from None


def convert(obj: Any, type_: type[T], what: str) -> T:
    """Validate builtins against a payload type; result codes may be numbers or names."""
    try:
        return msgspec.convert(_codes_by_name(obj), type_)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"{what}: nested too deeply") from None


def _codes_by_name(obj: Any) -> Any:
    """Turn ``"result_code": "OK"`` into ``0`` anywhere inside ``obj``.

    The 2016 encoder wrote numbers but its decoder read only names, so peers send both.
    """
    if isinstance(obj, list):
        return [_codes_by_name(item) for item in obj]
    if isinstance(obj, dict):
        out = {key: _codes_by_name(value) for key, value in obj.items()}
        code = out.get("result_code")
        if isinstance(code, str):
            out["result_code"] = ResultCode.parse(code).value
        return out
    return obj
