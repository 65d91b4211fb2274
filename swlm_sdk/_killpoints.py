"""Named kill points for crash tests, in the daemon and in the SDK; inert unless asked for.

``SOTA_KILL_AT=<name>[@<n>]`` makes the process SIGKILL itself the ``n``-th time (default 1)
it passes the point ``name``: a power cut at an exact step, chosen by the test rather than by
sleeping. ``SOTA_KILL_TRACE=<file>`` appends the name of every point passed, one per line, so a
test can first list the points of a run and then kill at each. Both are read once, at import;
without them :func:`kill_point` is a single comparison.

The SDK's points (``swlm_sdk.App``), in the order a normal install passes them:

``swlm.image.checked``
    the image matched the size and SHA-256 its ``DownloadComplete`` announced; nothing is
    recorded yet (only for an event that announced them).
``swlm.journal.installing``
    the journal says the install starts (on disk).
``swlm.install.start``
    right before the install handler is called.
``swlm.install.done``
    the handler returned (or raised); its result is not yet recorded.
``swlm.journal.pending``
    the result is on disk as a pending report (also for an interrupted install at start-up).
``swlm.report.acknowledged``
    the daemon answered ``UpdateReportSent``; the report is not yet recorded as sent.
``swlm.journal.sent``
    the report is on disk as sent: final, never sent again.
``swlm.journal.forget``
    an install abandoned at shutdown was dropped from the journal (on disk).
"""

from __future__ import annotations

import os
import signal

__all__ = ["kill_point"]

_KILL_AT = os.environ.get("SOTA_KILL_AT") or None
_TRACE = os.environ.get("SOTA_KILL_TRACE") or None
_ACTIVE = _KILL_AT is not None or _TRACE is not None

_target, _, _nth = (_KILL_AT or "").partition("@")
_remaining = int(_nth) if _nth.isdigit() and int(_nth) > 0 else 1


def kill_point(name: str) -> None:
    """A step after which a crash must lose nothing (a journal commit, a reply received)."""
    if _ACTIVE:
        _passed(name)


def _passed(name: str) -> None:
    global _remaining
    if _TRACE is not None:
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if name == _target:
        _remaining -= 1
        if _remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
