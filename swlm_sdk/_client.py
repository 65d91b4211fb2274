"""Send commands on the daemon's commands socket and decode its replies (async, anyio)."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

import anyio
import msgspec

from ._backoff import Backoff
from ._errors import CommandFailed, CommandRejected, DaemonTimeout, TransportError
from ._paths import StrPath, check_socket_path, resolve_socket_paths
from ._wire import exchange
from .protocol import (
    AwaitingReboot,
    Command,
    ErrorEvent,
    Event,
    InstalledPackagesSent,
    InstallProgress,
    Package,
    ResultCode,
    SendInstalledPackages,
    SendInstallProgress,
    SendRebootNeeded,
    SendUpdateReport,
    UpdateReport,
    UpdateReportSent,
    decode_reply,
    format_command,
)

__all__ = [
    "DEFAULT_MAX_REPLY",
    "DEFAULT_TIMEOUT",
    "EXTENSION_REJECTED",
    "Client",
    "Retry",
    "clean_result_text",
    "send_command",
    "send_installed_packages",
    "send_raw",
    "send_update_report",
]

log = logging.getLogger("swlm_sdk.client")

E = TypeVar("E", bound=Event)

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for a reply; the 2016 daemon answers only when the command's work is done."""

DEFAULT_MAX_REPLY = 16 << 20
"""Largest reply read (a FoundInstalledPackages of a big system is a few MB)."""

MAX_RESULT_TEXT = 4096
"""Result texts are cut to this many characters before sending."""

_TEXT_REJECTED = "Unknown Command: unexpected SendUpdateReport args: ["
#: How a 2016 daemon answers the extension commands (``SendInstallProgress``,
#: ``SendRebootNeeded``): it has none of them.
EXTENSION_REJECTED = "Unknown Command: bad command: "
_NOT_IN_TEXT = re.compile(r"[\r\n;]")
_HINT = "is the SOTA client running with socket = true in [gateway]?"


class Retry(msgspec.Struct, frozen=True):
    """Retry a command whose daemon is unreachable, waiting as :class:`Backoff` says.

    ``attempts`` counts every try (``None``: retry forever). A command that timed out may
    already have run, so timeouts are retried only with ``retry_timeouts=True``.
    """

    attempts: int | None = 5
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0
    retry_timeouts: bool = False

    @property
    def backoff(self) -> Backoff:
        """The waits between tries."""
        return Backoff(self.initial_delay, self.max_delay, self.multiplier)

    def delays(self) -> Iterator[float]:
        """The pauses between tries: one fewer than ``attempts``, growing to ``max_delay``."""
        backoff = self.backoff
        for failure in itertools.count(1):
            if self.attempts is not None and failure >= self.attempts:
                return
            yield backoff.delay(failure)


def clean_result_text(text: str | None) -> str:
    """Make a result text fit the text grammar: line breaks and ``;`` become spaces.

    The result is stripped of surrounding blanks and cut to :data:`MAX_RESULT_TEXT` characters.
    """
    if not text:
        return ""
    return _NOT_IN_TEXT.sub(" ", text)[:MAX_RESULT_TEXT].strip(" \t")


def _describe(event: Event) -> str:
    if isinstance(event, ErrorEvent):
        return f"Error: {event.text}"
    return event.name or type(event).__name__


def _expect(reply: Event, kind: type[E], failure: str) -> E:
    """``reply`` if it is the success event ``kind``; else :class:`CommandFailed` saying
    ``failure`` and what the daemon answered."""
    if not isinstance(reply, kind):
        raise CommandFailed(f"{failure}: the daemon answered {_describe(reply)}", reply)
    return reply


def _packages(packages: Iterable[Package | tuple[str, str]]) -> tuple[Package, ...]:
    return tuple(p if isinstance(p, Package) else Package(str(p[0]), str(p[1])) for p in packages)


