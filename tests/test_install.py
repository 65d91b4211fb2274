"""docs/install.md is true: each of its blocks runs as written, and the units run what it installs.

The blocks run in ``sh -e`` with the system paths they name (``/opt/sota``, ``/usr/local/lib/swlm``,
``/etc/systemd/system``, the checkout) moved into temporary directories; nothing else of them is
changed. How the environments are made, and why:

* The wheelhouse is built once, by the doc's own ``pip wheel``: an isolated build, so pip fetches
  hatchling from the package index, as it does on a build machine (the index is reachable here
  and in CI; ``.venv`` has no hatchling for ``--no-build-isolation``).
* The dependencies are pinned, through ``PIP_CONSTRAINT``, to the versions installed in the
  environment that runs the tests: a new release on the index cannot change the result, and the
  fresh environments run what the rest of the suite tested.
* The fresh environments are plain ``python -m venv`` ones, as the doc says, not
  ``--system-site-packages`` and never run from the checkout, so an import that works there came
  from the wheel and not from the checkout's editable install.
* pip runs without ``PYTHONPYCACHEPREFIX``, so that the bytecode it compiles at install lands in
  the packages' ``__pycache__``, where the device's interpreter finds it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sota_client

REPO = Path(__file__).parents[1]
DOC = REPO / "docs" / "install.md"
DAEMON_DOC = REPO / "docs" / "daemon.md"
EXAMPLES = {
    "swlm_deb": REPO / "examples" / "swlm_deb" / "swlm-deb.service",
    "swlm_flash": REPO / "examples" / "swlm_flash" / "swlm-flash.service",
}
#: The checkout, as the doc names it.
CHECKOUT = "/path/to/checkout"
#: Seconds one block may take (a pip install from a local index takes a few).
DEADLINE = 110.0
#: What the fresh environments do not take from the one running the tests.
NOT_INHERITED = (
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PIP_REQUIRE_VIRTUALENV",
    "PYTHONPYCACHEPREFIX",
)


def doc_block(mark: str, language: str = "sh", doc: Path = DOC) -> str:
    """The fenced block right after an HTML comment mark."""
    match = re.search(
        re.escape(f"<!-- {mark} -->") + rf"\n```{language}\n(.*?)```", doc.read_text(), re.DOTALL
    )
    assert match is not None, f"no {language} block after <!-- {mark} --> in {doc.name}"
    return str(match[1])


def doc_venv() -> str:
    """The virtual environment the doc creates (``/opt/sota``)."""
    venvs: set[str] = {
        match
        for mark in ("test: install-wheelhouse", "test: install-checkout")
        for match in re.findall(r"^python3 -m venv (\S+)$", doc_block(mark), re.MULTILINE)
    }
    assert len(venvs) == 1, venvs
    return venvs.pop()


def doc_copies() -> dict[str, str]:
    """Where the doc copies each file of the examples, by name: ``{"swlm_deb.py": ...}``."""
    copies = re.findall(
        rf"^install -D -m 0644 {re.escape(CHECKOUT)}/examples/\w+/(\S+) (\S+)$",
        doc_block("test: swlm"),
        re.MULTILINE,
    )
    assert copies
    for name, target in copies:
        assert Path(target).name == name
    return dict(copies)


def exec_start(unit_text: str) -> list[str]:
    """The argv of a unit's one ``ExecStart=``, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", unit_text)
    [line] = [line for line in joined.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


# -- what the docs and units say, checked without installing anything ---------------------------


def test_the_install_doc_has_its_blocks() -> None:
    for mark in ("build", "install-wheelhouse", "install-checkout", "check", "swlm"):
        assert doc_block(f"test: {mark}")
    assert doc_block("unit-dropin: venv", "ini")
    assert doc_venv() == "/opt/sota"


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_example_units_run_the_example_with_the_documented_environment(example: str) -> None:
    """systemd would start the example with an interpreter that imports swlm_sdk, from where
    the doc copies it."""
    argv = exec_start(EXAMPLES[example].read_text())
    assert argv[0] == f"{doc_venv()}/bin/python3"  # not /usr/bin/python3: no swlm_sdk there
    assert argv[1] == doc_copies()[f"{example}.py"]
    assert (REPO / "examples" / example / f"{example}.py").is_file()
    # and the doc copies the unit itself too
    assert doc_copies()[EXAMPLES[example].name] == f"/etc/systemd/system/{EXAMPLES[example].name}"
    # The doc quotes the line.
    shown = re.findall(r"^ExecStart=(.*)$", DOC.read_text(), re.MULTILINE)
    quoted = shlex.join(argv)
    assert any(quoted == line or quoted.startswith(line.removesuffix(" ...")) for line in shown)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_example_readmes_run_what_the_units_run(example: str) -> None:
    readme = (REPO / "examples" / example / "README.md").read_text()
    commands = [
        shlex.split(re.sub(r"\\\n", " ", block).removeprefix("sudo "))
        for block in re.findall(r"```sh\n(sudo .*?)```", readme, re.DOTALL)
    ]
    assert commands == [exec_start(EXAMPLES[example].read_text())]


def test_no_doc_runs_an_swlm_with_the_system_python() -> None:
    """``/usr/bin/python3`` cannot import swlm_sdk: no unit or command line may use it."""
    files = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "examples").glob("*/README.md")),
        *EXAMPLES.values(),
    ]
    for path in files:
        text = path.read_text()
        assert not re.search(r"/usr/bin/python3? \S+\.py", text), path
        for line in re.findall(r"^ExecStart=(\S+)", text, re.MULTILINE):
            if "python" in line:
                assert line == f"{doc_venv()}/bin/python3", f"{path.name}: ExecStart={line}"


