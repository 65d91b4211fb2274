"""The HMI page (``sota_client/gateways/hmi/index.html``) in a real Chromium against the daemon.

The page is served by the daemon's HTTP gateway and talks to its websocket gateway; Core is the
simulator. Every wait is one of Playwright's auto-waiting ``expect`` assertions. Set
``SOTA_HMI_SCREENSHOT=docs/hmi.png`` to write the screenshot used in the docs.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, WebSocketRoute, expect, sync_playwright

from sota_client.sim import CoreSimulator, StallFault
from swlm_sdk import DownloadComplete, ResultCode, sync

from .harness import DEVICE, DaemonProcess, MakeDaemon

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
PAGE = Path(__file__).parents[2] / "sota_client" / "gateways" / "hmi" / "index.html"
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the HMI tests drive Debian's Chromium. "
            "Install it with `apt-get install chromium` (.ci/run does).",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def hmi_daemon(
    make_daemon: MakeDaemon, sim: CoreSimulator, **sections: dict[str, Any]
) -> tuple[DaemonProcess, str, int]:
    """A daemon with both local gateways on free ports; returns it with the page's URL."""
    http_port, ws_port = free_port(), free_port()
    daemon = make_daemon(
        sim.url,
        core={"polling": False},
        gateway={"http": True, "websocket": True},
        network={
            "http_server": f"127.0.0.1:{http_port}",
            "websocket_server": f"127.0.0.1:{ws_port}",
        },
        **sections,
    )
    return daemon, f"http://127.0.0.1:{http_port}/", ws_port


def card(page: Page, update_id: str) -> Locator:
    return page.locator(f'[data-update-id="{update_id}"]')


