"""Builds the Debian and RPM packages (``make deb``, ``make rpm``) from one staging tree each.

Usage: ``python -m tools.build_packages {deb,rpm} [--out DIR]`` (the default DIR is ``dist/``).

``sota-client`` is a private virtual environment in ``/usr/lib/sota-client`` on Debian's
``/usr/bin/python3.11``, with the wheels of ``pyproject.toml``'s dependencies fetched by pip
into ``build/wheels`` (a cache: later builds take them from there, offline) and installed with
``--no-deps --no-index``; ``swlm-deb-example`` and ``swlm-flash-example`` are the example SWLMs,
run by that environment's interpreter. The files of ``distro/`` say the rest: the control data
and maintainer scripts (``distro/debian``), the spec (``distro/rpm``), the units, the default
configuration and the manual pages. Every build of one commit gives the same bytes: the mtimes
are ``SOURCE_DATE_EPOCH`` (the commit's time), owners root, entries sorted.
"""

from __future__ import annotations

import argparse
import ast
import base64
import email.parser
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DISTRO = REPO / "distro"
WHEEL_CACHE = REPO / "build" / "wheels"

VENV = "usr/lib/sota-client"
PYTHON = "python3.11"
SITE = f"{VENV}/lib/{PYTHON}/site-packages"
#: The scripts' interpreter: isolated (-I), so no PYTHONPATH or user site reaches the daemon.
SHEBANG = f"#!/{VENV}/bin/python3 -I"
#: The oldest glibc the bundled C extension may need, and the newest (Debian 12's), as the
#: manylinux wheel tags accepted.
GLIBC = (17, 36)
#: dpkg architecture -> (RPM architecture, machine in wheel tags).
ARCHITECTURES = {"amd64": ("x86_64", "x86_64"), "arm64": ("aarch64", "aarch64")}
PACKAGES = ("sota-client", "swlm-deb-example", "swlm-flash-example")
#: Seconds for one pip run that may fetch from the index, and for any other tool.
FETCH_TIMEOUT = 600.0
TOOL_TIMEOUT = 300.0
#: Directories of the file system, not of a package: RPM's file lists leave them out.
SYSTEM_DIRS = frozenset(
    {
        "etc",
        "etc/default",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib/systemd",
        "usr/lib/systemd/system",
        "usr/share",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/man/man1",
        "usr/share/lintian",
        "usr/share/lintian/overrides",
        "var",
        "var/lib",
    }
)
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
#: The journal and the downloads (device.state_dir, device.packages_dir of distro/sota.toml),
#: owned by sota: modes as the daemon's unit (StateDirectoryMode=) and _packages_dir want them.
STATE_DIRS = {"var/lib/sota": 0o700, "var/lib/sota/packages": 0o750}

__all__ = ["BuildError", "build_debs", "build_rpms", "main"]


class BuildError(Exception):
    """A build step failed; the message says which and shows the tool's output."""


@dataclass(frozen=True)
class Example:
    """An example SWLM packaged on its own: its program, unit and ``/etc/default`` file."""

    package: str
    program: str  # /usr/bin/<program>, the unit's ExecStart=
    source: Path
    readme: Path


EXAMPLES = (
    Example(
        "swlm-deb-example",
        "swlm-deb",
        REPO / "examples" / "swlm_deb" / "swlm_deb.py",
        REPO / "examples" / "swlm_deb" / "README.md",
    ),
    Example(
        "swlm-flash-example",
        "swlm-flash",
        REPO / "examples" / "swlm_flash" / "swlm_flash.py",
        REPO / "examples" / "swlm_flash" / "README.md",
    ),
)


@dataclass(frozen=True)
class Bundled:
    """A distribution installed into the private environment from its wheel."""

    name: str
    version: str
    license: str
    paths: tuple[str, ...]  # its top-level entries in site-packages
    copyright: tuple[str, ...]
    license_text: str


