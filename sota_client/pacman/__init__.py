"""Local package managers (deb, rpm, file, otb): list what is installed and install a file.

``device.package_manager = "off"`` means no local manager: an external SWLM installs instead.
"""

from .._process import ProcessResult as ProcessResult
from .._process import SpawnError as SpawnError
from .._process import run_bounded as run_bounded
from ._base import InstallOutcome as InstallOutcome
from ._base import PackageManager as PackageManager
from ._base import PackageManagerError as PackageManagerError
from ._base import is_installed as is_installed
from ._base import parse_package as parse_package
from ._base import parse_package_list as parse_package_list
from ._deb import DebPackageManager as DebPackageManager
from ._deb import dpkg_outcome as dpkg_outcome
from ._deb import parse_dpkg_query as parse_dpkg_query
from ._factory import PACKAGE_MANAGER_KINDS as PACKAGE_MANAGER_KINDS
from ._factory import create_package_manager as create_package_manager
from ._file import FilePackageManager as FilePackageManager
from ._file import parse_package_file as parse_package_file
from ._otb import OtbPackageManager as OtbPackageManager
from ._rpm import RpmPackageManager as RpmPackageManager
from ._rpm import rpm_outcome as rpm_outcome

__all__ = [
    "PACKAGE_MANAGER_KINDS",
    "DebPackageManager",
    "FilePackageManager",
    "InstallOutcome",
    "OtbPackageManager",
    "PackageManager",
    "PackageManagerError",
    "ProcessResult",
    "RpmPackageManager",
    "SpawnError",
    "create_package_manager",
    "dpkg_outcome",
    "is_installed",
    "parse_dpkg_query",
    "parse_package",
    "parse_package_file",
    "parse_package_list",
    "rpm_outcome",
    "run_bounded",
]
