#!/usr/bin/env python3
"""swlm_flash: an example SWLM that flashes firmware into the inactive slot of an A/B pair.

A template to copy: it depends only on ``swlm_sdk`` and the standard library. Lines marked
``ADAPT:`` are the places a vendor usually changes. Run ``python swlm_flash.py --help``.

The update is a bundle: an uncompressed tar holding exactly ``manifest.json``
(``{"name": ..., "version": "1.4.2", "sha256": <hex of image.bin>, "size": <bytes>}``) and
``image.bin``. Build one with :func:`make_bundle`.

A flashed slot is on trial: the device boots it at most ``max_tries`` times, and falls back to
the old slot unless it is confirmed. Only then is the update reported ``OK``. The boot state
file stands for the bootloader's environment, and :meth:`Flasher.load` for what the bootloader
does at each boot (ADAPT: on a device, U-Boot's ``bootcount``/``bootlimit``/``altbootcmd``,
GRUB's ``grubenv``, or RAUC's slot status do this).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import re
import stat
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from swlm_sdk import (
    DEFAULT_BOOT_ID_FILE,
    AwaitingConfirmation,
    ConfigError,
    DownloadComplete,
    InstallError,
    RebootNeeded,
    ResultCode,
    SwlmError,
    control_socket_path,
    kill_point,
    read_boot_id,
    report_progress,
)
from swlm_sdk.app import App
from swlm_sdk.sync import confirm_update

log = logging.getLogger("swlm_flash")

# ADAPT: where the SDK keeps its journal of handled updates (systemd's StateDirectory= wins).
DEFAULT_STATE_DIR = "/var/lib/swlm-flash"
BLOCK = 1 << 20  # copy and hash in 1 MiB blocks: bounded memory for any image size
MAX_MANIFEST = 64 << 10
DEFAULT_NAME = "firmware"  # the package name to report when the boot state has none
MAX_BOOT_STATE = 64 << 10
MANIFEST, IMAGE = "manifest.json", "image.bin"
SLOTS = ("a", "b")
# Names and versions are sent to Core in the package list, whose grammar has no blanks or ';'.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
# ADAPT: this example's version scheme is dotted numbers ("1.4.2"); change `version_key` too.
VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,7}")
SHA256 = re.compile(r"[0-9a-f]{64}")
DEFAULT_MAX_TRIES = 3  # ADAPT: boots a new slot gets to be confirmed (U-Boot's bootlimit)
TRIAL_STATES = ("trying", "good", "fell_back", "rolled_back")
DEFAULT_LOCK_TIMEOUT = 10.0  # the command line's wait for the boot state; a flash takes longer


def progress(percent: int, text: str) -> None:
    """Tell the daemon how far the flash got, for ``sota_client status`` and the HMI: the SDK
    sends it, at most about once a second, and not at all to a 2016 daemon. An ``install()``
    called outside the App (a test, a script) has nobody to tell."""
    try:
        report_progress(percent, text)
    except RuntimeError:
        pass


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a dotted-numeric version; trailing zeros do not count (1.2 == 1.2.0)."""
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


# -- the bundle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about ``image.bin``."""

    name: str
    version: str
    sha256: str
    size: int