def test_page_follows_an_update_through_a_daemon_restart(
    page: Page, sim: CoreSimulator, make_daemon: MakeDaemon, workdir: Path
) -> None:
    """Check, download with progress, install, report; then the daemon goes away and returns."""
    installed = workdir / "installed.txt"
    installed.write_text("base-files 12.4\n")
    # Updates are taken in Core's order: the small one first, then the big one.
    sim.add_package("infotainment-ui", "5.2.0", data=b"ui" * 50_000)
    small_id = sim.queue_update(DEVICE, "infotainment-ui", "5.2.0")
    sim.add_package("navigation-maps", "2024.11", data=bytes(range(256)) * (8 * MiB // 256))
    update_id = sim.queue_update(DEVICE, "navigation-maps", "2024.11")
    # Loopback moves 8 MiB in milliseconds: stall after every 2 MiB so the bar is seen moving.
    sim.inject(StallFault(path=update_id, after=2 * MiB, seconds=1.0, count=3))
    daemon, url, ws_port = hmi_daemon(
        make_daemon, sim, device={"package_manager": f"file:{installed}"}
    )
    daemon.start()

    page.goto(url)
    websocket = page.locator('meta[name="sota-websocket"]')
    expect(websocket).to_have_attribute("content", re.compile(rf"^ws://127\.0\.0\.1:{ws_port}/?$"))
    connection = page.get_by_test_id("connection")
    expect(connection).to_have_text("Connected")
    expect(page.get_by_test_id("banner")).to_be_hidden()
    expect(page.locator("#empty")).to_be_visible()

    page.get_by_role("button", name="Check for updates").click()
    small, update = card(page, small_id), card(page, update_id)
    expect(update.locator(".pkg-name")).to_have_text("navigation-maps")
    expect(update.locator(".pkg-version")).to_have_text("2024.11")
    expect(small).to_have_attribute("data-state", "reported", timeout=15_000)
    expect(small.locator(".result-code")).to_have_text("OK")
    bar = update.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]?$"), timeout=15_000)
    expect(update.locator(".progress-text")).to_contain_text("of 8.0 MiB")
    screenshot = os.environ.get("SOTA_HMI_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot)

    expect(update).to_have_attribute("data-state", "reported", timeout=30_000)
    expect(update.locator(".badge")).to_have_text("Installed")
    expect(update.locator(".result-code")).to_have_text("OK")
    expect(update.locator(".result-desc")).to_have_text("Operation executed successfully")
    log = page.get_by_test_id("log")
    for name in ("UpdatesReceived", "DownloadProgress", "InstallComplete", "UpdateReportSent"):
        expect(log.locator(".name", has_text=re.compile(rf"^{name}$")).first).to_be_visible()
    assert sim.status(DEVICE, update_id) == "Finished"
    assert installed.read_text().count("\n") == 3

    daemon.stop()
    expect(connection).to_have_text("Disconnected")
    expect(page.get_by_test_id("banner")).to_be_visible()
    expect(page.get_by_test_id("banner")).to_contain_text("Reconnecting in")
    expect(page.get_by_role("button", name="Check for updates")).to_be_disabled()

    daemon.start()
    # The page retries after 1, 2, 4, 8, then every 10 s.
    expect(connection).to_have_text("Connected", timeout=20_000)
    expect(page.get_by_test_id("banner")).to_be_hidden()
    expect(page.get_by_role("button", name="Check for updates")).to_be_enabled()

    # A fresh page learns the finished update from the journal (GET /status).
    page.reload()
    expect(connection).to_have_text("Connected")
    expect(update).to_have_attribute("data-state", "reported")
    expect(update.locator(".pkg-name")).to_have_text("navigation-maps")
    expect(update.locator(".result-code")).to_have_text("OK")


def test_page_shows_the_report_of_an_swlm(
    page: Page, sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    """No package manager: the SWLM installs and reports; its code and text reach the page."""
    sim.add_package("telematics-fw", "3.1.0", data=b"firmware image" * 1000)
    update_id = sim.queue_update(DEVICE, "telematics-fw", "3.1.0")
    daemon, url, _ = hmi_daemon(make_daemon, sim)
    with sync.listen(daemon.events_socket, kinds=[DownloadComplete]) as events:
        daemon.start()
        page.goto(url)
        expect(page.get_by_test_id("connection")).to_have_text("Connected")
        page.get_by_role("button", name="Check for updates").click()
        event = events.receive(timeout=30)
    assert isinstance(event, DownloadComplete)
    assert event.update_id == update_id
    update = card(page, update_id)
    expect(update.locator(".pkg-name")).to_have_text("telematics-fw")
    expect(update.get_by_role("button", name="Download")).to_have_count(0)
    expect(page.get_by_role("button", name="Install")).to_have_count(0)

    text = "libcan (>= 2.0) is not installed <b>"
    # Playwright's event loop runs in this thread, and the blocking SDK runs one of its own.
    with ThreadPoolExecutor(1) as swlm:
        swlm.submit(
            sync.send_update_report,
            update_id,
            ResultCode.DEPENDENCY_FAILURE,
            text,
            commands_socket=daemon.commands_socket,
        ).result(timeout=30)
    expect(update).to_have_attribute("data-state", "reported", timeout=15_000)
    expect(update.locator(".badge")).to_have_text("Failed")
    expect(update.locator(".result-code")).to_have_text("DEPENDENCY_FAILURE")
    expect(update.locator(".result-text")).to_have_text(text)
    assert sim.status(DEVICE, update_id) == "Failed"


def test_page_treats_server_data_as_text_and_bounds_its_log(page: Page) -> None:
    """Served without the gateway: the websocket defaults to port 3012 of the page's host."""
    origin = "http://hmi.test"
    sent: list[str] = []
    sockets: list[WebSocketRoute] = []

    def on_socket(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.on_message(lambda message: sent.append(str(message)))

    page.route(f"{origin}/", lambda route: route.fulfill(path=PAGE))
    page.route(f"{origin}/status", lambda route: route.fulfill(status=503))
    page.route_web_socket("ws://hmi.test:3012/", on_socket)
    page.goto(f"{origin}/")
    expect(page.get_by_test_id("connection")).to_have_text("Connected")
    (ws,) = sockets

    page.get_by_role("button", name="Check for updates").click()
    expect(page.get_by_role("button", name="Checking…")).to_be_disabled()
    hostile = '<img src=x onerror="window.pwned=1">'
    request = {
        "requestId": hostile,
        "status": "Pending",
        "packageId": {"name": "<b>evil</b>", "version": "1.0"},
        "installPos": 0,
        "createdAt": "2016-10-28T10:15:30Z",
    }
    ws.send(json.dumps({"variant": "UpdatesReceived", "fields": [[request]]}))
    update = page.locator(".update")
    expect(update.locator(".pkg-name")).to_have_text("<b>evil</b>")
    expect(update.locator(".update-id")).to_have_text(hostile)
    expect(page.locator(".update img, .update b")).to_have_count(0)
    expect(page.get_by_role("button", name="Check for updates")).to_be_enabled()
    update.get_by_role("button", name="Download").click()
    ws.send(json.dumps({"variant": "DownloadingUpdate", "fields": [hostile]}))
    ws.send(json.dumps({"variant": "DownloadProgress", "fields": [hostile, 512, None]}))
    expect(update.locator(".progress-text")).to_have_text("512 B received")
    ws.send(json.dumps({"variant": "DownloadProgress", "fields": [hostile, 3 * MiB, 4 * MiB]}))
    expect(update.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "75")
    # The SWLM's own words on its install (SendInstallProgress), as text too.
    ws.send(json.dumps({"variant": "InstallProgress", "fields": [hostile, 40, "<b>slot b</b>"]}))
    expect(update.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
    expect(update.get_by_role("progressbar")).to_have_attribute(
        "aria-label", "Install of <b>evil</b> 1.0"
    )
    expect(update.locator(".progress-text")).to_have_text("<b>slot b</b> · 40 %")
    expect(update.locator(".badge")).to_have_text("Installing")
    ws.send(json.dumps({"variant": "AwaitingReboot", "fields": [hostile, "<b>reboot</b>"]}))
    expect(update.locator(".badge")).to_have_text("Awaiting reboot")
    expect(update.locator(".detail")).to_have_text("<b>reboot</b>")
    expect(update.get_by_role("progressbar")).to_be_hidden()
    report = {
        "update_id": hostile,
        "operation_results": [{"id": hostile, "result_code": 4, "result_text": "<i>x</i>"}],
    }
    ws.send(json.dumps({"variant": "InstallFailed", "fields": [report]}))
    expect(update.locator(".result-code")).to_have_text("INSTALL_FAILED")
    expect(update.locator(".result-text")).to_have_text("<i>x</i>")
    # The package manager placeholder was not replaced: the page offers no install.
    expect(update).to_have_attribute("data-state", "install_failed")
    expect(update.get_by_role("button", name="Install")).to_have_count(0)
    assert page.evaluate("window.pwned") is None
    assert sent == [
        '"GetUpdateRequests"',
        json.dumps({"variant": "StartDownload", "fields": [hostile]}, separators=(",", ":")),
    ]

    for n in range(250):
        ws.send(json.dumps({"variant": "Error", "fields": [f"error {n}"]}))
    log = page.get_by_test_id("log").locator("li")
    expect(log.first).to_contain_text("error 249")
    expect(log).to_have_count(200)
