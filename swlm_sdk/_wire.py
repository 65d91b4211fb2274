"""Socket framing of wire protocol 0.1: one message per connection, half-close, read to EOF.

Every OS and anyio failure is turned into the SDK's :class:`~swlm_sdk.TransportError` tree here.
"""

from __future__ import annotations

import anyio
from anyio.abc import ByteReceiveStream

from ._errors import DaemonTimeout, DaemonUnavailable, ProtocolError, TransportError

__all__ = ["exchange", "push", "receive_to_eof", "stream_failure"]

_CHUNK = 65536


async def receive_to_eof(stream: ByteReceiveStream, limit: int, what: str) -> bytes:
    """Read until the peer half-closes; more than ``limit`` bytes is a ProtocolError.

    ``what`` names the message in the error (``reply``, ``event``).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await stream.receive(_CHUNK)
        except anyio.EndOfStream:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"{what} is larger than {limit} bytes")
        chunks.append(chunk)


def stream_failure(exc: BaseException) -> str:
    """Why a stream failed, in words: anyio's stream errors carry no text of their own."""
    if isinstance(exc, anyio.EndOfStream):
        return "the peer closed the connection"
    if isinstance(exc, anyio.ClosedResourceError):
        return "the connection was already closed"
    cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause or "") or f"the connection broke ({type(cause or exc).__name__})"


def _unreachable(exc: OSError, path: str, hint: str) -> TransportError:
    if isinstance(exc, FileNotFoundError):
        return DaemonUnavailable(f"no socket at {path}: {hint}")
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnavailable(f"nothing is listening on {path} (connection refused): {hint}")
    if isinstance(exc, PermissionError):
        return DaemonUnavailable(f"no permission to connect to {path}")
    return TransportError(f"cannot use socket {path}: {exc.strerror or exc}")


async def exchange(path: str, request: bytes, *, time_limit: float, limit: int, hint: str) -> bytes:
    """Send one request on a fresh connection, half-close, and return the whole reply.

    :raises DaemonUnavailable: no socket at ``path`` or nobody listening.
    :raises DaemonTimeout: no complete reply within ``time_limit`` seconds.
    :raises TransportError: any other socket failure (reset, permission, ...).
    :raises ProtocolError: the reply is larger than ``limit`` bytes.
    """
    try:
        with anyio.fail_after(time_limit):
            stream = await anyio.connect_unix(path)
            async with stream:
                await stream.send(request)
                await stream.send_eof()
                return await receive_to_eof(stream, limit, "reply")
    except TimeoutError:
        raise DaemonTimeout(f"no complete reply on {path} within {time_limit:g} s") from None
    except OSError as exc:
        raise _unreachable(exc, path, hint) from None
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        raise TransportError(f"the connection to {path} was reset before the reply") from None


async def push(path: str, message: bytes, *, time_limit: float, hint: str) -> None:
    """Deliver one message on a fresh connection and half-close; nothing is read back.

    :raises DaemonUnavailable: no socket at ``path`` or nobody listening.
    :raises DaemonTimeout: the message could not be written within ``time_limit`` seconds.
    :raises TransportError: any other socket failure.
    """
    try:
        with anyio.fail_after(time_limit):
            stream = await anyio.connect_unix(path)
            async with stream:
                await stream.send(message)
                await stream.send_eof()
    except TimeoutError:
        raise DaemonTimeout(f"could not deliver to {path} within {time_limit:g} s") from None
    except OSError as exc:
        raise _unreachable(exc, path, hint) from None
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        raise TransportError(f"the connection to {path} was reset while writing") from None
