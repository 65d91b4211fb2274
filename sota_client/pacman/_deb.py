"""The ``deb`` package manager: dpkg-query to list, ``dpkg -E -i`` to install."""

from __future__ import annotations

import os

from swlm_sdk.protocol import Package, ResultCode

from .._process import ProcessResult
from ._base import InstallOutcome, PackageManager, parse_package_list
from ._command import LIST_TIMEOUT, failure_text, path_argument, run_install, run_listing

__all__ = ["DPKG_QUERY_FORMAT", "DebPackageManager", "dpkg_outcome", "parse_dpkg_query"]

#: The status letters leading each record let :func:`parse_dpkg_query` keep only installed
#: packages; the rest of the record is the 2016 ``${Package} ${Version}``.
DPKG_QUERY_FORMAT = "${db:Status-Abbrev}\t${Package} ${Version}\n"

# dpkg's second status letter: installed, or installed with triggers awaited or pending. The
# others (config-files, half-installed, unpacked, half-configured, not-installed) are not.
_INSTALLED = frozenset("iWt")


def parse_dpkg_query(text: str) -> list[Package]:
    """Read :data:`DPKG_QUERY_FORMAT` output, keeping the packages that are installed.

    2016 listed every record ``dpkg-query -W`` printed, so a removed package whose
    configuration files remain (``rc``) was reported to Core as installed.
    """
    records = []
    for line in text.split("\n"):
        status, tab, record = line.partition("\t")
        if tab and status[1:2] in _INSTALLED:
            records.append(record)
    return parse_package_list("\n".join(records))


def dpkg_outcome(result: ProcessResult) -> InstallOutcome:
    """Map a finished ``dpkg -E -i`` (or ``otbpkg --install``) to its outcome, as in 2016.

    Exit 0 with ``already installed`` in the output is ``ALREADY_PROCESSED``, other exits 0 are
    ``OK`` with standard output as the text, anything else is ``INSTALL_FAILED`` with both
    streams. 2016 looked for the phrase on standard output only; dpkg 1.21 writes its
    ``version X of P already installed, skipping`` to standard error, so both are searched (the
    text is then that of the stream holding the phrase).
    """
    if result.returncode != 0:
        return InstallOutcome(ResultCode.INSTALL_FAILED, failure_text(result))
    stdout = result.stdout_text()
    if "already installed" in stdout:
        return InstallOutcome(ResultCode.ALREADY_PROCESSED, stdout)
    stderr = result.stderr_text()
    if "already installed" in stderr:
        return InstallOutcome(ResultCode.ALREADY_PROCESSED, stderr)
    return InstallOutcome(ResultCode.OK, stdout)


class DebPackageManager(PackageManager):
    """dpkg, optionally aimed at a throwaway root (tests, image builds) instead of ``/``.

    :param root: install into this directory (``dpkg --root``), as an unprivileged user, with
        maintainer scripts run outside a chroot and no dpkg log; for tests.
    :param admindir: the dpkg database directory; ``<root>/var/lib/dpkg`` by default.
    :param timeout: seconds an install may take before dpkg is killed.
    :param list_timeout: seconds a listing may take.
    """

    kind = "deb"

    def __init__(
        self,
        *,
        root: str | None = None,
        admindir: str | None = None,
        timeout: float = 3600,
        list_timeout: float = LIST_TIMEOUT,
    ) -> None:
        self.root = root
        self.admindir = (
            admindir if admindir or root is None else os.path.join(root, "var", "lib", "dpkg")
        )
        self.timeout = timeout
        self.list_timeout = list_timeout

    def list_command(self) -> list[str]:
        """The listing command line."""
        admin = [f"--admindir={self.admindir}"] if self.admindir else []
        return ["dpkg-query", *admin, "-W", "-f", DPKG_QUERY_FORMAT]

    def install_command(self, path: str) -> list[str]:
        """The install command line for the package file at ``path``."""
        options = []
        if self.root:
            options.append(f"--root={self.root}")
        if self.admindir:
            options.append(f"--admindir={self.admindir}")
        if self.root:
            options += ["--force-not-root", "--force-script-chrootless", "--log=/dev/null"]
        return ["dpkg", *options, "-E", "-i", path_argument(path)]

    async def installed_packages(self) -> list[Package]:
        return parse_dpkg_query(
            await run_listing(self.list_command(), time_limit=self.list_timeout)
        )

    async def install(self, path: str) -> InstallOutcome:
        result = await run_install(self.install_command(path), time_limit=self.timeout)
        if isinstance(result, InstallOutcome):
            return result
        return dpkg_outcome(result)

    def __repr__(self) -> str:
        return f"DebPackageManager(root={self.root!r}, admindir={self.admindir!r})"