class Client:
    """A connection-per-command client for the daemon's commands socket.

    The socket path comes from ``commands_socket``, else ``config`` (the daemon's TOML), else
    ``$SOTA_CONFIG``, else ``/tmp/sota-commands.socket``. A client holds no connection: each
    command opens one, writes the text, half-closes and reads the reply to the end.

    :param reply_timeout: seconds allowed for connecting, sending and reading the whole reply.
    :param retry: retry a command while the daemon is unreachable (default: no retry).
    :param max_reply: largest reply accepted, in bytes.
    :raises ConfigError: the socket path or the config file is unusable.
    """

    def __init__(
        self,
        commands_socket: StrPath | None = None,
        *,
        config: StrPath | None = None,
        reply_timeout: float = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        max_reply: int = DEFAULT_MAX_REPLY,
    ) -> None:
        if commands_socket is None:
            self.socket_path = resolve_socket_paths(config=config).commands
        else:
            self.socket_path = check_socket_path(commands_socket, "commands socket")
        if not reply_timeout > 0:
            raise ValueError(f"reply_timeout must be positive, got {reply_timeout!r}")
        self.reply_timeout = reply_timeout
        self.retry = retry
        self.max_reply = max_reply

    def __repr__(self) -> str:
        return f"Client({self.socket_path!r}, reply_timeout={self.reply_timeout!r})"

    async def send_raw(self, request: str | bytes) -> bytes:
        """Send one command exactly as given and return the reply bytes as they came.

        :raises DaemonUnavailable: no socket, or nobody listening (after any retries).
        :raises DaemonTimeout: no complete reply within the timeout.
        :raises TransportError: any other socket failure.
        """
        data = request.encode() if isinstance(request, str) else request
        delays = self.retry.delays() if self.retry is not None else iter(())
        while True:
            try:
                return await exchange(
                    self.socket_path,
                    data,
                    time_limit=self.reply_timeout,
                    limit=self.max_reply,
                    hint=_HINT,
                )
            except TransportError as exc:
                retry_timeouts = self.retry is not None and self.retry.retry_timeouts
                if isinstance(exc, DaemonTimeout) and not retry_timeouts:
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise
                log.info("%s; trying again in %.2f s", exc, delay)
                await anyio.sleep(delay)

    async def send_command(self, command: Command | str) -> Event:
        """Send a command and return the daemon's reply event, whatever it is.

        A :class:`~swlm_sdk.protocol.Command` is written in its canonical text form; a str
        is sent as it is. The reply may be a failure event (``ErrorEvent``,
        ``NotAuthenticated``, ``DownloadFailed``): it is returned, not raised.

        :raises ProtocolError: the command has no text form, or the reply is not valid.
        :raises CommandRejected: the daemon answered with an error text
            (``Unknown Command: ...``); ``.reply`` holds it.
        :raises TransportError: see :meth:`send_raw`.
        """
        text = command if isinstance(command, str) else format_command(command)
        log.debug("-> %s: %s", self.socket_path, text)
        reply = await self.send_raw(text)
        log.debug("<- %s: %r", self.socket_path, reply[:200])
        return decode_reply(reply)

    async def send_update_report(
        self, update_id: str, code: ResultCode | int | str, text: str | None = None
    ) -> UpdateReportSent:
        """Report an update's result: ``SendUpdateReport <update_id> <code> [text]``.

        ``code`` is a :class:`ResultCode`, its number or its name. ``text`` is optional; line
        breaks and ``;`` in it become spaces (see :func:`clean_result_text`). A daemon that
        rejects the result text, as the 2016 client does, gets the report again without it
        and the SDK logs a warning.

        :raises ProtocolError: bad code, or an update id the text grammar cannot carry.
        :raises CommandFailed: the daemon answered e.g. ``NotAuthenticated`` or ``Error``.
        :raises CommandRejected: the daemon rejected the command text.
        :raises TransportError: see :meth:`send_raw`.
        """
        result = ResultCode.parse(code)
        clean = clean_result_text(text)
        command = SendUpdateReport(UpdateReport.single(update_id, result, clean))
        try:
            reply = await self.send_command(command)
        except CommandRejected as exc:
            if not (clean and exc.reply.startswith(_TEXT_REJECTED)):
                raise
            log.warning(
                "the daemon does not accept a result text (a 2016 client?): "
                "sending the report for %s again without %r",
                update_id,
                clean,
            )
            command = SendUpdateReport(UpdateReport.single(update_id, result))
            reply = await self.send_command(command)
        return _expect(reply, UpdateReportSent, f"report for {update_id} not accepted")

    async def send_install_progress(
        self, update_id: str, percent: int, text: str | None = None
    ) -> InstallProgress:
        """Say how far an install has got: ``SendInstallProgress <update_id> <percent> [text]``
        (an extension). ``text`` is cleaned as a result text is.

        A 2016 daemon has no such command: it answers ``Unknown Command: bad command: ...``,
        raised as :class:`CommandRejected` (its ``reply`` starts with
        :data:`EXTENSION_REJECTED`); :class:`~swlm_sdk.App` then stops sending progress.

        :raises ProtocolError: ``percent`` is not from 0 to 100, or the update id cannot be
            sent as text.
        :raises CommandFailed: the daemon refused it (``Error``: it does not know the update,
            or does not wait for its install).
        :raises CommandRejected: the daemon rejected the command text.
        :raises TransportError: see :meth:`send_raw`.
        """
        command = SendInstallProgress(update_id, percent, clean_result_text(text))
        reply = await self.send_command(command)
        return _expect(reply, InstallProgress, f"progress of {update_id} not taken")

    async def send_reboot_needed(self, update_id: str, text: str | None = None) -> AwaitingReboot:
        """Say that an update is installed but counts only after a reboot and a confirmation:
        ``SendRebootNeeded <update_id> [text]`` (an extension). The daemon then waits for its
        report (``OK`` once confirmed, a failure after a rollback) with no deadline.

        :raises CommandFailed: the daemon refused it (it does not hold the update).
        :raises CommandRejected: the daemon rejected the command (a 2016 daemon: its reply
            starts with :data:`EXTENSION_REJECTED`, ``Unknown Command: bad command: ``).
        :raises TransportError: see :meth:`send_raw`.
        """
        reply = await self.send_command(SendRebootNeeded(update_id, clean_result_text(text)))
        return _expect(reply, AwaitingReboot, f"reboot of {update_id} not awaited")

    async def send_installed_packages(
        self, packages: Iterable[Package | tuple[str, str]]
    ) -> InstalledPackagesSent:
        """Replace the installed-package list on Core: ``SendInstalledPackages n1 v1 ...``.

        :raises ProtocolError: the list is empty, or a name or version contains a blank or
            ``;`` (the text grammar cannot carry it).
        :raises CommandFailed: the daemon answered with something else than
            ``InstalledPackagesSent``.
        :raises CommandRejected: the daemon rejected the command text.
        :raises TransportError: see :meth:`send_raw`.
        """
        reply = await self.send_command(SendInstalledPackages(_packages(packages)))
        return _expect(reply, InstalledPackagesSent, "package list not accepted")


