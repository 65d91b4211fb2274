"""The SDK's one exception tree; nothing from anyio, msgspec or the OS escapes past it.

::

    SwlmError
     ├── ProtocolError            bytes that are not valid wire protocol 0.1
     │    └── CommandSyntaxError  a text command the 2016 grammar rejects
     ├── CommandRejected          the daemon answered with an error text, not an event
     ├── CommandFailed            the daemon ran the command and answered with a failure event
     ├── ConfigError              a socket path or the daemon's TOML config is unusable
     ├── ConfirmRefused           the App did not confirm an update after its reboot
     ├── TransportError           the daemon could not be reached or did not answer
     │    ├── DaemonUnavailable   no socket, or nobody listening on it
     │    ├── DaemonTimeout       connected, but no complete answer in time
     │    └── ListenerError       the SWLM's events socket could not be created
     └── InstallError             raised by an SWLM handler: carries the ResultCode to report
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol._codes import ResultCode
    from .protocol._events import Event

__all__ = [
    "CommandFailed",
    "CommandRejected",
    "CommandSyntaxError",
    "ConfigError",
    "ConfirmRefused",
    "DaemonTimeout",
    "DaemonUnavailable",
    "InstallError",
    "ListenerError",
    "ProtocolError",
    "SwlmError",
    "TransportError",
]


class SwlmError(Exception):
    """Root of every error the SDK raises."""


class ProtocolError(SwlmError, ValueError):
    """Input that is not valid wire protocol; the message says what is wrong."""


class CommandSyntaxError(ProtocolError):
    """A text command rejected by the 2016 grammar or argument rules.

    ``message`` is the 2016 inner text (``usage: dl <id>``); ``reply`` is what the daemon sends
    back to the peer (``Unknown Command: usage: dl <id>``).
    """

    def __init__(self, message: str, *, reply: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply if reply is not None else f"Unknown Command: {message}"


class CommandRejected(SwlmError):
    """The daemon replied with an error text (e.g. ``Unknown Command: ...``) instead of an event."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class CommandFailed(SwlmError):
    """The daemon accepted the command but answered with a failure event.

    ``event`` is the reply, e.g. ``ErrorEvent("HTTP client error: ...")`` or
    ``NotAuthenticated()`` for ``SendUpdateReport``.
    """

    def __init__(self, message: str, event: Event) -> None:
        super().__init__(message)
        self.event = event


class ConfigError(SwlmError):
    """A socket path, or the daemon's TOML config file it was read from, cannot be used."""


class ConfirmRefused(SwlmError):
    """The App did not confirm the update; the message says why (unknown, not rebooted into
    yet, the ``on_boot`` hook gave no verdict, already reported)."""


class TransportError(SwlmError):
    """The commands or events socket failed: missing, refused, reset or timed out."""


class DaemonUnavailable(TransportError):
    """Nothing is listening on the daemon's commands socket."""


class DaemonTimeout(TransportError):
    """The daemon accepted the connection but did not answer completely in time."""


class ListenerError(TransportError):
    """The events socket could not be created (path in use, not a socket, or no permission)."""


class InstallError(SwlmError):
    """Raised by an install handler to report a failure with a specific result code and text."""

    def __init__(self, code: ResultCode | int | str, text: str = "") -> None:
        from .protocol._codes import ResultCode

        self.code = ResultCode.parse(code)
        self.text = text
        super().__init__(f"{self.code.name}: {text}" if text else self.code.name)