def parse_manifest(data: bytes) -> Manifest:
    """Validate ``manifest.json``; unknown keys are ignored so that newer bundles still load.

    :raises InstallError: VALIDATION_FAILED, naming what is wrong.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise _invalid(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _invalid(f"{MANIFEST} must be a JSON object")
    fields: dict[str, Any] = {}
    for key, kind in (("name", str), ("version", str), ("sha256", str), ("size", int)):
        value = document.get(key)
        # bool is an int in Python, but `"size": true` is not a size.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _invalid(f"{MANIFEST}: {key!r} must be a {kind.__name__}, got {value!r}")
        fields[key] = value
    fields["sha256"] = fields["sha256"].lower()  # `sha256sum` prints lowercase; accept both
    manifest = Manifest(**fields)
    if not NAME.fullmatch(manifest.name):
        raise _invalid(f"{MANIFEST}: bad name {manifest.name!r}")
    if not VERSION.fullmatch(manifest.version):
        raise _invalid(f"{MANIFEST}: version {manifest.version!r} is not like 1.4.2")
    if not SHA256.fullmatch(manifest.sha256):
        raise _invalid(f"{MANIFEST}: sha256 must be 64 hex digits")
    if manifest.size < 0:
        raise _invalid(f"{MANIFEST}: negative size {manifest.size}")
    return manifest


def _invalid(text: str) -> InstallError:
    return InstallError(ResultCode.VALIDATION_FAILED, text)


def open_bundle(tar: tarfile.TarFile) -> tuple[Manifest, tarfile.TarInfo]:
    """Check the bundle's members and read its manifest; nothing is ever extracted to disk.

    :raises InstallError: VALIDATION_FAILED for any other member, a link, a duplicate, or a
        manifest that does not describe ``image.bin``.
    """
    members: dict[str, tarfile.TarInfo] = {}
    # Read at most three headers: a bundle has two members, and a huge archive of tiny
    # members must not make us walk all of it.
    for _ in range(3):
        member = tar.next()
        if member is None:
            break
        if member.name not in (MANIFEST, IMAGE) or member.name in members:
            raise _invalid(f"unexpected member {member.name!r} in the bundle")
        if not member.isreg():
            raise _invalid(f"bundle member {member.name!r} is not a regular file")
        members[member.name] = member
    for name in (MANIFEST, IMAGE):
        if name not in members:
            raise _invalid(f"the bundle has no {name}")
    if members[MANIFEST].size > MAX_MANIFEST:
        raise _invalid(f"{MANIFEST} is larger than {MAX_MANIFEST} bytes")
    file = tar.extractfile(members[MANIFEST])
    assert file is not None  # a regular member always has a file object
    manifest = parse_manifest(file.read())
    image = members[IMAGE]
    if image.size != manifest.size:
        raise _invalid(f"{IMAGE} is {image.size} bytes, the manifest says {manifest.size}")
    return manifest, image


def make_bundle(path: str | os.PathLike[str], name: str, version: str, image: bytes) -> Path:
    """Write an update bundle for ``image`` to ``path`` and return the path.

    For tests, demos and a vendor's CI. Equivalent by hand: write ``manifest.json`` (sha256 from
    ``sha256sum image.bin``, size from ``stat -c %s image.bin``), then
    ``tar --format=gnu -cf bundle.tar manifest.json image.bin``.
    """
    manifest = {
        "name": name,
        "version": version,
        "sha256": hashlib.sha256(image).hexdigest(),
        "size": len(image),
    }
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in ((MANIFEST, json.dumps(manifest).encode()), (IMAGE, image)):
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return Path(path)


# -- the boot state --------------------------------------------------------------------------


def empty_boot_state() -> dict[str, Any]:
    """A device whose slots were never flashed by this SWLM: slot a is active."""
    return {"active": "a", "a": None, "b": None, "booted": "a", "boot_id": "", "trial": None}


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def _check_trial(trial: object) -> None:
    """A trial is what the last flash left: ``{"slot", "from", "tries", "max_tries",
    "status", "update_id", "name", "version"}`` (and ``why`` once it failed)."""
    if trial is None:
        return
    if not (
        isinstance(trial, dict)
        and trial.get("slot") in SLOTS
        and trial.get("from") == other(trial["slot"])
        and isinstance(trial.get("tries"), int)
        and not isinstance(trial["tries"], bool)
        and trial["tries"] >= 0
        and isinstance(trial.get("max_tries"), int)
        and not isinstance(trial["max_tries"], bool)
        and trial["max_tries"] >= 1
        and trial.get("status") in TRIAL_STATES
        and all(isinstance(trial.get(k), str) for k in ("update_id", "name", "version"))
        and isinstance(trial.get("why", ""), str)
    ):
        raise ValueError("'trial' must be null or a trial record")


def load_boot_state(path: Path) -> dict[str, Any]:
    """Read and check the boot state; a missing file is :func:`empty_boot_state`.

    :raises InstallError: INTERNAL_ERROR when it is unreadable: with no trustworthy idea of
        which slot runs, nothing may be flashed.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BOOT_STATE + 1)
    except FileNotFoundError:
        return empty_boot_state()
    except OSError as exc:
        raise InstallError(ResultCode.INTERNAL_ERROR, f"cannot read {path}: {exc}") from None
    try:
        state = json.loads(data)
        if len(data) > MAX_BOOT_STATE or not isinstance(state, dict):
            raise ValueError("not a small JSON object")
        if state.get("active") not in SLOTS:
            raise ValueError(f"'active' is {state.get('active')!r}, not 'a' or 'b'")
        for slot in SLOTS:
            record = state.setdefault(slot, None)
            if record is not None and not (
                isinstance(record, dict)
                and all(isinstance(record.get(k), str) for k in ("version", "sha256"))
                and VERSION.fullmatch(record["version"])
                and isinstance(record.get("name", ""), str)
                and type(record.get("size", 0)) is int
                and record.get("size", 0) >= 0
            ):
                raise ValueError(f"slot {slot!r} must be null or a version/sha256 record")
        if state.setdefault("booted", state["active"]) not in SLOTS:
            raise ValueError(f"'booted' is {state['booted']!r}, not 'a' or 'b'")
        if not isinstance(state.setdefault("boot_id", ""), str):
            raise ValueError("'boot_id' must be a string")
        _check_trial(state.setdefault("trial", None))
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
        raise InstallError(ResultCode.INTERNAL_ERROR, f"boot state {path} is bad: {exc}") from None
    return state


