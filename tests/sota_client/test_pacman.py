"""Package managers against the real tools: .deb and .rpm files built here, installed into roots."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import anyio
import pytest

from sota_client.pacman import (
    DebPackageManager,
    FilePackageManager,
    InstallOutcome,
    OtbPackageManager,
    PackageManagerError,
    ProcessResult,
    RpmPackageManager,
    SpawnError,
    create_package_manager,
    dpkg_outcome,
    is_installed,
    parse_dpkg_query,
    parse_package,
    parse_package_file,
    parse_package_list,
    rpm_outcome,
    run_bounded,
)
from swlm_sdk.protocol import Package, ResultCode, UpdateReport

from .pkgbuild import (
    build_deb,
    build_rpm,
    dpkg_in_root,
    make_dpkg_root,
    requires_dpkg,
    requires_rpm,
    write_program,
)

# -- the 2016 parsing and result mapping (reference section 10.7) ------------------------------


def test_parses_normal_package() -> None:  # 10.7 case 1
    assert parse_package("uuid-runtime 2.20.1-5.1ubuntu20.7") == Package(
        "uuid-runtime", "2.20.1-5.1ubuntu20.7"
    )


def test_separates_name_and_version_at_the_first_space() -> None:  # 10.7 case 2
    assert parse_package("vim 2.1 foobar") == Package("vim", "2.1 foobar")


def test_rejects_bogus_input() -> None:  # 10.7 case 3
    with pytest.raises(PackageManagerError) as info:
        parse_package("foobar")
    assert str(info.value) == "Parse error: Couldn't parse package: foobar"


@pytest.mark.parametrize("line", [" 1.0", "name ", "' 1.0", ""])
def test_rejects_an_empty_name_or_version(line: str) -> None:
    with pytest.raises(PackageManagerError, match="Couldn't parse package"):
        parse_package(line)


def test_the_2016_quoted_dpkg_listing_parses() -> None:  # 10.7 case 8, listing
    assert parse_package_list("'a 1\n''b 2\n'") == [Package("a", "1"), Package("b", "2")]


def test_a_listing_skips_lines_that_are_not_packages(caplog: pytest.LogCaptureFixture) -> None:
    text = "a 1\r\nnospace\n\nb 2 extra\nc \n"
    assert parse_package_list(text) == [Package("a", "1"), Package("b", "2 extra")]
    assert "Couldn't parse package: c " in caplog.text


def test_dpkg_query_records_keep_only_installed_packages() -> None:
    text = (
        "ii \tinstalled 1.0\n"
        "rc \tremoved-with-config 2.0\n"
        "iU \tunpacked 3.0\n"
        "iF \thalf-configured 3.1\n"
        "it \ttriggers-pending 4.0\n"
        "iW \ttriggers-awaited 5.0\n"
        "hi \theld 6.0\n"
        "un \tnot-installed 7.0\n"
    )
    assert parse_dpkg_query(text) == [
        Package("installed", "1.0"),
        Package("triggers-pending", "4.0"),
        Package("triggers-awaited", "5.0"),
        Package("held", "6.0"),
    ]


def _result(
    code: int, stdout: bytes = b"", stderr: bytes = b"", *, timed_out: bool = False
) -> ProcessResult:
    return ProcessResult(("tool",), code, stdout, stderr, timed_out=timed_out)


def test_dpkg_mapping() -> None:  # 10.7 case 8, install
    assert dpkg_outcome(_result(0, b"Setting up a (1)\n")) == InstallOutcome(
        ResultCode.OK, "Setting up a (1)\n"
    )
    already = dpkg_outcome(_result(0, b"Version 1 of a already installed, skipping.\n"))
    assert already == InstallOutcome(
        ResultCode.ALREADY_PROCESSED, "Version 1 of a already installed, skipping.\n"
    )
    assert already.ok
    # dpkg 1.21 says it on standard error
    modern = dpkg_outcome(_result(0, b"", b"dpkg: version 1 of a already installed, skipping\n"))
    assert modern.code == ResultCode.ALREADY_PROCESSED
    assert modern.text == "dpkg: version 1 of a already installed, skipping\n"
    failed = dpkg_outcome(_result(1, b"out", b"err"))
    assert failed == InstallOutcome(ResultCode.INSTALL_FAILED, "stdout: out\nstderr: err")
    assert not failed.ok
    killed = dpkg_outcome(_result(-9, b"out", b"err"))
    assert killed.code == ResultCode.INSTALL_FAILED
    assert killed.text == "tool was killed by SIGKILL\nstdout: out\nstderr: err"


def test_rpm_mapping() -> None:  # 10.7 case 8, install
    assert rpm_outcome(_result(0, b"installing\n", b"warning")) == InstallOutcome(
        ResultCode.OK, "installing\n"
    )
    already = rpm_outcome(_result(2, b"", b"\tpackage a-1-1.noarch is already installed\n"))
    assert already == InstallOutcome(
        ResultCode.ALREADY_PROCESSED,
        "stdout: \nstderr: \tpackage a-1-1.noarch is already installed\n",
    )
    assert already.ok
    # on standard output it does not count, as in 2016
    assert rpm_outcome(_result(1, b"already installed", b"")).code == ResultCode.INSTALL_FAILED
    timed_out = rpm_outcome(_result(-9, b"", b"already installed", timed_out=True))
    assert timed_out.code == ResultCode.INSTALL_FAILED


def test_install_outcome_ok_and_report() -> None:
    assert [code for code in ResultCode if InstallOutcome(code, "").ok] == [
        ResultCode.OK,
        ResultCode.ALREADY_PROCESSED,
    ]
    assert InstallOutcome(ResultCode.INSTALL_FAILED, "x").to_report("u1") == UpdateReport.single(
        "u1", ResultCode.INSTALL_FAILED, "x"
    )


# -- the file ("tpm") package manager ----------------------------------------------------------


@pytest.mark.anyio
async def test_file_lists_installed_packages(tmp_path: Path) -> None:  # 10.7 case 4
    path = tmp_path / "tpm"
    path.write_text("apa 0.0.0\nbepa 1.0.0")
    assert await FilePackageManager(str(path)).installed_packages() == [
        Package("apa", "0.0.0"),
        Package("bepa", "1.0.0"),
    ]


@pytest.mark.anyio
async def test_file_ignores_bad_installed_packages(tmp_path: Path) -> None:  # 10.7 case 5
    path = tmp_path / "tpm"
    path.write_text("cepa-2.0.0\n")
    assert await FilePackageManager(str(path)).installed_packages() == []


def test_file_lines_must_split_into_exactly_two_parts() -> None:
    assert parse_package_file("a 1\na  1\na 1 2\na\n b\n") == [Package("a", "1"), Package("", "b")]


@pytest.mark.anyio
async def test_file_install_packages(tmp_path: Path) -> None:  # 10.7 case 6
    path = tmp_path / "tpm"
    manager = FilePackageManager(str(path))
    assert await manager.install("apa 0.0.0") == InstallOutcome(ResultCode.OK, "")
    assert await manager.install("bepa 1.0.0") == InstallOutcome(ResultCode.OK, "")
    assert await manager.installed_packages() == [Package("apa", "0.0.0"), Package("bepa", "1.0.0")]
    assert path.read_text() == "apa 0.0.0\nbepa 1.0.0\n"


@pytest.mark.anyio
async def test_file_failed_installation(tmp_path: Path) -> None:  # 10.7 case 7
    path = tmp_path / "tpm"
    failing = FilePackageManager(str(path), succeeds=False)
    outcome = await failing.install("apa 0.0.0")
    assert outcome == InstallOutcome(ResultCode.INSTALL_FAILED, "failed")
    assert not outcome.ok
    assert not path.exists()
    assert (await FilePackageManager(str(path)).install("bepa 1.0.0")).ok
    assert await FilePackageManager(str(path)).installed_packages() == [Package("bepa", "1.0.0")]


@pytest.mark.anyio
async def test_file_missing_list_is_a_clear_error(tmp_path: Path) -> None:
    manager = FilePackageManager(str(tmp_path / "missing"))
    with pytest.raises(PackageManagerError) as info:
        await manager.installed_packages()
    assert str(info.value) == (
        f"Package error: cannot read the package list {str(tmp_path / 'missing')!r}: "
        "No such file or directory (os error 2)"
    )


@pytest.mark.anyio
async def test_file_list_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tpm"
    path.write_bytes(b"a \xff\n")
    with pytest.raises(PackageManagerError, match=r"^Parse error: .* is not UTF-8"):
        await FilePackageManager(str(path)).installed_packages()


@pytest.mark.anyio
async def test_file_unwritable_install_fails_instead_of_crashing(tmp_path: Path) -> None:
    outcome = await FilePackageManager(str(tmp_path)).install("apa 0.0.0")  # a directory
    assert outcome.code == ResultCode.INSTALL_FAILED
    assert outcome.text.startswith(f"cannot write to {str(tmp_path)!r}: Is a directory")


# -- dpkg, for real ----------------------------------------------------------------------------


@pytest.fixture
def deb_root(tmp_path: Path) -> Path:
    return make_dpkg_root(tmp_path)


@requires_dpkg
@pytest.mark.anyio
async def test_deb_install_list_and_already_installed(tmp_path: Path, deb_root: Path) -> None:
    manager = create_package_manager("deb", root=str(deb_root))
    assert isinstance(manager, DebPackageManager)
    assert await manager.installed_packages() == []
    deb = build_deb(tmp_path, "sota-hello", "1.0-1")

    outcome = await manager.install(str(deb))
    assert outcome.code == ResultCode.OK
    assert outcome.ok
    assert "Setting up sota-hello (1.0-1)" in outcome.text
    assert (deb_root / "usr" / "share" / "sota-hello" / "VERSION").read_text() == "1.0-1\n"
    assert await manager.installed_packages() == [Package("sota-hello", "1.0-1")]
    assert await is_installed(manager, Package("sota-hello", "1.0-1"))
    assert not await is_installed(manager, Package("sota-hello", "1.0-2"))

    again = await manager.install(str(deb))
    assert again.code == ResultCode.ALREADY_PROCESSED
    assert again.ok
    assert "already installed" in again.text

    newer = await manager.install(str(build_deb(tmp_path, "sota-hello", "2.0-1")))
    assert newer.code == ResultCode.OK
    assert await manager.installed_packages() == [Package("sota-hello", "2.0-1")]


@requires_dpkg
@pytest.mark.anyio
async def test_deb_works_from_a_path_without_sbin(
    tmp_path: Path, deb_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dpkg insists on finding ldconfig; a plain user's PATH (as in CI) does not have it."""
    deb = build_deb(tmp_path, "sota-hello", "1")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    outcome = await DebPackageManager(root=str(deb_root)).install(str(deb))
    assert outcome.code == ResultCode.OK, outcome.text


