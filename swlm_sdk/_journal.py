"""The SWLM's crash-safe record of handled updates and undelivered reports (one JSON file).

Every change is on disk before the call returns: the file is rewritten as a temporary file,
fsynced and renamed over the old one, so a crash leaves either the old or the new version.
Concurrent changes share one write (group commit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Annotated, Literal

import anyio
import msgspec

from ._killpoints import kill_point
from ._paths import StrPath
from .protocol import ResultCode

__all__ = ["REPORTABLE_ID", "Journal", "JournalEntry"]

log = logging.getLogger("swlm_sdk.app")

State = Literal["installing", "awaiting_reboot", "pending", "sent"]

REPORTABLE_ID = re.compile(r"[^ \t\r\n;]{1,1024}")
"""An update id that ``SendUpdateReport`` can carry as text (``fullmatch``); the App ignores
any other, so no other can be in a journal."""

_FILE_NAME = "swlm-journal.json"
_MAX_FILE = 64 << 20

# What the SDK never writes makes a journal unreadable (moved aside) rather than a report that
# can never be sent: msgspec checks these while decoding. \Z, since $ also matches before "\n".
_Id = Annotated[str, msgspec.Meta(pattern=f"^{REPORTABLE_ID.pattern}\\Z")]
_Code = Annotated[int, msgspec.Meta(ge=int(min(ResultCode)), le=int(max(ResultCode)))]


class JournalEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is known about one update.

    ``installing``: an install started and has not finished (if found at start-up, the SWLM
    stopped during it). ``awaiting_reboot``: installed, it counts once the device has rebooted
    into it and it is confirmed; ``text`` is what the handler said. ``pending``: the report
    (``code``, ``text``) is not yet accepted by the daemon. ``sent``: it was.

    For ``awaiting_reboot`` only: ``boot_id`` is the boot last counted (at first, the boot of
    the install), ``boots`` the boots since the install, ``checked`` whether the ``on_boot``
    hook ran in boot ``boot_id`` without a verdict, and ``announced`` whether the daemon took
    ``SendRebootNeeded`` (or cannot take it: a 2016 daemon).
    """

    state: State
    code: _Code | None = None
    text: str = ""
    seq: int = 0
    boot_id: str = ""
    boots: int = 0
    checked: bool = False
    announced: bool = False


class _Document(msgspec.Struct):
    version: int = 1
    updates: dict[_Id, JournalEntry] = msgspec.field(default_factory=dict)


def _decode(data: bytes) -> _Document:
    """The document in ``data``, checked as far as the App relies on it.

    :raises ValueError: (msgspec's DecodeError is one) naming the problem.
    """
    if len(data) > _MAX_FILE:
        raise ValueError(f"larger than {_MAX_FILE} bytes")
    document = msgspec.json.decode(data, type=_Document)
    for update_id, entry in document.updates.items():
        if entry.state in ("pending", "sent") and entry.code is None:
            raise ValueError(f"the {entry.state} report for update {update_id!r} has no code")
        if entry.state == "awaiting_reboot" and not entry.boot_id:
            raise ValueError(f"update {update_id!r} awaits a reboot but has no boot id")
    return document