@dataclass
class Staged:
    """The payload of every package, as trees of files to be installed under ``/``."""

    version: str
    epoch: int
    arch: str
    roots: dict[str, Path]
    bundled: list[Bundled] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Facts of the checkout and of this machine


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = TOOL_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv``; its stdout, or a BuildError that shows its output."""
    command = [os.fspath(arg) for arg in argv]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{' '.join(command)}: {exc}") from None
    if result.returncode != 0:
        raise BuildError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return str(result.stdout)


def project_version() -> str:
    """``__version__`` of ``sota_client/__init__.py``, read without importing it."""
    tree = ast.parse((REPO / "sota_client" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    raise BuildError("sota_client/__init__.py has no __version__ = '...'")


def source_date_epoch(distro: Path = DISTRO) -> int:
    """``$SOURCE_DATE_EPOCH``, else the commit time of the checkout, else the changelog's date."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        return int(run(["git", "-C", REPO, "log", "-1", "--format=%ct"], timeout=30).strip())
    except (BuildError, ValueError):
        return int(changelog_entries(distro)[0].date)


def dpkg_architecture() -> str:
    arch = run(["dpkg", "--print-architecture"], timeout=30).strip()
    if arch not in ARCHITECTURES:
        raise BuildError(f"no wheel tags known for the architecture {arch}")
    return arch


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@dataclass(frozen=True)
class ChangelogEntry:
    version: str
    changes: str  # the lines between the heading and the trailer, as written
    maintainer: str
    date: float


def changelog_entries(distro: Path) -> list[ChangelogEntry]:
    """The entries of ``distro/debian/changelog``, newest first."""
    text = (distro / "debian" / "changelog").read_text()
    pattern = re.compile(
        r"^\S+ \((?P<version>[^)]+)\)[^\n]*\n(?P<changes>.*?)\n -- (?P<who>.+?)  (?P<date>.+?)$",
        re.MULTILINE | re.DOTALL,
    )
    entries = [
        ChangelogEntry(
            m["version"],
            m["changes"].strip("\n"),
            m["who"],
            parsedate_to_datetime(m["date"]).timestamp(),
        )
        for m in pattern.finditer(text)
    ]
    if not entries:
        raise BuildError("distro/debian/changelog has no entry")
    return entries


# --------------------------------------------------------------------------------------------
# Wheels


def pip(*args: str | os.PathLike[str], timeout: float = TOOL_TIMEOUT) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    return run([sys.executable, "-m", "pip", *args], timeout=timeout, env=env)


def target_tags(arch: str) -> list[str]:
    """pip's options for the wheels of the device: CPython 3.11, glibc 2.17 to 2.36."""
    machine = ARCHITECTURES[arch][1]
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC[1], GLIBC[0] - 1, -1)]
    platforms.append(f"manylinux2014_{machine}")
    return [
        "--only-binary=:all:",
        "--implementation=cp",
        "--python-version=3.11",
        "--abi=cp311",
        *(f"--platform={platform}" for platform in platforms),
    ]


def cached(
    fetch: Iterable[str | os.PathLike[str]], use: Sequence[str | os.PathLike[str]], cache: Path
) -> None:
    """Run pip with ``use`` offline from ``cache``; if that fails, fill it with ``fetch`` first."""
    offline = ["--no-index", f"--find-links={cache}"]
    try:
        pip(*use, *offline)
    except BuildError:
        cache.mkdir(parents=True, exist_ok=True)
        pip(*fetch, timeout=FETCH_TIMEOUT)
        pip(*use, *offline)


def fetch_wheels(dest: Path, cache: Path, arch: str) -> list[Path]:
    """The wheels of the project and of its dependencies for the device, copied into ``dest``."""
    project = pyproject()
    requirements = list(project["project"]["dependencies"])
    tags = target_tags(arch)
    cached(
        ["download", "--quiet", f"--dest={cache}", *tags, *requirements],
        ["download", "--quiet", f"--dest={dest}", *tags, *requirements],
        cache,
    )
    build_requires = list(project["build-system"]["requires"])
    cached(
        ["download", "--quiet", f"--dest={cache}", *build_requires],
        ["wheel", "--quiet", "--no-deps", f"--wheel-dir={dest}", REPO],
        cache,
    )
    return sorted(dest.glob("*.whl"))


def wheel_name(wheel: Path) -> str:
    """The distribution name of a wheel file, normalized (``typing_extensions``)."""
    return re.sub(r"[-_.]+", "_", wheel.name.split("-")[0]).lower()


# --------------------------------------------------------------------------------------------
# The staging trees


def write(root: Path, path: str, data: str | bytes, mode: int = 0o644) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    target.write_bytes(data)
    target.chmod(mode)
    return target


