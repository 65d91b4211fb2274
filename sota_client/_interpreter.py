"""Runs commands: each becomes Core calls, downloads or installs, and ends in one final event.

Commands run concurrently (a long download does not hold up a report), but one update is never
downloaded or installed twice at once. Every event is published to the subscribers (gateways)
and then fed through the follow-up table, whose work is counted so the poller knows when the
daemon is idle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from swlm_sdk import Backoff
from swlm_sdk.protocol import (
    AlreadyAuthenticated,
    Authenticate,
    Authenticated,
    Command,
    DownloadComplete,
    DownloadFailed,
    DownloadingUpdate,
    ErrorEvent,
    Event,
    FoundInstalledPackages,
    FoundSystemInfo,
    GetUpdateRequests,
    InstallComplete,
    InstalledPackagesSent,
    InstalledSoftwareSent,
    InstallFailed,
    InstallingUpdate,
    ListInstalledPackages,
    ListSystemInfo,
    NotAuthenticated,
    NoUpdateRequests,
    Package,
    ProtocolError,
    ResultCode,
    SendInstalledPackages,
    SendInstalledSoftware,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
    SystemInfoSent,
    UpdateReport,
    UpdateRequest,
    UpdatesReceived,
    encode_event,
    format_command,
)

from . import _systemd
from ._activity import Activity
from ._errors import AuthError, DownloadError, SotaError
from ._ids import check_update_id
from ._reactions import ResolveInFlight, SendCurrentPackages, Step, follow_ups
from ._reports import ReportSender

__all__ = ["Interpreter", "Services"]

logger = logging.getLogger(__name__)

# Waits before re-authenticating after NotAuthenticated: at once, then 2, 4 ... 60 s
# (2016 retried in a tight loop).
_AUTH_BACKOFF = Backoff(initial_delay=1.0, max_delay=60.0)

Subscriber = Callable[[Event], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class DownloadResultLike(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...


class BackendLike(Protocol):
    """What the interpreter needs from Core (implemented by ``CoreBackend``)."""

    @property
    def auth_configured(self) -> bool: ...
    @property
    def authenticated(self) -> bool: ...
    async def authenticate(self) -> object: ...
    async def get_update_requests(self) -> list[UpdateRequest]: ...
    async def send_installed_packages(self, packages: Sequence[Package]) -> None: ...
    async def send_system_info(self, text: str) -> None: ...
    async def download(
        self,
        update_id: str,
        packages_dir: str,
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> DownloadResultLike: ...


class PackageManagerLike(Protocol):
    async def installed_packages(self) -> list[Package]: ...
    async def install(self, path: str) -> InstallOutcomeLike: ...


class InstallOutcomeLike(Protocol):
    @property
    def code(self) -> ResultCode: ...
    @property
    def text(self) -> str: ...
    @property
    def ok(self) -> bool: ...


class JournalLike(Protocol):
    def begin_download(self, update_id: str, path: str) -> None: ...
    def finish_download(self, update_id: str, size: int, sha256: str) -> None: ...
    def fail_download(self, update_id: str, error: str) -> None: ...
    def mark_update(self, update_id: str, state: str) -> None: ...
    def update_state(self, update_id: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Echo:
    """The final event of a command that joined an identical one already running.

    It is returned to its caller but not published again, so that what it causes (an install,
    a report, an envelope for the SWLM) happens once.
    """

    event: Event


class _SharedDownload:
    """A download in progress, which a second ``StartDownload`` of the same update waits for."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: Event | None = None


@dataclass
class Services:
    """Everything the interpreter works with; built by the daemon from the config."""

    backend: BackendLike
    journal: JournalLike
    reports: ReportSender
    packages_dir: str
    package_manager: PackageManagerLike | None = None
    system_info: Callable[[], Awaitable[str]] | None = None
    shutdown: Callable[[], None] = lambda: None
    subscribers: list[Subscriber] = field(default_factory=list)


