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
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import swlm_flash

from swlm_sdk import DownloadComplete, InstallError, Package, RebootNeeded, ResultCode
from swlm_sdk.app import App
from swlm_sdk.protocol import SendInstallProgress, SendRebootNeeded, SendUpdateReport
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
        self.boot_id_file = work / "boot_id"
        self.reboot()
        self.slot_a.write_bytes(OLD_IMAGE)
        record = {"name": "fw", "version": "1.0", "sha256": sha(OLD_IMAGE)}
        self.write_state({"active": "a", "a": record, "b": None})

    def reboot(self) -> None:
        """A new boot: a new boot id (the processes are restarted by the test)."""
        self.boot_id_file.write_text(f"{uuid.uuid4()}\n")

    def flasher(self, **options: Any) -> swlm_flash.Flasher:
        slots = {"a": self.slot_a, "b": self.slot_b}
        options.setdefault("slot_size", SLOT_SIZE)
        return swlm_flash.Flasher(slots, self.boot_state, boot_id_file=self.boot_id_file, **options)

    def tool(self, *argv: str) -> int:
        common = ["--boot-state", str(self.boot_state), "--boot-id-file", str(self.boot_id_file)]
        return swlm_flash.main([*argv, *common])

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
            boot_id_file=self.boot_id_file,
            commands_socket=fake.commands_socket,
            events_socket=fake.events_socket,
            **options,
        )


async def flash(fake: FakeDaemon, app: App, update_id: str, bundle: Path) -> str:
    """Deliver the bundle; the text of the SendRebootNeeded that follows (no report yet)."""
    before = len(await fake.wait_for(SendRebootNeeded, count=0))
    reports = len(fake.reports)
    async with serving(app):
        await fake.deliver(DownloadComplete(update_id, str(bundle)))
        said = await fake.wait_for(SendRebootNeeded, count=before + 1, within=30)
    assert said[-1].update_id == update_id
    assert len(fake.reports) == reports
    return said[-1].text


async def boot(fake: FakeDaemon, app: App, *, reports: int = 0) -> tuple[ResultCode, str] | None:
    """Start the SWLM once (after a reboot) and stop it; the report it sent, if one was due
    (``reports``: how many the fake daemon had before)."""
    async with serving(app):
        pass  # the boot checks run before serve() says it started
    if len(fake.reports) == reports:
        return None
    await fake.wait_for(SendUpdateReport, count=reports + 1, within=30)
    [result] = fake.reports[-1].operation_results
    return result.result_code, result.result_text


async def flash_and_reboot(
    fake: FakeDaemon, device: Device, update_id: str, bundle: Path, **options: Any
) -> tuple[ResultCode, str]:
    """Flash, reboot, and the report after the boot: the whole life of a healthy update."""
    reports = len(fake.reports)
    await flash(fake, device.app(fake, **options), update_id, bundle)
    device.reboot()
    outcome = await boot(fake, device.app(fake, **options), reports=reports)
    assert outcome is not None
    return outcome


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
    factory = {"name": "fw", "version": "1.0", "sha256": sha(OLD_IMAGE)}
    app = device.app(fake_daemon, firmware_name="fw")
    said = await flash(fake_daemon, app, "u1", device.bundle("1.1", v11))
    assert said == "flashed fw 1.1 to slot b, on trial for 3 boots"
    assert device.slot_b.read_bytes() == v11
    assert device.slot_a.read_bytes() == OLD_IMAGE
    state = device.state()
    v11_record = {"name": "fw", "version": "1.1", "sha256": sha(v11), "size": len(v11)}
    assert (state["active"], state["booted"], state["a"], state["b"]) == (
        "a",
        "a",
        factory,
        v11_record,
    )
    assert state["trial"] == {
        "slot": "b",
        "from": "a",
        "tries": 0,
        "max_tries": 3,
        "status": "trying",
        "update_id": "u1",
        "name": "fw",
        "version": "1.1",
    }
    assert fake_daemon.package_lists == [(Package("fw", "1.0"),)]  # still what runs

    device.reboot()  # the bootloader tries slot b; it boots and passes its check
    outcome = await boot(fake_daemon, device.app(fake_daemon, firmware_name="fw"))
    assert outcome == (ResultCode.OK, "fw 1.1 runs from slot b, confirmed in boot 1")
    state = device.state()
    assert (state["active"], state["booted"], state["trial"]["status"]) == ("b", "b", "good")
    assert fake_daemon.package_lists[-1] == (Package("fw", "1.1"),)

    assert await flash_and_reboot(
        fake_daemon, device, "u2", device.bundle("1.2", v12), firmware_name="fw"
    ) == (ResultCode.OK, "fw 1.2 runs from slot a, confirmed in boot 1")
    assert device.slot_a.read_bytes() == v12  # the longer old image was cut to size
    assert device.slot_b.read_bytes() == v11
    state = device.state()
    assert (state["active"], state["booted"]) == ("a", "a")
    assert state["a"] == {"name": "fw", "version": "1.2", "sha256": sha(v12), "size": len(v12)}
    assert fake_daemon.package_lists[-1] == (Package("fw", "1.2"),)
    names = sorted(p.name for p in device.boot_state.parent.iterdir())
    assert names == [".bootstate.json.lock", "bootstate.json"]  # no temporary file left
    # Its progress while it wrote and verified, throttled by the SDK, the last before the
    # reboot notice.
    for update_id, slot in (("u1", "b"), ("u2", "a")):
        sent = [c for c in fake_daemon.commands if getattr(c, "update_id", None) == update_id]
        assert sent[-2] == SendInstallProgress(update_id, 100, f"verifying slot {slot}")
        assert isinstance(sent[-1], SendRebootNeeded)
        percents = [c.percent for c in sent if isinstance(c, SendInstallProgress)]
        assert percents == sorted(percents)


