"""The .debs of ``make deb``: their control data, contents, maintainer scripts and lintian, and the
bundled environment importing and starting on this machine's Debian Python 3.11.

Installing them on a fresh Debian root, and an update end to end, is ``test_debian_root.py``.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sota_client
from tools import build_packages

REPO = Path(__file__).parents[2]
DISTRO = REPO / "distro"
VERSION = sota_client.__version__
VENV = "usr/lib/sota-client"
SITE = f"{VENV}/lib/python3.11/site-packages"
SHEBANG = "#!/usr/lib/sota-client/bin/python3 -I"
PYTHON = Path("/usr/bin/python3.11")  # Debian 12's, as on the device
DEADLINE = 120.0
EXAMPLES = {
    "swlm-deb-example": ("swlm-deb", REPO / "examples/swlm_deb/swlm_deb.py"),
    "swlm-flash-example": ("swlm-flash", REPO / "examples/swlm_flash/swlm_flash.py"),
}


def run(*argv: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [os.fspath(a) for a in argv], capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    if check:
        assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr}"
    return result


def field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "--field", deb, name).stdout.strip()


def contents(deb: Path) -> dict[str, tuple[str, str, str]]:
    """``dpkg-deb -c``: path (as installed) -> (mode, owner, link target or "")."""
    listing: dict[str, tuple[str, str, str]] = {}
    for line in run("dpkg-deb", "--contents", deb).stdout.splitlines():
        mode, owner, _size, _date, _time, name = line.split(maxsplit=5)
        name, _, target = name.partition(" -> ")
        path = name.removeprefix(".").rstrip("/") or "/"
        listing[path] = (mode, owner, target)
    return listing


def control(deb: Path, tmp_path: Path) -> Path:
    directory = tmp_path / f"{deb.stem}.control"
    run("dpkg-deb", "--control", deb, directory)
    return directory


@pytest.fixture(scope="module")
def unpacked(built_debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All three packages' files, unpacked into one tree as they would be under ``/``."""
    root = tmp_path_factory.mktemp("unpacked")
    for deb in built_debs.values():
        run("dpkg-deb", "--extract", deb, root)
    return root


# --------------------------------------------------------------------------------------------
# Names and control data


def test_three_packages_named_as_dpkg_names_them(built_debs: dict[str, Path]) -> None:
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert {name: deb.name for name, deb in built_debs.items()} == {
        "sota-client": f"sota-client_{VERSION}_{arch}.deb",
        "swlm-deb-example": f"swlm-deb-example_{VERSION}_all.deb",
        "swlm-flash-example": f"swlm-flash-example_{VERSION}_all.deb",
    }
    for deb in built_debs.values():
        assert deb.parent.is_dir()
        run("dpkg-deb", "--info", deb)


def test_control_fields(built_debs: dict[str, Path]) -> None:
    for name, deb in built_debs.items():
        assert field(deb, "Package") == name
        assert field(deb, "Version") == VERSION
        assert re.fullmatch(r"[^<>]+ <[^@\s]+@[^@\s]+>", field(deb, "Maintainer"))
        assert field(deb, "Section") == "admin"
        assert field(deb, "Priority") == "optional"
        assert field(deb, "Installed-Size").isdigit()
        synopsis, *body = field(deb, "Description").splitlines()
        assert 0 < len(synopsis) <= 80
        assert body
    # The interpreter of the private environment, and of its lib/python3.11; msgspec's C
    # extension for the build machine's architecture.
    sota = built_debs["sota-client"]
    depends = [d.strip() for d in field(sota, "Depends").split(",")]
    assert "python3.11" in depends
    assert field(sota, "Architecture") == run("dpkg", "--print-architecture").stdout.strip()
    assert not any(d.startswith("python3-") or d == "python3" for d in depends), depends
    for name in EXAMPLES:
        assert field(built_debs[name], "Architecture") == "all"
        assert field(built_debs[name], "Depends") == f"sota-client (= {VERSION})"
        assert field(built_debs[name], "Source") == "sota-client"


