"""What an SWLM says of its install: ``SendInstallProgress`` (how far it got) and
``SendRebootNeeded`` (installed, counts after a reboot and the SWLM's confirmation).

Every progress the SWLM sends is answered with an ``InstallProgress`` event, which the
interpreter publishes to the local API (websocket, ``/events``, the HMI). The journal (for
``sota_client status``), the log and ``STATUS=`` get it at 10 % steps, as a download's progress:
an SWLM that reports every block costs a few journal writes per install, not one per block.
Progress changes no state: it is a view, and an update's report is what ends it. An update
awaiting its reboot waits for that report without ``device.report_timeout``: the SWLM sends it
once the new software has run (or has been rolled back), which may be boots later.
"""

from __future__ import annotations

import logging

from swlm_sdk.protocol import (
    AwaitingReboot,
    ErrorEvent,
    Event,
    InstallProgress,
    SendInstallProgress,
    SendRebootNeeded,
)

from . import _systemd
from ._errors import one_line
from ._store import PROGRESS_STATES, InstallProgressRecord, Journal, UpdateState

__all__ = ["MAX_PROGRESS_TEXT", "take_install_progress", "take_reboot_needed"]

logger = logging.getLogger(__name__)

#: Characters of an SWLM's progress text that are kept (one line, shown in a status).
MAX_PROGRESS_TEXT = 200


def take_install_progress(journal: Journal, command: SendInstallProgress) -> Event:
    """The reply to ``command``: ``InstallProgress``, or ``Error`` saying why it is not taken."""
    update_id = command.update_id
    record = journal.update(update_id)
    if record is None:
        return ErrorEvent(f"Update {update_id} is unknown to the daemon: no progress is taken")
    if record.state not in PROGRESS_STATES:
        return ErrorEvent(
            f"Update {update_id} is {record.state.value}, not being installed: no progress is taken"
        )
    progress = InstallProgress(
        update_id, command.percent, one_line(command.text, MAX_PROGRESS_TEXT)
    )
    if _due(record.install, progress.percent) and journal.install_progress(
        update_id, progress.percent, progress.text
    ):
        said = f": {progress.text}" if progress.text else ""
        logger.info("Installing %s: %d%%%s", update_id, progress.percent, said)
        _systemd.notify(f"STATUS=Installing update {update_id}: {progress.percent}%{said}")
    return progress


def _due(last: InstallProgressRecord | None, percent: int) -> bool:
    """Written at the first progress, at each next 10 % step, at 100 %, and when it goes back
    (an installer that starts a second phase)."""
    if last is None:
        return True
    if percent == last.percent:
        return False
    return percent == 100 or percent < last.percent or percent >= (last.percent // 10 + 1) * 10


def take_reboot_needed(journal: Journal, command: SendRebootNeeded) -> Event:
    """The reply to ``command``: ``AwaitingReboot`` (also when the update already awaits it: the
    SWLM sends it again after a lost reply), or ``Error`` saying why not."""
    update_id = command.update_id
    text = one_line(command.text, MAX_PROGRESS_TEXT)
    before, entered = journal.await_reboot(update_id, text)
    if before is None:
        return ErrorEvent(f"Update {update_id} is unknown to the daemon: nothing awaits a reboot")
    if not entered and before is not UpdateState.AWAITING_REBOOT:
        return ErrorEvent(
            f"Update {update_id} is {before.value}, not with the SWLM: nothing awaits a reboot"
        )
    if entered:
        said = f": {text}" if text else ""
        logger.info(
            "Update %s is installed and counts once the SWLM confirms it after a reboot "
            "(no report deadline until then)%s",
            update_id,
            said,
        )
        _systemd.notify(f"STATUS=Update {update_id} awaits confirmation after reboot")
    return AwaitingReboot(update_id, text)
