"""The systemd units the packages ship (distro/systemd/): valid, as hardened as docs/daemon.md says.

``systemd-analyze verify`` checks every unit, and ``sota_client.service`` with its
``package-manager.conf`` drop-in in a ``.d`` directory, as systemd applies it.
``systemd-analyze security --offline=true`` computes the exposure of each one, and of the units
that were there before issue 12 (the old unit of docs/daemon.md, kept below, and the example
units for hand installs); the figures in docs/daemon.md must be exactly those. systemd cannot run
the units here (it is not PID 1), so the sandbox itself is not started; what the units promise
about users, groups and directories is checked line by line against the shipped files.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
UNITS = REPO / "distro" / "systemd"
DEFAULTS = REPO / "distro" / "default"
DOC = REPO / "docs" / "daemon.md"
DAEMON = UNITS / "sota_client.service"
DROPIN = UNITS / "package-manager.conf"
SWLM_UNITS = {"swlm-deb": UNITS / "swlm-deb.service", "swlm-flash": UNITS / "swlm-flash.service"}
EXAMPLE_UNITS = {
    "swlm-deb": REPO / "examples" / "swlm_deb" / "swlm-deb.service",
    "swlm-flash": REPO / "examples" / "swlm_flash" / "swlm-flash.service",
}
EXPOSURE_MARK = "<!-- exposure: systemd-analyze security --offline=true -->"
#: The issue's target for the daemon in SWLM mode (``package_manager = "off"``).
SWLM_MODE_TARGET = 2.0
DEADLINE = 60.0

#: docs/daemon.md's unit before issue 12 (root, no sandbox), for the "before" figures.
OLD_UNIT = """\
[Unit]
Description=SOTA Client
Wants=network-online.target
After=network.target network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/sota_client --config /etc/sota.toml
Environment="RUST_LOG=info"
Restart=on-failure
RestartSec=5
WatchdogSec=60
KillMode=mixed
TimeoutStopSec=15min
StateDirectory=sota
StateDirectoryMode=0700
RuntimeDirectory=sota
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
UMask=0022
PrivateTmp=yes
LockPersonality=yes
RestrictRealtime=yes

[Install]
WantedBy=multi-user.target
"""
#: And its drop-in for ``package_manager = "off"``.
OLD_OFF_DROPIN = """\
[Service]
ProtectSystem=strict
ProtectHome=yes
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictNamespaces=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
"""

#: Lines of the daemon's unit that say what it does, not what it may do: the drop-in leaves them.
BEHAVIOUR = {
    "Type",
    "NotifyAccess",
    "ExecStart",
    "Environment",
    "Restart",
    "RestartSec",
    "WatchdogSec",
    "KillMode",
    "TimeoutStopSec",
    "StateDirectory",
    "StateDirectoryMode",
    "RuntimeDirectory",
    "RuntimeDirectoryPreserve",
}
#: Sandboxing that deb and rpm modes keep, because no install needs what it takes away
#: (docs/daemon.md says why); every other restriction of the unit the drop-in must undo.
KEPT_FOR_INSTALLS = {"PrivateTmp", "LockPersonality", "RestrictRealtime", "RemoveIPC"}


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (.ci/run installs it)")
    return path


def systemd_version() -> str:
    result = subprocess.run(
        [analyze(), "--version"], capture_output=True, text=True, timeout=DEADLINE, check=True
    )
    return result.stdout.splitlines()[0]


def directives(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` for each assignment, continuation lines joined, in order."""
    found: list[tuple[str, str, str]] = []
    section = ""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


def service(text: str) -> dict[str, list[str]]:
    """The ``[Service]`` assignments: every value of each key, in order."""
    values: dict[str, list[str]] = {}
    for section, key, value in directives(text):
        if section == "Service":
            values.setdefault(key, []).append(value)
    return values


def last(text: str, key: str, section: str = "Service") -> str:
    """The value that counts: the last assignment of ``key``."""
    values = [value for sec, k, value in directives(text) if sec == section and k == key]
    assert values, f"no {key}= in [{section}]"
    return values[-1]


