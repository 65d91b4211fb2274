"""Blocking API for plain scripts: the same operations as the async API, run through anyio.

Do not call these functions from inside a running event loop; use the async ones there.
"""

from ._client import Retry as Retry
from ._sync import EventStream as EventStream
from ._sync import confirm_update as confirm_update
from ._sync import listen as listen
from ._sync import send_command as send_command
from ._sync import send_installed_packages as send_installed_packages
from ._sync import send_raw as send_raw
from ._sync import send_update_report as send_update_report

__all__ = [
    "EventStream",
    "Retry",
    "confirm_update",
    "listen",
    "send_command",
    "send_installed_packages",
    "send_raw",
    "send_update_report",
]
