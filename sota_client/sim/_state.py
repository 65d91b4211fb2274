"""Core's data model, in memory: packages, update requests and specs, devices and their reports.

Everything sits behind one re-entrant lock whose condition variable is notified on every
change, so a test waits for a state instead of polling for it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

import msgspec

from swlm_sdk.protocol import Package, UpdateRequestStatus

from ._errors import Rejection, missing_package, missing_spec
from ._models import (
    NAME_PATTERN,
    BlockedInstall,
    DeviceState,
    InstallHistoryEntry,
    OperationResultRow,
    PackageInfo,
    PendingUpdateRequest,
    ReportedResult,
    ReportRecord,
    RequestRecord,
)
from ._store import PackageBlob

__all__ = ["CoreState", "format_instant"]

T = TypeVar("T")

_PENDING = UpdateRequestStatus.PENDING
_IN_FLIGHT = UpdateRequestStatus.IN_FLIGHT
_SUCCESS_CODES = frozenset({0, 1})
_NAME_RE = re.compile(NAME_PATTERN)


def format_instant(ms: int) -> str:
    """Format epoch milliseconds as Java's ``Instant.toString`` does (no fraction when zero)."""
    secs, msec = divmod(ms, 1000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{msec:03d}Z" if msec else f"{base}Z"


class _Spec(msgspec.Struct):
    request_id: str
    device: str
    package: Package
    install_pos: int
    status: UpdateRequestStatus
    created_at: str
    updated_at: str
    seq: int

    def view(self, install_pos: int | None = None) -> PendingUpdateRequest:
        return PendingUpdateRequest(
            request_id=self.request_id,
            package_id=self.package,
            install_pos=self.install_pos if install_pos is None else install_pos,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class _Device(msgspec.Struct):
    reports: deque[ReportRecord]
    results: deque[OperationResultRow]
    history: deque[InstallHistoryEntry]
    last_seen: str | None = None
    installed: list[Package] | None = None
    system_info: bytes | None = None
    last_success: bool | None = None
    blocked_at: str | None = None

    @classmethod
    def new(cls, limit: int) -> _Device:
        """A device not seen yet. Its logs keep the last ``limit`` entries, so a client stuck
        in a report loop cannot exhaust memory in a long demo."""
        return cls(deque(maxlen=limit), deque(maxlen=limit), deque(maxlen=limit))


class CoreState:
    """The simulator's whole state; every method is thread-safe.

    Device ids and update ids passed in must already be canonical lower-case UUID strings.
    """

    def __init__(
        self,
        *,
        version_format: str = ".+",
        history_limit: int = 1000,
        log_limit: int = 10_000,
    ) -> None:
        try:
            self._version_re = re.compile(version_format)
        except re.error as exc:
            raise ValueError(f"bad version format {version_format!r}: {exc}") from None
        self._history_limit = history_limit
        self._cond = threading.Condition(threading.RLock())
        self._last_ms = 0
        self._seq = 0
        self._packages: dict[Package, PackageBlob] = {}
        self._requests: dict[str, Package] = {}
        self._specs: dict[tuple[str, str], _Spec] = {}
        self._devices: dict[str, _Device] = {}
        self._redirects: dict[str, str] = {}
        self._log: deque[RequestRecord] = deque(maxlen=log_limit)

    # -- plumbing ---------------------------------------------------------------------------

    def _stamp(self) -> str:
        # Strictly increasing, so every change gets a visibly new updatedAt, even in the same ms.
        self._last_ms = max(time.time_ns() // 1_000_000, self._last_ms + 1)
        return format_instant(self._last_ms)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _device(self, device: str) -> _Device:
        rec = self._devices.get(device)
        if rec is None:
            rec = self._devices[device] = _Device.new(self._history_limit)
        return rec

    def _changed(self) -> None:
        self._cond.notify_all()

    def check_package_id(self, name: str, version: str) -> None:
        """Apply Core's PackageId refinements.

        :raises Rejection: 400, naming the field that is wrong.
        """
        if not _NAME_RE.search(name):
            raise Rejection(400, f"invalid package name {name!r}: 1-100 of A-Z a-z 0-9 - + . _")
        if not self._version_re.fullmatch(version):
            raise Rejection(
                400, f"invalid package version {version!r}: must match {self._version_re.pattern}"
            )

    def wake(self) -> None:
        """Re-run every waiter's predicate (used to end an abandoned wait)."""
        with self._cond:
            self._changed()

    def wait_for(self, predicate: Callable[[], T], timeout: float | None) -> T:
        """Block until ``predicate()`` is truthy and return its value.

        The predicate runs under the state lock, after every change.

        :raises TimeoutError: still falsy after ``timeout`` seconds (None: wait for ever).
        """
        with self._cond:
            result = self._cond.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"simulator state did not reach the condition within {timeout} s")
        return result

    def reset(self) -> None:
        """Forget everything: packages, updates, devices, redirects and the request log."""
        with self._cond:
            for blob in self._packages.values():
                blob.discard()
            self._packages.clear()
            self._requests.clear()
            self._specs.clear()
            self._devices.clear()
            self._redirects.clear()
            self._log.clear()
            self._changed()

    def discard_uploads(self) -> None:
        """Delete the files of uploaded packages (the simulator is stopping)."""
        with self._cond:
            for blob in self._packages.values():
                blob.discard()

    # -- packages ---------------------------------------------------------------------------

    def put_package(self, name: str, version: str, blob: PackageBlob) -> None:
        """Add or replace a package's bytes."""
        self.check_package_id(name, version)
        with self._cond:
            old = self._packages.get(Package(name, version))
            self._packages[Package(name, version)] = blob
            if old is not None and old is not blob:
                old.discard()
            self._changed()

    def package(self, name: str, version: str) -> PackageBlob:
        """:raises CoreError: 404 ``missing_package``."""
        with self._cond:
            blob = self._packages.get(Package(name, version))
        if blob is None:
            raise missing_package()
        return blob

    def packages(self) -> list[PackageInfo]:
        with self._cond:
            items = list(self._packages.items())
        return [PackageInfo(p.name, p.version, b.size(), b.source) for p, b in items]

    # -- operator side ----------------------------------------------------------------------

    def queue(self, device: str, name: str, version: str) -> PendingUpdateRequest:
        """Queue one package for one device, as ``POST /api/v1/device_updates/<uuid>``.

        :raises CoreError: 404 ``missing_package``.
        """
        with self._cond:
            package = Package(name, version)
            if package not in self._packages:
                raise missing_package()
            request_id = str(uuid.uuid4())
            now = self._stamp()
            spec = _Spec(request_id, device, package, 0, _PENDING, now, now, self._next_seq())
            self._requests[request_id] = package
            self._specs[(device, request_id)] = spec
            self._device(device)
            self._changed()
            return spec.view()

    def cancel(self, device: str, update_id: str) -> None:
        """Pending -> Canceled.

        :raises CoreError: 404 ``missing_entity`` when not Pending (or no such spec).
        """
        with self._cond:
            spec = self._specs.get((device, update_id))
            if spec is None or spec.status is not _PENDING:
                raise missing_spec()
            self._set_status(spec, UpdateRequestStatus.CANCELED)

    def set_order(self, device: str, order: list[str]) -> None:
        """Set the install positions of all Pending updates of a device.

        :raises Rejection: 400 with Core's text unless ``order`` names exactly the Pending ones.
        """
        with self._cond:
            pending = {
                s.request_id: s
                for (dev, _), s in self._specs.items()
                if dev == device and s.status is _PENDING
            }
            if len(pending) > len(order) or not set(pending) <= set(order):
                raise Rejection(
                    400, "To set install order, all updates for a vehicle need to be specified"
                )
            if len(pending) != len(order):
                raise Rejection(
                    400, "To set install order, all updates for a vehicle need to be pending"
                )
            now = self._stamp()
            for pos, request_id in enumerate(order):
                spec = pending[request_id]
                if spec.install_pos != pos:
                    spec.install_pos = pos
                    spec.updated_at = now
            self._changed()

    def _set_status(self, spec: _Spec, status: UpdateRequestStatus) -> None:
        # MySQL's ON UPDATE timestamp only moves when a value really changes.
        if spec.status is not status:
            spec.status = status
            spec.updated_at = self._stamp()
        self._changed()

    # -- device side ------------------------------------------------------------------------

    def _sorted_specs(self, device: str, statuses: Iterable[UpdateRequestStatus]) -> list[_Spec]:
        wanted = set(statuses)
        specs = [s for (dev, _), s in self._specs.items() if dev == device and s.status in wanted]
        specs.sort(key=lambda s: (s.install_pos, s.seq))
        return specs

    def pending(self, device: str, *, seen: bool = True) -> list[PendingUpdateRequest]:
        """The device's Pending and InFlight updates, sorted and renumbered as Core does."""
        with self._cond:
            if seen:
                self._device(device).last_seen = self._stamp()
                self._changed()
            specs = self._sorted_specs(device, (_PENDING, _IN_FLIGHT))
            return [s.view(install_pos=i) for i, s in enumerate(specs)]

    def start_download(self, device: str, update_id: str) -> tuple[Package, PackageBlob]:
        """Find an update's package and mark the device's spec InFlight, whatever its status.

        :raises CoreError: 404 ``missing_package`` for an unknown update id.
        """
        with self._cond:
            package = self._requests.get(update_id)
            blob = self._packages.get(package) if package is not None else None
            if package is None or blob is None:
                raise missing_package()
            spec = self._specs.get((device, update_id))
            if spec is not None:
                self._set_status(spec, _IN_FLIGHT)
            return package, blob

    def report(
        self, device: str, update_id: str, results: list[ReportedResult], *, path: str, body: str
    ) -> None:
        """Record an update report and apply it: Finished if every code is 0 or 1, else Failed.

        :raises CoreError: 404 ``missing_entity`` when the device has no spec for the update.
        """
        with self._cond:
            spec = self._specs.get((device, update_id))
            now = self._stamp()
            rec = self._device(device)
            status = 404 if spec is None else 204
            rec.reports.append(ReportRecord(update_id, path, status, now, body, list(results)))
            if spec is None:
                self._changed()
                raise missing_spec()
            success = all(r.result_code in _SUCCESS_CODES for r in results)
            for r in results:
                rec.results.append(
                    OperationResultRow(
                        str(uuid.uuid4()), update_id, r.result_code, r.result_text, device, now
                    )
                )
            rec.history.append(InstallHistoryEntry(update_id, spec.package, success, now))
            rec.last_success = success
            if not success and rec.blocked_at is None:
                rec.blocked_at = now
            self._set_status(
                spec, UpdateRequestStatus.FINISHED if success else UpdateRequestStatus.FAILED
            )

    def record_rejected_report(
        self, device: str, update_id: str, *, path: str, status: int, body: str
    ) -> None:
        """Keep a report Core refused (bad body, wrong content type), for tests to inspect."""
        with self._cond:
            self._device(device).reports.append(
                ReportRecord(update_id, path, status, self._stamp(), body, [])
            )
            self._changed()

    def set_installed(self, device: str, packages: list[Package]) -> None:
        """Replace the device's installed-package list (and mark the device seen)."""
        with self._cond:
            rec = self._device(device)
            rec.installed = list(packages)
            rec.last_seen = self._stamp()
            self._changed()

    def set_system_info(self, device: str, raw: bytes) -> None:
        """Store the exact JSON the device sent."""
        with self._cond:
            self._device(device).system_info = raw
            self._changed()

    def set_blocked(self, device: str, blocked: bool) -> None:
        with self._cond:
            rec = self._device(device)
            rec.blocked_at = (rec.blocked_at or self._stamp()) if blocked else None
            self._changed()

    # -- redirects (the S3-style second URL) ------------------------------------------------

    def add_redirect(self, update_id: str) -> str:
        """A new opaque token under which ``/storage/<token>`` serves an update's package."""
        token = uuid.uuid4().hex
        with self._cond:
            self._redirects[token] = update_id
        return token

    def redirect_target(self, token: str) -> tuple[Package, PackageBlob]:
        """:raises CoreError: 404 for an unknown token or a package that is gone."""
        with self._cond:
            update_id = self._redirects.get(token)
            package = self._requests.get(update_id) if update_id is not None else None
            blob = self._packages.get(package) if package is not None else None
            if package is None or blob is None:
                raise missing_package()
            return package, blob

    # -- the request log --------------------------------------------------------------------

    def log_request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        route: str | None,
        device: str | None,
        body_size: int,
    ) -> RequestRecord:
        with self._cond:
            record = RequestRecord(
                self._next_seq(), method, path, headers, route, device, body_size=body_size
            )
            self._log.append(record)
            self._changed()
            return record

    def note_fault(self, record: RequestRecord, fault: str) -> None:
        with self._cond:
            record.fault = fault
            self._changed()

    def finish_request(self, record: RequestRecord, status: int | None) -> None:
        with self._cond:
            record.status = status
            self._changed()

    def requests(self, device: str | None = None) -> list[RequestRecord]:
        """Copies of the logged requests, oldest first; only one device's if ``device`` is set."""
        with self._cond:
            return [
                msgspec.structs.replace(r)
                for r in self._log
                if device is None or r.device == device
            ]

    # -- reading ----------------------------------------------------------------------------

    def devices(self) -> list[str]:
        with self._cond:
            return sorted(self._devices)

    def updates(self, device: str) -> list[PendingUpdateRequest]:
        """All of a device's updates, whatever their status, in install order."""
        with self._cond:
            return [s.view() for s in self._sorted_specs(device, UpdateRequestStatus)]

    def status(self, device: str, request_id: str) -> UpdateRequestStatus:
        """:raises CoreError: 404 ``missing_entity``."""
        with self._cond:
            spec = self._specs.get((device, request_id))
            if spec is None:
                raise missing_spec()
            return spec.status

    def reports(self, device: str) -> list[ReportRecord]:
        with self._cond:
            rec = self._devices.get(device)
            return list(rec.reports) if rec else []

    def results(self, device: str, update_id: str | None = None) -> list[OperationResultRow]:
        with self._cond:
            rec = self._devices.get(device)
            rows = list(rec.results) if rec else []
        return [r for r in rows if update_id is None or r.update_id == update_id]

    def blocked(self, device: str) -> list[BlockedInstall]:
        with self._cond:
            rec = self._devices.get(device)
            if rec is None or rec.blocked_at is None:
                return []
            return [BlockedInstall(device, rec.blocked_at)]

    def installed(self, device: str) -> list[Package] | None:
        with self._cond:
            rec = self._devices.get(device)
            return None if rec is None or rec.installed is None else list(rec.installed)

    def system_info(self, device: str) -> bytes | None:
        with self._cond:
            rec = self._devices.get(device)
            return None if rec is None else rec.system_info

    def device_state(self, device: str) -> DeviceState:
        with self._cond:
            rec = self._devices.get(device) or _Device.new(self._history_limit)
            updates = self.updates(device)
            if rec.last_seen is None:
                status = "NotSeen"
            elif rec.last_success is False:
                status = "Error"
            elif any(u.status in (_PENDING, _IN_FLIGHT) for u in updates):
                status = "Outdated"
            else:
                status = "UpToDate"
            return DeviceState(
                device=device,
                status=status,
                last_seen=rec.last_seen,
                updates=updates,
                reports=list(rec.reports),
                results=list(rec.results),
                history=list(rec.history),
                blocked=self.blocked(device),
                installed=None if rec.installed is None else list(rec.installed),
                system_info=None if rec.system_info is None else msgspec.Raw(rec.system_info),
                requests=self.requests(device),
            )
