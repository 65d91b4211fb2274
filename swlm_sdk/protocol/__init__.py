"""Wire protocol 0.1 of the 2016 SOTA client, sans-IO: bytes in, typed values out, and back.

Shared by the SDK and the daemon so the two can never drift apart. Every decoder takes
untrusted bytes and either returns a value or raises :class:`~swlm_sdk.ProtocolError`.
"""

from .._errors import CommandRejected as CommandRejected
from .._errors import CommandSyntaxError as CommandSyntaxError
from .._errors import ProtocolError as ProtocolError
from ._codes import ResultCode as ResultCode
from ._commands import Authenticate as Authenticate
from ._commands import Command as Command
from ._commands import GetUpdateRequests as GetUpdateRequests
from ._commands import ListInstalledPackages as ListInstalledPackages
from ._commands import ListSystemInfo as ListSystemInfo
from ._commands import SendInstalledPackages as SendInstalledPackages
from ._commands import SendInstalledSoftware as SendInstalledSoftware
from ._commands import SendInstallProgress as SendInstallProgress
from ._commands import SendRebootNeeded as SendRebootNeeded
from ._commands import SendSystemInfo as SendSystemInfo
from ._commands import SendUpdateReport as SendUpdateReport
from ._commands import Shutdown as Shutdown
from ._commands import StartDownload as StartDownload
from ._commands import StartInstall as StartInstall
from ._commands import format_command as format_command
from ._commands import parse_command as parse_command
from ._events import ENVELOPE_VERSION as ENVELOPE_VERSION
from ._events import AlreadyAuthenticated as AlreadyAuthenticated
from ._events import Authenticated as Authenticated
from ._events import AwaitingReboot as AwaitingReboot
from ._events import DownloadComplete as DownloadComplete
from ._events import DownloadFailed as DownloadFailed
from ._events import DownloadingUpdate as DownloadingUpdate
from ._events import DownloadProgress as DownloadProgress
from ._events import ErrorEvent as ErrorEvent
from ._events import Event as Event
from ._events import FoundInstalledPackages as FoundInstalledPackages
from ._events import FoundSystemInfo as FoundSystemInfo
from ._events import InstallComplete as InstallComplete
from ._events import InstalledPackagesSent as InstalledPackagesSent
from ._events import InstalledSoftwareNeeded as InstalledSoftwareNeeded
from ._events import InstalledSoftwareSent as InstalledSoftwareSent
from ._events import InstallFailed as InstallFailed
from ._events import InstallingUpdate as InstallingUpdate
from ._events import InstallProgress as InstallProgress
from ._events import NotAuthenticated as NotAuthenticated
from ._events import NoUpdateRequests as NoUpdateRequests
from ._events import SystemInfoSent as SystemInfoSent
from ._events import UnknownEvent as UnknownEvent
from ._events import UpdateAvailable as UpdateAvailable
from ._events import UpdateReportSent as UpdateReportSent
from ._events import UpdatesReceived as UpdatesReceived
from ._events import decode_envelope as decode_envelope
from ._events import decode_event as decode_event
from ._events import decode_reply as decode_reply
from ._events import encode_envelope as encode_envelope
from ._events import encode_event as encode_event
from ._json_commands import decode_json_command as decode_json_command
from ._models import ClientCredentials as ClientCredentials
from ._models import InstalledFirmware as InstalledFirmware
from ._models import InstalledPackage as InstalledPackage
from ._models import InstalledSoftware as InstalledSoftware
from ._models import OperationResult as OperationResult
from ._models import Package as Package
from ._models import UpdateReport as UpdateReport
from ._models import UpdateRequest as UpdateRequest
from ._models import UpdateRequestStatus as UpdateRequestStatus

__all__ = [
    "ENVELOPE_VERSION",
    "AlreadyAuthenticated",
    "Authenticate",
    "Authenticated",
    "AwaitingReboot",
    "ClientCredentials",
    "Command",
    "CommandRejected",
    "CommandSyntaxError",
    "DownloadComplete",
    "DownloadFailed",
    "DownloadProgress",
    "DownloadingUpdate",
    "ErrorEvent",
    "Event",
    "FoundInstalledPackages",
    "FoundSystemInfo",
    "GetUpdateRequests",
    "InstallComplete",
    "InstallFailed",
    "InstallProgress",
    "InstalledFirmware",
    "InstalledPackage",
    "InstalledPackagesSent",
    "InstalledSoftware",
    "InstalledSoftwareNeeded",
    "InstalledSoftwareSent",
    "InstallingUpdate",
    "ListInstalledPackages",
    "ListSystemInfo",
    "NoUpdateRequests",
    "NotAuthenticated",
    "OperationResult",
    "Package",
    "ProtocolError",
    "ResultCode",
    "SendInstallProgress",
    "SendInstalledPackages",
    "SendInstalledSoftware",
    "SendRebootNeeded",
    "SendSystemInfo",
    "SendUpdateReport",
    "Shutdown",
    "StartDownload",
    "StartInstall",
    "SystemInfoSent",
    "UnknownEvent",
    "UpdateAvailable",
    "UpdateReport",
    "UpdateReportSent",
    "UpdateRequest",
    "UpdateRequestStatus",
    "UpdatesReceived",
    "decode_envelope",
    "decode_event",
    "decode_json_command",
    "decode_reply",
    "encode_envelope",
    "encode_event",
    "format_command",
    "parse_command",
]
