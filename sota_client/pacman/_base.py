"""What every package manager offers, its install outcome, its error, and the 2016 list parser."""

from __future__ import annotations

import abc
import logging
from typing import ClassVar

import msgspec

from swlm_sdk.protocol import Package, ResultCode, UpdateReport

from .._errors import SotaError

__all__ = [
    "InstallOutcome",
    "PackageManager",
    "PackageManagerError",
    "is_installed",
    "parse_package",
    "parse_package_list",
]

logger = logging.getLogger("sota_client.pacman")


class PackageManagerError(SotaError):
    """Listing the installed packages failed; the message is the text for an ``Error`` event.

    Messages keep the 2016 prefixes: ``Package error: ...`` when the tool could not be run or
    failed, ``Parse error: ...`` when its output could not be read.
    """


class InstallOutcome(msgspec.Struct, frozen=True):
    """The result of one install, as the 2016 ``Ok((code, text))`` / ``Err((code, text))``.

    ``ok`` decides everything downstream, as in 2016: an ok outcome becomes ``InstallComplete``
    and the downloaded file is deleted; a failed one becomes ``InstallFailed`` and the file is
    kept. ``ALREADY_PROCESSED`` is ok.
    """

    code: ResultCode
    text: str

    @property
    def ok(self) -> bool:
        """True for ``OK`` and ``ALREADY_PROCESSED``, the only codes 2016 returned as ``Ok``."""
        return self.code in (ResultCode.OK, ResultCode.ALREADY_PROCESSED)

    def to_report(self, update_id: str) -> UpdateReport:
        """The update report for this outcome (one result whose id is the update id)."""
        return UpdateReport.single(update_id, self.code, self.text)


class PackageManager(abc.ABC):
    """A local package manager: lists what is installed and installs a downloaded file."""

    #: The ``device.package_manager`` keyword: ``deb``, ``rpm``, ``file`` or ``otb``.
    kind: ClassVar[str]

    @abc.abstractmethod
    async def installed_packages(self) -> list[Package]:
        """Every installed package with its version, in the tool's order.

        :raises PackageManagerError: the tool could not be run, failed, or printed something
            that is not a package list.
        """

    @abc.abstractmethod
    async def install(self, path: str) -> InstallOutcome:
        """Install the package file at ``path``; never raises for a failed install.

        Installers that change the system run shielded from cancellation with their own
        deadline: the outcome is returned even if the caller was cancelled meanwhile, so record
        it before the next ``await``.
        """


def parse_package(line: str) -> Package:
    """Read one ``name version`` line, split at the first space (2016 ``parse_package``).

    ``vim 2.1 foobar`` is ``vim`` at version ``2.1 foobar``. Leading ``'`` characters are taken
    off the name, as the 2016 client did to undo the quotes of its dpkg-query format; no package
    name starts with one.

    :raises PackageManagerError: ``Parse error: Couldn't parse package: <line>``.
    """
    name, space, version = line.partition(" ")
    name = name.lstrip("'")
    if not space or not name or not version:
        raise PackageManagerError(f"Parse error: Couldn't parse package: {line}")
    return Package(name, version)


def parse_package_list(text: str) -> list[Package]:
    """Read a tool's ``name version`` lines; other lines are skipped, as in 2016.

    2016 skipped lines without a space; a line with an empty name or version (``a ``) is
    skipped too, with a warning, rather than becoming a package without a version.
    """
    packages = []
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if " " not in line:
            continue
        try:
            packages.append(parse_package(line))
        except PackageManagerError as exc:
            logger.warning("skipping a line of the package list: %s", exc)
    return packages


async def is_installed(manager: PackageManager, package: Package) -> bool:
    """Whether ``manager`` lists exactly this name and version.

    A listing error counts as "not installed" (and is logged), as in 2016: the update is then
    downloaded and installed again rather than reported done.
    """
    try:
        packages = await manager.installed_packages()
    except PackageManagerError as exc:
        logger.error("couldn't list installed packages: %s", exc)
        return False
    return package in packages