@requires_dpkg
@pytest.mark.anyio
async def test_deb_corrupt_package_fails_with_both_streams(tmp_path: Path, deb_root: Path) -> None:
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"this is not an ar archive\n")
    outcome = await DebPackageManager(root=str(deb_root)).install(str(bad))
    assert outcome.code == ResultCode.INSTALL_FAILED
    assert not outcome.ok
    assert outcome.text.startswith("stdout: ")
    stderr = outcome.text.partition("\nstderr: ")[2]
    assert "not a Debian format archive" in stderr


@requires_dpkg
@pytest.mark.anyio
async def test_deb_failing_postinst_fails(tmp_path: Path, deb_root: Path) -> None:
    deb = build_deb(tmp_path, "sota-broken", "1", postinst="#!/bin/sh\necho oh no >&2\nexit 1\n")
    manager = DebPackageManager(root=str(deb_root))
    outcome = await manager.install(str(deb))
    assert outcome.code == ResultCode.INSTALL_FAILED
    assert "oh no" in outcome.text
    assert "post-installation script subprocess returned error exit status 1" in outcome.text
    # half-configured is not installed
    assert not await is_installed(manager, Package("sota-broken", "1"))


@requires_dpkg
@pytest.mark.anyio
async def test_deb_removed_package_with_config_files_is_not_listed(
    tmp_path: Path, deb_root: Path
) -> None:
    manager = DebPackageManager(root=str(deb_root))
    assert (await manager.install(str(build_deb(tmp_path, "sota-conf", "1", conffile=True)))).ok
    assert (await manager.install(str(build_deb(tmp_path, "sota-other", "3")))).ok
    dpkg_in_root(deb_root, "--remove", "sota-conf")
    status = (deb_root / "var" / "lib" / "dpkg" / "status").read_text()
    assert "Status: deinstall ok config-files" in status
    assert await manager.installed_packages() == [Package("sota-other", "3")]


