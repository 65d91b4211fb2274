"""swlm_sdk: build a Software Loading Manager (SWLM) for the SOTA client in a few lines.

The wire protocol lives in :mod:`swlm_sdk.protocol`, the async client and listener here, the
handler framework in :mod:`swlm_sdk.app`, a blocking API in :mod:`swlm_sdk.sync` and a fake
daemon for tests in :mod:`swlm_sdk.testing`. This package imports neither httpx nor the
daemon, so it stays light on a device.

Everything that needs anyio (the client, the listener, the sync API, the App framework,
``Backoff``) loads on first use (PEP 562): ``import swlm_sdk`` costs the protocol (msgspec),
and the daemon, which imports it for the protocol and ``Backoff``, pays for no more.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._errors import CommandFailed as CommandFailed
from ._errors import CommandRejected as CommandRejected
from ._errors import CommandSyntaxError as CommandSyntaxError
from ._errors import ConfigError as ConfigError
from ._errors import ConfirmRefused as ConfirmRefused
from ._errors import DaemonTimeout as DaemonTimeout
from ._errors import DaemonUnavailable as DaemonUnavailable
from ._errors import InstallError as InstallError
from ._errors import ListenerError as ListenerError
from ._errors import ProtocolError as ProtocolError
from ._errors import SwlmError as SwlmError
from ._errors import TransportError as TransportError
from .protocol import DownloadComplete as DownloadComplete
from .protocol import DownloadFailed as DownloadFailed
from .protocol import ErrorEvent as ErrorEvent
from .protocol import Event as Event
from .protocol import InstalledPackagesSent as InstalledPackagesSent
from .protocol import Package as Package
from .protocol import ResultCode as ResultCode
from .protocol import UnknownEvent as UnknownEvent
from .protocol import UpdateReportSent as UpdateReportSent

if TYPE_CHECKING:
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
    from ._control import confirm_update as confirm_update
    from ._control import control_socket_path as control_socket_path
    from ._killpoints import kill_point as kill_point
    from ._listener import EventListener as EventListener
    from ._paths import DEFAULT_COMMANDS_SOCKET as DEFAULT_COMMANDS_SOCKET
    from ._paths import DEFAULT_EVENTS_SOCKET as DEFAULT_EVENTS_SOCKET
    from ._paths import SocketPaths as SocketPaths
    from ._paths import read_socket_paths as read_socket_paths
    from ._paths import resolve_socket_paths as resolve_socket_paths
    from ._progress import report_progress as report_progress
    from ._reboot import DEFAULT_BOOT_ID_FILE as DEFAULT_BOOT_ID_FILE
    from ._reboot import AwaitingConfirmation as AwaitingConfirmation
    from ._reboot import RebootNeeded as RebootNeeded
    from ._reboot import read_boot_id as read_boot_id

__version__ = "0.1.0"

#: The names that load on first use, and the submodule each comes from.
_LAZY = {
    "sync": "sync",
    "Backoff": "_backoff",
    "App": "_app",
    "Client": "_client",
    "Retry": "_client",
    "clean_result_text": "_client",
    "send_command": "_client",
    "send_installed_packages": "_client",
    "send_raw": "_client",
    "send_update_report": "_client",
    "EventListener": "_listener",
    "DEFAULT_COMMANDS_SOCKET": "_paths",
    "DEFAULT_EVENTS_SOCKET": "_paths",
    "SocketPaths": "_paths",
    "read_socket_paths": "_paths",
    "resolve_socket_paths": "_paths",
    "report_progress": "_progress",
    "AwaitingConfirmation": "_reboot",
    "RebootNeeded": "_reboot",
    "DEFAULT_BOOT_ID_FILE": "_reboot",
    "read_boot_id": "_reboot",
    "confirm_update": "_control",
    "control_socket_path": "_control",
    "kill_point": "_killpoints",
}

__all__ = [
    "DEFAULT_BOOT_ID_FILE",
    "DEFAULT_COMMANDS_SOCKET",
    "DEFAULT_EVENTS_SOCKET",
    "App",
    "AwaitingConfirmation",
    "Backoff",
    "Client",
    "CommandFailed",
    "CommandRejected",
    "CommandSyntaxError",
    "ConfigError",
    "ConfirmRefused",
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
    "RebootNeeded",
    "ResultCode",
    "Retry",
    "SocketPaths",
    "SwlmError",
    "TransportError",
    "UnknownEvent",
    "UpdateReportSent",
    "__version__",
    "clean_result_text",
    "confirm_update",
    "control_socket_path",
    "kill_point",
    "read_boot_id",
    "read_socket_paths",
    "report_progress",
    "resolve_socket_paths",
    "send_command",
    "send_installed_packages",
    "send_raw",
    "send_update_report",
    "sync",
]


if not TYPE_CHECKING:  # mypy sees the imports above; a typo stays an error there

    def __getattr__(name: str) -> object:
        module_name = _LAZY.get(name)
        if module_name is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module = importlib.import_module(f".{module_name}", __name__)
        value = module if name == module_name else getattr(module, name)
        globals()[name] = value  # later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
