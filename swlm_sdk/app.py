"""The SWLM handler framework: ``App``, its handler types, and ``InstallError`` for failures."""

from ._app import App as App
from ._app import BootHandler as BootHandler
from ._app import InstallHandler as InstallHandler
from ._app import Outcome as Outcome
from ._app import PackageList as PackageList
from ._app import PackagesProvider as PackagesProvider
from ._app import RollbackHandler as RollbackHandler
from ._client import Retry as Retry
from ._errors import ConfirmRefused as ConfirmRefused
from ._errors import InstallError as InstallError
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._reboot import AwaitingConfirmation as AwaitingConfirmation
from ._reboot import RebootNeeded as RebootNeeded
from .protocol import DownloadComplete as DownloadComplete
from .protocol import Package as Package
from .protocol import ResultCode as ResultCode

__all__ = [
    "App",
    "AwaitingConfirmation",
    "BootHandler",
    "ConfirmRefused",
    "DownloadComplete",
    "InstallError",
    "InstallHandler",
    "Journal",
    "JournalEntry",
    "Outcome",
    "Package",
    "PackageList",
    "PackagesProvider",
    "RebootNeeded",
    "ResultCode",
    "Retry",
    "RollbackHandler",
]
