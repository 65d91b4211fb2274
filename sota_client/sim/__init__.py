"""An embedded SOTA Core for tests, the demo and benchmarks: device API, operator API, OAuth2.

A real HTTP/1.1 server on loopback that answers the 2016 client's calls exactly as Core did
(``docs/simulator.md``), records what it received, and injects faults on request.
"""

from ._auth import AuthSettings as AuthSettings
from ._auth import TokenResponse as TokenResponse
from ._errors import CoreError as CoreError
from ._errors import Rejection as Rejection
from ._errors import SimError as SimError
from ._faults import ChunkedFault as ChunkedFault
from ._faults import DelayFault as DelayFault
from ._faults import DropFault as DropFault
from ._faults import ExpireTokensFault as ExpireTokensFault
from ._faults import Fault as Fault
from ._faults import LoseAnswerFault as LoseAnswerFault
from ._faults import RedirectFault as RedirectFault
from ._faults import StallFault as StallFault
from ._faults import StatusFault as StatusFault
from ._faults import TruncateFault as TruncateFault
from ._models import BlockedInstall as BlockedInstall
from ._models import DeviceState as DeviceState
from ._models import InstallHistoryEntry as InstallHistoryEntry
from ._models import OperationResultRow as OperationResultRow
from ._models import PackageInfo as PackageInfo
from ._models import PendingUpdateRequest as PendingUpdateRequest
from ._models import ReportedResult as ReportedResult
from ._models import ReportRecord as ReportRecord
from ._models import RequestRecord as RequestRecord
from ._simulator import CoreSimulator as CoreSimulator

__all__ = [
    "AuthSettings",
    "BlockedInstall",
    "ChunkedFault",
    "CoreError",
    "CoreSimulator",
    "DelayFault",
    "DeviceState",
    "DropFault",
    "ExpireTokensFault",
    "Fault",
    "InstallHistoryEntry",
    "LoseAnswerFault",
    "OperationResultRow",
    "PackageInfo",
    "PendingUpdateRequest",
    "RedirectFault",
    "Rejection",
    "ReportRecord",
    "ReportedResult",
    "RequestRecord",
    "SimError",
    "StallFault",
    "StatusFault",
    "TokenResponse",
    "TruncateFault",
]
