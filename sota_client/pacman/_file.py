"""The ``file:<path>`` test package manager: a text file of ``name version`` lines (2016 "tpm")."""

from __future__ import annotations

import anyio

from swlm_sdk.protocol import Package, ResultCode

from ._base import InstallOutcome, PackageManager, PackageManagerError
from ._command import LIST_MAX_OUTPUT

__all__ = ["FilePackageManager", "parse_package_file"]


def parse_package_file(text: str) -> list[Package]:
    """Keep the lines that split on single spaces into exactly two parts (2016 rule).

    ``apa 0.0.0`` is a package; ``cepa-2.0.0``, ``a b c`` and ``a  b`` are not.
    """
    packages = []
    for raw in text.split("\n"):
        parts = raw.removesuffix("\r").split(" ")
        if len(parts) == 2:
            packages.append(Package(parts[0], parts[1]))
    return packages


class FilePackageManager(PackageManager):
    """Lists the packages written in a file; "installing" appends the package path to it.

    :param path: the file (``file:<path>`` in the config).
    :param succeeds: with False every install fails with ``INSTALL_FAILED`` and text
        ``failed`` and the file is left alone, as the 2016 test manager did.
    """

    kind = "file"

    def __init__(self, path: str, *, succeeds: bool = True) -> None:
        self.path = path
        self.succeeds = succeeds

    async def installed_packages(self) -> list[Package]:
        try:
            data = await anyio.to_thread.run_sync(self._read)
        except (OSError, ValueError) as exc:
            raise PackageManagerError(
                f"Package error: cannot read the package list {self.path!r}: {_reason(exc)}"
            ) from exc
        if len(data) > LIST_MAX_OUTPUT:
            raise PackageManagerError(
                f"Package error: the package list {self.path!r} is over {LIST_MAX_OUTPUT} bytes"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PackageManagerError(
                f"Parse error: Error parsing package: {self.path!r} is not UTF-8: {exc}"
            ) from None
        return parse_package_file(text)

    async def install(self, path: str) -> InstallOutcome:
        if not self.succeeds:
            return InstallOutcome(ResultCode.INSTALL_FAILED, "failed")
        # Shielded like the real installers: a half-written line would corrupt the list.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._append, path)
            except (OSError, ValueError) as exc:
                return InstallOutcome(
                    ResultCode.INSTALL_FAILED, f"cannot write to {self.path!r}: {_reason(exc)}"
                )
        return InstallOutcome(ResultCode.OK, "")

    def _read(self) -> bytes:
        with open(self.path, "rb") as file:
            return file.read(LIST_MAX_OUTPUT + 1)

    def _append(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    def __repr__(self) -> str:
        return f"FilePackageManager({self.path!r}, succeeds={self.succeeds!r})"


def _reason(exc: OSError | ValueError) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror} (os error {exc.errno})"
    return str(exc)
