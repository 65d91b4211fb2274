"""The Debian SWLM example: real .deb files, real dpkg on a throwaway root, the fake daemon."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
import swlm_deb

from swlm_sdk import DownloadComplete, Package, ResultCode
from swlm_sdk.app import App
from swlm_sdk.protocol import SendInstalledPackages, SendUpdateReport
from swlm_sdk.testing import FakeDaemon
from tests.sota_client.pkgbuild import requires_dpkg

from .conftest import EXAMPLES, example_env, exists, install, serving, terminate, wait_for_line

pytestmark = [requires_dpkg]


def build_deb(
    work: Path, name: str, version: str, *, depends: str = "", postinst: str = ""
) -> Path:
    """A real binary package built with ``dpkg-deb --root-owner-group --build``."""
    tree = work / f"build-{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "share" / name).mkdir(parents=True)
    (tree / "usr" / "share" / name / "VERSION").write_text(f"{version}\n")
    control = textwrap.dedent(
        f"""\
        Package: {name}
        Version: {version}
        Architecture: all
        Maintainer: SWLM example tests <tests@example.invalid>
        Description: a package built by the example's tests
        """
    )
    if depends:
        control += f"Depends: {depends}\n"
    (tree / "DEBIAN" / "control").write_text(control)
    if postinst:
        script = tree / "DEBIAN" / "postinst"
        script.write_text(postinst)
        script.chmod(0o755)
    out = work / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def make_app(fake: FakeDaemon, work: Path, **options: Any) -> App:
    return swlm_deb.build_app(
        work / "state",
        commands_socket=fake.commands_socket,
        events_socket=fake.events_socket,
        dpkg_root=work / "root",
        **options,
    )


def installed(work: Path) -> list[Package]:
    return swlm_deb.Dpkg(work / "root").installed_packages()


@pytest.mark.anyio
async def test_installs_into_the_root_and_lists_it(fake_daemon: FakeDaemon, work: Path) -> None:
    deb = build_deb(work, "hello-swlm", "1.0-1")
    async with serving(make_app(fake_daemon, work)):
        assert await install(fake_daemon, "u1", deb) == (
            ResultCode.OK,
            "installed hello-swlm 1.0-1",
        )
    # A stop lets the report's follow-up (the package list) go out first.
    assert fake_daemon.package_lists[-1] == (Package("hello-swlm", "1.0-1"),)
    assert (work / "root/usr/share/hello-swlm/VERSION").read_text() == "1.0-1\n"


@pytest.mark.anyio
async def test_the_same_package_again_is_already_processed(
    fake_daemon: FakeDaemon, work: Path
) -> None:
    deb = build_deb(work, "hello-swlm", "1.0")
    async with serving(make_app(fake_daemon, work)):
        assert (await install(fake_daemon, "u1", deb))[0] == ResultCode.OK
        # Another update id: the SDK's journal alone would answer a redelivery of "u1".
        assert await install(fake_daemon, "u2", deb) == (
            ResultCode.ALREADY_PROCESSED,
            "hello-swlm 1.0 is already installed",
        )


@pytest.mark.anyio
async def test_a_corrupt_file_fails_validation(fake_daemon: FakeDaemon, work: Path) -> None:
    bad = work / "broken.deb"
    bad.write_bytes(b"!<arch>\nthis is not a Debian package\n")
    missing = work / "missing.deb"
    async with serving(make_app(fake_daemon, work)):
        code, text = await install(fake_daemon, "u1", bad)
        assert code == ResultCode.VALIDATION_FAILED
        assert "dpkg-deb: error:" in text
        assert str(bad) in text
        assert await install(fake_daemon, "u2", missing) == (
            ResultCode.VALIDATION_FAILED,
            f"no update image file at {missing}",
        )
    assert installed(work) == []


@pytest.mark.anyio
async def test_an_unmet_dependency_is_a_dependency_failure(
    fake_daemon: FakeDaemon, work: Path
) -> None:
    deb = build_deb(work, "needy", "2.0", depends="libnot-there (>= 1)")
    async with serving(make_app(fake_daemon, work)):
        code, text = await install(fake_daemon, "u1", deb)
    assert code == ResultCode.DEPENDENCY_FAILURE
    assert "libnot-there" in text
    # The half-installed package was removed again: nothing is left unconfigured.
    status = (work / "root/var/lib/dpkg/status").read_text()
    assert "Status: install ok unpacked" not in status
    assert installed(work) == []


@pytest.mark.anyio
async def test_a_failing_maintainer_script_is_install_failed(
    fake_daemon: FakeDaemon, work: Path
) -> None:
    deb = build_deb(work, "grumpy", "1.0", postinst="#!/bin/sh\necho refusing >&2\nexit 3\n")
    async with serving(make_app(fake_daemon, work)):
        code, text = await install(fake_daemon, "u1", deb)
    assert code == ResultCode.INSTALL_FAILED
    assert "refusing" in text
    assert "returned error exit status 3" in text
    assert len(text.split(" | ")) <= swlm_deb.TAIL_LINES


@pytest.mark.anyio
async def test_a_downgrade_is_refused_unless_allowed(fake_daemon: FakeDaemon, work: Path) -> None:
    new = build_deb(work, "hello-swlm", "2.0")
    old = build_deb(work, "hello-swlm", "1.9")
    async with serving(make_app(fake_daemon, work)):
        assert (await install(fake_daemon, "u1", new))[0] == ResultCode.OK
        assert await install(fake_daemon, "u2", old) == (
            ResultCode.OLD_VERSION,
            "hello-swlm 1.9 is older than the installed 2.0",
        )
    assert installed(work) == [Package("hello-swlm", "2.0")]

    async with serving(make_app(fake_daemon, work, allow_downgrade=True)):
        assert await install(fake_daemon, "u3", old) == (
            ResultCode.OK,
            "installed hello-swlm 1.9",
        )
    assert fake_daemon.package_lists[-1] == (Package("hello-swlm", "1.9"),)


def test_the_listing_keeps_installed_packages_only(work: Path) -> None:
    dpkg = swlm_deb.Dpkg(work / "root")
    dpkg.prepare_root()
    (work / "root/var/lib/dpkg/status").write_text(
        textwrap.dedent(
            """\
            Package: kept
            Status: install ok installed
            Version: 1.0
            Architecture: all

            Package: held
            Status: hold ok installed
            Version: 2:3.4~rc1
            Architecture: all

            Package: removed
            Status: deinstall ok config-files
            Version: 0.9
            Architecture: all
            Conffiles:
             /etc/removed.conf 00000000000000000000000000000000

            Package: unpacked
            Status: install ok unpacked
            Version: 5
            Architecture: all
            """
        )
    )
    assert dpkg.installed_packages() == [Package("held", "2:3.4~rc1"), Package("kept", "1.0")]
    assert dpkg.installed_version("kept") == "1.0"
    assert dpkg.installed_version("removed") is None
    assert dpkg.installed_version("unpacked") is None
    assert dpkg.installed_version("unknown") is None


def test_build_app_creates_the_dpkg_database(work: Path) -> None:
    swlm_deb.build_app(work / "state", commands_socket="/c", events_socket="/e", dpkg_root=work)
    admin = work / "var/lib/dpkg"
    assert {p.name for p in admin.iterdir()} == {"info", "updates", "status", "available"}
    with pytest.raises(ValueError, match="timeout must be positive"):
        swlm_deb.build_app(work, commands_socket="/c", events_socket="/e", timeout=0)


def test_main_refuses_what_it_cannot_run(
    work: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        swlm_deb.main(["--timeout", "soon"])
    assert exit_info.value.code == 2
    assert "expected a positive number of seconds, got 'soon'" in capsys.readouterr().err
    config = work / "missing.toml"
    assert swlm_deb.main(["--config", str(config), "--state-dir", str(work)]) == 1
    assert f"cannot start: cannot read config {config}" in caplog.text


@pytest.mark.anyio
async def test_runs_as_a_script_and_stops_on_sigterm(fake_daemon: FakeDaemon, work: Path) -> None:
    deb = build_deb(work, "hello-swlm", "1.0")
    argv = [
        sys.executable,
        str(EXAMPLES / "swlm_deb" / "swlm_deb.py"),
        "--config",
        fake_daemon.config_path,
        "--state-dir",
        str(work / "state"),
        "--dpkg-root",
        str(work / "root"),
    ]
    async with await anyio.open_process(argv, env=example_env()) as process:
        await wait_for_line(process.stderr, "SWLM ready")
        await fake_daemon.deliver(DownloadComplete("u1", str(deb)))
        [command] = await fake_daemon.wait_for(SendUpdateReport, within=30)
        await fake_daemon.wait_for(SendInstalledPackages, within=30)
        assert await terminate(process) == 0
    assert command.report.operation_results[0].result_code == ResultCode.OK
    assert fake_daemon.package_lists[-1] == (Package("hello-swlm", "1.0"),)
    assert not exists(fake_daemon.events_socket)
