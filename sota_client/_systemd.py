"""systemd integration without libsystemd: ``sd_notify`` messages and watchdog pings.

With ``Type=notify`` systemd waits for ``READY=1``; ``STATUS=`` shows in ``systemctl status``;
``WATCHDOG=1`` must come every ``WATCHDOG_USEC``/2 when ``WatchdogSec=`` is set. Outside systemd
(no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

import anyio

__all__ = ["notify", "watchdog"]

logger = logging.getLogger(__name__)
_failed_before = False

NOTIFY_TIMEOUT = 1.0
"""Seconds a message may wait for room in the notify socket's queue (a stuck systemd)."""


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``STATUS=...`` and the like; True if a notify socket was there."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Called from the event loop: a full queue must not block the daemon for ever.
            sock.settimeout(NOTIFY_TIMEOUT)
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as exc:
        global _failed_before
        level = logging.DEBUG if _failed_before else logging.WARNING
        logger.log(level, "couldn't notify systemd at %s: %s", address, exc)
        _failed_before = True
        return False
    return True


async def watchdog() -> None:
    """Ping the systemd watchdog at half its interval, for as long as the event loop runs."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: not a number", os.environ["WATCHDOG_USEC"])
        return
    pid = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return
    interval = usec / 2_000_000
    logger.info("systemd watchdog: pinging every %.1f s", interval)
    while True:
        notify("WATCHDOG=1")
        await anyio.sleep(interval)
