"""The packages, built once per test session by ``tools.build_packages`` into a temporary
directory (the wheels come from its cache, ``build/wheels``, fetched on the first build)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools import build_packages


def need(program: str, package: str) -> None:
    if shutil.which(program) is None:
        pytest.fail(f"{program} is missing: apt-get install {package} (.ci/run installs it)")


@pytest.fixture(scope="session")
def built_debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"sota-client": .../sota-client_<version>_<arch>.deb, ...}``, one for each package."""
    need("dpkg-deb", "dpkg")
    need("strip", "binutils")
    try:
        return build_packages.build_debs(tmp_path_factory.mktemp("debs"))
    except build_packages.BuildError as exc:
        pytest.fail(f"make deb failed: {exc}")


@pytest.fixture(scope="session")
def built_rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"sota-client": .../sota-client-<version>-1.<arch>.rpm, ...}``, one for each package."""
    need("rpmbuild", "rpm")
    need("strip", "binutils")
    try:
        return build_packages.build_rpms(tmp_path_factory.mktemp("rpms"))
    except build_packages.BuildError as exc:
        pytest.fail(f"make rpm failed: {exc}")
