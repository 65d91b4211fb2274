"""The ``rpm`` package manager: ``rpm -qa`` to list, ``rpm -Uvh --force`` and a sync to install."""

from __future__ import annotations

import os

import anyio

from swlm_sdk.protocol import Package, ResultCode

from .._process import ProcessResult
from ._base import InstallOutcome, PackageManager, parse_package_list
from ._command import LIST_TIMEOUT, failure_text, path_argument, run_install, run_listing

__all__ = ["RPM_QUERY_FORMAT", "RpmPackageManager", "rpm_outcome"]

#: VERSION only, without RELEASE or EPOCH, as in 2016 (Core knows packages by name and version).
RPM_QUERY_FORMAT = "%{NAME} %{VERSION}\n"


def rpm_outcome(result: ProcessResult) -> InstallOutcome:
    """Map a finished ``rpm -Uvh --force`` to its outcome, as in 2016.

    Exit 0 is ``OK`` with standard output as the text. A failure whose standard error says
    ``already installed`` is ``ALREADY_PROCESSED`` (``--force`` reinstalls, so rpm rarely says
    it). Anything else is ``INSTALL_FAILED``. Both failure texts carry both streams.
    """
    if result.returncode == 0:
        return InstallOutcome(ResultCode.OK, result.stdout_text())
    if not result.timed_out and "already installed" in result.stderr_text():
        return InstallOutcome(ResultCode.ALREADY_PROCESSED, failure_text(result))
    return InstallOutcome(ResultCode.INSTALL_FAILED, failure_text(result))


class RpmPackageManager(PackageManager):
    """rpm, optionally aimed at a throwaway root (tests, image builds) instead of ``/``.

    :param root: install into this directory (``rpm --root``), without dependency checks,
        since a throwaway root has none of the dependencies; for tests.
    :param dbpath: the rpm database directory (inside ``root`` when both are given).
    :param timeout: seconds an install may take before rpm is killed.
    :param list_timeout: seconds a listing may take.
    """

    kind = "rpm"

    def __init__(
        self,
        *,
        root: str | None = None,
        dbpath: str | None = None,
        timeout: float = 3600,
        list_timeout: float = LIST_TIMEOUT,
    ) -> None:
        self.root = root
        self.dbpath = dbpath
        self.timeout = timeout
        self.list_timeout = list_timeout

    def _options(self) -> list[str]:
        options = []
        if self.root:
            options.append(f"--root={self.root}")
        if self.dbpath:
            options.append(f"--dbpath={self.dbpath}")
        return options

    def list_command(self) -> list[str]:
        """The listing command line."""
        return ["rpm", "-qa", *self._options(), "--queryformat", RPM_QUERY_FORMAT]

    def install_command(self, path: str) -> list[str]:
        """The install command line for the package file at ``path``."""
        nodeps = ["--nodeps"] if self.root else []
        return ["rpm", "-Uvh", "--force", *self._options(), *nodeps, path_argument(path)]

    async def installed_packages(self) -> list[Package]:
        return parse_package_list(
            await run_listing(self.list_command(), time_limit=self.list_timeout)
        )

    async def install(self, path: str) -> InstallOutcome:
        result = await run_install(self.install_command(path), time_limit=self.timeout)
        if isinstance(result, InstallOutcome):
            return result
        if result.returncode == 0:
            # 2016 ran `sync` here so that a reboot right after the report cannot lose the
            # install; os.sync() is the same call without a program that could be missing.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.sync)
        return rpm_outcome(result)

    def __repr__(self) -> str:
        return f"RpmPackageManager(root={self.root!r}, dbpath={self.dbpath!r})"