@requires_dpkg
@pytest.mark.anyio
async def test_deb_broken_database_is_a_listing_error(tmp_path: Path, deb_root: Path) -> None:
    (deb_root / "var" / "lib" / "dpkg" / "status").write_text("Package: x\nStatus: bogus\n\n")
    manager = DebPackageManager(root=str(deb_root))
    with pytest.raises(PackageManagerError) as info:
        await manager.installed_packages()
    message = str(info.value)
    assert message.startswith(
        "Package error: Error fetching packages: dpkg-query exited with status 2: "
    )
    assert "has invalid value 'bogus'" in message


@requires_dpkg
@pytest.mark.anyio
async def test_deb_without_dpkg_is_a_general_error(
    tmp_path: Path,
    deb_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deb = build_deb(tmp_path, "sota-hello", "1")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    manager = DebPackageManager(root=str(deb_root))
    outcome = await manager.install(str(deb))
    assert outcome == InstallOutcome(
        ResultCode.GENERAL_ERROR, "cannot run 'dpkg': No such file or directory (os error 2)"
    )
    assert not outcome.ok
    with pytest.raises(PackageManagerError) as info:
        await manager.installed_packages()
    assert str(info.value) == (
        "Package error: Error fetching packages: "
        "cannot run 'dpkg-query': No such file or directory (os error 2)"
    )
    with caplog.at_level(logging.ERROR):
        assert not await is_installed(manager, Package("sota-hello", "1"))
    assert "couldn't list installed packages: Package error" in caplog.text


@pytest.mark.anyio
async def test_a_path_with_a_nul_byte_is_a_general_error(deb_root: Path) -> None:
    outcome = await DebPackageManager(root=str(deb_root)).install("a\0b.deb")
    assert outcome.code == ResultCode.GENERAL_ERROR
    assert "cannot run 'dpkg'" in outcome.text


def test_deb_command_lines() -> None:
    plain = DebPackageManager()
    assert plain.list_command() == [
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev}\t${Package} ${Version}\n",
    ]
    assert plain.install_command("/tmp/u1") == ["dpkg", "-E", "-i", "/tmp/u1"]
    assert plain.install_command("-rf") == ["dpkg", "-E", "-i", "./-rf"]
    rooted = DebPackageManager(root="/r")
    assert rooted.list_command()[:2] == ["dpkg-query", "--admindir=/r/var/lib/dpkg"]
    assert rooted.install_command("/p.deb") == [
        "dpkg",
        "--root=/r",
        "--admindir=/r/var/lib/dpkg",
        "--force-not-root",
        "--force-script-chrootless",
        "--log=/dev/null",
        "-E",
        "-i",
        "/p.deb",
    ]
    admin_only = DebPackageManager(admindir="/a")
    assert admin_only.install_command("/p.deb") == ["dpkg", "--admindir=/a", "-E", "-i", "/p.deb"]


