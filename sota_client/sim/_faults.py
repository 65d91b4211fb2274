"""Fault injection: what to do to the next N requests that match a method, path regex or route."""

from __future__ import annotations

import re
import threading
from typing import Annotated

import msgspec

__all__ = [
    "ChunkedFault",
    "DelayFault",
    "DropFault",
    "ExpireTokensFault",
    "Fault",
    "FaultBook",
    "LoseAnswerFault",
    "RedirectFault",
    "StallFault",
    "StatusFault",
    "TruncateFault",
    "decode_faults",
]

DOWNLOAD_ROUTES = frozenset({"download"})


class _FaultBase(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", forbid_unknown_fields=True
):
    """What every fault has: which requests it matches, and for how many of them.

    ``method`` matches case-insensitively, ``path`` is a regular expression searched in the
    request path (without the query), ``route`` is a route name (``updates``, ``download``,
    ``report``, ``installed``, ``system_info``, ``token``, ``storage``, ...). Unset matchers
    match everything. The admin API under ``/sim/`` is never faulted.
    """

    method: str | None = None
    path: str | None = None
    route: str | None = None
    count: Annotated[int, msgspec.Meta(ge=1)] = 1

    def __post_init__(self) -> None:
        if self.path is not None:
            try:
                re.compile(self.path)
            except re.error as exc:
                raise ValueError(f"bad path regex {self.path!r}: {exc}") from None

    def applies_to(self, route: str | None) -> bool:
        """Whether this kind of fault can act on a request of ``route`` at all."""
        return True


class StatusFault(_FaultBase, frozen=True, tag="status"):
    """Answer with ``status`` and ``body`` instead of doing the request.

    A 2xx is allowed too: a server that says "OK" with nonsense (an HTML page where a token
    belongs, an update list the client must refuse).
    """

    status: Annotated[int, msgspec.Meta(ge=200, le=599)] = 503
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    #: A ``Location`` header, for redirects: the request's own path makes a redirect loop.
    location: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for value in (self.content_type, self.location or ""):
            if any(c in value for c in "\r\n\0"):
                raise ValueError("content_type and location must be single header lines")


class DelayFault(_FaultBase, frozen=True, tag="delay"):
    """Wait ``seconds`` before handling the request (cut short when the simulator stops)."""

    seconds: Annotated[float, msgspec.Meta(gt=0, le=300)]


class TruncateFault(_FaultBase, frozen=True, tag="truncate"):
    """Announce the full Content-Length, send only the first ``after`` bytes, then close."""

    after: Annotated[int, msgspec.Meta(ge=0)] = 0


class StallFault(_FaultBase, frozen=True, tag="stall"):
    """Announce the full Content-Length, send the first ``after`` bytes, then go silent for
    ``seconds`` (cut short when the simulator stops) before closing: a link that hangs
    mid-download, so a test can kill the client while it has part of the image."""

    after: Annotated[int, msgspec.Meta(ge=0)] = 0
    seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0


class DropFault(_FaultBase, frozen=True, tag="drop"):
    """Read the request, then close the connection without answering."""


class LoseAnswerFault(_FaultBase, frozen=True, tag="lose_answer"):
    """Do the request (a report is recorded), then close the connection without answering:
    the client cannot know that it worked, as when a reply is lost or the client dies."""


class ExpireTokensFault(_FaultBase, frozen=True, tag="expire_tokens"):
    """Expire every issued token, then handle the request (which then needs a new token)."""


class ChunkedFault(_FaultBase, frozen=True, tag="chunked"):
    """Send the body with ``Transfer-Encoding: chunked`` instead of a Content-Length."""

    chunk_size: Annotated[int, msgspec.Meta(ge=1, le=16 * 1024 * 1024)] = 65536


class RedirectFault(_FaultBase, frozen=True, tag="redirect"):
    """Answer a download with 302 to a second URL on this server, as S3 storage does.

    The second URL (``/storage/<token>``) needs no token and refuses one, as a presigned URL
    does: a request carrying ``Authorization`` gets 400. It only matches downloads.
    """

    def applies_to(self, route: str | None) -> bool:
        return route in DOWNLOAD_ROUTES


Fault = (
    StatusFault
    | DelayFault
    | TruncateFault
    | StallFault
    | DropFault
    | LoseAnswerFault
    | ExpireTokensFault
    | ChunkedFault
    | RedirectFault
)

_DECODER = msgspec.json.Decoder(Fault | list[Fault])


def decode_faults(body: bytes) -> list[Fault]:
    """Decode one fault spec or a JSON array of them.

    :raises msgspec.DecodeError: with a message naming the bad field.
    """
    decoded = _DECODER.decode(body)
    return decoded if isinstance(decoded, list) else [decoded]


class _Armed:
    __slots__ = ("fault", "path_re", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.count
        self.path_re = re.compile(fault.path) if fault.path is not None else None

    def matches(self, method: str, path: str, route: str | None) -> bool:
        f = self.fault
        return (
            (f.method is None or f.method.upper() == method.upper())
            and (self.path_re is None or self.path_re.search(path) is not None)
            and (f.route is None or f.route == route)
            and f.applies_to(route)
        )


class FaultBook:
    """Armed faults, in injection order; each request takes at most one (the first match)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._armed.append(_Armed(fault))

    def take(self, method: str, path: str, route: str | None) -> Fault | None:
        """The first armed fault matching the request, counted down by one."""
        with self._lock:
            for armed in self._armed:
                if armed.matches(method, path, route):
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                    return armed.fault
        return None

    def pending(self) -> list[tuple[Fault, int]]:
        """Each armed fault with the number of requests it still applies to."""
        with self._lock:
            return [(a.fault, a.remaining) for a in self._armed]

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
