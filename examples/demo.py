"""``make demo``: one firmware update carried end to end, on this machine, in a few seconds.

It starts the embedded Core simulator (with OAuth2), the ``sota_client`` daemon with the
Unix-socket gateway, and the example A/B firmware SWLM (``examples/swlm_flash``, built on
``swlm_sdk``); queues an update on the simulated Core; shows each step as it happens. The
SWLM flashes the image into slot b, on trial; the demo then reboots the device (it stops
both processes and gives the device a new boot id), the new slot boots and is confirmed,
and only then does the report reach Core. It prints the report as Core recorded it, stops
everything and removes its temporary files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sota_client.sim import AuthSettings, CoreSimulator

sys.path.insert(0, str(Path(__file__).parent / "swlm_flash"))
from swlm_flash import make_bundle

DEVICE = "7c4a2f1e-0d5b-4a49-9a1e-2b8d5f0c7e11"
IMAGE_SIZE = 32 * 2**20
STEP_TIMEOUT = 60.0


def say(who: str, text: str) -> None:
    print(f"{who:>8} | {text}", flush=True)


def echo(who: str, stream: IO[bytes], keep: Callable[[str], bool]) -> threading.Thread:
    """Print a child's log lines as they come, prefixed with its name."""

    def pump() -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if keep(line):
                say(who, line.split(" - ", 1)[-1] if " - " in line else line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def wait_until(what: str, condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise SystemExit(f"demo: {what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what}: nothing after {STEP_TIMEOUT:.0f} s")
        time.sleep(0.05)


def keep_reading(notify: socket.socket) -> tuple[threading.Event, threading.Thread]:
    """Read ``NOTIFY_SOCKET`` as systemd does, until it is shut down; the event is ``READY=1``.

    A receiver that stops reading fills the socket's queue, and the daemon then drops its
    status updates with a warning.
    """
    ready = threading.Event()

    def read() -> None:
        while message := notify.recv(4096):  # b"" once shut down
            if b"READY=1" in message.split(b"\n"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return ready, reader


def free_port() -> int:
    """A loopback port nobody listens on now, for the HMI's two gateways."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def daemon_line(line: str) -> bool:
    """The daemon's story, without the HTTP chatter."""
    return (
        " - " in line
        and not any(
            noise in line
            for noise in (
                "Response status",
                "GET http",
                "POST http",
                "PUT http",
                "NoUpdateRequests",
            )
        )
        and "GetUpdateRequests" not in line
    )


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="sota-demo-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        return run(work, children)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, children: list[subprocess.Popen[bytes]]) -> int:
    python = sys.executable
    here = Path(__file__).parent
    auth = AuthSettings(client_id="demo-device", client_secret="demo-secret")
    with CoreSimulator(auth=auth, path_roots=(str(work),)) as core:
        say("core", f"simulated SOTA Core listening on {core.url} (OAuth2 on)")

        # The firmware update: a 32 MiB image in the swlm_flash bundle format.
        image = os.urandom(IMAGE_SIZE)
        bundle = make_bundle(work / "ecu-main-1.1.0.tar", "ecu-main", "1.1.0", image)
        core.add_package("ecu-main", "1.1.0", path=str(bundle))
        say("core", f"package ecu-main 1.1.0 uploaded ({bundle.stat().st_size} bytes)")

        # The device side: the daemon's config, as an integrator writes /etc/sota.toml.
        config = work / "sota.toml"
        hmi_port = free_port()
        config.write_text(
            f"""[auth]
server = "{core.url}"
client_id = "demo-device"
client_secret = "demo-secret"

[core]
server = "{core.url}"
polling_sec = 2

[device]
uuid = "{DEVICE}"
packages_dir = "{work}/packages"
state_dir = "{work}/state"
package_manager = "off"
system_info = ""

[gateway]
socket = true
http = true
websocket = true

[network]
socket_commands_path = "{work}/commands.socket"
socket_events_path = "{work}/events.socket"
http_server = "127.0.0.1:{hmi_port}"
websocket_server = "127.0.0.1:{free_port()}"
"""
        )

        # The SWLM (the example A/B flasher, as its systemd unit would start it) and the
        # daemon (with systemd's readiness protocol), started again after the reboot.
        boot_id = work / "boot_id"  # stands for /proc/sys/kernel/random/boot_id
        boot_id.write_text(f"{uuid.uuid4()}\n")
        slots = {name: work / f"slot_{name}.img" for name in "ab"}
        for slot in slots.values():
            slot.write_bytes(b"")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(work / "notify"))
        ready, reader = keep_reading(notify)

        def start() -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
            # As systemd orders them (After=sota_client.service): the daemon first.
            ready.clear()
            env = {**os.environ, "NOTIFY_SOCKET": str(work / "notify"), "RUST_LOG": "info"}
            daemon = subprocess.Popen(
                [python, "-m", "sota_client", "--config", str(config)],
                stderr=subprocess.PIPE,
                env=env,
            )
            children.append(daemon)
            assert daemon.stderr is not None
            echo("daemon", daemon.stderr, daemon_line)
            wait_until("READY=1 from the daemon", ready.is_set, daemon)
            say("daemon", "sota_client is ready (sd_notify READY=1)")
            swlm = subprocess.Popen(
                [
                    python,
                    str(here / "swlm_flash" / "swlm_flash.py"),
                    "--config", str(config),
                    "--state-dir", str(work / "swlm-state"),
                    "--slot-a", str(slots["a"]),
                    "--slot-b", str(slots["b"]),
                    "--slot-size", str(64 * 2**20),
                    "--boot-state", str(work / "bootstate.json"),
                    "--boot-id-file", str(boot_id),
                ],
                stderr=subprocess.PIPE,
            )  # fmt: skip
            children.append(swlm)
            assert swlm.stderr is not None
            echo("swlm", swlm.stderr, lambda line: True)
            wait_until("the SWLM's events socket", (work / "events.socket").exists, swlm)
            say("swlm", "example A/B firmware SWLM listening on the events socket")
            return swlm, daemon

        def stop(swlm: subprocess.Popen[bytes], daemon: subprocess.Popen[bytes]) -> bool:
            for name, child in (("daemon", daemon), ("swlm", swlm)):
                child.send_signal(signal.SIGTERM)
                say(name, f"stopped with exit status {child.wait(30)}")
            return daemon.returncode == 0 and swlm.returncode == 0

        swlm, daemon = start()
        say("daemon", f"the web HMI is at http://127.0.0.1:{hmi_port}/ while the demo runs")

        request_id = core.queue_update(DEVICE, "ecu-main", "1.1.0")
        say("core", f"operator queued ecu-main 1.1.0 for the device: update {request_id}")

        journal = work / "swlm-state" / "swlm-journal.json"

        def awaiting_reboot() -> bool:
            entry = json.loads(journal.read_text()).get("updates", {}).get(request_id, {})
            return entry.get("state") == "awaiting_reboot" and entry.get("announced") is True

        wait_until("the flash", lambda: journal.exists() and awaiting_reboot(), swlm)
        say("device", "slot b is flashed and on trial; Core has no report yet: rebooting")
        stopped = stop(swlm, daemon)
        boot_id.write_text(f"{uuid.uuid4()}\n")
        swlm, daemon = start()

        report = core.wait_for(lambda: core.reports(DEVICE), timeout=STEP_TIMEOUT)[0]
        core.wait_for(lambda: core.installed(DEVICE), timeout=STEP_TIMEOUT)
        say("core", f"report received: POST {report.path}")
        say("core", f"  body {report.body}")
        say("core", f"  update status now {core.status(DEVICE, request_id)}")
        installed = ", ".join(f"{p.name} {p.version}" for p in core.installed(DEVICE) or [])
        say("core", f"  installed packages now: {installed}")

        boot = json.loads((work / "bootstate.json").read_text())
        flashed = slots[boot["active"]].read_bytes() == image
        say("device", f"boot slot is now {boot['active']}; image verified: {flashed}")

        stopped = stop(swlm, daemon) and stopped
        notify.shutdown(socket.SHUT_RDWR)  # the reader reads what is left, then ends
        reader.join()
        notify.close()
        ok = flashed and json.loads(report.body)[0]["result_code"] == 0 and stopped
    print("\nDemo finished: the update went from Core to the device and back." if ok else "")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