@contextlib.contextmanager
def boot_state_lock(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the boot state for one read-change-write: the SWLM and its command line both
    change it, and neither may undo the other's change. ``timeout``: seconds to wait for
    another holder (None: as long as it takes, as the SWLM does).

    ADAPT: the bootloader's own tools lock their environment (U-Boot's ``fw_setenv`` takes
    ``/var/lock/fw_printenv.lock``); take the same lock.

    :raises InstallError: GENERAL_ERROR, the lock was still held after ``timeout`` seconds.
    """
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise InstallError(
                        ResultCode.GENERAL_ERROR,
                        f"the boot state {path} is in use (the SWLM is flashing or checking a "
                        f"slot) for more than {timeout:g} s: try again once it is done",
                    ) from None
                time.sleep(0.05)  # the SWLM's short holds (a look, a switch) pass first
        yield
    finally:
        os.close(fd)  # also releases the lock


P = ParamSpec("P")
T = TypeVar("T")


def _holding_boot_state(
    method: Callable[Concatenate[Flasher, P], T],
) -> Callable[Concatenate[Flasher, P], T]:
    """The method runs with the boot state locked (see :func:`boot_state_lock`)."""

    @functools.wraps(method)
    def locked(self: Flasher, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with boot_state_lock(self.boot_state, timeout=self.lock_timeout):
            return method(self, *args, **kwargs)

    return locked


def save_boot_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the boot state atomically: a crash leaves the old file or the new one.

    ADAPT: this file stands for the bootloader's environment. On a real device write the
    bootloader's variables instead (``fw_setenv`` for U-Boot, ``grub-editenv`` for GRUB).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with open(fd, "w", encoding="utf-8") as file:
            json.dump(state, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    # The rename is durable only once the directory itself is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- flashing --------------------------------------------------------------------------------


class Flasher:
    """Flashes bundles into the inactive slot, puts it on trial, and confirms or rolls it back.

    :param slots: the device paths (or files) of slots a and b.
    :param boot_state: the JSON file standing for the bootloader environment.
    :param slot_size: the capacity of a slot that is a regular file (a block device's own
        size is used for a block device).
    :param firmware_name: refuse bundles for other firmware.
    :param allow_downgrade: flash older versions too.
    :param max_tries: boots a flashed slot gets before the bootloader falls back.
    :param confirm_by_hand: the new slot is confirmed only by ``swlm_flash confirm`` (or
        ``swlm confirm``), not as soon as it has booted and passed :meth:`healthy`.
    :param boot_id_file: where the running boot's id is (a file a test can change).
    :param lock_timeout: seconds to wait while another process holds the boot state (None,
        the SWLM's: as long as it takes; the command line's: a few seconds, as a flash can
        take minutes).
    """

    def __init__(
        self,
        slots: dict[str, Path],
        boot_state: Path,
        *,
        slot_size: int | None = None,
        firmware_name: str | None = None,
        allow_downgrade: bool = False,
        max_tries: int = DEFAULT_MAX_TRIES,
        confirm_by_hand: bool = False,
        boot_id_file: str | os.PathLike[str] = DEFAULT_BOOT_ID_FILE,
        lock_timeout: float | None = None,
    ) -> None:
        self.slots = slots
        self.boot_state = boot_state
        self.slot_size = slot_size
        self.firmware_name = firmware_name
        self.allow_downgrade = allow_downgrade
        self.max_tries = max_tries
        self.confirm_by_hand = confirm_by_hand
        self.boot_id_file = boot_id_file
        self.lock_timeout = lock_timeout

    def capacity(self, slot: Path) -> int | None:
        """How many bytes the slot holds (None: no limit known)."""
        try:
            is_device = stat.S_ISBLK(os.stat(slot).st_mode)
        except FileNotFoundError:
            is_device = False
        if not is_device:
            return self.slot_size
        fd = os.open(slot, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    # -- the install handler --------------------------------------------------------------

    # -- the boot state, as the bootloader leaves it ---------------------------------------

    @_holding_boot_state
    def current(self) -> dict[str, Any]:
        """The boot state of this boot (for the command line)."""
        return self.load()

    def load(self) -> dict[str, Any]:
        """The boot state of this boot: at the first look in a new boot, do what the
        bootloader did when the device started. Call it with the boot state locked.

        ADAPT: this stands for the bootloader. A slot on trial is booted and its ``tries``
        counted, up to ``max_tries``; then the bootloader falls back to the slot it came
        from. On a device, read which slot booted (``/proc/cmdline``, ``fw_printenv``) instead.

        :raises InstallError: INTERNAL_ERROR: the boot state or the boot id is unreadable.
        """
        state = load_boot_state(self.boot_state)
        try:
            boot_id = read_boot_id(self.boot_id_file)
        except ConfigError as exc:
            raise InstallError(ResultCode.INTERNAL_ERROR, str(exc)) from None
        if state["boot_id"] == boot_id:
            return state
        trial = state["trial"]
        state["booted"] = state["active"]
        if trial is not None and trial["status"] == "trying":
            if trial["tries"] < trial["max_tries"]:
                trial["tries"] += 1
                state["booted"] = trial["slot"]
            else:
                trial["status"] = "fell_back"
                trial["why"] = (
                    f"rolled back to slot {trial['from']} after {trial['tries']} unconfirmed boots"
                )
        state["boot_id"] = boot_id
        save_boot_state(self.boot_state, state)
        kill_point("flash.booted")
        log.info("this boot runs slot %s", state["booted"])
        return state

    # -- the install handler --------------------------------------------------------------

    @_holding_boot_state
    def install(self, event: DownloadComplete) -> tuple[ResultCode, str] | RebootNeeded:
        """Flash the bundle ``event.update_image`` and put the slot on trial; called by the
        SDK in a worker thread. The update counts once the slot has booted and is confirmed."""
        state = self.load()
        active = state["active"]
        refusal = self.busy(state)
        if refusal is not None:
            return refusal
        target = other(active)
        # A regular file only: opening a FIFO would block for ever.
        if not os.path.isfile(event.update_image):
            raise _invalid(f"no update image file at {event.update_image}")
        try:
            bundle = open(event.update_image, "rb")
        except OSError as exc:
            raise _invalid(f"cannot read the update image: {exc}") from None
        try:
            # "r:" reads an uncompressed tar only. ADAPT: "r:gz" or "r:xz" for a compressed
            # bundle (slower: image.bin is then decompressed twice, to write and to verify).
            with bundle, tarfile.open(fileobj=bundle, mode="r:") as tar:
                manifest, member = open_bundle(tar)
                refusal = self.check(manifest, state[active], target)
                if refusal is not None:
                    return refusal
                # ADAPT: check the vendor's signature over manifest.json here (event.signature).
                digest = self.write(tar, member, target, state)
            if digest != manifest.sha256:
                return (
                    ResultCode.VALIDATION_FAILED,
                    f"{IMAGE} has sha256 {digest}, the manifest says {manifest.sha256}, "
                    f"slot {target} stays inactive",
                )
            readback = self.read_back(target, manifest.size)
        except (tarfile.TarError, EOFError) as exc:
            raise _invalid(f"not a readable bundle: {exc}") from None
        except OSError as exc:
            code = ResultCode.DISK_FULL if exc.errno == errno.ENOSPC else ResultCode.FLASH_FAILED
            raise InstallError(code, f"slot {target}: {exc}") from None
        if readback != manifest.sha256:
            return (
                ResultCode.FLASH_FAILED,
                f"slot {target} reads back with sha256 {readback}, expected {manifest.sha256}",
            )
        state[target] = {
            "name": manifest.name,
            "version": manifest.version,
            "sha256": digest,
            "size": manifest.size,
        }
        state["trial"] = {
            "slot": target,
            "from": active,
            "tries": 0,
            "max_tries": self.max_tries,
            "status": "trying",
            "update_id": event.update_id,
            "name": manifest.name,
            "version": manifest.version,
        }
        try:
            save_boot_state(self.boot_state, state)
        except OSError as exc:
            return ResultCode.FLASH_FAILED, f"cannot put slot {target} on trial: {exc}"
        kill_point("flash.trial.set")
        log.info("flashed %s %s to slot %s, on trial", manifest.name, manifest.version, target)
        # ADAPT: reboot here, or from a maintenance window. The SDK holds the report back,
        # and tells the daemon to wait for it, until the slot has booted and is confirmed.
        return RebootNeeded(
            f"flashed {manifest.name} {manifest.version} to slot {target}, "
            f"on trial for {self.max_tries} boots"
        )

    def busy(self, state: dict[str, Any]) -> tuple[ResultCode, str] | None:
        """Refuse a flash while the last one is undecided: its slot is the only free one."""
        trial = state["trial"]
        if trial is not None and trial["status"] == "trying":
            return (
                ResultCode.INSTALL_FAILED,
                f"slot {trial['slot']} holds {trial['version']} on trial (update "
                f"{trial['update_id']}): reboot and confirm it, or roll it back, first",
            )
        if state["booted"] != state["active"]:
            return (
                ResultCode.INSTALL_FAILED,
                f"the device runs slot {state['booted']}, which was rolled back: reboot into "
                f"slot {state['active']} first",
            )
        return None

    def check(
        self, manifest: Manifest, running: dict[str, str] | None, target: str
    ) -> tuple[ResultCode, str] | None:
        """Refuse a bundle for other firmware, an old version, or one that does not fit."""
        if self.firmware_name is not None and manifest.name != self.firmware_name:
            return (
                ResultCode.VALIDATION_FAILED,
                f"the bundle is for {manifest.name!r}, this device runs {self.firmware_name!r}",
            )
        if running is not None:
            new, old = version_key(manifest.version), version_key(running["version"])
            if new == old:
                return ResultCode.ALREADY_PROCESSED, f"version {manifest.version} is active"
            if new < old and not self.allow_downgrade:
                return (
                    ResultCode.OLD_VERSION,
                    f"version {manifest.version} is older than the active {running['version']}",
                )
        capacity = self.capacity(self.slots[target])
        if capacity is not None and manifest.size > capacity:
            return (
                ResultCode.WRITE_PARTITION_FAILED,
                f"{IMAGE} is {manifest.size} bytes, slot {target} holds {capacity}, "
                "nothing written",
            )
        return None

    def write(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str, state: dict[str, Any]
    ) -> str:
        """Stream ``image.bin`` into the slot while hashing it; return its sha256."""
        # First mark the slot empty: were we to crash half-way, the boot state must not
        # claim that the old firmware is still in it (nor that it is on trial).
        state[target] = None
        state["trial"] = None
        save_boot_state(self.boot_state, state)
        kill_point("flash.slot.emptied")
        source = tar.extractfile(member)
        assert source is not None
        path = self.slots[target]
        is_file = not path.exists() or path.is_file()
        flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if is_file else 0)
        digest = hashlib.sha256()
        log.info("writing %d bytes to slot %s (%s)", member.size, target, path)
        written = 0
        with open(os.open(path, flags, 0o600), "wb", buffering=0) as slot:
            while block := source.read(BLOCK):
                digest.update(block)
                view = memoryview(block)
                while view:  # a raw write may write less than asked
                    view = view[slot.write(view) :]
                written += len(block)
                progress(written * 90 // max(member.size, 1), f"writing slot {target}")
            os.fsync(slot.fileno())
            kill_point("flash.slot.written")
            if not is_file:
                # Read-back must come from the device, not from the page cache.
                os.posix_fadvise(slot.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return digest.hexdigest()

    def read_back(self, target: str, size: int) -> str:
        """The sha256 of the first ``size`` bytes of the slot."""
        digest = hashlib.sha256()
        with open(self.slots[target], "rb") as slot:
            remaining = size
            while remaining and (block := slot.read(min(BLOCK, remaining))):
                digest.update(block)
                remaining -= len(block)
                progress(90 + (size - remaining) * 10 // max(size, 1), f"verifying slot {target}")
        return digest.hexdigest()

    # -- after the reboot: confirm or roll back ------------------------------------------

    @_holding_boot_state
    def after_boot(self, pending: AwaitingConfirmation) -> tuple[ResultCode, str] | None:
        """The SDK's ``on_boot`` hook: the verdict on the trial of ``pending``'s update.

        ``OK`` once the slot is marked good; a failure once the bootloader fell back or the
        slot was rolled back; ``None`` while it is undecided (by hand: until confirmed).
        Idempotent: a power cut after the slot was marked good gives ``OK`` again.
        """
        state = self.load()
        trial = state["trial"]
        if trial is None or trial["update_id"] != pending.update_id:
            return (
                ResultCode.INTERNAL_ERROR,
                f"the boot state {self.boot_state} has no trial of update {pending.update_id}",
            )
        slot, what = trial["slot"], f"{trial['name']} {trial['version']}"
        if trial["status"] == "good":
            return ResultCode.OK, f"{what} runs from slot {slot}, confirmed"
        if trial["status"] != "trying":
            return ResultCode.INSTALL_FAILED, trial["why"]
        if state["booted"] != slot or (self.confirm_by_hand and not pending.manual):
            return None
        problem = self.healthy(state, slot)
        if problem is not None:
            return self.roll_back_trial(state, f"slot {slot} failed its check ({problem})")
        state["active"] = slot
        trial["status"] = "good"
        save_boot_state(self.boot_state, state)
        kill_point("flash.confirmed")
        log.info("slot %s (%s) is confirmed after %d boot(s)", slot, what, trial["tries"])
        return ResultCode.OK, f"{what} runs from slot {slot}, confirmed in boot {trial['tries']}"

    def healthy(self, state: dict[str, Any], slot: str) -> str | None:
        """Why the slot that booted is not fit to stay, or None.

        ADAPT: check what matters on your device: the services came up, the ECU answers,
        the network is reachable. This example checks that the slot still reads back as
        flashed.
        """
        record = state[slot]
        if record is None:
            return "the boot state has no record of it"
        if "size" not in record:
            return None  # flashed before sizes were recorded: nothing to compare
        try:
            digest = self.read_back(slot, record["size"])
        except OSError as exc:
            return f"it cannot be read: {exc}"
        if digest != record["sha256"]:
            return f"it reads back with sha256 {digest}, not {record['sha256']}"
        return None

    @_holding_boot_state
    def roll_back(self, pending: AwaitingConfirmation) -> tuple[ResultCode, str]:
        """The SDK's ``on_rollback`` hook: the trial went ``pending.boots`` boots unconfirmed
        (or its install was interrupted: ``pending.boots == 0``). Idempotent."""
        state = self.load()
        trial = state["trial"]
        if trial is None or trial["update_id"] != pending.update_id:
            return ResultCode.INSTALL_FAILED, "nothing to roll back: the slot was never on trial"
        if trial["status"] in ("fell_back", "rolled_back"):
            return ResultCode.INSTALL_FAILED, trial["why"]
        if pending.boots == 0 and state["booted"] == trial["slot"]:
            # The power cut came after the trial was set, and the bootloader tried the slot.
            why = f"slot {trial['slot']} runs unconfirmed until the next boot, into {trial['from']}"
        elif pending.boots == 0:
            why = f"slot {trial['from']} stays active"
        else:
            why = f"rolled back to slot {trial['from']} after {pending.boots} unconfirmed boots"
        return self.roll_back_trial(state, why)

    def roll_back_trial(self, state: dict[str, Any], why: str) -> tuple[ResultCode, str]:
        """Make the slot the trial came from the one that boots, and say why."""
        trial = state["trial"]
        state["active"] = trial["from"]
        trial["status"], trial["why"] = "rolled_back", why
        save_boot_state(self.boot_state, state)
        kill_point("flash.rolled_back")
        log.warning("update %s: %s", trial["update_id"], why)
        return ResultCode.INSTALL_FAILED, why

    @_holding_boot_state
    def roll_back_by_hand(self) -> str:
        """``swlm_flash rollback``: boot the other slot from the next boot on; what was done.

        :raises InstallError: there is nothing to roll back to.
        """
        state = self.load()
        trial, active = state["trial"], state["active"]
        if trial is not None and trial["status"] in ("trying", "good"):
            self.roll_back_trial(state, f"rolled back to slot {trial['from']} by hand")
            return f"slot {trial['from']} boots next; update {trial['update_id']} is rolled back"
        if state[other(active)] is None:
            raise InstallError(ResultCode.GENERAL_ERROR, f"slot {other(active)} holds nothing")
        state["active"] = other(active)
        save_boot_state(self.boot_state, state)
        return f"slot {other(active)} boots next"

    # -- the installed-packages provider ------------------------------------------------

    @_holding_boot_state
    def installed_packages(self) -> list[tuple[str, str]]:
        """The firmware in the slot that runs, as one (name, version) package."""
        state = self.load()
        running = state[state["booted"]]
        if running is None:
            return []  # never flashed by us: the SDK sends no list rather than a wrong one
        return [(running.get("name") or self.firmware_name or DEFAULT_NAME, running["version"])]


def build_app(
    state_dir: str | os.PathLike[str],
    *,
    slot_a: str | os.PathLike[str],
    slot_b: str | os.PathLike[str],
    boot_state: str | os.PathLike[str],
    slot_size: int | None = None,
    firmware_name: str | None = None,
    allow_downgrade: bool = False,
    max_tries: int = DEFAULT_MAX_TRIES,
    confirm_by_hand: bool = False,
    boot_id_file: str | os.PathLike[str] = DEFAULT_BOOT_ID_FILE,
    commands_socket: str | os.PathLike[str] | None = None,
    events_socket: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> App:
    """The SWLM, ready for ``app.run()`` or ``await app.serve()``.

    Socket paths: the explicit ones, else ``config`` (the daemon's TOML), else
    ``$SOTA_CONFIG``, else the 2016 defaults.

    :raises ValueError: a slot that is not a block device needs ``slot_size``.
    :raises swlm_sdk.ConfigError: a socket path or the config is unusable.
    """
    slots = {"a": Path(slot_a), "b": Path(slot_b)}
    if slots["a"].resolve() == slots["b"].resolve():
        raise ValueError("slot a and slot b are the same path")
    for name, path in slots.items():
        if slot_size is None and not path.is_block_device():
            raise ValueError(f"slot {name} ({path}) is not a block device: give its slot size")
    if slot_size is not None and slot_size <= 0:
        raise ValueError(f"slot size must be positive, got {slot_size}")
    if max_tries < 1:
        raise ValueError(f"max tries must be at least 1, got {max_tries}")
    flasher = Flasher(
        slots,
        Path(boot_state),
        slot_size=slot_size,
        firmware_name=firmware_name,
        allow_downgrade=allow_downgrade,
        max_tries=max_tries,
        confirm_by_hand=confirm_by_hand,
        boot_id_file=boot_id_file,
    )
    app = App(
        state_dir,
        commands_socket=commands_socket,
        events_socket=events_socket,
        config=config,
        # The SDK's count and the bootloader's agree: it rolls back when the bootloader
        # would fall back.
        confirm_boots=max_tries,
        boot_id_file=boot_id_file,
    )
    # Plain functions: the SDK runs them in a worker thread and never interrupts one, so a
    # slot is never left half-written by a shutdown.
    app.on_download_complete(flasher.install)
    app.on_boot(flasher.after_boot)
    app.on_rollback(flasher.roll_back)
    app.installed_packages(flasher.installed_packages)
    return app


def positive_bytes(text: str) -> int:
    """argparse type: a positive number of bytes."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {text!r}")
    return int(text)


