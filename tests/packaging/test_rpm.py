"""The .rpms of ``make rpm``: their headers, requirements, scriptlets and file lists, and their
payload installed into (and erased from) a temporary root with ``rpm --root``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import sota_client
from tools import build_packages

REPO = Path(__file__).parents[2]
VERSION = sota_client.__version__
DEADLINE = 120.0
ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}
UNITS = {
    "sota-client": "sota_client.service",
    "swlm-deb-example": "swlm-deb.service",
    "swlm-flash-example": "swlm-flash.service",
}


def run(*argv: str | os.PathLike[str]) -> str:
    result = subprocess.run(
        [os.fspath(a) for a in argv], capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def query(rpm: Path, queryformat: str) -> str:
    return run("rpm", "-qp", "--queryformat", queryformat, rpm)


def deb_payload(deb: Path) -> set[str]:
    """The paths a .deb installs, less the Debian-only lintian overrides."""
    paths = set()
    for line in run("dpkg-deb", "--contents", deb).splitlines():
        name = line.split(maxsplit=5)[5].partition(" -> ")[0]
        path = name.removeprefix(".").rstrip("/")
        if path and not path.startswith("/usr/share/lintian"):
            paths.add(path)
    return paths


def test_three_packages_named_as_rpm_names_them(built_rpms: dict[str, Path]) -> None:
    arch = ARCHITECTURES[run("dpkg", "--print-architecture").strip()]
    assert {name: rpm.name for name, rpm in built_rpms.items()} == {
        "sota-client": f"sota-client-{VERSION}-1.{arch}.rpm",
        "swlm-deb-example": f"swlm-deb-example-{VERSION}-1.noarch.rpm",
        "swlm-flash-example": f"swlm-flash-example-{VERSION}-1.noarch.rpm",
    }
    for name, rpm in built_rpms.items():
        header = query(rpm, "%{NAME} %{VERSION} %{RELEASE} %{ARCH}")
        assert header == f"{name} {VERSION} 1 {arch if name == 'sota-client' else 'noarch'}"
        assert query(rpm, "%{SUMMARY}")
        assert query(rpm, "%{LICENSE}")
    licenses = query(built_rpms["sota-client"], "%{LICENSE}").split(" AND ")
    assert {"MPL-2.0", "MIT", "BSD-3-Clause"} <= set(licenses)


def test_requirements_are_the_interpreter_and_the_same_version(
    built_rpms: dict[str, Path],
) -> None:
    requires = run("rpm", "-qp", "--requires", built_rpms["sota-client"]).splitlines()
    assert "/usr/bin/python3.11" in requires
    # AutoReqProv off: no sonames or python3dist() of the bundled wheels.
    assert not [
        r for r in requires if ".so" in r or ("python3" in r and r != "/usr/bin/python3.11")
    ]
    provides = run("rpm", "-qp", "--provides", built_rpms["sota-client"]).splitlines()
    assert not [p for p in provides if ".so" in p or "python" in p], provides
    for name in ("swlm-deb-example", "swlm-flash-example"):
        requires = run("rpm", "-qp", "--requires", built_rpms[name]).splitlines()
        assert f"sota-client = {VERSION}-1" in requires


def test_the_payload_is_the_debs(built_rpms: dict[str, Path], built_debs: dict[str, Path]) -> None:
    for name, rpm in built_rpms.items():
        listed = set(run("rpm", "-qlp", rpm).splitlines())
        expected = deb_payload(built_debs[name])
        if name == "sota-client":
            expected |= {"/var/lib/sota", "/var/lib/sota/packages"}
        # RPM lists a package's own directories, not those of the file system.
        system = {"/etc", "/etc/default", "/usr", "/usr/bin", "/usr/lib", "/usr/share"}
        system |= {"/usr/lib/systemd", "/usr/lib/systemd/system", "/usr/share/doc"}
        system |= {"/usr/share/man", "/usr/share/man/man1", "/var", "/var/lib"}
        assert listed == expected - system, name


def test_config_files_are_noreplace_and_state_belongs_to_sota(
    built_rpms: dict[str, Path],
) -> None:
    expected = {
        "sota-client": ["/etc/sota.toml"],
        "swlm-deb-example": ["/etc/default/swlm-deb"],
        "swlm-flash-example": ["/etc/default/swlm-flash"],
    }
    for name, rpm in built_rpms.items():
        files = query(
            rpm, "[%{FILENAMES}|%{FILEFLAGS:fflags}|%{FILEUSERNAME}|%{FILEMODES:perms}\n]"
        )
        configs = [line.split("|")[0] for line in files.splitlines() if "c" in line.split("|")[1]]
        assert configs == expected[name]
        for line in files.splitlines():
            path, flags, user, mode = line.split("|")
            if path in configs:
                assert "n" in flags, f"{path} is not %config(noreplace)"
            if path.startswith("/var/lib/sota"):
                assert user == "sota"
                assert mode == ("drwx------" if path == "/var/lib/sota" else "drwxr-x---")
            else:
                assert user == "root", path


def scriptlets(rpm: Path) -> dict[str, str]:
    tags = ("PREIN", "POSTIN", "PREUN", "POSTUN", "POSTTRANS")
    out = {}
    for tag in tags:
        text = query(rpm, f"%{{{tag}}}")
        if text != "(none)":
            out[tag] = text
    return out


def test_scriptlets(built_rpms: dict[str, Path], tmp_path: Path) -> None:
    for name, rpm in built_rpms.items():
        scripts = scriptlets(rpm)
        for tag, text in scripts.items():
            script = tmp_path / f"{name}.{tag}"
            script.write_text(text)
            run("sh", "-n", script)
        assert UNITS[name] in scripts["PREUN"]
        assert "disable --now" in scripts["PREUN"]
        assert "try-restart" in scripts["POSTUN"]
    sota = scriptlets(built_rpms["sota-client"])
    assert "getent group sota >/dev/null || groupadd -r sota" in sota["PREIN"]
    assert "useradd -r -M -g sota -d /var/lib/sota -s /usr/sbin/nologin" in sota["PREIN"]
    assert "compileall" in sota["POSTTRANS"]
    assert "__pycache__" in sota["PREUN"]
    assert "preset sota_client.service" in sota["POSTIN"]
    assert (
        "systemctl --no-reload preset" not in scriptlets(built_rpms["swlm-flash-example"])["POSTIN"]
    )
    # An erase keeps the journal: nothing removes /var/lib/sota, the user or the group.
    everything = "\n".join(sota.values())
    assert not re.search(r"rm -rf\s+/var/lib/sota|userdel|groupdel", everything)


def test_changelog(built_rpms: dict[str, Path]) -> None:
    changelog = run("rpm", "-qp", "--changelog", built_rpms["sota-client"])
    assert re.match(
        rf"\* \w{{3}} \w{{3}} \d\d \d{{4}} .+ <.+> - {re.escape(VERSION)}-1\n- ", changelog
    )


@pytest.fixture
def rpm_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    run("rpm", "--root", root, "--initdb")
    return root


def rpm_in(root: Path, *args: str | os.PathLike[str]) -> str:
    # Debian's rpm knows no packages of this system; the scriptlets need systemd and the
    # system's users (test_debian_root.py runs the Debian packages' for real).
    return run("rpm", "--root", root, "--nodeps", "--noscripts", *args)


def test_the_payload_installs_and_erases(built_rpms: dict[str, Path], rpm_root: Path) -> None:
    rpm_in(rpm_root, "-i", *built_rpms.values())
    installed = run("rpm", "--root", rpm_root, "-qa", "--queryformat", "%{NAME}\n").split()
    assert sorted(installed) == sorted(built_rpms)
    for path in (
        "usr/bin/sota_client",
        "usr/bin/swlm",
        "usr/bin/swlm-deb",
        "usr/bin/swlm-flash",
        "usr/lib/sota-client/lib/python3.11/site-packages/sota_client/__init__.py",
        "usr/lib/systemd/system/sota_client.service",
        "etc/default/swlm-flash",
    ):
        assert (rpm_root / path).is_file(), path
    assert os.readlink(rpm_root / "usr/lib/sota-client/bin/python3") == "../../../bin/python3.11"
    assert (rpm_root / "var/lib/sota").stat().st_mode & 0o7777 == 0o700
    config = rpm_root / "etc/sota.toml"
    assert config.read_bytes() == (REPO / "distro/sota.toml").read_bytes()
    run(
        "rpm",
        "--root",
        rpm_root,
        "--verify",
        "--nodeps",
        "--noscripts",
        "--nouser",
        "--nogroup",
        "swlm-deb-example",
    )

    # An edited config is kept as .rpmsave on erase; the unedited ones go.
    config.write_text(config.read_text() + "# edited on the device\n")
    rpm_in(rpm_root, "-e", *built_rpms)
    assert not (rpm_root / "usr/lib/sota-client").exists()
    assert not (rpm_root / "usr/bin/sota_client").exists()
    assert not (rpm_root / "etc/default/swlm-flash").exists()
    assert not config.exists()
    saved = rpm_root / "etc/sota.toml.rpmsave"
    assert saved.read_text().endswith("# edited on the device\n")


def test_a_second_build_is_byte_identical(built_rpms: dict[str, Path], tmp_path: Path) -> None:
    again = build_packages.build_rpms(tmp_path)
    for name, rpm in built_rpms.items():
        assert again[name].read_bytes() == rpm.read_bytes(), name
