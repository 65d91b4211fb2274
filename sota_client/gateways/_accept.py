"""The accept loop every listening gateway runs: no accept error ends it, and a daemon out of
file descriptors makes room instead of spinning.

anyio's ``serve()`` ends on the first failed accept, and with it the daemon. Here a peer that
left before it was accepted is skipped; any other failure is retried with a growing pause, said
once at WARNING until an accept works again. Out of descriptors (``EMFILE``), Linux fails the
accept before it looks for a connection, so this fails with nobody connecting too: the loop then
waits until someone is really waiting before it asks the gateway to close a connection for them.
"""

from __future__ import annotations

import errno
import logging
import resource
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

__all__ = ["accept_forever"]

logger = logging.getLogger(__name__)

_PEER_GONE = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM})
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_FIRST_PAUSE = 0.01  # after a failed accept; doubles while they keep failing
_LAST_PAUSE = 1.0


async def accept_forever(
    listener: SocketListener,
    *,
    what: str,
    admit: Callable[[SocketStream], Awaitable[None]],
    make_room: Callable[[], Awaitable[None]],
) -> None:
    """Accept for ever, handing each stream to ``admit``.

    :param what: the listener in messages: ``the commands socket /run/sota/commands.socket``.
    :param admit: takes a new stream (counts it, starts its task, or refuses it); a bug in it is
        logged and the stream closed, and the loop goes on.
    :param make_room: closes one of the gateway's connections, so that a descriptor comes back.
    """
    pause = _FIRST_PAUSE
    trouble: str | None = None  # the failure warned about, until an accept succeeds
    someone_waits = False  # a connection is known to be waiting for accept
    while True:
        try:
            stream = await listener.accept()
        except (anyio.BrokenResourceError, OSError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            code = cause.errno if isinstance(cause, OSError) else None
            if code in _PEER_GONE:
                logger.debug("A peer of %s left before it was accepted: %s", what, cause)
                continue
            if code in _OUT_OF_DESCRIPTORS and not someone_waits:
                await anyio.wait_readable(listener.extra(SocketAttribute.raw_socket))
                someone_waits = True
                continue
            kind = "descriptors" if code in _OUT_OF_DESCRIPTORS else repr(cause or exc)
            if trouble == kind:
                logger.debug("Accepting failed again: %s", cause or exc)
            elif code in _OUT_OF_DESCRIPTORS:
                logger.warning(
                    "The daemon is out of file descriptors (%s), so %s cannot accept; closing "
                    "its oldest connections until it can. Raise LimitNOFILE= (the soft limit "
                    "is %d)",
                    cause,
                    what,
                    resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                )
            else:
                logger.warning("Accepting on %s failed (%s); retrying", what, cause or exc)
            trouble = kind
            if code in _OUT_OF_DESCRIPTORS:
                await make_room()
            await anyio.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)
            continue
        someone_waits = False
        if trouble is not None:
            logger.info("%s accepts connections again", what[:1].upper() + what[1:])
            trouble = None
            pause = _FIRST_PAUSE
        try:
            await admit(stream)
        except Exception:  # a bug here must not end the server
            logger.exception("%s failed to take a connection", what[:1].upper() + what[1:])
            with anyio.CancelScope(shield=True):
                await stream.aclose()