def gzip9n(data: bytes) -> bytes:
    """``gzip -9n``: no name, no time stamp in the header."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def install_venv(root: Path, wheels: list[Path], arch: str) -> list[Bundled]:
    """The private environment: the wheels installed, an interpreter link, a pyvenv.cfg."""
    site = root / SITE
    names = [wheel_name(wheel) for wheel in wheels]
    # By name from the wheels' directory: a wheel given by path gets a direct_url.json naming it.
    pip(
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--no-compile",
        *target_tags(arch),
        f"--find-links={wheels[0].parent}",
        f"--target={site}",
        *names,
    )
    # pip's console-script shims name the build's interpreter: /usr/bin has our own scripts.
    shutil.rmtree(site / "bin", ignore_errors=True)
    for record in site.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(line for line in lines if not line.startswith("../")))
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
    for extension in sorted(site.rglob("*.so")):
        strip(site, extension)
    bin_dir = root / VENV / "bin"
    bin_dir.mkdir(parents=True)
    # /usr/bin/python3.11, relative as Debian wants a link within /usr (Policy 10.5).
    (bin_dir / "python3").symlink_to(f"../../../bin/{PYTHON}")
    (bin_dir / "python").symlink_to("python3")
    (bin_dir / PYTHON).symlink_to("python3")
    write(
        root,
        f"{VENV}/pyvenv.cfg",
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11\n"
        f"executable = /usr/bin/{PYTHON}\n",
    )
    return [
        bundled(info)
        for info in sorted(site.glob("*.dist-info"))
        if wheel_name(info) != "sota_client"
    ]


def strip(site: Path, extension: Path) -> None:
    """Strip a C extension as dh_strip does, and give its RECORD line the new hash and size."""
    run(
        [
            "strip",
            "--remove-section=.comment",
            "--remove-section=.note",
            "--strip-unneeded",
            extension,
        ]
    )
    relative = extension.relative_to(site).as_posix()
    data = extension.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    for record in site.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines(keepends=True)
        fixed = [
            f"{relative},sha256={digest},{len(data)}\n" if line.split(",")[0] == relative else line
            for line in lines
        ]
        record.write_text("".join(fixed))


def bundled(info: Path) -> Bundled:
    """What the copyright file and BUNDLED say of one installed distribution."""
    metadata = email.parser.Parser().parsestr((info / "METADATA").read_text(), headersonly=True)
    license = metadata.get("License-Expression") or metadata.get("License")
    if not license or "\n" in license:
        raise BuildError(f"{info.name}: no SPDX license expression in its METADATA")
    texts = []
    for name in metadata.get_all("License-File") or []:
        for candidate in (info / "licenses" / name, info / name):
            if candidate.is_file():
                texts.append(candidate.read_text())
                break
    if not texts:
        raise BuildError(f"{info.name}: no license file")
    # "Copyright (c) 2018 Alex Grönholm" -> "2018 Alex Grönholm", to the end of its paragraph
    # or quote (the PSF's are quoted in a sentence); else the authors the metadata names.
    paragraphs = [re.sub(r"\s+", " ", p) for text in texts for p in re.split(r"\n\s*\n", text)]
    notices = tuple(
        dict.fromkeys(
            match[1].strip()
            for paragraph in paragraphs
            for match in re.finditer(r"(?i)copyright\s*(?:\(c\)|©)?\s*(\d{4}[^\"]*)", paragraph)
        )
    ) or (str(metadata.get("Author-email") or metadata.get("Author") or metadata["Name"]),)
    tops = sorted(
        {
            line.split(",")[0].split("/")[0]
            for line in (info / "RECORD").read_text().splitlines()
            if line and not line.startswith("../")
        }
    )
    return Bundled(
        str(metadata["Name"]),
        str(metadata["Version"]),
        license,
        tuple(tops),
        notices,
        "\n\n".join(text.strip() for text in texts),
    )


def console_script(entry: str) -> str:
    """A ``/usr/bin`` script for ``module:function``, run by the private environment."""
    module, function = entry.split(":")
    return (
        f'{SHEBANG}\n"""{module}:{function} of the private environment in /{VENV}."""\n\n'
        f"import sys\n\nfrom {module} import {function}\n\nsys.exit({function}())\n"
    )


def example_script(source: Path) -> str:
    """An example SWLM as ``/usr/bin`` runs it: its own text, with the environment's shebang."""
    text = source.read_text()
    first, newline, rest = text.partition("\n")
    if not first.startswith("#!"):
        raise BuildError(f"{source} has no #! line to replace")
    return f"{SHEBANG}{newline}{rest}"


