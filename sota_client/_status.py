"""``sota_client status``: what the journal says about every update, for people and programs.

It reads the journal read-only, so it is safe while the daemon runs, and it needs nothing but
the journal: no daemon, no network. The text form is for an integrator at a terminal; the
``--json`` form has the same facts for programs (its field names are stable, times are UTC ISO
8601 and ages are seconds).
"""

from __future__ import annotations

import time

import msgspec

from swlm_sdk.protocol import UpdateReport

from ._store import (
    SCHEMA_VERSION,
    DownloadRecord,
    Journal,
    OutboxEvent,
    PendingReport,
    UpdateRecord,
    UpdateState,
)

__all__ = ["Status", "age_text", "format_status", "read_status"]


class PackageView(msgspec.Struct, frozen=True):
    name: str
    version: str


class DownloadView(msgspec.Struct, frozen=True):
    received: int
    #: Bytes announced by Core, if it said.
    total: int | None
    percent: int | None


class InstallView(msgspec.Struct, frozen=True):
    """What the SWLM last said of the install (``SendInstallProgress``, at 10 % steps)."""

    percent: int
    text: str
    at: str


class ReportView(msgspec.Struct, frozen=True, omit_defaults=True):
    """A report Core has not accepted."""

    update_id: str
    result_code: str | None
    result_text: str | None
    since: str
    attempts: int
    next_attempt_at: str | None
    last_error: str | None = None
    #: A POST of it may have reached Core; Core's list is checked before it is sent again.
    in_doubt: bool = False
    set_aside: str | None = None


class EventView(msgspec.Struct, frozen=True, omit_defaults=True):
    """An event the SWLM has not taken yet."""

    id: int
    name: str
    update_id: str | None
    since: str
    attempts: int
    #: The gateway that delivers it: "socket" or "dbus".
    channel: str
    last_error: str | None = None
    set_aside: str | None = None


class UpdateView(msgspec.Struct, frozen=True, omit_defaults=True):
    update_id: str
    package: PackageView | None
    state: str
    since: str
    age: float
    holder: str
    #: One line in words: "delivered to the SWLM at /run/sota/events.socket; its report is awaited".
    summary: str
    download: DownloadView | None = None
    install: InstallView | None = None
    error: str | None = None
    #: The report Core accepted (``reported``).
    reported: UpdateReport | None = None


class Status(msgspec.Struct, frozen=True):
    journal: str
    schema: int
    now: str
    updates: list[UpdateView]
    events: list[EventView]
    reports: list[ReportView]


def read_status(journal: Journal, *, now: float | None = None) -> Status:
    """Everything the journal knows, as one snapshot."""
    now = time.time() if now is None else now
    downloads = {d.update_id: d for d in journal.downloads()}
    return Status(
        journal=journal.path,
        schema=SCHEMA_VERSION,
        now=_iso(now),
        updates=[_update_view(r, downloads.get(r.update_id), now) for r in journal.updates()],
        events=[_event_view(e) for e in journal.events()],
        reports=[_report_view(r) for r in journal.reports()],
    )


def format_status(status: Status) -> str:
    """The text form: one block per update, then the undelivered events and pending reports."""
    lines = [f"Journal {status.journal} at {status.now}", ""]
    if not status.updates:
        lines.append("No updates yet.")
    for update in status.updates:
        package = (
            "" if update.package is None else f"  {update.package.name} {update.package.version}"
        )
        lines.append(f"{update.update_id}{package}")
        lines.append(f"  {update.summary}")
        if update.error:
            lines.append(f"  why: {update.error}")
    lines.append("")
    lines.append(_heading("Undelivered event", len(status.events)))
    for event in status.events:
        about = f" for {event.update_id}" if event.update_id else ""
        line = (
            f"  #{event.id} {event.name}{about} (by {event.channel}), waiting since {event.since}"
        )
        lines.append(line + _tries(event.attempts, event.last_error, event.set_aside))
    lines.append(_heading("Pending report", len(status.reports)))
    for report in status.reports:
        result = report.result_code or "?"
        line = f"  {report.update_id}: {result}, queued since {report.since}"
        if report.in_doubt:
            line += ", in doubt (Core's list is checked before it is sent again)"
        if report.next_attempt_at and not report.set_aside:
            line += f", next try at {report.next_attempt_at}"
        lines.append(line + _tries(report.attempts, report.last_error, report.set_aside))
    return "\n".join(lines) + "\n"


