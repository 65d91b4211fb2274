"""The ``otb`` package manager: the ``otbpkg`` tool of the early OSTree builds, given a repo dir."""

from __future__ import annotations

from swlm_sdk.protocol import Package

from ._base import InstallOutcome, PackageManager, parse_package_list
from ._command import LIST_TIMEOUT, path_argument, run_install, run_listing
from ._deb import dpkg_outcome

__all__ = ["OtbPackageManager"]


class OtbPackageManager(PackageManager):
    """``otbpkg --repo=<repodir>``: listed and installed with the deb rules.

    :param repodir: the OSTree repository directory (``otb:<repodir>`` in the config).
    :param timeout: seconds an install may take before otbpkg is killed.
    :param list_timeout: seconds a listing may take.
    """

    kind = "otb"

    def __init__(
        self, repodir: str, *, timeout: float = 3600, list_timeout: float = LIST_TIMEOUT
    ) -> None:
        self.repodir = repodir
        self.timeout = timeout
        self.list_timeout = list_timeout

    def list_command(self) -> list[str]:
        """The listing command line."""
        return ["otbpkg", f"--repo={self.repodir}", "--query"]

    def install_command(self, path: str) -> list[str]:
        """The install command line for the package file at ``path``."""
        return ["otbpkg", "--install", f"--repo={self.repodir}", path_argument(path)]

    async def installed_packages(self) -> list[Package]:
        return parse_package_list(
            await run_listing(self.list_command(), time_limit=self.list_timeout)
        )

    async def install(self, path: str) -> InstallOutcome:
        result = await run_install(self.install_command(path), time_limit=self.timeout)
        if isinstance(result, InstallOutcome):
            return result
        return dpkg_outcome(result)

    def __repr__(self) -> str:
        return f"OtbPackageManager({self.repodir!r})"