def _state_dir_default() -> str:
    # systemd's StateDirectory= sets STATE_DIRECTORY (a list if several are given).
    return os.environ.get("STATE_DIRECTORY", DEFAULT_STATE_DIR).split(":")[0]


def describe(state: dict[str, Any]) -> str:
    """The boot state for a person: what each slot holds, what boots, the trial."""
    lines = []
    for slot in SLOTS:
        record = state[slot]
        held = "empty" if record is None else f"{record.get('name', '?')} {record['version']}"
        marks = [
            m
            for m, on in (("active", state["active"] == slot), ("running", state["booted"] == slot))
            if on
        ]
        lines.append(f"slot {slot}: {held}" + (f" ({', '.join(marks)})" if marks else ""))
    trial = state["trial"]
    if trial is not None:
        what = f"{trial['name']} {trial['version']} in slot {trial['slot']}"
        what += f" (update {trial['update_id']})"
        status = {
            "trying": f"on trial, boot {trial['tries']} of {trial['max_tries']}",
            "good": "confirmed",
        }.get(trial["status"], trial.get("why", trial["status"]))
        lines.append(f"last flash: {what}: {status}")
    return "\n".join(lines)


def tool(argv: list[str]) -> int:
    """``swlm_flash status|confirm|rollback``: inspect and steer the boot state by hand."""
    parser = argparse.ArgumentParser(
        prog="swlm_flash", description="Inspect the A/B boot state, confirm or roll back a trial."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="what each slot holds, what boots, the trial")
    status.add_argument("--json", action="store_true", help="the boot state as JSON")
    commands.add_parser("rollback", help="boot the other slot from the next boot on")
    confirm = commands.add_parser("confirm", help="confirm the slot on trial (the SWLM runs)")
    confirm.add_argument(
        "--state-dir", metavar="DIR", default=_state_dir_default(), help="the SWLM's state dir"
    )
    for child in commands.choices.values():
        child.add_argument("--boot-state", metavar="PATH", required=True, help="JSON boot state")
        child.add_argument(
            "--boot-id-file", metavar="PATH", default=DEFAULT_BOOT_ID_FILE, help=argparse.SUPPRESS
        )
        child.add_argument(
            "--lock-timeout",
            metavar="SECONDS",
            type=float,
            default=DEFAULT_LOCK_TIMEOUT,
            help="wait this long while the SWLM holds the boot state (default: %(default)s)",
        )
    args = parser.parse_args(argv)
    flasher = Flasher(
        {}, Path(args.boot_state), boot_id_file=args.boot_id_file, lock_timeout=args.lock_timeout
    )
    try:
        if args.command == "status":
            state = flasher.current()
            print(json.dumps(state, indent=2, sort_keys=True) if args.json else describe(state))
        elif args.command == "rollback":
            print(flasher.roll_back_by_hand())
        else:
            trial = flasher.current()["trial"]  # unlocked again: the SWLM's hook locks it
            if trial is None or trial["status"] != "trying":
                raise InstallError(ResultCode.GENERAL_ERROR, "no slot is on trial")
            path = control_socket_path(args.state_dir)
            print(confirm_update(path, trial["update_id"]))
    except (SwlmError, OSError) as exc:  # InstallError is a SwlmError
        print(f"swlm_flash: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the SWLM until SIGTERM or SIGINT; 0 on a clean stop, 1 if it cannot start.
    ``swlm_flash status|confirm|rollback ...`` runs :func:`tool` instead."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("status", "confirm", "rollback"):
        return tool(argv)
    parser = argparse.ArgumentParser(
        prog="swlm_flash",
        description="Flash firmware bundles into the inactive A/B slot. Also: swlm_flash "
        "status|confirm|rollback --boot-state PATH.",
    )
    parser.add_argument("--config", metavar="PATH", help="the daemon's TOML (socket paths)")
    parser.add_argument("--commands-socket", metavar="PATH", help="the daemon's commands socket")
    parser.add_argument("--events-socket", metavar="PATH", help="the socket this SWLM creates")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=_state_dir_default(),
        help="where the journal of handled updates is kept (default: %(default)s)",
    )
    # ADAPT: your slots, e.g. /dev/disk/by-partlabel/rootfs_a and .../rootfs_b.
    parser.add_argument("--slot-a", metavar="PATH", required=True, help="slot a (device/file)")
    parser.add_argument("--slot-b", metavar="PATH", required=True, help="slot b (device/file)")
    parser.add_argument(
        "--slot-size",
        metavar="BYTES",
        type=positive_bytes,
        help="capacity of a slot that is a file",
    )
    parser.add_argument(
        "--boot-state", metavar="PATH", required=True, help="JSON file: the active slot"
    )
    parser.add_argument("--firmware-name", metavar="NAME", help="refuse bundles for others")
    parser.add_argument("--allow-downgrade", action="store_true", help="flash older versions")
    parser.add_argument(
        "--max-tries",
        metavar="N",
        type=positive_bytes,
        default=DEFAULT_MAX_TRIES,
        help="boots a new slot gets to be confirmed (default: %(default)s)",
    )
    parser.add_argument(
        "--confirm-by-hand",
        action="store_true",
        help="a new slot waits for 'swlm_flash confirm' instead of its health check",
    )
    # For simulations: a reboot is a new id in this file.
    parser.add_argument("--boot-id-file", default=DEFAULT_BOOT_ID_FILE, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        app = build_app(
            args.state_dir,
            slot_a=args.slot_a,
            slot_b=args.slot_b,
            boot_state=args.boot_state,
            slot_size=args.slot_size,
            firmware_name=args.firmware_name,
            allow_downgrade=args.allow_downgrade,
            max_tries=args.max_tries,
            confirm_by_hand=args.confirm_by_hand,
            boot_id_file=args.boot_id_file,
            commands_socket=args.commands_socket,
            events_socket=args.events_socket,
            config=args.config,
        )
        app.run()
    except (SwlmError, OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
