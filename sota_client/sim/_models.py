"""Core's JSON shapes, in and out, and the simulator's records of what it received."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from swlm_sdk.protocol import Package, UpdateRequestStatus

__all__ = [
    "BlockedInstall",
    "DeviceState",
    "InstallHistoryEntry",
    "OperationResultRow",
    "PackageInfo",
    "PendingUpdateRequest",
    "ReportRecord",
    "ReportedResult",
    "RequestRecord",
]

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
# The package-name refinement of Core's PackageId (common-data Package.scala).
NAME_PATTERN = r"^[A-Za-z0-9+._-]{1,100}\Z"

Uuid = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
PackageName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]


class PendingUpdateRequest(msgspec.Struct, frozen=True, rename="camel"):
    """One update of a device as Core lists it (field order as Core encodes it)."""

    request_id: str
    package_id: Package
    install_pos: int
    status: UpdateRequestStatus
    created_at: str
    updated_at: str


class ReportedResult(msgspec.Struct, frozen=True):
    """One element of the array a device posts as its update report (Core's OperationResult)."""

    id: Uuid
    result_code: Int32
    result_text: str


class PackageIdIn(msgspec.Struct, frozen=True):
    """A package id in a request body; the version format is checked separately (configurable)."""

    name: PackageName
    version: str


class LegacyUpdateReport(msgspec.Struct, frozen=True):
    """The ``update_report`` member of a pre-mydevice report."""

    update_id: Uuid
    operation_results: list[ReportedResult]


class LegacyInstallReport(msgspec.Struct, frozen=True):
    """The body of ``POST /api/v1/device_updates/<uuid>/<any>`` (clients before 2016-10-26)."""

    device: Uuid
    update_report: LegacyUpdateReport


class OperationResultRow(msgspec.Struct, frozen=True, rename="camel"):
    """A stored operation result, as the operator's ``GET .../results`` returns it."""

    id: str
    update_id: str
    result_code: int
    result_text: str
    device: str
    received_at: str


class InstallHistoryEntry(msgspec.Struct, frozen=True, rename="camel"):
    """One accepted report: which update, which package, success or not, and when."""

    update_id: str
    package_id: Package
    success: bool
    completion_time: str


class BlockedInstall(msgspec.Struct, frozen=True, rename="camel"):
    """The flag Core sets on a device after a failed report (it hides nothing in this version)."""

    id: str
    blocked_at: str


class ReportRecord(msgspec.Struct, frozen=True, rename="camel"):
    """Every update report the simulator received, accepted or not, with its exact body."""

    update_id: str
    path: str
    status: int
    received_at: str
    body: str
    results: list[ReportedResult]


class RequestRecord(msgspec.Struct, rename="camel"):
    """One HTTP request as the simulator saw it; ``status`` is filled in once it is answered.

    ``headers`` has lower-case names; repeated headers are joined with ``", "``.
    """

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    route: str | None = None
    device: str | None = None
    status: int | None = None
    fault: str | None = None
    body_size: int = 0


class PackageInfo(msgspec.Struct, frozen=True, rename="camel"):
    """A package the simulator can serve, and where its bytes live."""

    name: str
    version: str
    size: int
    source: Literal["memory", "upload", "path"]


class DeviceState(msgspec.Struct, frozen=True, rename="camel"):
    """Everything the simulator knows about one device (``GET /sim/devices/<uuid>``).

    ``status`` is the registry's derived device status: NotSeen, Error, Outdated or UpToDate.
    ``system_info`` is the exact JSON the device sent, embedded as is.
    """

    device: str
    status: str
    last_seen: str | None
    updates: list[PendingUpdateRequest]
    reports: list[ReportRecord]
    results: list[OperationResultRow]
    history: list[InstallHistoryEntry]
    blocked: list[BlockedInstall]
    installed: list[Package] | None
    system_info: msgspec.Raw | None
    requests: list[RequestRecord]