# -- rpm, for real -----------------------------------------------------------------------------


@requires_rpm
@pytest.mark.anyio
async def test_rpm_install_list_and_reinstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    manager = create_package_manager("rpm", root=str(root), dbpath="/var/lib/rpm")
    assert isinstance(manager, RpmPackageManager)
    assert await manager.installed_packages() == []
    package = build_rpm(tmp_path, "sota-hello", "1.0")

    outcome = await manager.install(str(package))
    assert outcome.code == ResultCode.OK
    assert "sota-hello-1.0-1" in outcome.text
    assert (root / "usr" / "share" / "sota-hello" / "VERSION").read_text() == "1.0\n"
    # VERSION only, without the release, as in 2016
    assert await manager.installed_packages() == [Package("sota-hello", "1.0")]
    assert await is_installed(manager, Package("sota-hello", "1.0"))

    # --force reinstalls the same version instead of saying "already installed"
    assert (await manager.install(str(package))).code == ResultCode.OK
    assert (await manager.install(str(build_rpm(tmp_path, "sota-hello", "2.0")))).ok
    assert await manager.installed_packages() == [Package("sota-hello", "2.0")]


@requires_rpm
@pytest.mark.anyio
async def test_rpm_truncated_package_fails(tmp_path: Path) -> None:
    package = build_rpm(tmp_path, "sota-hello", "1.0")
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(package.read_bytes()[:1000])  # a download cut short
    (tmp_path / "root").mkdir()
    manager = RpmPackageManager(root=str(tmp_path / "root"), dbpath="/var/lib/rpm")
    outcome = await manager.install(str(bad))
    assert outcome.code == ResultCode.INSTALL_FAILED
    assert not outcome.ok
    assert outcome.text.startswith("stdout: ")
    stderr = outcome.text.partition("\nstderr: ")[2]
    assert f"error: {bad} cannot be installed" in stderr
    assert await manager.installed_packages() == []