def age_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 12 min``, ``2 d 4 h``: an age in words."""
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


# -- building the views -------------------------------------------------------------------------


def _update_view(record: UpdateRecord, download: DownloadRecord | None, now: float) -> UpdateView:
    progress = None
    if record.state is UpdateState.DOWNLOADING and download is not None:
        progress = _download_view(download)
    reported = None
    if record.report is not None:
        try:
            reported = msgspec.json.decode(record.report, type=UpdateReport)
        except msgspec.DecodeError:
            reported = None
    package = None if record.package is None else PackageView(*record.package)
    install = None
    if record.install is not None:
        install = InstallView(record.install.percent, record.install.text, _iso(record.install.at))
    since = _iso(record.since)
    return UpdateView(
        update_id=record.update_id,
        package=package,
        state=record.state.value,
        since=since,
        age=round(max(0.0, now - record.since), 3),
        holder=record.holder,
        summary=_summary(record, progress, reported, since, now)
        + _installing(install, record.state),
        download=progress,
        install=install,
        error=record.error,
        reported=reported,
    )


def _download_view(download: DownloadRecord) -> DownloadView:
    received = max(download.received, download.size)
    percent = None
    if download.total:
        percent = min(100, int(received * 100 / download.total))
    return DownloadView(received=received, total=download.total, percent=percent)


def _summary(
    record: UpdateRecord,
    progress: DownloadView | None,
    reported: UpdateReport | None,
    since: str,
    now: float,
) -> str:
    """The state in words, with who holds the update and since when."""
    age = age_text(now - record.since)
    match record.state:
        case UpdateState.DOWNLOADING:
            if progress is None:
                return f"downloading, since {since}"
            if progress.percent is None:
                return f"downloading: {progress.received} bytes so far (at {since})"
            return (
                f"downloading: {progress.percent}% ({progress.received} of {progress.total} "
                f"bytes), since {since}"
            )
        case UpdateState.DOWNLOADED:
            return f"downloaded at {since} ({age} ago); waiting to be handed to the SWLM"
        case UpdateState.DELIVERED:
            return f"delivered to {record.holder} at {since} ({age} ago); its report is awaited"
        case UpdateState.INSTALLING:
            return f"installing by {record.holder}, since {since} ({age})"
        case UpdateState.AWAITING_REBOOT:
            text = "" if record.install is None else record.install.text
            said = f" ({text})" if text else ""
            return (
                f"installed by the SWLM{said}; awaiting confirmation after reboot, since {since} "
                f"({age}); no report deadline"
            )
        case UpdateState.REPORT_PENDING:
            return f"report pending since {since} ({age}); the daemon sends it to Core"
        case UpdateState.REPORTED:
            result = "" if reported is None else f": {_result(reported)}"
            return f"reported to Core at {since}{result}"
        case UpdateState.SET_ASIDE:
            return f"set aside at {since}; nothing drives it forward (see why)"
    return f"{record.state.value} since {since}"  # pragma: no cover - every state is above


def _installing(install: InstallView | None, state: UpdateState) -> str:
    if install is None or state is UpdateState.AWAITING_REBOOT:  # its summary says it all
        return ""
    said = f" ({install.text})" if install.text else ""
    return f"; installing: {install.percent}%{said} at {install.at}"


def _result(report: UpdateReport) -> str:
    results = report.operation_results
    if not results:
        return "no result"
    first = results[0]
    text = f" ({first.result_text})" if first.result_text else ""
    return f"{first.result_code.name}{text}"


def _event_view(event: OutboxEvent) -> EventView:
    return EventView(
        id=event.id,
        name=event.name,
        update_id=event.update_id,
        since=_iso(event.created_at),
        attempts=event.attempts,
        channel=event.channel,
        last_error=event.last_error,
        set_aside=event.set_aside,
    )


def _report_view(report: PendingReport) -> ReportView:
    code = text = None
    try:
        decoded = msgspec.json.decode(report.payload, type=UpdateReport)
        if decoded.operation_results:
            code = decoded.operation_results[0].result_code.name
            text = decoded.operation_results[0].result_text
    except msgspec.DecodeError:
        pass
    return ReportView(
        update_id=report.update_id,
        result_code=code,
        result_text=text,
        since=_iso(report.created_at),
        attempts=report.attempts,
        next_attempt_at=None if report.set_aside else _iso(report.next_attempt_at),
        last_error=report.last_error,
        in_doubt=report.in_doubt,
        set_aside=report.set_aside,
    )


def _heading(noun: str, count: int) -> str:
    return f"{noun}s: none" if count == 0 else f"{noun}{'s' if count > 1 else ''} ({count}):"


def _tries(attempts: int, last_error: str | None, set_aside: str | None) -> str:
    text = ""
    if attempts:
        text += f", {attempts} failed attempt{'s' if attempts > 1 else ''}"
    if last_error:
        text += f", last error: {last_error}"
    if set_aside:
        text += f"; SET ASIDE: {set_aside}"
    return text


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