class Interpreter:
    """Executes commands and their follow-ups inside the daemon's task group."""

    def __init__(
        self, services: Services, task_group: TaskGroup, *, sleep: Sleep = anyio.sleep
    ) -> None:
        """:param sleep: waits out follow-up delays (re-authentication backoff); for tests."""
        self._s = services
        self._tg = task_group
        self._sleep = sleep
        self.activity = Activity()
        self._update_locks: dict[str, anyio.Lock] = {}
        # One package-manager run at a time: dpkg and rpm lock their database, so a second
        # concurrent install would fail at once instead of waiting its turn.
        self._install_lock = anyio.Lock()
        self._downloads: dict[str, _SharedDownload] = {}
        self._announced_auth = False
        self._authenticating: anyio.Event | None = None
        self._auth_failures = 0
        self._auth_retry_scheduled = False

    # -- running commands -------------------------------------------------------------------

    async def execute(self, command: Command) -> Event | None:
        """Run one command to its end and return its final event (None for ``Shutdown``).

        The final event is also published, and its follow-ups are scheduled.
        """
        with self.activity.working():
            return await self._run(command)

    def submit(self, step: Step, *, delay: float = 0.0) -> None:
        """Schedule follow-up work; it counts as activity from now until it ends."""
        self.activity.begin()
        self._tg.start_soon(self._run_step, step, delay)

    async def _run_step(self, step: Step, delay: float) -> None:
        try:
            if delay:
                await self._sleep(delay)
            if isinstance(step, Authenticate):
                self._auth_retry_scheduled = False
            if isinstance(step, SendCurrentPackages):
                await self._send_current_packages()
            elif isinstance(step, ResolveInFlight):
                await self._resolve_in_flight(step.request)
            else:
                await self._run(step)
        # Follow-ups run in the daemon's task group: an error escaping here would stop it all.
        except SotaError as exc:
            logger.error("Follow-up %s failed: %s", step, exc)
            await self.publish(ErrorEvent(str(exc)))
        except Exception as exc:
            logger.exception("Follow-up %s failed unexpectedly", step)
            await self.publish(ErrorEvent(f"Internal error: {exc}"))
        finally:
            self.activity.end()

    async def _run(self, command: Command) -> Event | None:
        logger.info("Running command: %s", _describe(command))
        try:
            event = await self._dispatch(command)
        except AuthError as exc:
            logger.error("HTTP authorization failed: %s", exc)
            event = NotAuthenticated()
        except SotaError as exc:
            event = ErrorEvent(str(exc))
        except Exception as exc:  # a bug must not kill the daemon (2016 bug 29)
            logger.exception("Command %s failed unexpectedly", command)
            event = ErrorEvent(f"Internal error: {exc}")
        if isinstance(event, _Echo):
            return event.event
        if event is not None:
            await self.publish(event)
        return event

    async def publish(self, event: Event) -> None:
        """Hand an event to every gateway, then schedule what it causes."""
        logger.info("Event: %s", encode_event(event).decode())
        for subscriber in self._s.subscribers:
            try:
                await subscriber(event)
            except Exception:
                logger.exception("An event subscriber failed on %s", event)
        delay = 0.0
        if isinstance(event, NotAuthenticated):
            if self._auth_retry_scheduled:
                # One retry chain is enough: a chain per refused command (each poll adds one)
                # would multiply the token requests while the credentials are bad.
                return
            self._auth_retry_scheduled = True
            # Back off instead of the 2016 tight re-authentication loop (bug 26).
            delay = _AUTH_BACKOFF.delay(self._auth_failures + 1) if self._auth_failures else 0.0
            self._auth_failures += 1
            logger.info("Trying to authenticate again in %.0f s...", delay)
        elif isinstance(event, Authenticated):
            self._auth_failures = 0
        for step in follow_ups(
            event,
            package_manager=self._s.package_manager is not None,
            system_info=self._s.system_info is not None,
        ):
            self.submit(step, delay=delay)

    async def _dispatch(self, command: Command) -> Event | _Echo | None:
        backend = self._s.backend
        if isinstance(command, Shutdown):
            self._s.shutdown()
            return None
        if isinstance(command, Authenticate):
            return await self._authenticate()
        if backend.auth_configured and not backend.authenticated:
            await self._authentication_settled()
            # A report goes on regardless: the backend fetches a token first, and a report it
            # cannot send is kept in the journal and retried, never lost.
            if not backend.authenticated and not isinstance(command, SendUpdateReport):
                return NotAuthenticated()
        match command:
            case GetUpdateRequests():
                requests = await backend.get_update_requests()
                if not requests:
                    return NoUpdateRequests()
                return UpdatesReceived(tuple(sorted(requests, key=lambda r: r.install_pos)))
            case ListInstalledPackages():
                return FoundInstalledPackages(tuple(await self._installed_packages()))
            case ListSystemInfo():
                return FoundSystemInfo(await self._system_info())
            case SendInstalledPackages(packages=packages):
                await backend.send_installed_packages(packages)
                return InstalledPackagesSent()
            case SendInstalledSoftware():
                return InstalledSoftwareSent()  # RVI only; nothing to do over HTTP (2016)
            case SendSystemInfo():
                await backend.send_system_info(await self._system_info())
                return SystemInfoSent()
            case SendUpdateReport(report=report):
                return await self._s.reports.send(report)
            case StartDownload(update_id=update_id):
                return await self._download(update_id)
            case StartInstall(update_id=update_id):
                return await self._install(update_id)
        raise SotaError(f"unsupported command {command.name}")

    # -- the commands -----------------------------------------------------------------------

    async def _authenticate(self) -> Event:
        backend = self._s.backend
        if not backend.auth_configured:
            # 2016 answered AlreadyAuthenticated and so never sent packages and system info
            # in deployments without [auth] (bug 25): announce it once, as later versions did.
            if self._announced_auth:
                return AlreadyAuthenticated()
            self._announced_auth = True
            return Authenticated()
        await self._authentication_settled()
        if backend.authenticated:
            return AlreadyAuthenticated()
        done = self._authenticating = anyio.Event()
        try:
            await backend.authenticate()
        finally:
            done.set()
            if self._authenticating is done:
                self._authenticating = None
        return Authenticated()

    async def _authentication_settled(self) -> None:
        """Wait for an ``Authenticate`` under way (its token request is under a deadline).

        2016 ran one command at a time, so a command sent while the daemon authenticated (at
        start-up, say) saw the new token; refusing it here would be a new NotAuthenticated.
        """
        while self._authenticating is not None:
            await self._authenticating.wait()

    async def _installed_packages(self) -> list[Package]:
        if self._s.package_manager is None:
            return []
        return await self._s.package_manager.installed_packages()

    async def _system_info(self) -> str:
        if self._s.system_info is None:
            raise SotaError("System info error: system_info is turned off in the config")
        return await self._s.system_info()

    async def _send_current_packages(self) -> None:
        try:
            packages = await self._installed_packages()
        except SotaError as exc:
            logger.error("couldn't send a list of packages: %s", exc)
            return
        await self._run(SendInstalledPackages(tuple(packages)))

    @asynccontextmanager
    async def _holding(self, update_id: str) -> AsyncIterator[None]:
        """Hold the update's lock: its download and its install never overlap."""
        lock = self._update_locks.setdefault(update_id, anyio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._update_locks.pop(update_id, None)

    def _busy(self, update_id: str) -> bool:
        lock = self._update_locks.get(update_id)
        return lock is not None and lock.locked()

    async def _download(self, update_id: str) -> Event | _Echo:
        check_update_id(update_id)  # an id is a file name: never "../x" or "/etc/passwd"
        while (running := self._downloads.get(update_id)) is not None:
            logger.info("Update %s is already being downloaded; waiting for it", update_id)
            await running.done.wait()
            if running.outcome is not None:
                return _Echo(running.outcome)
        shared = self._downloads[update_id] = _SharedDownload()
        try:
            shared.outcome = await self._download_now(update_id)
            return shared.outcome
        finally:
            del self._downloads[update_id]
            shared.done.set()

    async def _download_now(self, update_id: str) -> Event:
        async with self._holding(update_id):
            self._s.journal.begin_download(update_id, _image_path(self._s.packages_dir, update_id))
            await self.publish(DownloadingUpdate(update_id))
            progress = _ProgressLog(update_id)
            try:
                result = await self._s.backend.download(
                    update_id, self._s.packages_dir, progress=progress
                )
            except AuthError:
                raise
            except DownloadError as exc:
                self._s.journal.fail_download(update_id, str(exc))
                return DownloadFailed(update_id, str(exc))
            self._s.journal.finish_download(update_id, result.size, result.sha256)
            self._s.journal.mark_update(update_id, "downloaded")
            logger.info(
                "Downloaded update %s: %d bytes, sha256 %s", update_id, result.size, result.sha256
            )
            return DownloadComplete(update_id, result.path, "")

    async def _install(self, update_id: str) -> Event:
        manager = self._s.package_manager
        if manager is None:
            raise SotaError(
                "Package error: StartInstall needs a package manager, "
                'but device.package_manager is "off"'
            )
        check_update_id(update_id)
        async with self._holding(update_id), self._install_lock:
            path = _image_path(self._s.packages_dir, update_id)
            if not await anyio.Path(path).is_file():
                raise SotaError(f"Package error: no downloaded image for update {update_id}")
            await self.publish(InstallingUpdate(update_id))
            outcome = await manager.install(path)
            report = UpdateReport.single(update_id, outcome.code, outcome.text)
            self._s.journal.mark_update(update_id, "installed")
            if not outcome.ok:
                return InstallFailed(report)
            try:
                os.unlink(path)
            except OSError as exc:
                logger.warning("couldn't remove installed image %s: %s", path, exc)
            return InstallComplete(report)

    async def _resolve_in_flight(self, request: UpdateRequest) -> None:
        """Core says the update is being processed; decide whether anything is left to do.

        With a package manager this is the 2016 rule: report OK if the package is installed,
        else download again. Without one (an external SWLM), 2016 did nothing, so an update
        whose event was lost stayed stuck (bug 32); the journal now tells an update that is
        handed over and awaiting the SWLM's report from one whose download never finished.
        """
        update_id = request.request_id
        state = self._s.journal.update_state(update_id)
        if self._busy(update_id) or state == "installed":
            return
        if self._s.package_manager is None:
            if state != "downloaded":
                await self._run(StartDownload(update_id))
            return
        try:
            installed = request.package_id in await self._installed_packages()
        except SotaError as exc:
            logger.error("couldn't list installed packages: %s", exc)
            installed = False
        if installed:
            report = UpdateReport.single(update_id, ResultCode.OK, "")
            await self._run(SendUpdateReport(report))
        else:
            await self._run(StartDownload(update_id))


def _describe(command: Command) -> str:
    """The command as its text form where it has one (``StartDownload u1``), for the log."""
    try:
        return format_command(command)
    except ProtocolError:
        return repr(command)


def _image_path(packages_dir: str, update_id: str) -> str:
    return os.path.join(packages_dir, update_id)


class _ProgressLog:
    """Logs download progress every 10 % (or every 8 MiB when the size is unknown), and shows
    it in ``systemctl status``."""

    def __init__(self, update_id: str) -> None:
        self._update_id = update_id
        self._next = 0.0

    def __call__(self, received: int, total: int | None) -> None:
        if total:
            share = received / total
            if share >= self._next or received == total:
                percent = int(share * 100)
                logger.info(
                    "Downloading %s: %d%% (%d of %d bytes)",
                    self._update_id,
                    percent,
                    received,
                    total,
                )
                _systemd.notify(f"STATUS=Downloading update {self._update_id}: {percent}%")
                self._next = share + 0.1
        elif received >= self._next:
            logger.info("Downloading %s: %d bytes", self._update_id, received)
            self._next = received + 8 * 2**20
