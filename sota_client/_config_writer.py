"""Writing a Config back as TOML (``sota_client --print``), in the schema's section and key order.

Each value is written by its kind, as the text the reader reads back to the same value.
"""

from __future__ import annotations

from sota_client._config_schema import _SECTION_SETTINGS, _SECTIONS, Config

__all__ = ["config_to_toml"]


def config_to_toml(config: Config) -> str:
    """Write ``config`` as TOML that reads back to an equal ``Config`` (used by ``--print``).

    Absent optional sections and unset optional keys are left out; a switched-off
    ``system_info`` is written as ``""``.
    """
    blocks = []
    for name in _SECTIONS:
        section = getattr(config, name)
        if section is None:
            continue
        lines = [f"[{name}]"]
        for setting in _SECTION_SETTINGS[name]:
            value = getattr(section, setting.key)
            if value is not None or setting.default is not None:
                lines.append(f"{setting.key} = {setting.kind.dump(value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
