"""What the daemon does after each event: the 2016 EventInterpreter table, as a pure function.

Kept free of I/O so the whole table is tested synchronously. Where a decision needs the package
list or the journal, the table returns an internal step (``ResolveUpdate``) for the
interpreter to settle.
"""

from __future__ import annotations

import msgspec

from swlm_sdk.protocol import (
    Authenticate,
    Authenticated,
    Command,
    DownloadComplete,
    DownloadFailed,
    Event,
    InstallComplete,
    InstallFailed,
    NotAuthenticated,
    ResultCode,
    SendSystemInfo,
    SendUpdateReport,
    StartInstall,
    UpdateReport,
    UpdateReportSent,
    UpdateRequest,
    UpdateRequestStatus,
    UpdatesReceived,
)

__all__ = ["ResolveUpdate", "SendCurrentPackages", "Step", "follow_ups"]


class SendCurrentPackages(msgspec.Struct, frozen=True):
    """List the installed packages now and send them to Core (2016: ``SendInstalledPackages``)."""


class ResolveUpdate(msgspec.Struct, frozen=True):
    """Take an update one step forward from where the journal says it is.

    From Core's list (``request`` says Pending or InFlight) and at start-up for every update
    the journal has in an unfinished state (``request`` is None). Without a journal record,
    the 2016 rules apply: download a Pending update; for an InFlight one, report OK if the
    package manager lists the package, else download it (see the interpreter).
    """

    update_id: str
    request: UpdateRequest | None = None


Step = Command | SendCurrentPackages | ResolveUpdate


def follow_ups(event: Event, *, package_manager: bool, system_info: bool) -> list[Step]:
    """The work an event causes (reference-client.md section 5.4, with its bugs fixed).

    :param package_manager: a local package manager is configured (not ``off``).
    :param system_info: a ``system_info`` command is configured.
    """
    match event:
        case Authenticated():
            steps: list[Step] = []
            if package_manager:
                steps.append(SendCurrentPackages())
            if system_info:
                steps.append(SendSystemInfo())
            return steps
        case NotAuthenticated():
            return [Authenticate()]
        case UpdatesReceived(requests=requests):
            return [step for request in requests for step in _for_request(request)]
        case DownloadComplete(update_id=update_id) if package_manager:
            return [StartInstall(update_id)]
        case DownloadFailed(update_id=update_id, reason=reason):
            report = UpdateReport.single(update_id, ResultCode.GENERAL_ERROR, reason)
            return [SendUpdateReport(report)]
        case InstallComplete(report=report) | InstallFailed(report=report):
            return [SendUpdateReport(report)]
        case UpdateReportSent() if package_manager:
            return [SendCurrentPackages()]
    return []


def _for_request(request: UpdateRequest) -> list[Step]:
    if request.status in (UpdateRequestStatus.PENDING, UpdateRequestStatus.IN_FLIGHT):
        return [ResolveUpdate(request.request_id, request)]
    return []
