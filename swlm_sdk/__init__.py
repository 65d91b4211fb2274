"""swlm_sdk: build a Software Loading Manager (SWLM) for the SOTA client in a few lines.

The wire protocol lives in :mod:`swlm_sdk.protocol`, the async client and listener here, the
handler framework in :mod:`swlm_sdk.app`, a blocking API in :mod:`swlm_sdk.sync` and a fake
daemon for tests in :mod:`swlm_sdk.testing`. This package imports neither httpx nor the
daemon, so it stays light on a device.
"""

from . import sync as sync
from ._app import App as App
from ._backoff import Backoff as Backoff
from ._client import Client as Client
from ._client import Retry as Retry
from ._client import clean_result_text as clean_result_text
from ._client import send_command as send_command
from ._client import send_installed_packages as send_installed_packages
from ._client import send_raw as send_raw
from ._client import send_update_report as send_update_report
from ._errors import CommandFailed as CommandFailed
from ._errors import CommandRejected as CommandRejected
from ._errors import CommandSyntaxError as CommandSyntaxError
from ._errors import ConfigError as ConfigError
from ._errors import DaemonTimeout as DaemonTimeout
from ._errors import DaemonUnavailable as DaemonUnavailable
from ._errors import InstallError as InstallError
from ._errors import ListenerError as ListenerError
from ._errors import ProtocolError as ProtocolError
from ._errors import SwlmError as SwlmError
from ._errors import TransportError as TransportError
from ._listener import EventListener as EventListener
from ._paths import DEFAULT_COMMANDS_SOCKET as DEFAULT_COMMANDS_SOCKET
from ._paths import DEFAULT_EVENTS_SOCKET as DEFAULT_EVENTS_SOCKET
from ._paths import SocketPaths as SocketPaths
from ._paths import read_socket_paths as read_socket_paths
from ._paths import resolve_socket_paths as resolve_socket_paths
from .protocol import DownloadComplete as DownloadComplete
from .protocol import DownloadFailed as DownloadFailed
from .protocol import ErrorEvent as ErrorEvent
from .protocol import Event as Event
from .protocol import InstalledPackagesSent as InstalledPackagesSent
from .protocol import Package as Package
from .protocol import ResultCode as ResultCode
from .protocol import UnknownEvent as UnknownEvent
from .protocol import UpdateReportSent as UpdateReportSent

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_COMMANDS_SOCKET",
    "DEFAULT_EVENTS_SOCKET",
    "App",
    "Backoff",
    "Client",
    "CommandFailed",
    "CommandRejected",
    "CommandSyntaxError",
    "ConfigError",
    "DaemonTimeout",
    "DaemonUnavailable",
    "DownloadComplete",
    "DownloadFailed",
    "ErrorEvent",
    "Event",
    "EventListener",
    "InstallError",
    "InstalledPackagesSent",
    "ListenerError",
    "Package",
    "ProtocolError",
    "ResultCode",
    "Retry",
    "SocketPaths",
    "SwlmError",
    "TransportError",
    "UnknownEvent",
    "UpdateReportSent",
    "__version__",
    "clean_result_text",
    "read_socket_paths",
    "resolve_socket_paths",
    "send_command",
    "send_installed_packages",
    "send_raw",
    "send_update_report",
    "sync",
]