def copyright_file(distro: Path, bundled: Sequence[Bundled]) -> str:
    """DEP-5 copyright: the project's paragraph, then one per bundled distribution."""
    paragraphs = []
    for item in bundled:
        files = " ".join(
            f"{SITE}/{top}" + ("" if top.endswith(".py") else "/*") for top in item.paths
        )
        text = "\n".join(
            f" {line}" if line.strip() else " ." for line in item.license_text.splitlines()
        )
        notices = "\n ".join(item.copyright)
        paragraphs.append(
            f"\nFiles: {files}\nCopyright: {notices}\nComment: {item.name} {item.version}, "
            f"from its wheel\nLicense: {item.license}\n{text}\n"
        )
    template = (distro / "debian" / "copyright").read_text()
    return template.replace("@BUNDLED@\n", "".join(paragraphs))


def bundled_list(version: str, bundled: Sequence[Bundled]) -> str:
    rows = "".join(f"{b.name:<20} {b.version:<12} {b.license}\n" for b in bundled)
    return (
        f"# The Python distributions that sota-client {version} bundles, installed from\n"
        f"# their wheels into /{SITE}.\n"
        f"# A new build of the package (make deb) updates them.\n"
        f"# name               version      license\n{rows}"
    )


def owner(name: str) -> str:
    """The package that ships a unit or manual page, by its file name: an example's
    (``swlm-deb.service``, ``swlm-deb.1``), else sota-client's."""
    for example in EXAMPLES:
        if name.startswith(f"{example.program}."):
            return example.package
    return "sota-client"


def stage(work: Path, distro: Path, cache: Path) -> Staged:
    """Every package's files under ``work/<package>/``; the common part of deb and rpm."""
    arch = dpkg_architecture()
    version = project_version()
    if changelog_entries(distro)[0].version != version:
        raise BuildError(f"distro/debian/changelog does not start with version {version}")
    staged = Staged(version, source_date_epoch(distro), arch, {p: work / p for p in PACKAGES})
    wheels_dir = work / "wheels"
    wheels_dir.mkdir(parents=True)
    wheels = fetch_wheels(wheels_dir, cache, arch)

    root = staged.roots["sota-client"]
    staged.bundled = install_venv(root, wheels, arch)
    scripts: Mapping[str, str] = pyproject()["project"]["scripts"]
    for name, entry in scripts.items():
        write(root, f"usr/bin/{name}", console_script(entry), 0o755)
    write(root, "etc/sota.toml", (distro / "sota.toml").read_bytes())
    write(
        root,
        "usr/share/sota-client/package-manager.conf",
        (distro / "systemd" / "package-manager.conf").read_bytes(),
    )
    write(
        root,
        "usr/share/doc/sota-client/BUNDLED",
        bundled_list(version, staged.bundled),
    )
    for unit in sorted((distro / "systemd").glob("*.service")):
        write(
            staged.roots[owner(unit.name)],
            f"usr/lib/systemd/system/{unit.name}",
            unit.read_bytes(),
        )

    for example in EXAMPLES:
        root = staged.roots[example.package]
        write(root, f"usr/bin/{example.program}", example_script(example.source), 0o755)
        default = distro / "default" / example.program
        write(root, f"etc/default/{example.program}", default.read_bytes())
        write(root, f"usr/share/doc/{example.package}/README.md", example.readme.read_bytes())

    changelog = gzip9n((distro / "debian" / "changelog").read_bytes())
    for package, root in staged.roots.items():
        doc = f"usr/share/doc/{package}"
        write(
            root,
            f"{doc}/copyright",
            copyright_file(distro, staged.bundled if package == "sota-client" else ()),
        )
        write(root, f"{doc}/changelog.gz", changelog)
        overrides = distro / "debian" / f"{package}.lintian-overrides"
        if overrides.exists():
            write(root, f"usr/share/lintian/overrides/{package}", overrides.read_bytes())
    for page in sorted((distro / "man").glob("*.1")):
        manual = gzip9n(page.read_bytes())
        write(staged.roots[owner(page.name)], f"usr/share/man/man1/{page.name}.gz", manual)
    for root in staged.roots.values():
        check_no_build_paths(root, work)
    return staged


