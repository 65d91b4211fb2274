"""The daemon's root: builds every part from the config and runs them in one task group.

Start-up order: journal, Core backend, gateways (``READY=1`` once they listen), then
``Authenticate`` (which, as in 2016, sends the package list and system info), every update a
previous run left unfinished, the report and event retry loops, and the poller. The background
loops are supervised: one that fails is logged and restarted, and never ends the daemon.
SIGTERM, SIGINT and the ``Shutdown`` command cancel the group; installs run shielded and
finish first.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import TaskGroup

from swlm_sdk.protocol import Authenticate, InstalledPackage, InstalledSoftware

from . import _systemd
from ._backend import AuthSettings, CoreBackend
from ._config import Config, parse_socket_addr
from ._errors import SotaError
from ._interpreter import BackendLike, Interpreter, Services
from ._packages_dir import prepare_packages_dir
from ._poller import Poller
from ._report_timeout import ReportTimeout
from ._reports import ReportSender
from ._store import Journal
from ._supervisor import supervise
from .gateways import CommandServer, EventOutbox, run_console
from .gateways._unix import raise_open_file_limit

if TYPE_CHECKING:
    from .gateways._rvi import RviGateway
    from .pacman import PackageManager

__all__ = ["run"]

logger = logging.getLogger(__name__)

#: Gateways through which an SWLM (or a person, on the console or the HMI) can take a
#: downloaded update.
_SWLM_GATEWAYS = ("socket", "dbus", "console", "http", "websocket")


def run(config: Config) -> int:
    """Run the daemon until it is stopped; return the process exit status."""
    try:
        anyio.run(_main, config)
    except (SotaError, BaseExceptionGroup) as exc:
        error = _sota_error(exc)
        if error is None:
            raise
        logger.error("couldn't start: %s", error)
        print(f"sota_client: {error}", file=sys.stderr)
        return 1
    return 0


def _sota_error(exc: BaseException) -> SotaError | None:
    """The start-up error inside a (possibly nested) exception group, if that is what it is."""
    if isinstance(exc, SotaError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _sota_error(exc.exceptions[0])
    return None


async def _main(config: Config) -> None:
    _warn_if_nothing_installs(config)
    prepare_packages_dir(config.device.packages_dir)
    journal = Journal.open(os.path.join(config.device.state_dir, "sota.db"))
    try:
        async with _backend(config) as backend, anyio.create_task_group() as tg:
            await _serve(config, journal, backend, tg)
    finally:
        journal.close()
        _systemd.notify("STOPPING=1")
    logger.info("Stopped")  # not after a failure: the error is the last word


def _warn_if_nothing_installs(config: Config) -> None:
    """Say at start-up, in plain words, when downloaded updates can go nowhere."""
    if config.device.package_manager.kind != "off":
        return
    if any(getattr(config.gateway, name) for name in _SWLM_GATEWAYS):
        return
    logger.warning(
        'Nothing can install updates: device.package_manager is "off" (an external SWLM '
        "installs them), but no gateway that reaches an SWLM is on. Updates will be "
        "downloaded and then wait. Turn on [gateway] socket = true (or dbus = true) for an "
        "SWLM, or set device.package_manager to deb or rpm"
    )


def _backend(config: Config) -> CoreBackend:
    auth = None
    if config.auth is not None:
        auth = AuthSettings(
            server=config.auth.server,
            client_id=config.auth.client_id,
            client_secret=config.auth.client_secret,
        )
    return CoreBackend(
        config.core.server,
        config.device.uuid,
        auth=auth,
        ca_file=config.device.certificates_path,
        timeout=config.core.timeout,
        # Longer than the poll interval: each poll finds its connection still open.
        keepalive=max(60.0, 2 * config.core.polling_sec + config.core.timeout),
    )


async def _serve(config: Config, journal: Journal, backend: CoreBackend, tg: TaskGroup) -> None:
    # What a config turns off is not imported: start-up pays only for what runs.
    manager = config.device.package_manager
    package_manager = None
    if manager.kind != "off":
        from .pacman import create_package_manager

        package_manager = create_package_manager(manager.kind, manager.path)
    system_info: Callable[[], Awaitable[str]] | None = None
    if config.device.system_info is not None:
        from ._sysinfo import run_system_info

        system_info = functools.partial(run_system_info, config.device.system_info)
    network = config.network
    rvi = _rvi_gateway(config, journal, backend)
    updates: BackendLike = backend
    if rvi is not None:
        from .gateways._rvi import RviBackend

        updates = RviBackend(backend, rvi)
    reports = ReportSender(updates, journal, ask_core_when_in_doubt=rvi is None)
    services = Services(
        backend=updates,
        journal=journal,
        reports=reports,
        packages_dir=config.device.packages_dir,
        package_manager=package_manager,
        system_info=system_info,
        shutdown=tg.cancel_scope.cancel,
        max_concurrent_downloads=config.device.max_concurrent_downloads,
        max_download_size=config.device.max_download_size,
        event_metadata=config.device.event_metadata,
    )
    interpreter = Interpreter(services, tg)
    tg.start_soon(_stop_on_signals, tg)
    tg.start_soon(_systemd.watchdog)
    _route_swlm_events(config, journal, services)

    if config.gateway.socket:
        raise_open_file_limit()  # every peer of the commands socket holds a descriptor
        outbox = EventOutbox(
            network.socket_events_path, journal, event_metadata=config.device.event_metadata
        )
        services.subscribers.append(outbox.publish)
        server = CommandServer(
            network.socket_commands_path,
            interpreter.execute,
            mode=network.socket_mode,
            group=network.socket_group,
        )
        await tg.start(server.serve)
        logger.info("Sending events to %s", network.socket_events_path)
        tg.start_soon(
            supervise, "event delivery", functools.partial(outbox.run, interpreter.publish)
        )
    dbus = None
    if config.gateway.dbus:
        assert config.dbus is not None  # the config reader requires [dbus] for it
        from .gateways._dbus import DBusGateway  # jeepney and XML: only when D-Bus is on

        dbus = DBusGateway(
            config.dbus,
            journal,
            execute=interpreter.execute,
            submit=interpreter.submit,
            event_metadata=config.device.event_metadata,
        )
        services.subscribers.append(dbus.publish)
        await tg.start(dbus.serve)
    if rvi is not None:
        installed = dbus.installed_software if dbus else _software_of(package_manager)
        serve_rvi = functools.partial(
            rvi.serve,
            execute=interpreter.execute,
            submit=interpreter.submit,
            publish=interpreter.publish,
            installed_software=installed,
        )
        await tg.start(serve_rvi)
    if config.gateway.console:
        tg.start_soon(run_console, interpreter.execute, sys.stdin, sys.stdout)
    if config.gateway.http or config.gateway.websocket:
        await _serve_local_api(config, journal, interpreter, services, tg)
    _systemd.notify("READY=1", "STATUS=Starting: authenticating with Core")

    tg.start_soon(supervise, "report", functools.partial(reports.run, interpreter.publish))
    if config.device.report_timeout:
        timeout = ReportTimeout(journal, config.device.report_timeout, queued=reports.wake)
        tg.start_soon(supervise, "report timeout", timeout.run)
    await interpreter.execute(Authenticate())
    interpreter.recover()
    if config.core.polling:
        poller = Poller(interpreter, config.core.polling_sec)
        tg.start_soon(supervise, "polling", poller.run)
    _systemd.notify("STATUS=Running")


def _route_swlm_events(config: Config, journal: Journal, services: Services) -> None:
    """Events for the SWLM are kept once for each SWLM gateway that is on (socket, D-Bus);
    those a previous run kept for a gateway that is now off go to the ones that are on."""
    channels = []
    if config.gateway.socket:
        channels.append("socket")
    if config.gateway.dbus:
        from .gateways._dbus import CHANNEL as DBUS_CHANNEL  # only when D-Bus is on

        channels.append(DBUS_CHANNEL)
    journal.event_channels = tuple(channels)
    if not channels:
        return
    services.outbox_entry = EventOutbox.entry_for
    moved = journal.route_events()
    if moved:
        logger.info(
            "%d event(s) for the SWLM kept for a gateway that is off now go to %s",
            moved,
            " and ".join(channels),
        )


def _rvi_gateway(config: Config, journal: Journal, backend: CoreBackend) -> RviGateway | None:
    if not config.gateway.rvi:
        return None
    assert config.rvi is not None  # the config reader requires [rvi] for it
    from .gateways._rvi import RviGateway  # only when RVI is on

    return RviGateway(
        node_url=config.rvi.client,
        edge_address=config.network.rvi_edge_server,
        storage_dir=config.rvi.storage_dir,
        packages_dir=config.device.packages_dir,
        device=config.device.uuid,
        journal=journal,
        post=backend.post_json,
        idle_timeout=config.rvi.timeout,
        max_download_size=config.device.max_download_size,
    )


def _software_of(
    manager: PackageManager | None,
) -> Callable[[], Awaitable[InstalledSoftware]]:
    """Without a D-Bus SWLM, the RVI backend hears of the package manager's packages."""

    async def installed() -> InstalledSoftware:
        packages = [] if manager is None else await manager.installed_packages()
        return InstalledSoftware(
            packages=tuple(
                InstalledPackage(f"{p.name}-{p.version}", p.name, p.version, 0) for p in packages
            )
        )

    return installed