@pytest.mark.anyio
async def test_rpm_without_rpm_is_a_general_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    outcome = await RpmPackageManager().install(str(tmp_path / "x.rpm"))
    assert outcome == InstallOutcome(
        ResultCode.GENERAL_ERROR, "cannot run 'rpm': No such file or directory (os error 2)"
    )


def test_rpm_command_lines() -> None:
    assert RpmPackageManager().list_command() == [
        "rpm",
        "-qa",
        "--queryformat",
        "%{NAME} %{VERSION}\n",
    ]
    assert RpmPackageManager().install_command("/u1") == ["rpm", "-Uvh", "--force", "/u1"]
    rooted = RpmPackageManager(root="/r", dbpath="/db")
    assert rooted.list_command() == [
        "rpm",
        "-qa",
        "--root=/r",
        "--dbpath=/db",
        "--queryformat",
        "%{NAME} %{VERSION}\n",
    ]
    assert rooted.install_command("/u1") == [
        "rpm",
        "-Uvh",
        "--force",
        "--root=/r",
        "--dbpath=/db",
        "--nodeps",
        "/u1",
    ]


# -- otb, with a stand-in otbpkg (the real tool was never published) ---------------------------

_FAKE_OTBPKG = """
import json, os, sys
with open(os.environ["OTBPKG_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
mode = os.environ.get("OTBPKG_MODE", "")
if "--query" in sys.argv:
    sys.stdout.buffer.write(b"\\xff\\n" if mode == "bad-utf8" else b"'a 1\\n''b 2 3\\n'")
elif mode == "already":
    print("commit abc already installed")
elif mode == "fail":
    print("partial")
    print("no space left", file=sys.stderr)
    sys.exit(3)
elif mode == "hang":
    import time
    time.sleep(3600)
else:
    print("deployed")
"""


@pytest.fixture
def otbpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    write_program(bindir, "otbpkg", _FAKE_OTBPKG)
    log = tmp_path / "otbpkg.log"
    monkeypatch.setenv("PATH", f"{bindir}:{Path(sys.executable).parent}")
    monkeypatch.setenv("OTBPKG_LOG", str(log))
    return log


