"""Runs commands: each becomes Core calls, downloads or installs, and ends in one final event.

Commands run concurrently (a long download does not hold up a report), but one update is never
downloaded or installed twice at once, and downloads wait their turn in Core's ``installPos``
order. Each update's progress is a state in the journal, written in one transaction with the
event and the report it causes; what an update needs next is decided from that state (at every
poll and at start-up), never from memory. Every event is published to the subscribers
(gateways) and then fed through the follow-up table, whose work is counted so the poller knows
when the daemon is idle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup

from swlm_sdk._killpoints import kill_point
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
    InstalledSoftware,
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
    SendInstallProgress,
    SendRebootNeeded,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
    SystemInfoSent,
    UpdateReport,
    UpdateRequest,
    UpdateRequestStatus,
    UpdatesReceived,
    encode_event,
    format_command,
)

from . import _systemd
from ._activity import Activity
from ._download import (
    DEFAULT_MAX_DOWNLOAD_SIZE,
    Checkpoint,
    image_is_intact,
    remove_partial,
)
from ._errors import AuthError, DownloadError, SotaError, one_line
from ._handover import named_download_complete
from ._ids import check_update_id, command_update_id, id_problem, shown_id
from ._install_progress import take_install_progress, take_reboot_needed
from ._reactions import ResolveUpdate, SendCurrentPackages, Step, follow_ups
from ._reports import ReportSender, encode_report
from ._store import DownloadState, Journal, UpdateState
from ._turns import Turns

__all__ = ["MAX_UPDATES_PER_POLL", "BackendLike", "Interpreter", "Services"]

logger = logging.getLogger(__name__)

MAX_UPDATES_PER_POLL = 1000
"""Updates taken from one update list; the rest wait for later polls (Core keeps them)."""

_WARNED_IDS_LIMIT = 1024

Subscriber = Callable[[Event], Awaitable[None]]
OutboxEntry = Callable[[Event], "tuple[str, bytes] | None"]


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
    async def token_backoff(self) -> None: ...
    async def get_update_requests(self) -> list[UpdateRequest]: ...
    async def send_installed_packages(self, packages: Sequence[Package]) -> None: ...
    async def send_system_info(self, text: str) -> None: ...
    async def send_installed_software(self, software: InstalledSoftware) -> None: ...
    async def send_update_report(self, report: UpdateReport) -> None: ...
    async def download(
        self,
        update_id: str,
        packages_dir: str,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        max_size: int = ...,
        resume: Checkpoint | None = None,
        checkpoint: Callable[[Checkpoint], None] | None = None,
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


class _Echo(msgspec.Struct, frozen=True):
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


class Services(msgspec.Struct):
    """Everything the interpreter works with; built by the daemon from the config."""

    backend: BackendLike
    journal: Journal
    reports: ReportSender
    packages_dir: str
    package_manager: PackageManagerLike | None = None
    system_info: Callable[[], Awaitable[str]] | None = None
    shutdown: Callable[[], None] = lambda: None
    subscribers: list[Subscriber] = msgspec.field(default_factory=list)
    #: The outbox form of an event an SWLM gateway must deliver durably (None: no such event,
    #: or no such gateway); written in the transaction of the state change that causes it.
    outbox_entry: OutboxEntry | None = None
    max_concurrent_downloads: int = 1
    max_download_size: int = DEFAULT_MAX_DOWNLOAD_SIZE
    #: Told of every step of every download ``(update_id, received, total)``: the local API's
    #: ``DownloadProgress`` (it throttles); never the 0.1 Unix socket.
    progress: Callable[[str, int, int | None], None] | None = None
    #: ``device.event_metadata``: ``DownloadComplete`` carries the image's SHA-256 and size and
    #: the package Core named, where known; False: the three 0.1 fields only.
    event_metadata: bool = True


class Interpreter:
    """Executes commands and their follow-ups inside the daemon's task group."""

    def __init__(self, services: Services, task_group: TaskGroup) -> None:
        self._s = services
        self._tg = task_group
        self.activity = Activity()
        self._update_locks: dict[str, anyio.Lock] = {}
        # One package-manager run at a time: dpkg and rpm lock their database, so a second
        # concurrent install would fail at once instead of waiting its turn.
        self._install_lock = anyio.Lock()
        self._downloads: dict[str, _SharedDownload] = {}
        self._installing: set[str] = set()
        #: The package Core named for an update whose first download starts now.
        self._packages: dict[str, Package] = {}
        self._turns = Turns(services.max_concurrent_downloads)
        self._announced_auth = False
        self._authenticating: anyio.Event | None = None
        self._auth_retry_scheduled = False
        self._warned: set[str] = set()  # "once" warnings already given, by key
        self._over_cap = False
        self._failing: dict[str, str] = {}  # command name -> its last failure, as logged
        self._listed: list[tuple[str, str]] = []  # Core's last update list, as logged

    # -- running commands -------------------------------------------------------------------

    async def execute(self, command: Command, *, quiet: bool = False) -> Event | None:
        """Run one command to its end and return its final event (None for ``Shutdown``).

        The final event is also published, and its follow-ups are scheduled. A command that
        fails is logged at WARN, once until it works again, unless ``quiet`` (the caller logs
        it, as the poller does with its backoff).
        """
        with self.activity.working():
            return await self._run(command, quiet=quiet)

    def submit(self, step: Step) -> None:
        """Schedule follow-up work; it counts as activity from now until it ends.

        A step that may download takes its place in the download queue now, so downloads
        start in the order they were scheduled.
        """
        self.activity.begin()
        ticket = self._turns.ticket() if isinstance(step, StartDownload | ResolveUpdate) else None
        self._tg.start_soon(self._run_step, step, ticket)

    def recover(self) -> None:
        """At start-up: drive every update the journal has in an unfinished state forward.

        A download that was running resumes; an image that was downloaded but not handed
        over is handed over; an install that was cut short runs again. Reports are the
        report sender's: it sends every queued one.
        """
        for record in self._s.journal.unfinished_updates():
            logger.info("Update %s was %s when the daemon stopped", record.update_id, record.state)
            self.submit(ResolveUpdate(record.update_id))

    async def _run_step(self, step: Step, ticket: int | None) -> None:
        try:
            if isinstance(step, Authenticate):
                self._auth_retry_scheduled = False
            if isinstance(step, SendCurrentPackages):
                await self._send_current_packages()
            elif isinstance(step, ResolveUpdate):
                await self._resolve(step, ticket)
            else:
                await self._run(step, ticket=ticket)
        # Follow-ups run in the daemon's task group: an error escaping here would stop it all.
        except SotaError as exc:
            logger.error("Follow-up %s failed: %s", step, exc)
            await self.publish(ErrorEvent(str(exc)))
        except Exception as exc:
            logger.exception("Follow-up %s failed unexpectedly", step)
            await self.publish(ErrorEvent(f"Internal error: {exc}"))
        finally:
            if ticket is not None:
                self._turns.cancel(ticket)
            self.activity.end()

    async def _run(
        self, command: Command, *, ticket: int | None = None, quiet: bool = False
    ) -> Event | None:
        if logger.isEnabledFor(logging.DEBUG):  # built only when logged: on every poll and `ls`
            logger.debug("Running command: %s", _describe(command))
        try:
            event = await self._dispatch(command, ticket)
        except AuthError as exc:
            logger.error("HTTP authorization failed: %s", exc)
            event = NotAuthenticated()
        except SotaError as exc:
            event = ErrorEvent(str(exc))
        except Exception as exc:  # a bug must not kill the daemon (2016 bug 29)
            logger.exception("Command %s failed unexpectedly", command)
            event = ErrorEvent(f"Internal error: {exc}")
        if not quiet:
            self._log_outcome(command, event.event if isinstance(event, _Echo) else event)
        if isinstance(event, _Echo):
            return event.event
        if event is not None:
            await self.publish(event)
        return event

    def _log_outcome(self, command: Command, event: Event | None) -> None:
        """An ``Error`` at WARN, one line; the same failure again at DEBUG until it works."""
        key = command.name
        if not isinstance(event, ErrorEvent):
            self._failing.pop(key, None)
            return
        text = one_line(event.text)
        level = logging.DEBUG if self._failing.get(key) == text else logging.WARNING
        self._failing[key] = text
        logger.log(level, "%s failed: %s", _describe(command, 100), text)

    async def publish(self, event: Event) -> None:
        """Hand an event to every gateway, then schedule what it causes."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Event: %s", encode_event(event).decode())
        for subscriber in self._s.subscribers:
            try:
                await subscriber(event)
            except Exception:
                logger.exception("An event subscriber failed on %s", event)
        if isinstance(event, NotAuthenticated):
            if self._auth_retry_scheduled:
                # One retry chain is enough: a chain per refused command (each poll adds one)
                # would multiply the token requests while the credentials are bad.
                return
            # The backend waits (backoff) before each token request after a failure, so this
            # chain is never the 2016 tight re-authentication loop (bug 26).
            self._auth_retry_scheduled = True
            logger.debug("Authenticating again")
        for step in follow_ups(
            event,
            package_manager=self._s.package_manager is not None,
            system_info=self._s.system_info is not None,
        ):
            self.submit(step)

    async def _dispatch(self, command: Command, ticket: int | None) -> Event | _Echo | None:
        backend = self._s.backend
        if isinstance(command, Shutdown):
            self._s.shutdown()
            return None
        if isinstance(command, Authenticate):
            return await self._authenticate()
        update_id = command_update_id(command)
        if update_id is not None:
            check_update_id(update_id)  # it becomes a file name and a URL path segment
        if isinstance(command, SendInstallProgress):  # local: neither Core nor a token
            return take_install_progress(self._s.journal, command)
        if isinstance(command, SendRebootNeeded):  # local too
            return take_reboot_needed(self._s.journal, command)
        if backend.auth_configured and not backend.authenticated:
            await self._authentication_settled()
            # A report goes on regardless: the backend fetches a token first, and a report it
            # cannot send is kept in the journal and retried, never lost.
            if not backend.authenticated and not isinstance(command, SendUpdateReport):
                return NotAuthenticated()
        match command:
            case GetUpdateRequests():
                requests = self._admissible(await backend.get_update_requests())
                self._log_update_list(requests)
                if not requests:
                    return NoUpdateRequests()
                return UpdatesReceived(tuple(requests))
            case ListInstalledPackages():
                return FoundInstalledPackages(tuple(await self._installed_packages()))
            case ListSystemInfo():
                return FoundSystemInfo(await self._system_info())
            case SendInstalledPackages(packages=packages):
                await backend.send_installed_packages(packages)
                logger.info("Sent the list of %d installed packages to Core", len(packages))
                return InstalledPackagesSent()
            case SendInstalledSoftware(software=software):
                await backend.send_installed_software(software)  # over RVI; nothing over HTTP
                logger.info(
                    "Sent the installed software (%d packages, %d firmwares)",
                    len(software.packages),
                    len(software.firmwares),
                )
                return InstalledSoftwareSent()
            case SendSystemInfo():
                info = await self._system_info()
                await backend.send_system_info(info)
                logger.info("Sent the system information to Core (%d characters)", len(info))
                return SystemInfoSent()
            case SendUpdateReport(report=report):
                return await self._s.reports.send(report)
            case StartDownload(update_id=update_id):
                return await self._download(update_id, ticket)
            case StartInstall(update_id=update_id):
                return await self._install(update_id)
        raise SotaError(f"unsupported command {command.name}")

    def _admissible(self, requests: Sequence[UpdateRequest]) -> list[UpdateRequest]:
        """Core's list, in ``installPos`` order, without unusable ids, at most
        :data:`MAX_UPDATES_PER_POLL` long. Each problem is logged once, not at every poll."""
        usable = []
        for request in sorted(requests, key=lambda r: r.install_pos):
            problem = id_problem(request.request_id)
            if problem is None:
                usable.append(request)
            else:
                shown = shown_id(request.request_id)
                self._warn_once(f"id:{shown}", "Ignoring update %s from Core: %s", shown, problem)
        if len(usable) > MAX_UPDATES_PER_POLL:
            if not self._over_cap:
                logger.warning(
                    "Core lists %d updates; handling the first %d (by installPos) now and the "
                    "rest once these are done",
                    len(usable),
                    MAX_UPDATES_PER_POLL,
                )
            self._over_cap = True
            return usable[:MAX_UPDATES_PER_POLL]
        self._over_cap = False
        return usable

    def _log_update_list(self, requests: Sequence[UpdateRequest]) -> None:
        """One INFO line when Core's list of updates changes; DEBUG while it stays the same."""
        listed = [(r.request_id, r.status.value) for r in requests]
        level = logging.DEBUG if listed == self._listed else logging.INFO
        self._listed = listed
        if not requests:
            logger.log(level, "Core lists no updates")
            return
        shown = ", ".join(
            f"{r.request_id} ({r.package_id.name} {r.package_id.version}, {r.status.value})"
            for r in requests[:3]
        )
        more = f", and {len(requests) - 3} more" if len(requests) > 3 else ""
        count = f"{len(requests)} update" + ("s" if len(requests) > 1 else "")
        logger.log(level, "Core lists %s: %s%s", count, one_line(shown, 600), more)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key in self._warned:
            return
        if len(self._warned) >= _WARNED_IDS_LIMIT:
            self._warned.clear()
        self._warned.add(key)
        logger.warning(message, *args)

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
        # After failed attempts the backend's backoff applies: wait it out here, where other
        # commands need not wait for us, rather than while marked as authenticating.
        await backend.token_backoff()
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
        """Whether this update is being downloaded or installed (or waits to be) right now."""
        return update_id in self._downloads or update_id in self._installing

    def _outbox(self, event: Event) -> tuple[str, bytes] | None:
        entry = self._s.outbox_entry
        return None if entry is None else entry(event)

    async def _download(self, update_id: str, ticket: int | None) -> Event | _Echo:
        while (running := self._downloads.get(update_id)) is not None:
            if ticket is not None:
                self._turns.cancel(ticket)  # joining: no slot of our own
                ticket = None
            logger.info("Update %s is already being downloaded; waiting for it", update_id)
            await running.done.wait()
            if running.outcome is not None:
                return _Echo(running.outcome)
        shared = self._downloads[update_id] = _SharedDownload()
        try:
            async with self._turns.turn(ticket):
                shared.outcome = await self._download_now(update_id)
            return shared.outcome
        finally:
            del self._downloads[update_id]
            shared.done.set()

    async def _download_now(self, update_id: str) -> Event:
        journal = self._s.journal
        image = _image_path(self._s.packages_dir, update_id)
        async with self._holding(update_id):
            again = await self._hand_over_again(update_id, image)
            if again is not None:
                return again
            journal.begin_download(update_id, image)
            if (package := self._packages.get(update_id)) is not None:
                self._name_package(update_id, package, None)
            record = journal.download(update_id)
            resume = None
            if record is not None and record.size and record.sha256:
                resume = Checkpoint(record.size, record.sha256)
            await self.publish(DownloadingUpdate(update_id))

            def checkpoint(point: Checkpoint) -> None:
                journal.download_checkpoint(update_id, point.size, point.sha256)

            try:
                result = await self._s.backend.download(
                    update_id,
                    self._s.packages_dir,
                    progress=_ProgressLog(update_id, journal, self._s.progress),
                    max_size=self._s.max_download_size,
                    resume=resume,
                    checkpoint=checkpoint,
                )
            except AuthError:
                raise
            except DownloadError as exc:
                remove_partial(image)  # over for good: nothing will resume it
                failed = DownloadFailed(update_id, str(exc))
                report = UpdateReport.single(update_id, ResultCode.GENERAL_ERROR, str(exc))
                journal.fail_download(
                    update_id, str(exc), report=encode_report(report), event=self._outbox(failed)
                )
                return failed
            complete = self._complete(update_id, result.path, result.size, result.sha256)
            journal.finish_download(
                update_id, result.size, result.sha256, event=self._outbox(complete)
            )
            logger.info(
                "Downloaded update %s: %d bytes, sha256 %s", update_id, result.size, result.sha256
            )
            return complete

    async def _hand_over_again(self, update_id: str, image: str) -> Event | None:
        """``DownloadComplete`` again, without downloading, if the complete image is still
        there as the journal recorded it (size and SHA-256 checked), so an SWLM that lost
        the event can be handed it again with ``StartDownload``."""
        record = self._s.journal.download(update_id)
        if record is None or record.state is not DownloadState.COMPLETE or record.sha256 is None:
            return None
        intact = await anyio.to_thread.run_sync(image_is_intact, image, record.size, record.sha256)
        if not intact:
            logger.info(
                "The image of update %s (%s) is gone or changed; downloading it again",
                update_id,
                image,
            )
            return None
        complete = self._complete(update_id, image, record.size, record.sha256)
        self._s.journal.finish_download(
            update_id, record.size, record.sha256, event=self._outbox(complete)
        )
        logger.info("Update %s is already downloaded; handing it over again", update_id)
        return complete

    def _complete(self, update_id: str, image: str, size: int, sha256: str) -> DownloadComplete:
        """The ``DownloadComplete`` of a complete image, with the package Core named for it
        (the journal has it from Core's list, see :meth:`_name_package`)."""
        return named_download_complete(
            self._s.journal,
            update_id,
            image,
            size=size,
            sha256=sha256,
            metadata=self._s.event_metadata,
        )

    async def _install(self, update_id: str) -> Event:
        manager = self._s.package_manager
        if manager is None:
            raise SotaError(
                "Package error: StartInstall needs a package manager, "
                'but device.package_manager is "off"'
            )
        self._installing.add(update_id)
        try:
            async with self._holding(update_id), self._install_lock:
                return await self._install_now(manager, update_id)
        finally:
            self._installing.discard(update_id)

    async def _install_now(self, manager: PackageManagerLike, update_id: str) -> Event:
        path = _image_path(self._s.packages_dir, update_id)
        if not await anyio.Path(path).is_file():
            raise SotaError(f"Package error: no downloaded image for update {update_id}")
        kind = getattr(manager, "kind", "")
        self._s.journal.begin_install(update_id, holder=f"the package manager {kind}".rstrip())
        logger.info("Installing update %s from %s", update_id, path)
        await self.publish(InstallingUpdate(update_id))
        outcome = await manager.install(path)
        kill_point("install.done")  # installed, and the journal does not know yet
        report = UpdateReport.single(update_id, outcome.code, outcome.text)
        self._s.journal.finish_install(update_id, encode_report(report))
        if not outcome.ok:
            logger.warning(
                "The install of update %s failed: %s %s",
                update_id,
                outcome.code.name,
                one_line(outcome.text),
            )
            return InstallFailed(report)
        logger.info("Installed update %s", update_id)
        try:
            os.unlink(path)
        except OSError as exc:
            logger.warning("couldn't remove installed image %s: %s", path, exc)
        return InstallComplete(report)

    async def _resolve(self, step: ResolveUpdate, ticket: int | None) -> None:
        """Take an update one step forward from the state the journal has for it."""
        update_id, request = step.update_id, step.request
        if self._busy(update_id):
            return
        check_update_id(update_id)
        record = self._s.journal.update(update_id)
        state = None if record is None else record.state
        if request is not None and record is not None:
            self._name_package(update_id, request.package_id, record.package)
        match state:
            case None:
                if request is not None:
                    await self._resolve_unknown(request, ticket)
            case UpdateState.DOWNLOADING:
                await self._run(StartDownload(update_id), ticket=ticket)
            case UpdateState.DOWNLOADED if self._s.package_manager is not None:
                await self._run(StartInstall(update_id))
            case UpdateState.DOWNLOADED:
                # Handed over through the outbox; hand it over again only if that event is
                # gone (an outbox overflow, or the events gateway was off at the time).
                if self._s.outbox_entry is not None and not self._s.journal.has_pending_event(
                    update_id, DownloadComplete.name
                ):
                    await self._run(StartDownload(update_id), ticket=ticket)
            case UpdateState.INSTALLING:
                # Cut short by a crash: the image is removed only once the report is queued.
                logger.warning(
                    "The install of update %s was interrupted; running it again", update_id
                )
                await self._run(StartInstall(update_id))
            case UpdateState.REPORTED | UpdateState.SET_ASIDE if request is not None:
                self._warn_once(
                    f"listed:{update_id}",
                    "Core still lists update %s as %s, but the journal has it %s; leaving it",
                    update_id,
                    request.status,
                    state,
                )
            case _:
                return  # delivered (the SWLM reports) or report pending (the report sender)

    def _name_package(
        self, update_id: str, package: Package, known: tuple[str, str] | None
    ) -> None:
        """Remember the package Core names for an update, once (for ``sota_client status``)."""
        if known != (package.name, package.version):
            self._s.journal.name_package(update_id, package.name, package.version)

    async def _resolve_unknown(self, request: UpdateRequest, ticket: int | None) -> None:
        """An update the journal does not know: the 2016 rules.

        Pending: download it. InFlight with a package manager: report OK if the package is
        installed, else download again. InFlight without one (an external SWLM): 2016 did
        nothing, so an update whose event was lost stayed stuck (bug 32); download it again.
        """
        update_id = request.request_id
        if request.status is UpdateRequestStatus.IN_FLIGHT and self._s.package_manager:
            try:
                installed = request.package_id in await self._installed_packages()
            except SotaError as exc:
                logger.error("couldn't list installed packages: %s", exc)
                installed = False
            if installed:
                report = UpdateReport.single(update_id, ResultCode.OK, "")
                await self._run(SendUpdateReport(report))
                return
        self._packages[update_id] = request.package_id  # named once the journal knows it
        try:
            await self._run(StartDownload(update_id), ticket=ticket)
        finally:
            self._packages.pop(update_id, None)


def _describe(command: Command, limit: int = 200) -> str:
    """The command as its text form where it has one (``StartDownload u1``), for the log."""
    try:
        text = format_command(command)
    except ProtocolError:
        text = repr(command)
    return one_line(text, limit)


def _image_path(packages_dir: str, update_id: str) -> str:
    return os.path.join(packages_dir, update_id)


class _ProgressLog:
    """Logs download progress every 10 % (or every 8 MiB when the size is unknown), shows it
    in ``systemctl status`` and records it in the journal for ``sota_client status``."""

    def __init__(
        self,
        update_id: str,
        journal: Journal,
        listener: Callable[[str, int, int | None], None] | None = None,
    ) -> None:
        self._update_id = update_id
        self._journal = journal
        self._listener = listener
        self._next = 0.0

    def __call__(self, received: int, total: int | None) -> None:
        if self._listener is not None:
            self._listener(self._update_id, received, total)
        if total:
            share = received / total
            if share >= self._next or received == total:
                percent = int(share * 100)
                self._journal.download_progress(self._update_id, received, total)
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
            self._journal.download_progress(self._update_id, received, None)
            logger.info("Downloading %s: %d bytes", self._update_id, received)
            self._next = received + 8 * 2**20