async def _serve_local_api(
    config: Config, journal: Journal, interpreter: Interpreter, services: Services, tg: TaskGroup
) -> None:
    """The HTTP and websocket gateways for HMIs and tools, sharing one event broadcaster.

    Each imports its modules in its own branch: wsproto loads only for the websocket, the HTTP
    server and the HMI page only for HTTP."""
    from .gateways._broadcast import Broadcaster

    network = config.network
    broadcaster = Broadcaster()
    services.subscribers.append(broadcaster.publish)
    services.progress = broadcaster.progress
    if config.gateway.websocket:
        from .gateways._local_http import own_origins
        from .gateways._websocket import WebsocketGateway

        # The HMI's page comes from the HTTP gateway: its origins, and any the config adds.
        origins = (
            *own_origins(*parse_socket_addr(network.http_server)),
            *network.local_api_origins,
        )
        websocket = WebsocketGateway(
            network.websocket_server, interpreter.execute, broadcaster, allowed_origins=origins
        )
        await tg.start(websocket.serve)
    if config.gateway.http:
        from ._status import read_status
        from .gateways._hmi import hmi_page, page_url, websocket_url
        from .gateways._http import HttpGateway

        page = None
        if config.gateway.websocket:
            page = hmi_page(
                websocket_url(network.websocket_server), config.device.package_manager.kind
            )
        http = HttpGateway(
            network.http_server,
            interpreter.execute,
            status=lambda: msgspec.json.encode(read_status(journal)),
            events=broadcaster.subscribe,
            hmi_page=page,
            allowed_origins=network.local_api_origins,
        )
        await tg.start(http.serve)
        if page is not None:
            logger.info("The web HMI is at %s", page_url(network.http_server))


async def _stop_on_signals(tg: TaskGroup) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("Received %s; stopping", signal.Signals(signum).name)
            _systemd.notify("STOPPING=1")
            tg.cancel_scope.cancel()
            return