def check_no_build_paths(root: Path, work: Path) -> None:
    """No file may name the build's directories (pip writes paths into some)."""
    needles = [os.fsencode(work), os.fsencode(REPO), os.fsencode(sys.prefix)]
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for needle in needles:
                if needle in data:
                    raise BuildError(f"{path.relative_to(root)} names the build path {needle!r}")


def normalize(root: Path, epoch: int) -> None:
    """Modes 0755 and 0644 (0755 for programs and maintainer scripts), every mtime ``epoch``."""
    for path in sorted(root.rglob("*"), reverse=True):
        relative = path.relative_to(root).as_posix()
        if not path.is_symlink():
            executable = path.is_dir() or relative.startswith(
                ("usr/bin/", "DEBIAN/post", "DEBIAN/pre")
            )
            path.chmod(0o755 if executable else 0o644)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def payload(root: Path) -> list[Path]:
    """Every path of a tree but its ``DEBIAN`` control directory, sorted."""
    return sorted(p for p in root.rglob("*") if p.relative_to(root).parts[0] != "DEBIAN")


# --------------------------------------------------------------------------------------------
# Debian


def deb822(text: str) -> list[dict[str, str]]:
    """The paragraphs of a control file (comment lines dropped), fields in their order."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                paragraphs.append(current)
            current = {}
        elif line[0] in " \t":
            current[name] += "\n" + line
        else:
            name, _, value = line.partition(":")
            current[name] = value.strip()
    return paragraphs


def installed_size(root: Path) -> int:
    """As dpkg-gencontrol counts it: KiB of each file rounded up, one for each other entry."""
    total = 0
    for path in payload(root):
        total += -(-path.lstat().st_size // 1024) if path.is_file() and not path.is_symlink() else 1
    return total


def control_file(distro: Path, package: str, staged: Staged, root: Path) -> str:
    source, *binaries = deb822((distro / "debian" / "control").read_text())
    (fields,) = [p for p in binaries if p["Package"] == package]
    arch = staged.arch if fields["Architecture"] == "any" else fields["Architecture"]
    control = {
        "Package": package,
        **({"Source": source["Source"]} if package != source["Source"] else {}),
        "Version": staged.version,
        "Architecture": arch,
        "Maintainer": source["Maintainer"],
        "Installed-Size": str(installed_size(root)),
        **{k: fields[k] for k in ("Pre-Depends", "Depends", "Recommends") if k in fields},
        "Section": fields.get("Section", source["Section"]),
        "Priority": fields.get("Priority", source["Priority"]),
        **({"Homepage": source["Homepage"]} if "Homepage" in source else {}),
        "Description": fields["Description"],
    }
    text = "".join(f"{key}: {value}\n" for key, value in control.items())
    return text.replace("${binary:Version}", staged.version)


def build_deb(distro: Path, package: str, staged: Staged, out: Path) -> Path:
    root = staged.roots[package]
    files = [p for p in payload(root) if p.is_file() and not p.is_symlink()]
    conffiles = [p for p in files if p.relative_to(root).parts[0] == "etc"]
    write(root, "DEBIAN/control", control_file(distro, package, staged, root))
    # dpkg keeps the sums of conffiles itself (dh_md5sums leaves them out too).
    write(
        root,
        "DEBIAN/md5sums",
        "".join(
            f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n"
            for p in files
            if p not in conffiles
        ),
    )
    if conffiles:
        write(
            root,
            "DEBIAN/conffiles",
            "".join(f"/{p.relative_to(root).as_posix()}\n" for p in conffiles),
        )
    for script in MAINTAINER_SCRIPTS:
        source = distro / "debian" / f"{package}.{script}"
        if source.exists():
            write(root, f"DEBIAN/{script}", source.read_bytes(), 0o755)
    normalize(root, staged.epoch)
    arch = deb822((root / "DEBIAN" / "control").read_text())[0]["Architecture"]
    deb = out / f"{package}_{staged.version}_{arch}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(staged.epoch)}
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb], env=env)
    return deb


def build_debs(out: Path, *, distro: Path = DISTRO, cache: Path = WHEEL_CACHE) -> dict[str, Path]:
    """Build the three .debs into ``out``; their paths by package name."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sota-deb-") as work:
        staged = stage(Path(work), distro, cache)
        return {package: build_deb(distro, package, staged, out) for package in PACKAGES}