class Journal:
    """Map update id -> :class:`JournalEntry`, persisted under ``state_dir``.

    At most ``keep`` entries in state ``sent`` are kept (the oldest go first), enough to
    recognise redeliveries without growing forever.
    """

    def __init__(self, state_dir: StrPath, *, keep: int = 1000) -> None:
        self.directory = os.fspath(state_dir)
        self.path = os.path.join(self.directory, _FILE_NAME)
        self.keep = keep
        self._entries: dict[str, JournalEntry] = {}
        self._seq = 0
        self._changes = 0
        self._written = 0
        self._lock: anyio.Lock | None = None

    async def open(self) -> None:
        """Create ``state_dir`` (mode 0700) if needed and load the journal.

        A journal that cannot be decoded is moved aside (``.corrupt``) with an error in the
        log, and the SWLM starts with an empty one.

        :raises OSError: the directory cannot be created or read.
        """
        self._lock = anyio.Lock()
        await anyio.to_thread.run_sync(self._load)

    def _load(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            with open(self.path, "rb") as file:
                data = file.read(_MAX_FILE + 1)
        except FileNotFoundError:
            return
        try:
            document = _decode(data)
        except ValueError as exc:
            aside = f"{self.path}.corrupt"
            os.replace(self.path, aside)
            log.error("journal %s is unreadable (%s): moved to %s", self.path, exc, aside)
            return
        self._entries = dict(document.updates)
        self._seq = max((e.seq for e in self._entries.values()), default=0)

    def get(self, update_id: str) -> JournalEntry | None:
        """The entry for ``update_id``, if any."""
        return self._entries.get(update_id)

    def entries(self) -> dict[str, JournalEntry]:
        """A copy of all entries."""
        return dict(self._entries)

    def pending(self) -> list[tuple[str, JournalEntry]]:
        """Reports not yet accepted, oldest first."""
        found = [(k, e) for k, e in self._entries.items() if e.state == "pending"]
        return sorted(found, key=lambda item: item[1].seq)

    def interrupted(self) -> list[str]:
        """Updates whose install started but never finished."""
        return [k for k, e in self._entries.items() if e.state == "installing"]

    def awaiting_reboot(self) -> list[tuple[str, JournalEntry]]:
        """Updates installed that count once the device has rebooted into them, oldest first."""
        found = [(k, e) for k, e in self._entries.items() if e.state == "awaiting_reboot"]
        return sorted(found, key=lambda item: item[1].seq)

    async def mark_installing(self, update_id: str) -> None:
        """Record that an install starts."""
        await self._put(update_id, JournalEntry("installing"))
        kill_point("swlm.journal.installing")

    async def record(self, update_id: str, code: int, text: str) -> None:
        """Record an install's result as a pending report."""
        await self._put(update_id, JournalEntry("pending", code, text))
        kill_point("swlm.journal.pending")

    async def await_reboot(self, update_id: str, text: str, boot_id: str) -> None:
        """Record that the install is done but counts only after a reboot (this is ``boot_id``)."""
        await self._put(update_id, JournalEntry("awaiting_reboot", text=text, boot_id=boot_id))
        kill_point("swlm.journal.awaiting_reboot")

    async def mark_announced(self, update_id: str) -> None:
        """Record that the daemon took ``SendRebootNeeded`` (or cannot): it is not sent again."""
        await self._change_awaiting(update_id, announced=True)
        kill_point("swlm.journal.announced")

    async def count_boot(self, update_id: str, boot_id: str) -> JournalEntry | None:
        """Record that the device booted again (as ``boot_id``) while the update awaits its
        confirmation; the updated entry, or None if it does not await one."""
        entry = self._entries.get(update_id)
        if entry is None or entry.state != "awaiting_reboot":
            return None
        await self._change_awaiting(
            update_id, boot_id=boot_id, boots=entry.boots + 1, checked=False
        )
        kill_point("swlm.journal.boot_counted")
        return self._entries[update_id]

    async def mark_checked(self, update_id: str) -> None:
        """Record that the ``on_boot`` hook gave no verdict in this boot: not asked again in it."""
        await self._change_awaiting(update_id, checked=True)
        kill_point("swlm.journal.checked")

    async def _change_awaiting(self, update_id: str, **changes: object) -> None:
        # In place (same seq): an update's place among the pending reports does not change.
        entry = self._entries.get(update_id)
        if entry is not None and entry.state == "awaiting_reboot":
            self._entries[update_id] = msgspec.structs.replace(entry, **changes)
            await self._persist()

    async def mark_sent(self, update_id: str) -> None:
        """Record that the daemon accepted the report: it is final, never sent again."""
        entry = self._entries.get(update_id)
        if entry is not None and entry.state == "pending":
            await self._put(update_id, msgspec.structs.replace(entry, state="sent"))
            kill_point("swlm.journal.sent")

    async def forget(self, update_id: str) -> None:
        """Drop an entry (an install abandoned cleanly: a redelivery installs it again)."""
        if self._entries.pop(update_id, None) is not None:
            await self._persist()
            kill_point("swlm.journal.forget")

    async def _put(self, update_id: str, entry: JournalEntry) -> None:
        self._seq += 1
        self._entries.pop(update_id, None)
        self._entries[update_id] = msgspec.structs.replace(entry, seq=self._seq)
        self._prune()
        await self._persist()

    def _prune(self) -> None:
        sent = [k for k, e in self._entries.items() if e.state == "sent"]
        for key in sent[: max(0, len(sent) - self.keep)]:
            del self._entries[key]

    async def _persist(self) -> None:
        self._changes += 1
        mine = self._changes
        if self._lock is None:
            raise RuntimeError("the journal is not open")
        async with self._lock:
            if self._written >= mine:
                return  # an earlier writer already saved this change
            upto = self._changes
            data = msgspec.json.encode(_Document(updates=self._entries))
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._write, data)
            self._written = upto

    def _write(self, data: bytes) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