def runnable(text: str) -> str:
    """The unit with its program replaced by one that exists: verify insists on that."""
    program = shlex.split(last(text, "ExecStart"))[0]
    assert program.startswith("/usr/bin/"), program
    return text.replace(f"ExecStart={program} ", f"ExecStart={sys.executable} ")


def install(directory: Path, name: str, unit: str, dropin: str | None = None) -> Path:
    """Write ``unit`` (and ``dropin`` into ``<name>.d/``) as ``test-<name>`` in ``directory``.

    The name is not the real one so that drop-ins of an installed client on this machine
    (``/etc/systemd/system/sota_client.service.d/``) cannot change the result.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"test-{name}"
    path.write_text(runnable(unit))
    if dropin is not None:
        (directory / f"{path.name}.d").mkdir()
        (directory / f"{path.name}.d" / DROPIN.name).write_text(dropin)
    return path


def verify(path: Path) -> None:
    """``systemd-analyze verify``; the manual pages are checked against distro/man instead."""
    result = subprocess.run(
        [analyze(), "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # No warning (an unknown key, a bad value) about the unit or its drop-in.
    assert path.name not in output, output
    assert DROPIN.name not in output, output


def exposure(path: Path) -> float:
    """``systemd-analyze security --offline=true``'s overall exposure of the unit at ``path``."""
    result = subprocess.run(
        [analyze(), "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    match = re.search(
        rf"Overall exposure level for {re.escape(path.name)}: (\d+\.\d)", result.stdout
    )
    assert match is not None, result.stdout + result.stderr
    return float(match[1])


def read(path: Path) -> str:
    return path.read_text()


# -- the units are valid --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dropin"),
    [
        ("sota_client.service", False),
        ("sota_client.service", True),
        ("swlm-deb.service", False),
        ("swlm-flash.service", False),
    ],
    ids=["sota_client", "sota_client+package-manager.conf", "swlm-deb", "swlm-flash"],
)
def test_the_units_verify(tmp_path: Path, name: str, dropin: bool) -> None:
    text = read(UNITS / name)
    verify(install(tmp_path, name, text, read(DROPIN) if dropin else None))


@pytest.mark.parametrize("name", ["sota_client.service", "swlm-deb.service", "swlm-flash.service"])
def test_each_unit_names_the_manual_page_the_packages_ship(name: str) -> None:
    """``systemctl help`` opens it (lintian's systemd-service-file-missing-documentation-key)."""
    pages = re.findall(r"^Documentation=man:([\w.-]+)\(1\)$", read(UNITS / name), re.MULTILINE)
    assert pages == [name.removesuffix(".service")]
    assert (REPO / "distro" / "man" / f"{pages[0]}.1").is_file()


# -- exposure -------------------------------------------------------------------------------------


