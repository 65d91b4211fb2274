"""Start-up check of ``device.packages_dir``: the images in it go to an installer as they are, so
no other user may be able to replace them."""

from __future__ import annotations

import logging
import os
import stat

from ._errors import SotaError

__all__ = ["PACKAGES_DIR_MODE", "prepare_packages_dir"]

logger = logging.getLogger(__name__)

PACKAGES_DIR_MODE = 0o750
"""Mode of the directories created: the daemon writes, its group (an SWLM) reads, others nothing."""

_ADVICE = "use a private directory (mode 0750) such as /var/lib/sota/packages"


def prepare_packages_dir(path: str) -> None:
    """Create ``path`` (mode 0750, whatever the umask) if it is missing, then check it.

    A directory every user may write to lets any of them replace an image between download and
    install: without the sticky bit that is an error; with it (``/tmp``, the 2016 default) they
    can still plant files or pre-create names and read the images, so it is a warning.

    :raises SotaError: the directory cannot be created, is not a directory, or is writable by
        every user without the sticky bit.
    """
    if not os.path.lexists(path):
        try:
            _make_dirs(path)
        except OSError as exc:
            raise SotaError(f"couldn't create device.packages_dir {path}: {exc.strerror}") from None
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SotaError(_unusable(path, exc)) from None
    if not stat.S_ISDIR(info.st_mode):
        raise SotaError(f"device.packages_dir {path}{_link_target(path)} is not a directory")
    if info.st_mode & stat.S_IWOTH:
        if not info.st_mode & stat.S_ISVTX:
            raise SotaError(
                f"device.packages_dir {path} is writable by every user: another user could "
                f"replace an update image; {_ADVICE}"
            )
        logger.warning(
            "device.packages_dir %s is writable by every user (sticky): other users can plant "
            "or pre-create files there and read the update images; %s",
            path,
            _ADVICE,
        )


def _make_dirs(path: str) -> None:
    """``os.makedirs``, but each directory it creates gets exactly PACKAGES_DIR_MODE."""
    head, tail = os.path.split(path)
    if not tail:
        head, tail = os.path.split(head)
    if head and tail and not os.path.lexists(head):
        _make_dirs(head)
    try:
        os.mkdir(path, PACKAGES_DIR_MODE)
    except FileExistsError:
        if os.path.isdir(path):
            return  # created by someone else meanwhile: not ours to chmod
        raise
    # The umask may have removed bits; chmod through a descriptor of the very directory made.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, PACKAGES_DIR_MODE)
    finally:
        os.close(fd)


def _unusable(path: str, exc: OSError) -> str:
    target = _link_target(path)
    if target and isinstance(exc, FileNotFoundError):
        return f"device.packages_dir {path}{target}, which does not exist"
    return f"couldn't use device.packages_dir {path}{target}: {exc.strerror}"


def _link_target(path: str) -> str:
    """`` (a symbolic link to X)`` when ``path`` is a symlink, so errors say where it leads."""
    try:
        return f" (a symbolic link to {os.readlink(path)})"
    except OSError:
        return ""
