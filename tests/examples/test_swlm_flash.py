"""The A/B flashing SWLM example: real bundles, slot files, a boot-state file, the fake daemon."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import anyio
import pytest
import swlm_flash

from swlm_sdk import DownloadComplete, InstallError, Package, ResultCode
from swlm_sdk.app import App
from swlm_sdk.protocol import SendInstallProgress, SendUpdateReport
from swlm_sdk.testing import FakeDaemon

from .conftest import EXAMPLES, example_env, exists, install, serving, terminate, wait_for_line

SLOT_SIZE = 4096
OLD_IMAGE = b"factory firmware 1.0\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Device:
    """Two slot files and a boot state, as a factory would leave them: 1.0 in slot a."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.slot_a = work / "slot-a.img"
        self.slot_b = work / "slot-b.img"
        self.boot_state = work / "boot" / "bootstate.json"
        self.boot_state.parent.mkdir()
        self.slot_a.write_bytes(OLD_IMAGE)
        record = {"name": "fw", "version": "1.0", "sha256": sha(OLD_IMAGE)}
        self.write_state({"active": "a", "a": record, "b": None})

    def write_state(self, state: dict[str, Any]) -> None:
        self.boot_state.write_text(json.dumps(state))

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.boot_state.read_text())
        return state

    def bundle(self, version: str, image: bytes, name: str = "fw") -> Path:
        return swlm_flash.make_bundle(self.work / f"{name}-{version}.tar", name, version, image)

    def app(self, fake: FakeDaemon, **options: Any) -> App:
        options.setdefault("slot_size", SLOT_SIZE)
        return swlm_flash.build_app(
            self.work / "state",
            slot_a=self.slot_a,
            slot_b=self.slot_b,
            boot_state=self.boot_state,
            commands_socket=fake.commands_socket,
            events_socket=fake.events_socket,
            **options,
        )


@pytest.fixture
def device(work: Path) -> Device:
    return Device(work)