@pytest.mark.anyio
async def test_a_slot_that_fails_its_check_after_the_boot_is_rolled_back(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    image = b"firmware 2.0\n" * 10
    await flash(fake_daemon, device.app(fake_daemon), "u1", device.bundle("2.0", image))
    device.slot_b.write_bytes(b"bit rot" + image[7:])
    device.reboot()
    code, text = await boot(fake_daemon, device.app(fake_daemon)) or (None, "")
    assert code == ResultCode.INSTALL_FAILED
    assert text.startswith("slot b failed its check (it reads back with sha256 ")
    state = device.state()
    assert (state["active"], state["trial"]["status"]) == ("a", "rolled_back")
    # This boot still runs slot b; until the reboot into a, nothing else is flashed.
    assert state["booted"] == "b"
    async with serving(device.app(fake_daemon)):
        assert await install(fake_daemon, "u2", device.bundle("2.1", b"next")) == (
            ResultCode.INSTALL_FAILED,
            "the device runs slot b, which was rolled back: reboot into slot a first",
        )
    assert fake_daemon.package_lists[-1] == (Package("fw", "2.0"),)  # what runs, this boot


@pytest.mark.anyio
async def test_one_trial_at_a_time(fake_daemon: FakeDaemon, device: Device) -> None:
    app = device.app(fake_daemon)
    await flash(fake_daemon, app, "u1", device.bundle("2.0", b"two"))
    async with serving(device.app(fake_daemon)):
        assert await install(fake_daemon, "u2", device.bundle("3.0", b"three")) == (
            ResultCode.INSTALL_FAILED,
            "slot b holds 2.0 on trial (update u1): reboot and confirm it, or roll it back, first",
        )
    assert device.slot_b.read_bytes() == b"two"


@pytest.mark.anyio
async def test_confirmed_by_hand_and_a_late_confirm(
    fake_daemon: FakeDaemon, device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    by_hand = {"confirm_by_hand": True, "max_tries": 2}
    await flash(fake_daemon, device.app(fake_daemon, **by_hand), "u1", device.bundle("2.0", b"2"))
    device.reboot()
    app = device.app(fake_daemon, **by_hand)
    async with serving(app):
        assert fake_daemon.reports == []  # it booted, but waits for the confirmation
        assert await anyio.to_thread.run_sync(device.tool, "status") == 0
        assert capsys.readouterr().out == (
            "slot a: fw 1.0 (active)\n"
            "slot b: fw 2.0 (running)\n"
            "last flash: fw 2.0 in slot b (update u1): on trial, boot 1 of 2\n"
        )
        state_dir = ["--state-dir", str(device.work / "state")]
        assert await anyio.to_thread.run_sync(device.tool, "confirm", *state_dir) == 0
        assert capsys.readouterr().out == "fw 2.0 runs from slot b, confirmed in boot 1\n"
        await fake_daemon.wait_for(SendUpdateReport)
        # Late, twice: nothing is on trial any more, and the SWLM has reported it.
        assert await anyio.to_thread.run_sync(device.tool, "confirm", *state_dir) == 1
        assert capsys.readouterr().err == "swlm_flash: GENERAL_ERROR: no slot is on trial\n"
    [result] = fake_daemon.reports[0].operation_results
    assert (result.result_code, result.result_text) == (
        ResultCode.OK,
        "fw 2.0 runs from slot b, confirmed in boot 1",
    )
    assert device.state()["active"] == "b"


@pytest.mark.anyio
async def test_unconfirmed_boots_fall_back(fake_daemon: FakeDaemon, device: Device) -> None:
    by_hand = {"confirm_by_hand": True, "max_tries": 2}
    await flash(fake_daemon, device.app(fake_daemon, **by_hand), "u1", device.bundle("2.0", b"2"))
    for tries in (1, 2):
        device.reboot()
        assert await boot(fake_daemon, device.app(fake_daemon, **by_hand)) is None
        assert device.state()["trial"]["tries"] == tries
    device.reboot()  # the bootloader falls back to slot a; the SWLM reports it
    assert await boot(fake_daemon, device.app(fake_daemon, **by_hand)) == (
        ResultCode.INSTALL_FAILED,
        "rolled back to slot a after 2 unconfirmed boots",
    )
    state = device.state()
    assert (state["active"], state["booted"], state["trial"]["status"]) == ("a", "a", "fell_back")
    assert fake_daemon.package_lists[-1] == (Package("fw", "1.0"),)


def test_the_command_line_waits_a_little_for_the_boot_state_not_for_a_flash(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    with swlm_flash.boot_state_lock(device.boot_state):  # the SWLM, flashing
        assert device.tool("status", "--lock-timeout", "0.2") == 1
        assert device.tool("rollback", "--lock-timeout", "0") == 1
    assert capsys.readouterr().err == "".join(
        f"swlm_flash: GENERAL_ERROR: the boot state {device.boot_state} is in use (the SWLM "
        f"is flashing or checking a slot) for more than {waited} s: try again once it is done\n"
        for waited in ("0.2", "0")
    )
    assert device.state()["active"] == "a"
    # A short hold (the SWLM's look at the boot state at its start) is waited for.
    held = threading.Event()

    def hold_briefly() -> None:
        with swlm_flash.boot_state_lock(device.boot_state):
            held.set()
            released.wait(0.3)

    released = threading.Event()
    holder = threading.Thread(target=hold_briefly)
    holder.start()
    held.wait(10)
    try:
        assert device.tool("status") == 0
    finally:
        released.set()
        holder.join()
    assert "slot a: fw 1.0 (active, running)" in capsys.readouterr().out
    assert device.tool("rollback") == 1  # free again: now it is the slot that is empty
    assert "slot b holds nothing" in capsys.readouterr().err


@pytest.mark.anyio
async def test_rolled_back_by_hand(
    fake_daemon: FakeDaemon, device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    await flash(fake_daemon, device.app(fake_daemon), "u1", device.bundle("2.0", b"2"))
    assert device.tool("rollback") == 0
    assert capsys.readouterr().out == "slot a boots next; update u1 is rolled back\n"
    device.reboot()
    assert await boot(fake_daemon, device.app(fake_daemon)) == (
        ResultCode.INSTALL_FAILED,
        "rolled back to slot a by hand",
    )
    assert device.state()["booted"] == "a"
    # Later, by hand to a slot that holds firmware, and never to an empty one.
    assert device.tool("rollback") == 0
    assert capsys.readouterr().out == "slot b boots next\n"
    device.write_state({"active": "a", "a": None, "b": None})
    assert device.tool("rollback") == 1
    assert capsys.readouterr().err == "swlm_flash: GENERAL_ERROR: slot b holds nothing\n"


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
    exact = device.bundle("2.1", b"y" * SLOT_SIZE)
    assert (await flash_and_reboot(fake_daemon, device, "u2", exact))[0] == ResultCode.OK
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

    old = device.bundle("0.9.12", b"old")
    outcome = await flash_and_reboot(fake_daemon, device, "u3", old, allow_downgrade=True)
    assert outcome[0] == ResultCode.OK
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
    assert swlm_flash.load_boot_state(path) == swlm_flash.empty_boot_state()
    trial = {"slot": "b", "from": "a", "tries": 0, "max_tries": 3, "status": "trying"}
    trial |= {"update_id": "u1", "name": "fw", "version": "1.0"}
    for bad in (
        "{",
        '{"active": "c"}',
        '{"active": "a", "a": {"version": 1}}',
        "[]",
        '{"active": "a", "booted": "c"}',
        '{"active": "a", "boot_id": 7}',
        '{"active": "a", "trial": "b"}',
        '{"active": "a", "a": {"version": "1", "sha256": "00", "size": -1}}',
        *(
            json.dumps({"active": "a", "trial": {**trial, key: value}})
            for key, value in [
                ("slot", "c"),
                ("from", "b"),
                ("tries", -1),
                ("tries", True),
                ("max_tries", 0),
                ("status", "maybe"),
                ("update_id", None),
                ("why", 3),
            ]
        ),
    ):
        path.write_text(bad)
        with pytest.raises(InstallError) as error:
            swlm_flash.load_boot_state(path)
        assert error.value.code == ResultCode.INTERNAL_ERROR
        assert error.value.text.startswith(f"boot state {path} is bad: ")
    swlm_flash.save_boot_state(path, {"active": "b", "a": None, "b": None})
    assert swlm_flash.load_boot_state(path)["active"] == "b"
    path.write_text(json.dumps({"active": "a", "trial": trial}))
    assert swlm_flash.load_boot_state(path)["trial"] == trial
    assert path.stat().st_mode & 0o077 == 0


def test_the_package_is_the_running_slot(device: Device) -> None:
    path = device.boot_state
    # The record may leave out the name; --firmware-name, else "firmware", stands in.
    path.write_text('{"active": "b", "a": null, "b": {"version": "4.2", "sha256": "00"}}')
    assert device.flasher().installed_packages() == [("firmware", "4.2")]
    named = device.flasher(firmware_name="ecu")
    assert named.installed_packages() == [("ecu", "4.2")]
    path.write_text('{"active": "a", "a": null, "b": {"version": "4.2", "sha256": "00"}}')
    assert named.installed_packages() == []
    device.boot_id_file.unlink()
    with pytest.raises(InstallError, match="cannot tell a reboot from a restart"):
        named.installed_packages()


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
    bundle = device.work / "ecu-main-1.4.2.tar"
    assert device.flasher().install(DownloadComplete("u1", str(bundle))) == RebootNeeded(
        "flashed ecu-main 1.4.2 to slot b, on trial for 3 boots"
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
    with pytest.raises(SystemExit) as exit_info:
        swlm_flash.main([*options, "--slot-size", "9", "--max-tries", "0"])
    assert exit_info.value.code == 2


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
        "--boot-id-file",
        str(device.boot_id_file),
    ]
    async with await anyio.open_process(argv, env=example_env()) as process:
        await wait_for_line(process.stderr, "SWLM ready")
        await fake_daemon.deliver(DownloadComplete("u1", str(device.bundle("3.0", image))))
        await fake_daemon.wait_for(SendRebootNeeded, within=30)
        assert await terminate(process) == 0
    device.reboot()
    async with await anyio.open_process(argv, env=example_env()) as process:
        [command] = await fake_daemon.wait_for(SendUpdateReport, within=30)
        assert await terminate(process) == 0
    [result] = command.report.operation_results
    assert (result.result_code, result.result_text) == (
        ResultCode.OK,
        "fw 3.0 runs from slot b, confirmed in boot 1",
    )
    assert device.slot_b.read_bytes() == image
    assert fake_daemon.package_lists[-1] == (Package("fw", "3.0"),)
    assert not exists(fake_daemon.events_socket)
