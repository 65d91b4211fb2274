"""systemd integration without libsystemd: ``sd_notify`` messages and watchdog pings.

With ``Type=notify`` systemd waits for ``READY=1``; ``STATUS=`` shows in ``systemctl status``;
``WATCHDOG=1`` must come every ``WATCHDOG_USEC``/2 when ``WatchdogSec=`` is set. Outside systemd
(no ``NOTIFY_SOCKET``) every call does nothing.

A send never waits: ``notify`` runs in the event loop, and a notify socket whose queue is full
(systemd busy, or a test harness that stopped reading) must not stall the daemon. A ``STATUS=``
that finds the queue full is dropped: the next one replaces it. Every other state is kept and
sent again, with the next message and by :func:`watchdog`'s retries, until systemd takes it:
without ``READY=1`` systemd times the start out, without ``STOPPING=1`` it does not show the
stop, and a ``WATCHDOG=1`` left to the next ping would arrive right at the watchdog's deadline.

An idle daemon costs systemd and itself as little as it can: one datagram socket stays open
(opened again after an error), and a ``STATUS=`` equal to the one systemd already has is not
sent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import anyio

__all__ = ["notify", "watchdog"]

logger = logging.getLogger(__name__)

RETRY_FIRST = 0.1
"""Seconds before a kept state is first sent again; the wait doubles up to ``RETRY_MAX``."""
RETRY_MAX = 5.0

_DROPPABLE = frozenset({"STATUS"})
"""States that the next message makes up for: not kept when the queue is full."""


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``STATUS=...`` and the like, without waiting; True if systemd got them."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    return _notifier.send(address, states)


async def watchdog() -> None:
    """The daemon's systemd task: ping the watchdog at half its interval (when it is on), and
    send again the states that found systemd's queue full. Runs until cancelled."""
    interval = _watchdog_interval()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_notifier.resend_kept)
        if interval is not None:
            logger.info("systemd watchdog: pinging every %.1f s", interval)
            tg.start_soon(_ping, interval)


async def _ping(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await anyio.sleep(interval)


def _watchdog_interval() -> float | None:
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: not a number", os.environ["WATCHDOG_USEC"])
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000


def _name(state: str) -> str:
    return state.partition("=")[0]


class _Notifier:
    """The states kept for systemd; the first failure and the first recovery are logged above
    DEBUG, so a flapping queue cannot flood the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, str] = {}  # name -> state, e.g. "READY" -> "READY=1"
        self._status: str | None = None  # the last STATUS= systemd got
        self._sock: socket.socket | None = None  # connected to self._address
        self._address = ""
        self._warned = False
        self._recovered = False
        self._wakeup: tuple[anyio.Event, int] | None = None  # and the event loop's thread

    def send(self, address: str, states: tuple[str, ...]) -> bool:
        with self._lock:
            kept_before = list(self._kept.values())
            message = dict(self._kept)
            for state in states:
                message[_name(state)] = state  # a newer value of a kept state wins
            if "STATUS" in message and message["STATUS"] == self._status:
                del message["STATUS"]  # systemd shows it already
            if not message:
                return True
            try:
                self._send_now(address, "\n".join(message.values()).encode())
            except OSError as exc:
                full = isinstance(exc, BlockingIOError)  # no room now, not "nobody there"
                self._kept = {k: v for k, v in message.items() if full and k not in _DROPPABLE}
                self._log_failure(address, exc, full)
                wake = bool(self._kept)
            else:
                if kept_before:
                    level = logging.DEBUG if self._recovered else logging.INFO
                    self._recovered = True
                    logger.log(level, "systemd got %s after all", ", ".join(kept_before))
                self._kept = {}
                self._status = message.get("STATUS", self._status)
                return True
        if wake:
            self._wake_resender()
        return False

    def _send_now(self, address: str, data: bytes) -> None:
        """One datagram on the socket kept open; a socket that failed is opened again once,
        at once (systemd restarted, or the address changed), except on a full queue."""
        for attempt in (1, 2):
            sock = self._socket(address)
            try:
                sock.send(data)
                return
            except BlockingIOError:
                raise  # no room now: the socket is fine
            except OSError:
                self._close()
                if attempt == 2:
                    raise

    def _socket(self, address: str) -> socket.socket:
        if self._sock is not None and self._address == address:
            return self._sock
        self._close()
        target = "\0" + address[1:] if address.startswith("@") else address  # abstract namespace
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)  # a full queue raises BlockingIOError instead of waiting
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        self._sock, self._address = sock, address
        return sock

    def close(self) -> None:
        """Close the socket kept open (the next message opens one again)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _log_failure(self, address: str, exc: OSError, full: bool) -> None:
        if not full:
            advice = "nothing receives there: when not running under systemd, unset NOTIFY_SOCKET"
        else:
            kept = ", ".join(self._kept.values())
            what = f"{kept} kept and sent again" if kept else "status dropped"
            advice = (
                f"its queue is full ({what})."
                " If this repeats, whatever set NOTIFY_SOCKET does not read it: systemd does, so"
                " look for a stuck systemd; a test harness must keep reading it, or unset it"
            )
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, "couldn't notify systemd at %s: %s; %s", address, exc, advice)

    def _wake_resender(self) -> None:
        wakeup = self._wakeup
        # Without a resender, or from another thread (where setting the event is unsafe, and
        # anyio's way in would wait for the event loop), the kept states go out with the next
        # message: the watchdog's ping, or the next STATUS=.
        if wakeup is not None and wakeup[1] == threading.get_ident():
            wakeup[0].set()

    async def resend_kept(self) -> None:
        """Send the kept states again, with growing pauses, until systemd takes them."""
        try:
            while True:
                event = anyio.Event()
                self._wakeup = (event, threading.get_ident())
                if not self._kept:
                    await event.wait()
                delay = RETRY_FIRST
                while self._kept:
                    await anyio.sleep(delay)
                    notify()
                    delay = min(delay * 2, RETRY_MAX)
        finally:
            self._wakeup = None


_notifier = _Notifier()