def raw_bundle(path: Path, members: dict[str, bytes]) -> Path:
    """A tar with exactly these members, for bundles make_bundle would never write."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def manifest(image: bytes, **fields: Any) -> bytes:
    document = {"name": "fw", "version": "2.0", "sha256": sha(image), "size": len(image)}
    return json.dumps({**document, **fields}).encode()


@pytest.mark.anyio
async def test_flashes_the_inactive_slot_then_the_other(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    v11, v12 = b"firmware 1.1\n" * 100, b"firmware 1.2\n" * 50
    async with serving(device.app(fake_daemon, firmware_name="fw")):
        assert await install(fake_daemon, "u1", device.bundle("1.1", v11)) == (
            ResultCode.OK,
            "flashed fw 1.1 to slot b, active on next boot",
        )
        assert device.slot_b.read_bytes() == v11
        assert device.slot_a.read_bytes() == OLD_IMAGE
        assert device.state() == {
            "active": "b",
            "a": {"name": "fw", "version": "1.0", "sha256": sha(OLD_IMAGE)},
            "b": {"name": "fw", "version": "1.1", "sha256": sha(v11)},
        }

        assert await install(fake_daemon, "u2", device.bundle("1.2", v12)) == (
            ResultCode.OK,
            "flashed fw 1.2 to slot a, active on next boot",
        )
    assert device.slot_a.read_bytes() == v12  # the longer old image was cut to size
    assert device.slot_b.read_bytes() == v11
    state = device.state()
    assert state["active"] == "a"
    assert state["a"] == {"name": "fw", "version": "1.2", "sha256": sha(v12)}
    assert fake_daemon.package_lists[0] == (Package("fw", "1.0"),)
    assert fake_daemon.package_lists[-1] == (Package("fw", "1.2"),)
    assert sorted(p.name for p in device.boot_state.parent.iterdir()) == ["bootstate.json"]
    # Its progress while it wrote and verified, throttled by the SDK, the last before the report.
    for update_id, slot in (("u1", "b"), ("u2", "a")):
        sent = [c for c in fake_daemon.commands if getattr(c, "update_id", None) == update_id]
        assert sent[-1] == SendInstallProgress(update_id, 100, f"verifying slot {slot}")
        percents = [c.percent for c in sent if isinstance(c, SendInstallProgress)]
        assert percents == sorted(percents)
    reports = [c for c in fake_daemon.commands if isinstance(c, SendUpdateReport)]
    assert fake_daemon.commands.index(reports[0]) > fake_daemon.commands.index(
        SendInstallProgress("u1", 100, "verifying slot b")
    )


@pytest.mark.anyio
async def test_a_checksum_mismatch_keeps_the_active_slot(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    image = b"tampered image"
    bundle = raw_bundle(
        device.work / "bad.tar",
        {"manifest.json": manifest(image, sha256=sha(b"the real image")), "image.bin": image},
    )
    async with serving(device.app(fake_daemon)):
        code, text = await install(fake_daemon, "u1", bundle)
    assert code == ResultCode.VALIDATION_FAILED
    assert text == (
        f"image.bin has sha256 {sha(image)}, the manifest says {sha(b'the real image')}, "
        "slot b stays inactive"
    )
    state = device.state()
    assert state["active"] == "a"
    assert state["a"]["version"] == "1.0"
    assert state["b"] is None  # slot b's content is unknown now, and marked so
    assert device.slot_a.read_bytes() == OLD_IMAGE


@pytest.mark.anyio
async def test_path_tricks_in_the_tar_are_refused(fake_daemon: FakeDaemon, device: Device) -> None:
    image = b"image"
    escape = device.work / "nested"
    escape.mkdir()
    bundle = raw_bundle(
        escape / "evil.tar",
        {"manifest.json": manifest(image), "image.bin": image, "../evil": b"owned"},
    )
    linked = device.work / "link.tar"
    with tarfile.open(linked, "w") as tar:
        tar.addfile(tarfile.TarInfo("manifest.json"), io.BytesIO(b""))
        link = tarfile.TarInfo("image.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    async with serving(device.app(fake_daemon)):
        assert await install(fake_daemon, "u1", bundle) == (
            ResultCode.VALIDATION_FAILED,
            "unexpected member '../evil' in the bundle",
        )
        assert await install(fake_daemon, "u2", linked) == (
            ResultCode.VALIDATION_FAILED,
            "bundle member 'image.bin' is not a regular file",
        )
    assert not (device.work / "evil").exists()
    assert not device.slot_b.exists()
    assert device.state()["active"] == "a"


@pytest.mark.anyio
async def test_an_image_larger_than_the_slot_is_write_partition_failed(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    async with serving(device.app(fake_daemon)):
        assert await install(fake_daemon, "u1", device.bundle("2.0", b"x" * (SLOT_SIZE + 1))) == (
            ResultCode.WRITE_PARTITION_FAILED,
            f"image.bin is {SLOT_SIZE + 1} bytes, slot b holds {SLOT_SIZE}, nothing written",
        )
        # Exactly the slot's size fits.
        assert (await install(fake_daemon, "u2", device.bundle("2.1", b"y" * SLOT_SIZE)))[0] == (
            ResultCode.OK
        )
    assert device.slot_b.read_bytes() == b"y" * SLOT_SIZE


@pytest.mark.anyio
async def test_same_and_older_versions(fake_daemon: FakeDaemon, device: Device) -> None:
    async with serving(device.app(fake_daemon)):
        assert await install(fake_daemon, "u1", device.bundle("1.0.0", b"same")) == (
            ResultCode.ALREADY_PROCESSED,
            "version 1.0.0 is active",
        )
        assert await install(fake_daemon, "u2", device.bundle("0.9.12", b"old")) == (
            ResultCode.OLD_VERSION,
            "version 0.9.12 is older than the active 1.0",
        )
    assert not device.slot_b.exists()

    async with serving(device.app(fake_daemon, allow_downgrade=True)):
        assert (await install(fake_daemon, "u3", device.bundle("0.9.12", b"old")))[0] == (
            ResultCode.OK
        )
    assert device.state()["active"] == "b"
    assert fake_daemon.package_lists[-1] == (Package("fw", "0.9.12"),)


@pytest.mark.anyio
async def test_bad_bundles_fail_validation(fake_daemon: FakeDaemon, device: Device) -> None:
    not_tar = device.work / "random.bin"
    not_tar.write_bytes(os.urandom(3000))
    truncated = device.work / "truncated.tar"
    truncated.write_bytes(device.bundle("2.0", b"z" * 3000).read_bytes()[:2048])
    no_image = raw_bundle(device.work / "noimage.tar", {"manifest.json": manifest(b"")})
    async with serving(device.app(fake_daemon, firmware_name="fw")):
        code, text = await install(fake_daemon, "u1", not_tar)
        assert (code, text.split(":")[0]) == (ResultCode.VALIDATION_FAILED, "not a readable bundle")
        code, text = await install(fake_daemon, "u2", truncated)
        assert (code, text.split(":")[0]) == (ResultCode.VALIDATION_FAILED, "not a readable bundle")
        assert await install(fake_daemon, "u3", no_image) == (
            ResultCode.VALIDATION_FAILED,
            "the bundle has no image.bin",
        )
        assert await install(fake_daemon, "u4", device.bundle("2.0", b"x", name="other")) == (
            ResultCode.VALIDATION_FAILED,
            "the bundle is for 'other', this device runs 'fw'",
        )
        assert await install(fake_daemon, "u5", device.work / "missing.tar") == (
            ResultCode.VALIDATION_FAILED,
            f"no update image file at {device.work / 'missing.tar'}",
        )
    assert device.state()["active"] == "a"
    assert device.slot_a.read_bytes() == OLD_IMAGE


@pytest.mark.anyio
async def test_write_errors(fake_daemon: FakeDaemon, device: Device) -> None:
    # /dev/full answers every write with ENOSPC; a slot in a missing directory cannot open.
    device.slot_b = Path("/dev/full")
    async with serving(device.app(fake_daemon)):
        code, text = await install(fake_daemon, "u1", device.bundle("2.0", b"data"))
    assert (code, text) == (ResultCode.DISK_FULL, "slot b: [Errno 28] No space left on device")
    assert device.state()["active"] == "a"

    device.slot_b = device.work / "no-such-dir" / "slot-b.img"
    async with serving(device.app(fake_daemon)):
        code, text = await install(fake_daemon, "u2", device.bundle("2.0", b"data"))
    assert code == ResultCode.FLASH_FAILED
    assert text.startswith("slot b: [Errno 2] No such file or directory")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": 7}, "'name' must be a str, got 7"),
        ({"size": True}, "'size' must be a int, got True"),
        ({"version": "1.2-beta"}, "version '1.2-beta' is not like 1.4.2"),
        ({"name": "has space"}, "bad name 'has space'"),
        ({"sha256": "abc"}, "sha256 must be 64 hex digits"),
        ({"size": -1}, "negative size -1"),
    ],
)
def test_manifest_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InstallError) as error:
        swlm_flash.parse_manifest(manifest(b"img", **change))
    assert error.value.code == ResultCode.VALIDATION_FAILED
    assert error.value.text == f"manifest.json: {message}"


def test_manifest_accepts_uppercase_hex_and_extra_keys() -> None:
    data = manifest(b"img", sha256=sha(b"img").upper(), build="ci-42")
    assert swlm_flash.parse_manifest(data) == swlm_flash.Manifest("fw", "2.0", sha(b"img"), 3)
    with pytest.raises(InstallError, match="is not JSON"):
        swlm_flash.parse_manifest(b"\xff")
    with pytest.raises(InstallError, match="must be a JSON object"):
        swlm_flash.parse_manifest(b"[]")
    with pytest.raises(InstallError, match="is not JSON: maximum recursion depth"):
        swlm_flash.parse_manifest(b"[" * swlm_flash.MAX_MANIFEST)


@pytest.mark.parametrize(
    ("older", "newer"),
    [("1.0", "1.1"), ("1.9", "1.10"), ("1", "1.0.1"), ("0.9.12", "1.0"), ("2.0", "10.0")],
)
def test_dotted_numeric_order(older: str, newer: str) -> None:
    assert swlm_flash.version_key(older) < swlm_flash.version_key(newer)
    assert swlm_flash.version_key("1.2") == swlm_flash.version_key("1.2.0")


def test_boot_state_problems(work: Path) -> None:
    path = work / "bootstate.json"
    assert swlm_flash.load_boot_state(path) == {"active": "a", "a": None, "b": None}
    for bad in ("{", '{"active": "c"}', '{"active": "a", "a": {"version": 1}}', "[]"):
        path.write_text(bad)
        with pytest.raises(InstallError) as error:
            swlm_flash.load_boot_state(path)
        assert error.value.code == ResultCode.INTERNAL_ERROR
        assert error.value.text.startswith(f"boot state {path} is bad: ")
    swlm_flash.save_boot_state(path, {"active": "b", "a": None, "b": None})
    assert swlm_flash.load_boot_state(path)["active"] == "b"
    assert path.stat().st_mode & 0o077 == 0


def test_the_package_is_the_active_slot(work: Path) -> None:
    path = work / "bootstate.json"
    slots = {"a": work / "a", "b": work / "b"}
    # The record may leave out the name; --firmware-name, else "firmware", stands in.
    path.write_text('{"active": "b", "a": null, "b": {"version": "4.2", "sha256": "00"}}')
    assert swlm_flash.Flasher(slots, path).installed_packages() == [("firmware", "4.2")]
    named = swlm_flash.Flasher(slots, path, firmware_name="ecu")
    assert named.installed_packages() == [("ecu", "4.2")]
    path.write_text('{"active": "a", "a": null, "b": {"version": "4.2", "sha256": "00"}}')
    assert named.installed_packages() == []


def test_build_app_checks_its_slots(work: Path) -> None:
    common: dict[str, Any] = {
        "boot_state": work / "boot.json",
        "commands_socket": "/c",
        "events_socket": "/e",
    }
    with pytest.raises(ValueError, match="is not a block device: give its slot size"):
        swlm_flash.build_app(work, slot_a=work / "a", slot_b=work / "b", **common)
    with pytest.raises(ValueError, match="the same path"):
        swlm_flash.build_app(work, slot_a=work / "a", slot_b=work / "a", slot_size=1, **common)


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sh", "tar", "sha256sum", "stat", "cut")),
    reason="the README's recipe needs sh, GNU tar and coreutils",
)
def test_the_readme_shell_recipe_builds_a_valid_bundle(device: Device) -> None:
    readme = (EXAMPLES / "swlm_flash" / "README.md").read_text()
    [recipe] = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "tar --format" in b]
    image = b"built by hand\n" * 20
    (device.work / "image.bin").write_bytes(image)
    subprocess.run(["sh", "-ec", recipe], cwd=device.work, check=True, capture_output=True)
    flasher = swlm_flash.Flasher(
        {"a": device.slot_a, "b": device.slot_b}, device.boot_state, slot_size=SLOT_SIZE
    )
    bundle = device.work / "ecu-main-1.4.2.tar"
    assert flasher.install(DownloadComplete("u1", str(bundle))) == (
        ResultCode.OK,
        "flashed ecu-main 1.4.2 to slot b, active on next boot",
    )
    assert device.slot_b.read_bytes() == image


def test_main_refuses_what_it_cannot_run(
    device: Device, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    slots = ["--slot-a", str(device.slot_a), "--slot-b", str(device.slot_b)]
    options = [*slots, "--boot-state", str(device.boot_state), "--state-dir", str(device.work)]
    with pytest.raises(SystemExit) as exit_info:
        swlm_flash.main([*options, "--slot-size", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive number of bytes, got '0'" in capsys.readouterr().err
    assert swlm_flash.main(options) == 1
    assert "is not a block device: give its slot size" in caplog.text


@pytest.mark.anyio
async def test_runs_as_a_script_and_stops_on_sigterm(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    image = b"firmware 3.0\n"
    argv = [
        sys.executable,
        str(EXAMPLES / "swlm_flash" / "swlm_flash.py"),
        "--config",
        fake_daemon.config_path,
        "--state-dir",
        str(device.work / "state"),
        "--slot-a",
        str(device.slot_a),
        "--slot-b",
        str(device.slot_b),
        "--slot-size",
        str(SLOT_SIZE),
        "--boot-state",
        str(device.boot_state),
    ]
    async with await anyio.open_process(argv, env=example_env()) as process:
        await wait_for_line(process.stderr, "SWLM ready")
        await fake_daemon.deliver(DownloadComplete("u1", str(device.bundle("3.0", image))))
        [command] = await fake_daemon.wait_for(SendUpdateReport, within=30)
        assert await terminate(process) == 0
    [result] = command.report.operation_results
    assert (result.result_code, result.result_text) == (
        ResultCode.OK,
        "flashed fw 3.0 to slot b, active on next boot",
    )
    assert device.slot_b.read_bytes() == image
    assert fake_daemon.package_lists[-1] == (Package("fw", "3.0"),)
    assert not exists(fake_daemon.events_socket)
