"""Build the package manager that ``device.package_manager`` names."""

from __future__ import annotations

from ._base import PackageManager
from ._command import LIST_TIMEOUT
from ._deb import DebPackageManager
from ._file import FilePackageManager
from ._otb import OtbPackageManager
from ._rpm import RpmPackageManager

__all__ = ["PACKAGE_MANAGER_KINDS", "create_package_manager"]

#: Every ``device.package_manager`` keyword.
PACKAGE_MANAGER_KINDS = ("off", "deb", "rpm", "file", "otb")


def create_package_manager(
    kind: str,
    path: str | None = None,
    *,
    root: str | None = None,
    admindir: str | None = None,
    dbpath: str | None = None,
    timeout: float = 3600,
    list_timeout: float = LIST_TIMEOUT,
) -> PackageManager | None:
    """The package manager for a config value, or None for ``off`` (an external SWLM installs).

    :param kind: ``off``, ``deb``, ``rpm``, ``file`` or ``otb`` (the config has lower-cased it).
    :param path: the file of ``file:<path>`` or the repository of ``otb:<repodir>``; required
        for those two and refused for the others.
    :param root: deb and rpm only: install into this directory instead of ``/`` (tests).
    :param admindir: deb only: the dpkg database directory.
    :param dbpath: rpm only: the rpm database directory.
    :param timeout: seconds an install may run before it is killed and reported failed.
    :param list_timeout: seconds a listing may run.
    :raises ValueError: an unknown kind, a missing or unexpected path, or an option that the
        kind does not take.
    """
    if kind not in PACKAGE_MANAGER_KINDS:
        raise ValueError(
            f"unknown package manager: {kind} (expected one of {', '.join(PACKAGE_MANAGER_KINDS)})"
        )
    takes_path = kind in ("file", "otb")
    if takes_path and not path:
        raise ValueError(f"package manager {kind} needs a path ({kind}:<path>)")
    if not takes_path and path is not None:
        raise ValueError(f"package manager {kind} takes no path, got {path!r}")
    if root is not None and kind not in ("deb", "rpm"):
        raise ValueError(f"package manager {kind} takes no root directory")
    if admindir is not None and kind != "deb":
        raise ValueError(f"package manager {kind} takes no dpkg admindir")
    if dbpath is not None and kind != "rpm":
        raise ValueError(f"package manager {kind} takes no rpm dbpath")
    if not timeout > 0 or not list_timeout > 0:
        raise ValueError(f"timeouts must be positive, got {timeout} and {list_timeout}")
    if kind == "deb":
        return DebPackageManager(
            root=root, admindir=admindir, timeout=timeout, list_timeout=list_timeout
        )
    if kind == "rpm":
        return RpmPackageManager(
            root=root, dbpath=dbpath, timeout=timeout, list_timeout=list_timeout
        )
    if kind == "file":
        assert path is not None
        return FilePackageManager(path)
    if kind == "otb":
        assert path is not None
        return OtbPackageManager(path, timeout=timeout, list_timeout=list_timeout)
    return None