def test_the_daemon_in_swlm_mode_meets_the_target(tmp_path: Path) -> None:
    path = install(tmp_path, DAEMON.name, read(DAEMON))
    threshold = f"--threshold={round(SWLM_MODE_TARGET * 10)}"  # its scale is 0-100
    result = subprocess.run(
        [analyze(), "security", "--offline=true", threshold, str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert exposure(path) <= SWLM_MODE_TARGET


def computed_exposures(directory: Path) -> dict[str, tuple[float, float]]:
    """Each row of docs/daemon.md's exposure table: ``(before, after)`` as systemd computes them."""

    def measure(label: str, unit: str, dropin: str | None = None) -> float:
        return exposure(install(directory / label, DAEMON.name, unit, dropin))

    rows = {
        '`sota_client.service`, `package_manager = "off"`': (
            measure("old-off", OLD_UNIT + OLD_OFF_DROPIN),
            measure("off", read(DAEMON)),
        ),
        '`sota_client.service` + `package-manager.conf`, `"deb"` or `"rpm"`': (
            measure("old", OLD_UNIT),
            measure("deb", read(DAEMON), read(DROPIN)),
        ),
    }
    for name, unit in SWLM_UNITS.items():
        before = exposure(install(directory / f"example-{name}", unit.name, example_unit(name)))
        after = exposure(install(directory / name, unit.name, read(unit)))
        rows[f"`{unit.name}`"] = (before, after)
    return rows


def example_unit(name: str) -> str:
    """The hand-install example unit, running a program under /usr/bin like the packaged one."""
    text = read(EXAMPLE_UNITS[name])
    return text.replace("ExecStart=/opt/sota/bin/python3 ", "ExecStart=/usr/bin/python3 ")


def documented_exposures() -> dict[str, tuple[float, float]]:
    text = DOC.read_text()
    start = text.find(EXPOSURE_MARK)
    assert start >= 0, f"no {EXPOSURE_MARK} in {DOC.name}"
    table = re.match(r"\n((?:\|.*\|\n)+)", text[start + len(EXPOSURE_MARK) :])
    assert table is not None, f"no table after {EXPOSURE_MARK}"
    rows: dict[str, tuple[float, float]] = {}
    for line in table[1].splitlines()[2:]:
        label, before, after = (cell.strip() for cell in line.strip("|").split("|"))
        rows[label] = (float(before), float(after))
    return rows


def test_the_doc_reports_the_exposure_systemd_computes(tmp_path: Path) -> None:
    computed = computed_exposures(tmp_path)
    assert documented_exposures() == computed, (
        f"docs/daemon.md's exposure table is out of date; {systemd_version()} computes "
        f"(before, after): {computed}"
    )
    # The hardening helps where the job allows it, and nothing got worse.
    for before, after in computed.values():
        assert after <= before


# -- what the daemon's unit promises --------------------------------------------------------------


def test_the_daemon_unit_has_what_the_issue_asks() -> None:
    text = read(DAEMON)
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/usr/bin/sota_client --config /etc/sota.toml",
        "Restart": "on-failure",
        "KillMode": "mixed",
        "User": "sota",
        "Group": "sota",
        "StateDirectory": "sota",
        "StateDirectoryMode": "0700",
        "RuntimeDirectory": "sota",
        "RuntimeDirectoryPreserve": "yes",
        "CapabilityBoundingSet": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
    }.items():
        assert last(text, key) == value, key
    assert int(last(text, "WatchdogSec")) > 0
    assert last(text, "TimeoutStopSec")
    # setgid, and group sota may enter and create: every socket made there (the SWLM's events
    # socket too, whatever the SWLM's own group) belongs to group sota, whom the daemon is.
    mode = int(last(text, "RuntimeDirectoryMode"), 8)
    assert mode == 0o2770
    # A system-call filter: an allow list, then what it takes out of it.
    filters = service(text)["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert "~@privileged @resources" in filters
    assert "WantedBy=multi-user.target" in text


def test_the_dropin_undoes_what_installs_need_and_keeps_the_rest() -> None:
    unit = service(read(DAEMON))
    dropin = read(DROPIN)
    assert [section for section, _, _ in directives(dropin)] == ["Service"] * len(
        directives(dropin)
    )
    changed = set(service(dropin))
    sandbox = set(unit) - BEHAVIOUR
    # Every restriction is either undone or on the documented list of those kept.
    assert sandbox - changed == KEPT_FOR_INSTALLS
    assert changed <= sandbox  # and it touches nothing else
    for key, value in {
        "User": "root",
        "Group": "root",  # not sota: maintainer scripts create files with the daemon's group
        "UMask": "0022",  # and its umask
        "CapabilityBoundingSet": "~",  # all of them
        "NoNewPrivileges": "no",
        "ProtectSystem": "no",
        "SystemCallFilter": "",
        "RestrictAddressFamilies": "",
        "RuntimeDirectoryMode": "0755",  # root's /run/sota: group sota still reaches its sockets
    }.items():
        assert last(dropin, key) == value, key


def test_the_doc_explains_every_line_of_the_daemon_unit() -> None:
    """Each ``[Service]`` key of the unit is in a row of docs/daemon.md's table."""
    text = DOC.read_text()
    section = text[text.index("## Running under systemd") : text.index("### The deb and rpm modes")]
    explained = {
        key
        for row in section.splitlines()
        if row.startswith("| `")
        for key in re.findall(r"`~?@?(\w+)=", row.split("|")[1])
    }
    assert set(service(read(DAEMON))) - explained == set()


# -- the SWLMs' units ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SWLM_UNITS))
def test_the_swlm_units_run_the_packaged_swlm_after_the_daemon(name: str) -> None:
    text = read(SWLM_UNITS[name])
    assert last(text, "After", "Unit") == "sota_client.service"
    # /run/sota is the daemon's RuntimeDirectory: starting the SWLM alone must create it.
    assert last(text, "Wants", "Unit") == "sota_client.service"
    variable = name.upper().replace("-", "_") + "_OPTIONS"
    assert shlex.split(last(text, "ExecStart")) == [
        f"/usr/bin/{name}",
        "--config",
        "/etc/sota.toml",
        f"${variable}",  # unbraced: systemd splits it into words
    ]
    assert last(text, "User") == "root"
    assert last(text, "StateDirectory") == name
    assert last(text, "KillMode") == "mixed"
    assert last(text, "Restart") == "on-failure"
    defaults = last(text, "EnvironmentFile")
    assert defaults.removeprefix("-") == f"/etc/default/{name}"
    assert defaults.startswith("-") == (name == "swlm-deb")  # swlm-flash cannot do without it


def test_swlm_deb_keeps_root_as_dpkg_needs() -> None:
    text = read(SWLM_UNITS["swlm-deb"])
    assert last(text, "Group") == "root"  # maintainer scripts create files with this group
    assert last(text, "UMask") == "0022"
    for key in ("CapabilityBoundingSet", "NoNewPrivileges", "ProtectSystem", "SystemCallFilter"):
        assert key not in service(text)


def test_swlm_flash_reaches_its_sockets_and_images_without_more_privilege() -> None:
    text = read(SWLM_UNITS["swlm-flash"])
    daemon = read(DAEMON)
    # Without CAP_DAC_OVERRIDE it needs group sota to create its socket in /run/sota (2770).
    assert last(text, "SupplementaryGroups") == last(daemon, "Group")
    assert last(text, "CapabilityBoundingSet") == "CAP_DAC_READ_SEARCH"  # the 0700 state dir
    assert last(text, "ReadWritePaths") == f"/run/{last(daemon, 'RuntimeDirectory')}"
    assert last(text, "ProtectSystem") == "strict"
    assert last(text, "PrivateNetwork") == "yes"
    assert last(text, "RestrictAddressFamilies") == "AF_UNIX"
    assert last(text, "DevicePolicy") == "closed"


# -- /etc/default -------------------------------------------------------------------------------


def environment_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as systemd's ``EnvironmentFile=`` reads them (quotes removed)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            [assignment] = shlex.split(line)
            key, _, value = assignment.partition("=")
            values[key] = value
    return values


@pytest.mark.parametrize("name", sorted(SWLM_UNITS))
def test_the_default_options_are_accepted_by_the_swlm(name: str, tmp_path: Path) -> None:
    """The example exits 1 (it cannot start here), not 2 (a usage error)."""
    variable = name.upper().replace("-", "_") + "_OPTIONS"
    options = environment_file(DEFAULTS / name)
    assert set(options) == {variable}
    script = REPO / "examples" / name.replace("-", "_") / f"{name.replace('-', '_')}.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--config",
            str(tmp_path / "missing.toml"),
            *shlex.split(options[variable]),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr


def test_the_flash_boot_state_is_in_a_directory_the_unit_may_write() -> None:
    words = shlex.split(environment_file(DEFAULTS / "swlm-flash")["SWLM_FLASH_OPTIONS"])
    boot_state = Path(words[words.index("--boot-state") + 1])
    unit = read(SWLM_UNITS["swlm-flash"])
    assert boot_state.parent == Path("/var/lib") / last(unit, "StateDirectory")
    assert {"--slot-a", "--slot-b"} <= set(words)