# --------------------------------------------------------------------------------------------
# RPM


def rpm_files(root: Path) -> str:
    """The ``%files`` lines of one tree: its own directories, its files, configs as such."""
    lines = []
    for path in payload(root):
        relative = path.relative_to(root).as_posix()
        if re.search(r"[\s\"*?\[\]%{}\\]", relative):
            raise BuildError(f"{relative}: a name RPM's file lists cannot hold as it is")
        if relative in SYSTEM_DIRS:
            continue
        if relative in STATE_DIRS:
            lines.append(f"%dir %attr({STATE_DIRS[relative]:04o},sota,sota) /{relative}")
        elif path.is_dir() and not path.is_symlink():
            lines.append(f"%dir /{relative}")
        elif relative.startswith("etc/"):
            lines.append(f"%config(noreplace) /{relative}")
        else:
            lines.append(f"/{relative}")
    return "\n".join(lines)


def rpm_changelog(distro: Path, release: str) -> str:
    entries = []
    for entry in changelog_entries(distro):
        day = time.strftime("%a %b %d %Y", time.gmtime(entry.date))
        items = re.split(r"\n  \* ", "\n" + entry.changes)[1:]
        bullets = "".join(f"- {' '.join(item.split())}\n" for item in items)
        entries.append(f"* {day} {entry.maintainer} - {entry.version}-{release}\n{bullets}")
    return "\n".join(entries)


def build_rpms(out: Path, *, distro: Path = DISTRO, cache: Path = WHEEL_CACHE) -> dict[str, Path]:
    """Build the three .rpms into ``out``; their paths by package name."""
    out.mkdir(parents=True, exist_ok=True)
    release = "1"
    with tempfile.TemporaryDirectory(prefix="sota-rpm-") as work_dir:
        work = Path(work_dir)
        staged = stage(work / "staging", distro, cache)
        for root in staged.roots.values():
            shutil.rmtree(root / "usr/share/lintian", ignore_errors=True)
        # Owned by the package, with the sota user as owner: RPM sets it by name at install
        # (the .deb's postinst makes them instead, as dpkg cannot).
        for directory in STATE_DIRS:
            (staged.roots["sota-client"] / directory).mkdir(parents=True, exist_ok=True)
        for root in staged.roots.values():
            normalize(root, staged.epoch)
        licenses = sorted({"MPL-2.0", *(b.license for b in staged.bundled)})
        spec = (distro / "rpm" / "sota-client.spec.in").read_text()
        replacements = {
            "@VERSION@": staged.version,
            "@LICENSE@": " AND ".join(licenses),
            "@STAGING@": str(work / "staging"),
            "@CHANGELOG@": rpm_changelog(distro, release),
            **{f"@FILES:{package}@": rpm_files(root) for package, root in staged.roots.items()},
        }
        for key, value in replacements.items():
            spec = spec.replace(key, value)
        left = re.search(r"@[A-Z]+(:[a-z-]+)?@", spec)
        if left:
            raise BuildError(f"sota-client.spec.in: {left[0]} is not filled in by the builder")
        (work / "sota-client.spec").write_text(spec)
        rpm_arch = ARCHITECTURES[staged.arch][0]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(staged.epoch)}
        run(
            [
                "rpmbuild",
                "-bb",
                "--quiet",
                f"--target={rpm_arch}",
                "--define",
                f"_topdir {work / 'rpmbuild'}",
                "--define",
                f"_rpmdir {out}",
                "--define",
                "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
                work / "sota-client.spec",
            ],
            env=env,
        )
    arches = {"sota-client": rpm_arch, "swlm-deb-example": "noarch", "swlm-flash-example": "noarch"}
    rpms = {p: out / f"{p}-{staged.version}-{release}.{arches[p]}.rpm" for p in PACKAGES}
    for path in rpms.values():
        if not path.is_file():
            raise BuildError(f"rpmbuild made no {path.name}")
    return rpms


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.build_packages", description=__doc__.split("\n")[0]
    )
    parser.add_argument("format", choices=["deb", "rpm"])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="default: dist/")
    args = parser.parse_args(argv)
    started = time.monotonic()
    build = build_debs if args.format == "deb" else build_rpms
    try:
        built = build(args.out)
    except BuildError as exc:
        print(f"build_packages: {exc}", file=sys.stderr)
        return 1
    for path in built.values():
        print(path)
    print(f"built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
