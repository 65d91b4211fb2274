"""``SendInstallProgress``: how far an SWLM's install got, for people watching the device.

Every progress the SWLM sends is answered with an ``InstallProgress`` event, which the
interpreter publishes to the local API (websocket, ``/events``, the HMI). The journal (for
``sota_client status``), the log and ``STATUS=`` get it at 10 % steps, as a download's progress:
an SWLM that reports every block costs a few journal writes per install, not one per block.
Progress changes no state: it is a view, and an update's report is what ends it.
"""

from __future__ import annotations

import logging

from swlm_sdk.protocol import ErrorEvent, Event, InstallProgress, SendInstallProgress

from . import _systemd
from ._errors import one_line
from ._store import InstallProgressRecord, Journal, UpdateState

__all__ = ["MAX_PROGRESS_TEXT", "take_install_progress"]

logger = logging.getLogger(__name__)

#: Characters of an SWLM's progress text that are kept (one line, shown in a status).
MAX_PROGRESS_TEXT = 200
#: The states in which an install runs: the SWLM holds the update, or the package manager;
#: or the SWLM has its event, and its progress came before the daemon recorded the delivery.
_INSTALLING = (UpdateState.DOWNLOADED, UpdateState.DELIVERED, UpdateState.INSTALLING)


def take_install_progress(journal: Journal, command: SendInstallProgress) -> Event:
    """The reply to ``command``: ``InstallProgress``, or ``Error`` saying why it is not taken."""
    update_id = command.update_id
    record = journal.update(update_id)
    if record is None:
        return ErrorEvent(f"Update {update_id} is unknown to the daemon: no progress is taken")
    if record.state not in _INSTALLING:
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
