"""What the route handlers share: the state, faults, tokens and settings of one simulator."""

from __future__ import annotations

import threading

import msgspec

from ._auth import TokenStore
from ._faults import FaultBook
from ._state import CoreState

__all__ = ["SimApp"]


class SimApp(msgspec.Struct):
    """One simulator's shared objects; each is thread-safe on its own."""

    state: CoreState
    data_dir: str
    tokens: TokenStore | None = None
    faults: FaultBook = msgspec.field(default_factory=FaultBook)
    path_roots: tuple[str, ...] = ()
    base_url: str = ""
    max_body: int = 16 * 1024 * 1024
    max_upload: int = 8 * 1024 * 1024 * 1024
    stopping: threading.Event = msgspec.field(default_factory=threading.Event)

    def reset(self) -> None:
        """Back to an empty Core: no packages, devices, faults or tokens."""
        self.faults.clear()
        if self.tokens is not None:
            self.tokens.revoke_all()
        self.state.reset()
