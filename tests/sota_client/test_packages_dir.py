"""device.packages_dir at start-up: created private, refused when any user could swap images."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sota_client._errors import SotaError
from sota_client._packages_dir import prepare_packages_dir

ADVICE = "use a private directory (mode 0750) such as /var/lib/sota/packages"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask 000", "umask 022", "umask 077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield int(request.param)
    os.umask(old)


def test_missing_directories_are_created_0750_whatever_the_umask(
    tmp_path: Path, umask: int, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o711)
    packages = tmp_path / "var" / "sota" / "packages"
    prepare_packages_dir(str(packages))
    assert packages.is_dir()
    assert [mode(p) for p in (packages, packages.parent, packages.parent.parent)] == [0o750] * 3
    assert mode(tmp_path) == 0o711  # not created here: left alone
    assert caplog.records == []


def test_trailing_slash(tmp_path: Path) -> None:
    prepare_packages_dir(f"{tmp_path}/packages/")
    assert mode(tmp_path / "packages") == 0o750


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    packages.chmod(0o755)
    prepare_packages_dir(str(packages))
    assert mode(packages) == 0o755


def test_world_writable_without_sticky_bit_is_an_error(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    packages.chmod(0o777)
    with pytest.raises(SotaError) as caught:
        prepare_packages_dir(str(packages))
    assert str(caught.value) == (
        f"device.packages_dir {packages} is writable by every user: another user could replace "
        f"an update image; {ADVICE}"
    )


def test_world_writable_sticky_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Like the 2016 default ``/tmp/``."""
    packages = tmp_path / "tmp"
    packages.mkdir()
    packages.chmod(0o1777)
    with caplog.at_level(logging.WARNING, logger="sota_client"):
        prepare_packages_dir(str(packages))
    assert caplog.messages == [
        f"device.packages_dir {packages} is writable by every user (sticky): other users can "
        f"plant or pre-create files there and read the update images; {ADVICE}"
    ]
    assert mode(packages) == 0o1777


def test_a_symlink_to_a_good_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o750)
    (tmp_path / "packages").symlink_to(tmp_path / "real")
    prepare_packages_dir(str(tmp_path / "packages"))


def test_a_symlink_to_a_world_writable_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real").chmod(0o777)
    (tmp_path / "packages").symlink_to(tmp_path / "real")
    with pytest.raises(SotaError, match="is writable by every user"):
        prepare_packages_dir(str(tmp_path / "packages"))


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "packages").write_text("")
    with pytest.raises(SotaError) as caught:
        prepare_packages_dir(str(tmp_path / "packages"))
    assert str(caught.value) == f"device.packages_dir {tmp_path}/packages is not a directory"


def test_a_symlink_to_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "packages").symlink_to(tmp_path / "file")
    with pytest.raises(SotaError) as caught:
        prepare_packages_dir(str(tmp_path / "packages"))
    assert str(caught.value) == (
        f"device.packages_dir {tmp_path}/packages (a symbolic link to {tmp_path}/file) "
        "is not a directory"
    )


def test_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "packages").symlink_to(tmp_path / "gone")
    with pytest.raises(SotaError) as caught:
        prepare_packages_dir(str(tmp_path / "packages"))
    assert str(caught.value) == (
        f"device.packages_dir {tmp_path}/packages (a symbolic link to {tmp_path}/gone), "
        "which does not exist"
    )
    assert not (tmp_path / "gone").exists()  # not created through the link


def test_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "packages").symlink_to(tmp_path / "packages")
    with pytest.raises(SotaError) as caught:
        prepare_packages_dir(str(tmp_path / "packages"))
    assert str(caught.value) == (
        f"couldn't use device.packages_dir {tmp_path}/packages (a symbolic link to "
        f"{tmp_path}/packages): Too many levels of symbolic links"
    )


def test_cannot_create_under_a_file(tmp_path: Path) -> None:
    """The text the daemon gave before this check existed."""
    (tmp_path / "file").write_text("")
    with pytest.raises(SotaError) as caught:
        prepare_packages_dir(str(tmp_path / "file" / "packages"))
    assert str(caught.value) == (
        f"couldn't create device.packages_dir {tmp_path}/file/packages: Not a directory"
    )
