"""The payload types that commands and events carry, with the 2016 JSON field names and order."""

from __future__ import annotations

import enum

import msgspec

from ._codes import ResultCode

__all__ = [
    "ClientCredentials",
    "InstalledFirmware",
    "InstalledPackage",
    "InstalledSoftware",
    "OperationResult",
    "Package",
    "UpdateReport",
    "UpdateRequest",
    "UpdateRequestStatus",
]


class Package(msgspec.Struct, frozen=True):
    """A package name and version, as listed by a package manager and sent to Core."""

    name: str
    version: str


class ClientCredentials(msgspec.Struct, frozen=True):
    """OAuth2 client credentials (the optional argument of ``Authenticate``)."""

    client_id: str
    client_secret: str


class UpdateRequestStatus(enum.StrEnum):
    """Where Core says an update is; only Pending and InFlight appear in the device's list."""

    PENDING = "Pending"
    IN_FLIGHT = "InFlight"
    CANCELED = "Canceled"
    FAILED = "Failed"
    FINISHED = "Finished"


class UpdateRequest(msgspec.Struct, frozen=True):
    """One entry of Core's update list (camelCase on the wire, to match Core)."""

    request_id: str = msgspec.field(name="requestId")
    status: UpdateRequestStatus
    package_id: Package = msgspec.field(name="packageId")
    install_pos: int = msgspec.field(name="installPos")
    created_at: str = msgspec.field(name="createdAt")


class OperationResult(msgspec.Struct, frozen=True):
    """The outcome of one operation of an update; ``result_code`` goes on the wire as a number."""

    id: str
    result_code: ResultCode
    result_text: str = ""


class UpdateReport(msgspec.Struct, frozen=True):
    """An update's outcome, sent to Core as ``POST /updates/<update_id>``."""

    update_id: str
    operation_results: tuple[OperationResult, ...]

    @classmethod
    def single(cls, update_id: str, code: ResultCode, text: str = "") -> UpdateReport:
        """One result whose ``id`` is the update id, as every 2016 report was built."""
        return cls(update_id, (OperationResult(update_id, code, text),))


class InstalledPackage(msgspec.Struct, frozen=True):
    """A package in the RVI ``InstalledSoftware`` report."""

    package_id: str
    name: str
    description: str
    last_modified: int


class InstalledFirmware(msgspec.Struct, frozen=True):
    """A firmware module in the RVI ``InstalledSoftware`` report."""

    module: str
    firmware_id: str
    last_modified: int


class InstalledSoftware(msgspec.Struct, frozen=True):
    """Packages and firmware, as sent over RVI (``SendInstalledSoftware``)."""

    packages: tuple[InstalledPackage, ...] = ()
    firmwares: tuple[InstalledFirmware, ...] = ()