# -- the blocks, run for real --------------------------------------------------------------------


def dependency_pins() -> list[str]:
    """``name==version`` for each runtime dependency of the project, as installed here."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = list(project["dependencies"])
    pins: dict[str, str] = {}
    while todo:
        requirement = todo.pop()
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        name = re.sub(r"[-_.]+", "-", match[0]).lower()
        if name in pins:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # its marker leaves it out here (tomli on Python 3.11+)
        pins[name] = dist.version
        todo += dist.requires or []
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


@pytest.fixture(scope="module")
def pip_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    constraints = tmp_path_factory.mktemp("pins") / "constraints.txt"
    pins = dependency_pins()
    assert any(pin.startswith("anyio==") for pin in pins)
    constraints.write_text("\n".join(pins) + "\n")
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env.update(PIP_CONSTRAINT=str(constraints), PYTHONNOUSERSITE="1", PIP_NO_INPUT="1")
    return env


class Machine:
    """A temporary directory standing for the device's file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "opt-sota"
        self.swlm_dir = root / "usr-local-lib-swlm"
        self.unit_dir = root / "etc-systemd-system"

    def localize(self, text: str) -> str:
        """The doc's text with every system path moved under ``root``."""
        text = re.sub(r"^python3 ", f"{shlex.quote(sys.executable)} ", text, flags=re.MULTILINE)
        for old, new in (
            (doc_venv(), self.venv),
            ("/usr/local/lib/swlm", self.swlm_dir),
            ("/etc/systemd/system", self.unit_dir),
            (CHECKOUT, REPO),
        ):
            text = text.replace(old, str(new))
        return text

    def run(self, mark: str, env: dict[str, str], cwd: Path | None = None) -> str:
        """Run a block of the doc; its standard output."""
        script = self.localize(doc_block(mark))
        for word in shlex.split(script, comments=True):
            # The test never touches the real system: every absolute path is a temporary one,
            # the checkout, or the interpreter running the tests.
            if word.startswith("/") and word != sys.executable:
                assert word.startswith((str(self.root), str(REPO))), f"{mark} names {word}"
        result = subprocess.run(
            ["sh", "-e", "-x", "-c", script],
            cwd=cwd or self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert result.returncode == 0, f"{mark} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def imports_from_the_environment(self, env: dict[str, str]) -> None:
        """The packages come from the environment's site-packages: the wheel, not the checkout."""
        result = subprocess.run(
            [
                str(self.venv / "bin" / "python3"),
                "-c",
                "import sota_client, swlm_sdk; print(sota_client.__file__, swlm_sdk.__file__)",
            ],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=True,
        )
        for path in result.stdout.split():
            assert Path(path).is_relative_to(self.venv / "lib"), path

    def has_bytecode(self) -> None:
        """Every module of the two packages has its ``.pyc``, compiled at install: without
        them each start of the daemon compiles its modules again (67-82 ms, issue 11), and
        under ``PYTHONDONTWRITEBYTECODE`` or a read-only ``/opt`` it never stops doing so."""
        [site] = self.venv.glob("lib/python3.*/site-packages")
        tag = sys.implementation.cache_tag  # the environment runs this same interpreter
        for package in ("sota_client", "swlm_sdk"):
            sources = sorted((site / package).rglob("*.py"))
            assert sources, package
            missing = [
                str(source.relative_to(site))
                for source in sources
                if not (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").is_file()
            ]
            assert missing == []


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory, pip_env: dict[str, str]) -> Path:
    """Where the doc's build block ran: ``wheelhouse/`` in it."""
    machine = Machine(tmp_path_factory.mktemp("build"))
    machine.run("test: build", pip_env)
    wheels = sorted(path.name for path in (machine.root / "wheelhouse").iterdir())
    assert f"sota_client-{sota_client.__version__}-py3-none-any.whl" in wheels
    for dependency in ("anyio", "msgspec", "h11", "wsproto", "jeepney"):
        assert any(wheel.startswith(f"{dependency}-") for wheel in wheels), (dependency, wheels)
    assert not [wheel for wheel in wheels if wheel.startswith(("httpx-", "httpcore-"))], wheels
    return machine.root


@pytest.fixture(scope="module")
def device(
    tmp_path_factory: pytest.TempPathFactory, build_dir: Path, pip_env: dict[str, str]
) -> Machine:
    """A device with the wheelhouse installed, as the doc says."""
    machine = Machine(tmp_path_factory.mktemp("device"))
    shutil.copytree(build_dir / "wheelhouse", machine.root / "wheelhouse")
    machine.run("test: install-wheelhouse", pip_env)
    return machine


def test_install_from_the_wheelhouse_offline(device: Machine, pip_env: dict[str, str]) -> None:
    """``--no-index``: the wheelhouse alone is enough on a device without the index."""
    output = device.run("test: check", pip_env)
    assert output.startswith(f"{sota_client.__version__}\nusage: swlm ")  # --version, --help
    assert (device.venv / "bin" / "sota_client").is_file()
    assert (device.venv / "bin" / "swlm").is_file()
    device.imports_from_the_environment(pip_env)
    device.has_bytecode()


def test_install_from_the_checkout(tmp_path: Path, pip_env: dict[str, str]) -> None:
    machine = Machine(tmp_path)
    machine.run("test: install-checkout", pip_env)
    output = machine.run("test: check", pip_env)
    assert output.startswith(f"{sota_client.__version__}\nusage: swlm ")
    machine.imports_from_the_environment(pip_env)
    machine.has_bytecode()


def test_the_example_swlms_run_where_the_doc_copies_them(
    device: Machine, pip_env: dict[str, str]
) -> None:
    output = device.run("test: swlm", pip_env)
    assert "usage: swlm_deb" in output
    assert "usage: swlm_flash" in output
    for example, unit in EXAMPLES.items():
        copied = device.unit_dir / unit.name
        assert copied.read_text() == unit.read_text()
        argv = exec_start(device.localize(copied.read_text()))
        assert os.access(argv[0], os.X_OK), argv
        assert Path(argv[1]) == device.swlm_dir / f"{example}.py"
        assert (
            Path(argv[1]).read_bytes()
            == (REPO / "examples" / example / f"{example}.py").read_bytes()
        )


def systemd_analyze_verify(path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # not on every machine; everything above still ran
        pytest.skip("no systemd-analyze")
    result = subprocess.run(
        # The unit's Documentation= pages are those of the packages, checked in
        # tests/packaging/test_units.py; a pip install has none.
        [analyze, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert path.name not in output, output  # no warning about the unit


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_example_units_verify(device: Machine, tmp_path: Path, example: str) -> None:
    """``systemd-analyze verify`` insists that ``ExecStart=`` names an existing program: the
    environment's interpreter."""
    unit = tmp_path / EXAMPLES[example].name
    unit.write_text(device.localize(EXAMPLES[example].read_text()))
    systemd_analyze_verify(unit)


def test_the_daemon_unit_with_the_drop_in_verifies(device: Machine, tmp_path: Path) -> None:
    unit = doc_block("unit: sota_client.service", "ini", DAEMON_DOC)
    dropin = doc_block("unit-dropin: venv", "ini")
    assert exec_start(dropin.replace("ExecStart=\n", "")) == [
        f"{doc_venv()}/bin/sota_client",
        "--config",
        "/etc/sota.toml",
    ]
    assert "ExecStart=\n" in dropin  # clears the unit's own line first
    path = tmp_path / "sota_client.service"
    path.write_text(device.localize(unit + dropin).replace("/usr/bin/sota_client", "/bin/false"))
    systemd_analyze_verify(path)
