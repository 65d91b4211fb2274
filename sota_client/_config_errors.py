"""``ConfigError`` and the one-line ``file:line: [section] key: ...`` form of every config message.

Errors and warnings share that form, and a key or value from the file, which may hold any
character, must never break one in two or drive the terminal.
"""

from __future__ import annotations

from sota_client._errors import SotaError

__all__ = ["ConfigError", "location", "one_line"]


class ConfigError(SotaError):
    """The configuration cannot be used; the daemon must not start.

    ``str(error)`` is the whole one-line message for the user: where the problem is (file, line,
    ``[section] key``), then the 2016 error text, e.g.
    ``/etc/sota.toml:3: [core] polling: Toml decode error: expected a value of type `bool`, but
    found a value of type `string` for the key `polling```. ``message`` holds the text after
    the location alone.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.line = line
        self.section = section
        self.key = key

    def __str__(self) -> str:
        where = location(self.source, self.line, self.section, self.key)
        return one_line(": ".join([*where, self.message]))


#: Control characters (and everything ``str.splitlines`` breaks at) as escapes.
_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def one_line(text: str) -> str:
    """``text`` with every control character escaped, so that it stays one line."""
    return text if text.isprintable() else text.translate(_ESCAPES)


def location(
    source: str | None, line: int | None, section: str | None, key: str | None
) -> list[str]:
    """The ``file:line`` and ``[section] key`` parts that prefix errors and warnings."""
    parts = []
    if source is not None:
        parts.append(source if line is None else f"{source}:{line}")
    where = " ".join(part for part in (f"[{section}]" if section else None, key) if part)
    if where:
        parts.append(where)
    return parts