@pytest.mark.anyio
async def test_otb_lists_and_installs_with_the_deb_rules(
    otbpkg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = create_package_manager("otb", "/ostree/repo")
    assert isinstance(manager, OtbPackageManager)
    assert await manager.installed_packages() == [Package("a", "1"), Package("b", "2 3")]
    assert await manager.install("/tmp/u1") == InstallOutcome(ResultCode.OK, "deployed\n")
    monkeypatch.setenv("OTBPKG_MODE", "already")
    already = await manager.install("/tmp/u1")
    assert already.code == ResultCode.ALREADY_PROCESSED
    monkeypatch.setenv("OTBPKG_MODE", "fail")
    assert await manager.install("/tmp/u1") == InstallOutcome(
        ResultCode.INSTALL_FAILED, "stdout: partial\n\nstderr: no space left\n"
    )
    assert (await anyio.Path(otbpkg).read_text()).splitlines() == [
        '["--repo=/ostree/repo", "--query"]',
        '["--install", "--repo=/ostree/repo", "/tmp/u1"]',
        '["--install", "--repo=/ostree/repo", "/tmp/u1"]',
        '["--install", "--repo=/ostree/repo", "/tmp/u1"]',
    ]


@pytest.mark.anyio
async def test_listing_that_is_not_utf8_is_a_parse_error(
    otbpkg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTBPKG_MODE", "bad-utf8")
    with pytest.raises(PackageManagerError, match=r"^Parse error: Error parsing package: otbpkg"):
        await OtbPackageManager("/repo").installed_packages()


@pytest.mark.anyio
async def test_an_install_that_hangs_is_killed_and_fails(
    otbpkg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTBPKG_MODE", "hang")
    outcome = await OtbPackageManager("/repo", timeout=0.5).install("/tmp/u1")
    assert outcome == InstallOutcome(
        ResultCode.INSTALL_FAILED,
        "otbpkg did not finish within 0.5 s and was killed\nstdout: \nstderr: ",
    )


@pytest.mark.anyio
async def test_install_finishes_when_the_caller_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled dpkg leaves a broken database, so the install runs to its end regardless."""
    bindir = tmp_path / "bin"
    sock = tmp_path / "ctl.sock"
    done = tmp_path / "done"
    write_program(
        bindir,
        "dpkg",
        f"""
        import socket, sys
        ctl = socket.socket(socket.AF_UNIX)
        ctl.connect({str(sock)!r})
        ctl.sendall(b"started\\n")
        assert ctl.recv(16) == b"go"  # blocks until the test has cancelled the caller
        open({str(done)!r}, "w").close()
        print("Setting up pkg (1) ...")
        """,
    )
    monkeypatch.setenv("PATH", f"{bindir}:{Path(sys.executable).parent}")
    manager = DebPackageManager(timeout=60)
    recorded: list[InstallOutcome] = []
    after_install: list[str] = []

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            outcome = await manager.install("/tmp/u1")
            recorded.append(outcome)
            await anyio.lowlevel.checkpoint()
            after_install.append("not cancelled?")

    scope = anyio.CancelScope()
    with anyio.fail_after(30):
        async with await anyio.create_unix_listener(sock) as listener:
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller, scope)
                async with await listener.accept() as ctl:
                    assert await ctl.receive() == b"started\n"
                    scope.cancel()
                    await ctl.send(b"go")
    assert recorded == [InstallOutcome(ResultCode.OK, "Setting up pkg (1) ...\n")]
    assert done.exists()
    assert scope.cancelled_caught
    assert after_install == []


# -- the factory -------------------------------------------------------------------------------


def test_factory_kinds(tmp_path: Path) -> None:
    assert create_package_manager("off") is None
    assert isinstance(create_package_manager("deb"), DebPackageManager)
    assert isinstance(create_package_manager("rpm"), RpmPackageManager)
    file_manager = create_package_manager("file", str(tmp_path / "tpm"))
    assert isinstance(file_manager, FilePackageManager)
    assert file_manager.kind == "file"
    otb = create_package_manager("otb", "/repo")
    assert isinstance(otb, OtbPackageManager)
    assert otb.repodir == "/repo"
    deb = create_package_manager("deb", root="/r", admindir="/a", timeout=5)
    assert isinstance(deb, DebPackageManager)
    assert (deb.root, deb.admindir, deb.timeout) == ("/r", "/a", 5)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("apt",), {}, "unknown package manager: apt"),
        (("DEB",), {}, "unknown package manager: DEB"),
        (("file",), {}, "package manager file needs a path"),
        (("otb", ""), {}, "package manager otb needs a path"),
        (("deb", "/x"), {}, "package manager deb takes no path"),
        (("off", "/x"), {}, "package manager off takes no path"),
        (("file", "/x"), {"root": "/r"}, "package manager file takes no root"),
        (("rpm",), {"admindir": "/a"}, "package manager rpm takes no dpkg admindir"),
        (("deb",), {"dbpath": "/d"}, "package manager deb takes no rpm dbpath"),
        (("deb",), {"timeout": 0}, "timeouts must be positive"),
    ],
)
def test_factory_refuses_bad_settings(
    args: tuple[str, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_package_manager(*args, **kwargs)  # type: ignore[arg-type]


# -- running programs: bounded output, deadlines, cancellation ---------------------------------


@pytest.mark.anyio
async def test_a_run_keeps_the_tail_of_long_output() -> None:
    program = "import sys; sys.stdout.write('a' * 3_000_000 + 'END'); sys.stderr.write('e')"
    result = await run_bounded([sys.executable, "-c", program], time_limit=60, max_output=1 << 20)
    assert result.returncode == 0
    assert len(result.stdout) == 1 << 20
    assert result.stdout.endswith(b"aaaEND")
    assert result.stdout_dropped == 3_000_003 - (1 << 20)
    assert result.stdout_text().startswith(f"[{3_000_003 - (1 << 20)} earlier bytes not kept]\naaa")
    assert (result.stderr, result.stderr_dropped, result.overflowed) == (b"e", 0, False)


@pytest.mark.anyio
async def test_a_run_can_stop_a_program_that_prints_too_much() -> None:
    program = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    result = await run_bounded(
        [sys.executable, "-c", program], time_limit=60, max_output=1000, kill_on_overflow=True
    )
    assert result.overflowed
    assert result.killed
    assert len(result.stdout) == 1000
    assert result.describe_end() == "wrote too much output and was killed"


@pytest.mark.anyio
async def test_a_program_reads_an_empty_stdin() -> None:
    program = "import sys; print(repr(sys.stdin.read()))"
    result = await run_bounded([sys.executable, "-c", program], time_limit=60)
    assert result.stdout == b"''\n"


@pytest.mark.anyio
async def test_an_unshielded_run_is_killed_when_cancelled(tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    program = f"""
import os, socket
ctl = socket.socket(socket.AF_UNIX)
ctl.connect({str(sock)!r})
ctl.sendall(str(os.getpid()).encode())
ctl.recv(16)
"""
    scope = anyio.CancelScope()

    async def caller() -> None:
        with scope:
            await run_bounded([sys.executable, "-c", program], time_limit=60)

    with anyio.fail_after(30):
        async with await anyio.create_unix_listener(sock) as listener:
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller)
                async with await listener.accept() as ctl:
                    pid = int(await ctl.receive())
                    scope.cancel()
    assert scope.cancelled_caught
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped before the cancelled call returned


@pytest.mark.anyio
async def test_a_shielded_run_survives_cancellation(tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    program = f"""
import socket
ctl = socket.socket(socket.AF_UNIX)
ctl.connect({str(sock)!r})
ctl.sendall(b"started")
print(ctl.recv(16).decode())
"""
    scope = anyio.CancelScope()
    results: list[ProcessResult] = []

    async def caller() -> None:
        with scope:
            results.append(
                await run_bounded([sys.executable, "-c", program], time_limit=60, shield=True)
            )
            await anyio.lowlevel.checkpoint()  # where the cancellation lands

    with anyio.fail_after(30):
        async with await anyio.create_unix_listener(sock) as listener:
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller)
                async with await listener.accept() as ctl:
                    assert await ctl.receive() == b"started"
                    scope.cancel()
                    await ctl.send(b"go on")
    assert [(r.returncode, r.stdout) for r in results] == [(0, b"go on\n")]
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_a_program_that_cannot_start_is_a_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as info:
        await run_bounded([str(tmp_path / "nope")], time_limit=60)
    assert info.value.reason == "No such file or directory (os error 2)"
    assert str(info.value) == f"cannot run {str(tmp_path / 'nope')!r}: {info.value.reason}"
