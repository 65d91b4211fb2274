"""The simulator's exception tree; each error maps onto one of Core's HTTP error answers.

::

    SimError
     ├── CoreError   Core's JSON error {"code": .., "description": ..} (404 missing_package, ...)
     └── Rejection   an akka-style rejection: a status with a text/plain explanation
"""

from __future__ import annotations

__all__ = ["CoreError", "Rejection", "SimError"]


class SimError(Exception):
    """Root of every error the simulator raises on purpose."""


class CoreError(SimError):
    """An error Core answers with its JSON error body, e.g. 404 ``missing_package``."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description


class Rejection(SimError, ValueError):
    """Input Core rejects with a text/plain answer, e.g. 400 for a malformed body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


def missing_package() -> CoreError:
    """The error for a package or update request Core does not know."""
    return CoreError(404, "missing_package", "package not found")


def missing_spec() -> CoreError:
    """The error for a (device, update) pair that has no UpdateSpec."""
    return CoreError(404, "missing_entity", "UpdateSpec not found")


def malformed(detail: str) -> Rejection:
    """akka's answer to a body that does not decode."""
    return Rejection(400, f"The request content was malformed:\n{detail}")