async def send_raw(
    request: str | bytes,
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> bytes:
    """:meth:`Client.send_raw` with a one-off :class:`Client`."""
    client = Client(commands_socket, config=config, reply_timeout=reply_timeout, retry=retry)
    return await client.send_raw(request)


async def send_command(
    command: Command | str,
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> Event:
    """:meth:`Client.send_command` with a one-off :class:`Client`."""
    client = Client(commands_socket, config=config, reply_timeout=reply_timeout, retry=retry)
    return await client.send_command(command)


async def send_update_report(
    update_id: str,
    code: ResultCode | int | str,
    text: str | None = None,
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> UpdateReportSent:
    """:meth:`Client.send_update_report` with a one-off :class:`Client`."""
    client = Client(commands_socket, config=config, reply_timeout=reply_timeout, retry=retry)
    return await client.send_update_report(update_id, code, text)


async def send_installed_packages(
    packages: Iterable[Package | tuple[str, str]],
    *,
    commands_socket: StrPath | None = None,
    config: StrPath | None = None,
    reply_timeout: float = DEFAULT_TIMEOUT,
    retry: Retry | None = None,
) -> InstalledPackagesSent:
    """:meth:`Client.send_installed_packages` with a one-off :class:`Client`."""
    client = Client(commands_socket, config=config, reply_timeout=reply_timeout, retry=retry)
    return await client.send_installed_packages(packages)
