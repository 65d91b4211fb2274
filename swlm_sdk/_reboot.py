"""Updates that count only after a reboot: what a handler returns, what the hooks are given,
and how a reboot is told from a restart of the SWLM (the kernel's boot id)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ._errors import ConfigError

if TYPE_CHECKING:
    from ._paths import StrPath

__all__ = ["DEFAULT_BOOT_ID_FILE", "AwaitingConfirmation", "RebootNeeded", "read_boot_id"]

DEFAULT_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
"""Linux gives each boot a new random id here; a restart of the SWLM keeps it."""

_MAX_BOOT_ID = 128


class RebootNeeded(msgspec.Struct, frozen=True):
    """What an install handler returns when the update is installed but counts only once the
    device has rebooted into it and it is confirmed (an A/B slot switch, a new kernel).

    The App keeps the report back until then: after each boot its ``on_boot`` hook (or
    ``swlm confirm``) decides, and an update not confirmed within ``confirm_boots`` boots is
    rolled back (``on_rollback``) at the start of the next one and reported failed. ``text``
    is shown by the daemon's status and becomes the text of the final report unless the hook
    gives another.
    """

    text: str = ""


class AwaitingConfirmation(msgspec.Struct, frozen=True):
    """An update that awaits its confirmation after a reboot, as the hooks are given it.

    :ivar update_id: the update.
    :ivar text: what the install handler said in its :class:`RebootNeeded`.
    :ivar boots: the boots into it so far, this one included; for ``on_rollback``, the boots
        it went unconfirmed (``confirm_boots``).
    :ivar manual: (``on_boot``) someone asked for the confirmation: ``swlm confirm`` from a
        shell, or :meth:`App.confirm`.
    """

    update_id: str
    text: str
    boots: int
    manual: bool = False


def read_boot_id(path: StrPath = DEFAULT_BOOT_ID_FILE) -> str:
    """The id of the running boot.

    :raises ConfigError: it cannot be read (not Linux, or no ``/proc``), naming the file.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_BOOT_ID + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot tell a reboot from a restart: the boot id in {path} is unreadable "
            f"({exc.strerror or exc})"
        ) from None
    boot_id = data.decode("ascii", "replace").strip()
    if not boot_id or len(data) > _MAX_BOOT_ID or not boot_id.isprintable():
        raise ConfigError(f"cannot tell a reboot from a restart: {path} holds no boot id")
    return boot_id
