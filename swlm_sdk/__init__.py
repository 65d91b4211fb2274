"""swlm_sdk: build a Software Loading Manager (SWLM) for the SOTA client in a few lines.

The wire protocol lives in :mod:`swlm_sdk.protocol`. This package imports neither httpx nor
the daemon, so it stays light on a device.
"""

from ._errors import CommandRejected as CommandRejected
from ._errors import CommandSyntaxError as CommandSyntaxError
from ._errors import DaemonTimeout as DaemonTimeout
from ._errors import DaemonUnavailable as DaemonUnavailable
from ._errors import InstallError as InstallError
from ._errors import ProtocolError as ProtocolError
from ._errors import SwlmError as SwlmError
from ._errors import TransportError as TransportError
from .protocol import DownloadComplete as DownloadComplete
from .protocol import DownloadFailed as DownloadFailed
from .protocol import Event as Event
from .protocol import Package as Package
from .protocol import ResultCode as ResultCode
from .protocol import UnknownEvent as UnknownEvent

__version__ = "0.1.0"

__all__ = [
    "CommandRejected",
    "CommandSyntaxError",
    "DaemonTimeout",
    "DaemonUnavailable",
    "DownloadComplete",
    "DownloadFailed",
    "Event",
    "InstallError",
    "Package",
    "ProtocolError",
    "ResultCode",
    "SwlmError",
    "TransportError",
    "UnknownEvent",
    "__version__",
]
