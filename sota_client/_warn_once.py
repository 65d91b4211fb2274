"""WARNING once per kind of trouble, then DEBUG: what a peer can repeat must not flood the log."""

from __future__ import annotations

import logging

__all__ = ["WarnOnce"]


class WarnOnce:
    """Call it with a kind and a message: the first of each kind is a WARNING (saying that more
    like it go to DEBUG), the rest DEBUG, until :meth:`reset` (a server that went idle)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._given: set[str] = set()

    def __call__(
        self, kind: str, message: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        if kind in self._given:
            self._logger.debug(message, *args, exc_info=exc_info)
        else:
            self._given.add(kind)
            self._logger.warning(
                message + "; more like it are logged at DEBUG", *args, exc_info=exc_info
            )

    def reset(self) -> None:
        self._given.clear()
