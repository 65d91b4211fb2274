"""The one rule for update ids, checked wherever an id enters the daemon.

An id arrives from a command (socket, console, later D-Bus and HTTP), from Core's update list and
from the journal, and it becomes a file name in ``packages_dir`` and a segment of a Core URL. So
it must be a safe single file name, short enough that ``<id>.part`` fits and that its
percent-encoded form keeps every URL well within limits.
"""

from __future__ import annotations

from swlm_sdk.protocol import (
    Command,
    SendInstallProgress,
    SendRebootNeeded,
    SendUpdateReport,
    StartDownload,
    StartInstall,
)

from ._errors import InvalidIdError

__all__ = [
    "MAX_ID_BYTES",
    "PART_SUFFIX",
    "check_update_id",
    "command_update_id",
    "id_problem",
    "shown_id",
]

PART_SUFFIX = ".part"
MAX_ID_BYTES = 255 - len(PART_SUFFIX)
"""So that ``<id>.part`` still fits the 255-byte file-name limit of Linux file systems."""


def check_update_id(update_id: str) -> str:
    """Return ``update_id`` if it is safe as a single file name, else raise InvalidIdError.

    Allowed: any non-empty text of at most 250 UTF-8 bytes (so ``<id>.part`` fits a file name)
    without ``/``, NUL or other control characters, not starting with ``.`` (which rules out
    ``.``, ``..`` and hidden files) and not ending in ``.part`` (the partial-download suffix).
    UUIDs and names such as ``1``, ``u1`` and ``fake-pkg_1.0`` pass.

    :raises InvalidIdError: naming the problem.
    """
    problem = id_problem(update_id)
    if problem is not None:
        raise InvalidIdError(f"Invalid update id {shown_id(update_id)}: {problem}")
    return update_id


def shown_id(update_id: str) -> str:
    """An id as it appears in messages: quoted, and cut short if it is long."""
    return repr(update_id[:64] + "..." if len(update_id) > 64 else update_id)


def id_problem(update_id: object) -> str | None:
    """What is wrong with ``update_id`` as an update id, or None if it is fine."""
    if not isinstance(update_id, str):
        return "it is not a string"
    if not update_id:
        return "it is empty"
    if update_id.startswith("."):
        return "it starts with '.'"
    if "/" in update_id:
        return "it contains '/'"
    if any(ord(c) < 0x20 or c == "\x7f" for c in update_id):
        return "it contains a control character"
    try:
        size = len(update_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_ID_BYTES:
        return f"it is longer than {MAX_ID_BYTES} bytes"
    if update_id.endswith(PART_SUFFIX):
        return f"it ends with {PART_SUFFIX!r}, the suffix of partial downloads"
    return None


def command_update_id(command: Command) -> str | None:
    """The update id a command acts on, if any: it must pass the one id rule."""
    match command:
        case StartDownload(update_id=update_id) | StartInstall(update_id=update_id):
            return update_id
        case SendUpdateReport(report=report):
            return report.update_id
        case SendInstallProgress(update_id=update_id) | SendRebootNeeded(update_id=update_id):
            return update_id
    return None