def test_installed_size_is_the_payload_in_kib(built_debs: dict[str, Path], unpacked: Path) -> None:
    for name, deb in built_debs.items():
        paths = [p for p in contents(deb) if p != "/"]
        size = sum(
            -(-(unpacked / p[1:]).lstat().st_size // 1024)
            if (unpacked / p[1:]).is_file() and not (unpacked / p[1:]).is_symlink()
            else 1
            for p in paths
        )
        assert int(field(deb, "Installed-Size")) == size, name


# --------------------------------------------------------------------------------------------
# Contents


def test_every_entry_is_root_owned_with_plain_modes(built_debs: dict[str, Path]) -> None:
    for deb in built_debs.values():
        for path, (mode, owner, _) in contents(deb).items():
            assert owner == "root/root", path
            assert mode in {"drwxr-xr-x", "-rw-r--r--", "-rwxr-xr-x", "lrwxrwxrwx"}, path
            assert (mode == "-rwxr-xr-x") == path.startswith("/usr/bin/"), path


def test_sota_client_holds_the_daemon_the_sdk_and_the_system_files(
    built_debs: dict[str, Path],
) -> None:
    listing = contents(built_debs["sota-client"])
    for path in (
        "/usr/bin/sota_client",
        "/usr/bin/swlm",
        "/etc/sota.toml",
        "/usr/lib/systemd/system/sota_client.service",
        "/usr/share/sota-client/package-manager.conf",
        "/usr/share/doc/sota-client/copyright",
        "/usr/share/doc/sota-client/changelog.gz",
        "/usr/share/doc/sota-client/BUNDLED",
        "/usr/share/man/man1/sota_client.1.gz",
        "/usr/share/man/man1/swlm.1.gz",
        "/usr/share/lintian/overrides/sota-client",
        f"/{VENV}/pyvenv.cfg",
        f"/{SITE}/sota_client/__init__.py",
        f"/{SITE}/swlm_sdk/__init__.py",
        f"/{SITE}/sota_client/gateways/hmi/index.html",
        f"/{SITE}/sota_client/py.typed",
    ):
        assert path in listing, path
    # The interpreter: a relative link to Debian's (Policy 10.5), as the venv module makes it.
    assert listing[f"/{VENV}/bin/python3"][2] == "../../../bin/python3.11"
    assert os.path.normpath(f"/{VENV}/bin/../../../bin/python3.11") == "/usr/bin/python3.11"
    # The state directory is made by postinst (owned by sota, which dpkg cannot name).
    assert not any(p.startswith("/var") for p in listing)
    # No bytecode (postinst compiles it), no pip shims naming the build's interpreter.
    assert not [p for p in listing if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in listing if p.startswith(f"/{SITE}/bin")]
    assert not [p for p in listing if p.endswith("direct_url.json")]


def test_each_unit_and_default_file_is_in_the_package_that_owns_it(
    built_debs: dict[str, Path],
) -> None:
    listings = {name: contents(deb) for name, deb in built_debs.items()}
    owners = {
        "sota_client.service": "sota-client",
        "swlm-deb.service": "swlm-deb-example",
        "swlm-flash.service": "swlm-flash-example",
    }
    units = sorted(p.name for p in (DISTRO / "systemd").glob("*.service"))
    assert set(owners) <= set(units)
    for unit in units:
        path = f"/usr/lib/systemd/system/{unit}"
        holders = [name for name, listing in listings.items() if path in listing]
        assert holders == [owners.get(unit, "sota-client")], unit
    others = {p.name for p in (DISTRO / "systemd").iterdir()} - set(units)
    assert others == {"package-manager.conf"}, "a file of distro/systemd that no package ships"
    for name, (program, _) in EXAMPLES.items():
        for path in (
            f"/usr/bin/{program}",
            f"/etc/default/{program}",
            f"/usr/share/man/man1/{program}.1.gz",
            f"/usr/share/doc/{name}/README.md",
            f"/usr/share/doc/{name}/copyright",
            f"/usr/share/doc/{name}/changelog.gz",
        ):
            assert path in listings[name], path


def test_the_files_are_the_checkouts(unpacked: Path) -> None:
    assert (unpacked / "etc/sota.toml").read_bytes() == (DISTRO / "sota.toml").read_bytes()
    for unit in (DISTRO / "systemd").glob("*.service"):
        installed = unpacked / "usr/lib/systemd/system" / unit.name
        assert installed.read_bytes() == unit.read_bytes()
    conf = unpacked / "usr/share/sota-client/package-manager.conf"
    assert conf.read_bytes() == (DISTRO / "systemd/package-manager.conf").read_bytes()
    for program, _ in EXAMPLES.values():
        installed = unpacked / "etc/default" / program
        assert installed.read_bytes() == (DISTRO / "default" / program).read_bytes()
    for page in (DISTRO / "man").glob("*.1"):
        packed = unpacked / "usr/share/man/man1" / f"{page.name}.gz"
        assert gzip.decompress(packed.read_bytes()) == page.read_bytes()
    changelog = (DISTRO / "debian/changelog").read_bytes()
    for doc in (unpacked / "usr/share/doc").iterdir():
        assert gzip.decompress((doc / "changelog.gz").read_bytes()) == changelog


def test_compressed_files_are_gzip_9n(unpacked: Path) -> None:
    for path in unpacked.rglob("*.gz"):
        header = path.read_bytes()[:10]
        assert header[3] & 0x08 == 0, f"{path}: the gzip header names a file"
        assert header[4:8] == b"\0\0\0\0", f"{path}: the gzip header has a time stamp"
        assert header[8] == 2, f"{path}: not compressed with -9"


def test_conffiles_are_the_etc_files(built_debs: dict[str, Path], tmp_path: Path) -> None:
    expected = {
        "sota-client": ["/etc/sota.toml"],
        "swlm-deb-example": ["/etc/default/swlm-deb"],
        "swlm-flash-example": ["/etc/default/swlm-flash"],
    }
    for name, deb in built_debs.items():
        conffiles = (control(deb, tmp_path) / "conffiles").read_text().splitlines()
        assert conffiles == expected[name]
        etc = [
            p
            for p, (mode, _, _) in contents(deb).items()
            if p.startswith("/etc/") and mode[0] == "-"
        ]
        assert etc == conffiles


def test_md5sums_cover_every_file_but_the_conffiles(
    built_debs: dict[str, Path], unpacked: Path, tmp_path: Path
) -> None:
    for deb in built_debs.values():
        meta = control(deb, tmp_path)
        sums = {}
        for line in (meta / "md5sums").read_text().splitlines():
            digest, path = line.split("  ", 1)
            sums[path] = digest
        conffiles = (meta / "conffiles").read_text().split()
        files = [p for p, (mode, _, _) in contents(deb).items() if mode[0] == "-"]
        assert sorted(sums) == sorted(p[1:] for p in files if p not in conffiles)
        for path, digest in sums.items():
            assert hashlib.md5((unpacked / path).read_bytes()).hexdigest() == digest, path


# --------------------------------------------------------------------------------------------
# The programs and the bundled environment


def test_the_programs_run_the_private_environment(unpacked: Path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"sota_client", "swlm"}
    for name, entry in scripts.items():
        text = (unpacked / "usr/bin" / name).read_text()
        module, function = entry.split(":")
        assert text.startswith(SHEBANG + "\n")
        assert f"from {module} import {function}\n" in text
        assert f"sys.exit({function}())" in text
    for program, source in EXAMPLES.values():
        packaged = (unpacked / "usr/bin" / program).read_text().split("\n")
        original = source.read_text().split("\n")
        assert packaged[0] == SHEBANG
        assert packaged[1:] == original[1:]


def test_the_examples_import_only_swlm_sdk_and_the_standard_library() -> None:
    for _, source in EXAMPLES.values():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        foreign = imported - set(sys.stdlib_module_names) - {"swlm_sdk", "__future__"}
        assert not foreign, f"{source.name} imports {foreign}: add it to the package"


def bundled_distributions(unpacked: Path) -> dict[str, str]:
    """Name -> version of each .dist-info in the environment."""
    found = {}
    for info in (unpacked / SITE).glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").split("-")
        found[name.lower()] = version
    return found


def test_the_environment_holds_the_project_and_its_dependencies(unpacked: Path) -> None:
    found = bundled_distributions(unpacked)
    assert found.pop("sota_client") == VERSION
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert match is not None
        distribution = match[0].lower().replace("-", "_")
        if "python_version < '3.11'" in requirement:
            assert distribution not in found, f"{distribution} is for Python < 3.11 only"
        else:
            assert distribution in found, requirement
    assert "typing_extensions" in found  # anyio's, on Python < 3.13
    # BUNDLED lists every one of them, with its version and license.
    listed = {}
    for line in (unpacked / "usr/share/doc/sota-client/BUNDLED").read_text().splitlines():
        if not line.startswith("#"):
            name, version, license = line.split(maxsplit=2)
            listed[name.lower()] = version
            assert license.strip()
    assert listed == found
    why = (REPO / "docs/install.md").read_text().split("### Why a private environment", 1)[1]
    for name in found:
        assert name in why, f"docs/install.md does not name the bundled {name}"
    copyright = (unpacked / "usr/share/doc/sota-client/copyright").read_text()
    for name, version in found.items():
        assert re.search(
            rf"(?i)^Comment: {name} {re.escape(version)}, from its wheel$", copyright, re.M
        )


def test_pyvenv_cfg_points_at_debians_python(unpacked: Path) -> None:
    cfg = dict(
        line.split(" = ", 1) for line in (unpacked / VENV / "pyvenv.cfg").read_text().splitlines()
    )
    assert cfg["home"] == "/usr/bin"
    assert cfg["include-system-site-packages"] == "false"
    assert cfg["executable"] == "/usr/bin/python3.11"


def test_no_file_names_the_build_machines_paths(unpacked: Path) -> None:
    needles = [str(REPO).encode(), sys.prefix.encode(), b"/tmp/sota-deb-"]
    for path in unpacked.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not [n for n in needles if n in data], path


@pytest.fixture(scope="module")
def python311() -> Path:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing: apt-get install python3.11 (Debian 12's Python)")
    return PYTHON


def staged_python(python: Path, unpacked: Path, code: str, *args: str) -> str:
    """Run ``code`` with Debian's Python and the unpacked environment's site-packages only,
    as the environment's interpreter would (its absolute path exists only once installed)."""
    prelude = f"import sys; sys.path[:0] = [{str(unpacked / SITE)!r}]; "
    return run(python, "-I", "-c", prelude + code, *args).stdout


def test_the_bundled_packages_import_on_debians_python(python311: Path, unpacked: Path) -> None:
    out = staged_python(
        python311,
        unpacked,
        "import anyio, h11, jeepney, msgspec, swlm_sdk, sota_client, wsproto; "
        "import sota_client._daemon, sota_client.gateways, swlm_sdk.app; "
        "print(msgspec.json.encode({'c': 'extension'}).decode()); "
        "print(anyio.__file__)",
    )
    assert out.splitlines()[0] == '{"c":"extension"}'
    assert out.splitlines()[1].startswith(str(unpacked / SITE))


@pytest.mark.parametrize(
    ("program", "argument"), [("sota_client", "--version"), ("swlm", "--help")]
)
def test_the_commands_start(python311: Path, unpacked: Path, program: str, argument: str) -> None:
    script = (unpacked / "usr/bin" / program).read_text().split("\n", 1)[1]
    out = staged_python(python311, unpacked, f"sys.argv[1:] = [{argument!r}]; {script}")
    if argument == "--version":
        assert VERSION in out
    else:
        assert "usage: swlm" in out


def test_the_examples_start(python311: Path, unpacked: Path) -> None:
    for program, _ in EXAMPLES.values():
        path = unpacked / "usr/bin" / program
        out = staged_python(
            python311, unpacked, f"sys.argv[1:] = ['--help']; exec(open({str(path)!r}).read())"
        )
        assert "usage:" in out, program


def test_postinsts_compileall_succeeds_on_every_module(
    python311: Path, unpacked: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site-packages"
    shutil.copytree(unpacked / SITE, site, symlinks=True)
    run(python311, "-I", "-m", "compileall", "-q", site)
    sources = list(site.rglob("*.py"))
    compiled = list(site.rglob("__pycache__/*.cpython-311.pyc"))
    assert len(compiled) == len(sources)


# --------------------------------------------------------------------------------------------
# Maintainer scripts


def test_maintainer_scripts_are_posix_sh(built_debs: dict[str, Path], tmp_path: Path) -> None:
    for name, deb in built_debs.items():
        meta = control(deb, tmp_path)
        scripts = sorted(
            p.name for p in meta.iterdir() if p.name in ("preinst", "postinst", "prerm", "postrm")
        )
        assert scripts == ["postinst", "postrm", "prerm"], name
        for script in scripts:
            text = (meta / script).read_text()
            assert text.startswith("#!/bin/sh\n"), (name, script)
            assert "\nset -e\n" in text, (name, script)
            assert os.access(meta / script, os.X_OK)
            run("sh", "-n", meta / script)
            if shutil.which("dash"):
                run("dash", "-n", meta / script)
            if shutil.which("checkbashisms"):
                run("checkbashisms", meta / script)
            unit = {"sota-client": "sota_client.service"}.get(
                name, f"{EXAMPLES.get(name, ('',))[0]}.service"
            )
            assert f"UNIT={unit}\n" in text, (name, script)


def test_sota_client_postinst_makes_the_user_and_the_state_directory(
    built_debs: dict[str, Path], tmp_path: Path
) -> None:
    meta = control(built_debs["sota-client"], tmp_path)
    postinst = (meta / "postinst").read_text()
    # Idempotent: each is made only when missing.
    assert "if ! getent group sota >/dev/null; then\n        groupadd --system sota\n" in postinst
    assert (
        "if ! getent passwd sota >/dev/null; then\n        useradd --system --gid sota" in postinst
    )
    assert '--home-dir "$STATE"' in postinst
    assert "--shell /usr/sbin/nologin" in postinst
    assert "STATE=/var/lib/sota\n" in postinst
    assert (
        'if [ ! -d "$STATE" ]; then\n        install -d -o sota -g sota -m 0700 "$STATE"\n'
        in postinst
    )
    assert 'install -d -o sota -g sota -m 0750 "$STATE/packages"' in postinst
    assert (
        '"$VENV/bin/python3" -I -m compileall -q "$VENV/lib/python3.11/site-packages"' in postinst
    )
    prerm = (meta / "prerm").read_text()
    assert 'find "$VENV" -depth -type d -name __pycache__ -exec rm -rf {} +' in prerm
    postrm = (meta / "postrm").read_text()
    purge = postrm.split('if [ "$1" = purge ]; then', 1)[1]
    assert 'rm -rf "$STATE" /run/sota' in purge
    assert "userdel" not in postrm
    assert "groupdel" not in postrm
    # The state is removed on purge only: never on remove or upgrade.
    assert postrm.count("rm -rf") == 1


def test_the_state_and_config_paths_of_the_scripts_are_the_configs(
    built_debs: dict[str, Path], tmp_path: Path
) -> None:
    config = tomllib.loads((DISTRO / "sota.toml").read_text())
    meta = control(built_debs["sota-client"], tmp_path)
    postinst = (meta / "postinst").read_text()
    assert config["device"]["packages_dir"].rstrip("/") == "/var/lib/sota/packages"
    assert "$STATE/packages" in postinst
    assert config["network"]["socket_commands_path"].startswith("/run/sota/")
    assert config["network"]["socket_group"] == "sota"
    assert "groupadd --system sota" in postinst


def test_the_example_scripts_enable_and_purge_as_documented(
    built_debs: dict[str, Path], tmp_path: Path
) -> None:
    deb = control(built_debs["swlm-deb-example"], tmp_path)
    assert "deb-systemd-helper enable" in (deb / "postinst").read_text()
    assert "rm -rf /var/lib/swlm-deb" in (deb / "postrm").read_text()
    flash = control(built_debs["swlm-flash-example"], tmp_path)
    # Not enabled nor started before /etc/default/swlm-flash names the device's slots.
    assert "enable" not in re.sub(r"(?m)^#.*\n", "", (flash / "postinst").read_text())
    purge = (flash / "postrm").read_text().split('if [ "$1" = purge ]; then', 1)[1]
    assert "rm -rf" not in purge
    assert "bootstate" not in purge
    assert 'rm -f "$STATE"/swlm-journal.json "$STATE"/swlm-journal.json.*' in purge


# --------------------------------------------------------------------------------------------
# Reproducible, and clean for lintian


def test_a_second_build_is_byte_identical(built_debs: dict[str, Path], tmp_path: Path) -> None:
    again = build_packages.build_debs(tmp_path)
    for name, deb in built_debs.items():
        assert again[name].read_bytes() == deb.read_bytes(), name


def test_lintian_finds_no_error_and_no_warning(built_debs: dict[str, Path]) -> None:
    if shutil.which("lintian") is None:
        pytest.fail("lintian is missing: apt-get install lintian (.ci/run installs it)")
    result = run(
        "lintian",
        "--fail-on=error,warning",
        "--display-info",
        "--tag-display-limit=0",
        *built_debs.values(),
        check=False,
    )
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWIPX]: ", line)]
    assert result.returncode == 0, "\n".join(tags)
    assert not [t for t in tags if t.startswith(("E:", "W:"))], "\n".join(tags)
    # Every override is still needed, and says why.
    assert not [t for t in tags if "unused-override" in t or "mismatched-override" in t], tags
    for overrides in (DISTRO / "debian").glob("*.lintian-overrides"):
        comment = False
        for line in overrides.read_text().splitlines():
            if line.startswith("#"):
                comment = True
            elif line.strip():
                assert comment, f"{overrides.name}: {line!r} has no comment saying why"
            else:
                comment = False


def test_what_the_install_doc_says_lands_where(built_debs: dict[str, Path]) -> None:
    doc = (REPO / "docs/install.md").read_text().split("## Debian and RPM packages", 1)[1]
    table = doc.split("### What lands where", 1)[1].split("\n\n")[1]
    shipped = set().union(*(contents(deb) for deb in built_debs.values()))
    made = {"/var/lib/sota/", "/var/lib/sota/packages/"}  # by the postinst
    for row in table.splitlines()[2:]:
        directory = ""
        for path in re.findall(r"`([^`]+)`", row.split("|")[1]):
            if "/" not in path:
                path = f"{directory}/{path}"
            directory = path.rsplit("/", 1)[0]
            if path not in made:
                assert path.rstrip("/") in shipped, path
