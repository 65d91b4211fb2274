"""The daemon's one exception tree; every failure a caller can act on is one of these.

::

    SotaError                   root: anything the daemon reports as an ``Error`` event text
     ├── BackendError           a call to Core or to the auth server failed
     │    ├── TransportError    no usable HTTP exchange: connect, read, write, timeout, protocol
     │    ├── HttpStatusError   Core answered with a status that is neither 2xx nor 401/403
     │    ├── AuthError         401/403 from Core, or the token request was refused
     │    ├── TokenError        the auth server gave no usable token (down, 404, HTML, junk)
     │    └── DecodeError       a 2xx body that is not the JSON we need
     ├── DownloadError         an update image could not be stored (``kind`` says why)
     ├── InternalError         a library or the daemon itself raised something unexpected
     └── InvalidIdError        an update id that is not a safe file name (see ``_ids``)

``str(error)`` is the 2016 display text (``HTTP client error: Response Code: 404 Not Found``),
which the daemon sends unchanged as ``Error`` and ``DownloadFailed`` texts. Every error has a
``transient`` flag: ``True`` when the same call may succeed later without anything being fixed.

To add an error (package manager, config, ...), subclass :class:`SotaError` (or a branch), set
``transient`` as a class attribute if it differs from ``False``, and add it to the tree above.
"""

from __future__ import annotations

import enum
import errno
import http
import os

__all__ = [
    "AuthError",
    "BackendError",
    "DecodeError",
    "DownloadError",
    "DownloadErrorKind",
    "HttpStatusError",
    "InternalError",
    "InvalidIdError",
    "SotaError",
    "TokenError",
    "TransportError",
    "error_for_status",
    "io_error_text",
    "one_line",
]


class SotaError(Exception):
    """Root of every error the daemon raises on purpose; ``str()`` is the text to show."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        return self.message


class BackendError(SotaError):
    """A call to Core or to the auth server failed."""


class TransportError(BackendError):
    """No usable HTTP exchange: refused, reset, timed out, or the server broke the protocol.

    The message names the request (method and URL without its query) and what went wrong.
    ``maybe_delivered`` is False only when the request certainly never reached the server
    (no connection was made); otherwise the server may have acted on it.
    """

    transient = True

    def __init__(self, message: str, *, maybe_delivered: bool = True) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class _ResponseError(BackendError):
    """A response with an unwanted status; shown in the 2016 ``ResponseData`` form."""

    prefix = ""

    def __init__(self, status: int, reason: str, body: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(f"{self.prefix}: {response_data(status, reason, body)}")


class HttpStatusError(_ResponseError):
    """Core answered with a status that is neither 2xx nor 401/403 (and is not a redirect).

    ``transient`` is true for 5xx, 408, 425 and 429: the same call may work later.
    """

    prefix = "HTTP client error"

    def __init__(self, status: int, reason: str, body: bytes = b"") -> None:
        super().__init__(status, reason, body)
        self.transient = status >= 500 or status in (408, 425, 429)


class AuthError(_ResponseError):
    """401 or 403: the token is missing, expired or refused, or the credentials are wrong.

    Not transient: the same call fails again until the daemon authenticates anew.
    """

    prefix = "HTTP authorization error"


class TokenError(BackendError):
    """The auth server did not give a usable token, for any reason but refused credentials.

    Kept apart from Core's own answers: a 404 or an HTML page from the token endpoint says
    nothing about the call that needed the token (a report must never be dropped for it).
    Transient: the auth server may be fixed or come back.
    """

    transient = True

    def __init__(self, message: str, *, cause: BackendError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class DecodeError(BackendError):
    """A 2xx response whose body is not the JSON expected (2016: ``Failed to decode JSON``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Failed to decode JSON: {detail}")
        self.detail = detail


class DownloadErrorKind(enum.StrEnum):
    """Why a download failed; decides ``transient`` and whether the ``.part`` file is kept."""

    HTTP = "http"  # an error status, or a redirect gone wrong (no Location, too many hops)
    NETWORK = "network"  # could not connect or timed out, after the retries
    TRUNCATED = "truncated"  # the body stopped early, after the retries; .part kept for resume
    SIZE_MISMATCH = "size_mismatch"  # more bytes than announced, or an inconsistent Range answer
    TOO_LARGE = "too_large"  # larger than device.max_download_size (announced or streamed)
    DISK_FULL = "disk_full"  # ENOSPC / EDQUOT while writing
    IO = "io"  # any other local file-system error


_TRANSIENT_KINDS = frozenset({DownloadErrorKind.NETWORK, DownloadErrorKind.TRUNCATED})


class DownloadError(SotaError):
    """An update image could not be downloaded and stored; ``kind`` says why.

    For :attr:`DownloadErrorKind.HTTP` and :attr:`~DownloadErrorKind.NETWORK` the message is the
    :class:`BackendError` text (the 2016 ``DownloadFailed`` reason) and ``__cause__`` is that
    error; ``transient`` then follows it.
    """

    def __init__(
        self,
        kind: DownloadErrorKind,
        message: str,
        *,
        update_id: str = "",
        transient: bool | None = None,
    ) -> None:
        super().__init__(
            message, transient=kind in _TRANSIENT_KINDS if transient is None else transient
        )
        self.kind = kind
        self.update_id = update_id

    @classmethod
    def from_os_error(cls, exc: OSError, what: str, *, update_id: str = "") -> DownloadError:
        """``IO error: No space left on device (os error 28): writing /var/sota/u1.part``."""
        kind = (
            DownloadErrorKind.DISK_FULL
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else DownloadErrorKind.IO
        )
        return cls(kind, f"{io_error_text(exc)}: {what}", update_id=update_id)


class InternalError(SotaError):
    """An exception nobody expected (a library's, or a bug), converted at a boundary.

    It becomes an ``Error`` event and a logged traceback instead of a dead task; an entry of
    the journal that keeps causing it is set aside (see ``_supervisor.Strikes``).
    """

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(f"Internal error in {where}: {type(exc).__name__}: {exc}")


class InvalidIdError(SotaError):
    """An update id that is not a safe single file name; nothing was done with it."""


def response_data(status: int, reason: str, body: bytes) -> str:
    """The 2016 ``ResponseData`` display: status line, then the body if there is one."""
    text = f"Response Code: {status} {reason}".rstrip()
    if not body:
        return text
    try:
        return f"{text}, Body:\n{body.decode('utf-8')}"
    except UnicodeDecodeError:
        return f"{text}, Body: {len(body)} bytes"


def reason_phrase(status: int, sent: str = "") -> str:
    """The standard reason for ``status`` (as 2016 hyper showed it), else what the server sent."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return sent


def error_for_status(status: int, reason: str, body: bytes = b"") -> BackendError:
    """The error for a non-2xx final response: :class:`AuthError` for 401/403, else status."""
    if status in (401, 403):
        return AuthError(status, reason, body)
    return HttpStatusError(status, reason, body)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` for a log line: line breaks and runs of blanks become one space, and more than
    ``limit`` characters are cut with an ellipsis (server bodies can be pages of HTML)."""
    flat = " ".join(text.split())
    if not flat.isprintable():  # a terminal escape from a server must not reach the terminal
        flat = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def io_error_text(exc: OSError) -> str:
    """An OSError in the 2016 (Rust ``io::Error``) form: ``IO error: <strerror> (os error N)``."""
    if exc.errno is None:
        return f"IO error: {exc}"
    return f"IO error: {exc.strerror or os.strerror(exc.errno)} (os error {exc.errno})"
