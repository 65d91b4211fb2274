"""Build real .deb and .rpm files and throwaway install roots for the package manager tests."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HAVE_DPKG = all(shutil.which(tool) for tool in ("dpkg", "dpkg-deb", "dpkg-query"))
HAVE_RPM = all(shutil.which(tool) for tool in ("rpm", "rpmbuild"))

requires_dpkg = pytest.mark.skipif(
    not HAVE_DPKG, reason="dpkg, dpkg-deb or dpkg-query is not installed (CI installs dpkg)"
)
requires_rpm = pytest.mark.skipif(
    not HAVE_RPM, reason="rpm or rpmbuild is not installed (apt-get install rpm; CI installs it)"
)


def build_deb(
    workdir: Path,
    name: str,
    version: str,
    *,
    postinst: str | None = None,
    conffile: bool = False,
) -> Path:
    """A real binary package built with ``dpkg-deb --root-owner-group --build``."""
    tree = workdir / f"deb-{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    share = tree / "usr" / "share" / name
    share.mkdir(parents=True)
    (share / "VERSION").write_text(f"{version}\n")
    (tree / "DEBIAN" / "control").write_text(
        textwrap.dedent(
            f"""\
            Package: {name}
            Version: {version}
            Architecture: all
            Maintainer: SOTA tests <tests@example.invalid>
            Description: a package built by the test suite
            """
        )
    )
    if conffile:
        etc = tree / "etc" / name
        etc.mkdir(parents=True)
        (etc / "config").write_text("setting = 1\n")
        (tree / "DEBIAN" / "conffiles").write_text(f"/etc/{name}/config\n")
    if postinst is not None:
        script = tree / "DEBIAN" / "postinst"
        script.write_text(postinst)
        script.chmod(0o755)
    out = workdir / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def make_dpkg_root(workdir: Path) -> Path:
    """An empty root with the dpkg database files dpkg expects."""
    root = workdir / "root"
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates"):
        (admin / sub).mkdir(parents=True, exist_ok=True)
    for name in ("status", "available"):
        (admin / name).touch()
    return root


def dpkg_in_root(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run dpkg on the throwaway root, as the tests' own tool (e.g. to remove a package)."""
    return subprocess.run(
        [
            "dpkg",
            f"--root={root}",
            f"--admindir={root / 'var' / 'lib' / 'dpkg'}",
            "--force-not-root",
            "--force-script-chrootless",
            "--log=/dev/null",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def build_rpm(workdir: Path, name: str, version: str, release: str = "1") -> Path:
    """A real noarch package built with ``rpmbuild -bb``."""
    top = workdir / f"rpmbuild-{name}-{version}"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(
        textwrap.dedent(
            f"""\
            Name: {name}
            Version: {version}
            Release: {release}
            Summary: a package built by the test suite
            License: MIT
            BuildArch: noarch
            %description
            A package built by the test suite.
            %install
            mkdir -p %{{buildroot}}/usr/share/{name}
            echo {version} > %{{buildroot}}/usr/share/{name}/VERSION
            %files
            /usr/share/{name}/VERSION
            """
        )
    )
    subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--define",
            f"_topdir {top}",
            "--define",
            f"_tmppath {top / 'tmp'}",
            "--define",
            "_build_id_links none",
            str(spec),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "HOME": str(top)},
    )
    (built,) = (top / "RPMS" / "noarch").glob("*.rpm")
    return built


def write_program(directory: Path, name: str, source: str) -> Path:
    """An executable Python program (a stand-in tool); run directly, never through a shell."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text(f"#!{sys.executable}\n{textwrap.dedent(source)}")
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return program


def write_script(directory: Path, name: str, body: str) -> Path:
    """An executable ``#!/bin/sh`` program (a program file, not a shell string)."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text(f"#!/bin/sh\n{textwrap.dedent(body)}")
    program.chmod(0o755)
    return program
