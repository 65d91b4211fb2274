"""The handler framework: DownloadComplete -> the author's install handler -> a durable report."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeAlias, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from ._calls import call_user
from ._client import DEFAULT_TIMEOUT, EXTENSION_REJECTED, Client, Retry
from ._control import control_server, control_socket_path
from ._errors import (
    CommandFailed,
    CommandRejected,
    ConfigError,
    ConfirmRefused,
    InstallError,
    ProtocolError,
    SwlmError,
    TransportError,
)
from ._image import image_problem
from ._journal import REPORTABLE_ID, Journal, JournalEntry
from ._killpoints import kill_point
from ._listener import (
    DEFAULT_EVENT_TIMEOUT,
    DEFAULT_MAX_EVENT,
    EventListener,
    compile_kinds,
    event_name,
    kinds_match,
)
from ._paths import StrPath, check_socket_path, resolve_socket_paths
from ._progress import DEFAULT_PROGRESS_INTERVAL, ProgressReporter
from ._reboot import DEFAULT_BOOT_ID_FILE, AwaitingConfirmation, RebootNeeded, read_boot_id
from .protocol import (
    DownloadComplete,
    Event,
    Package,
    ResultCode,
    SendInstalledPackages,
    format_command,
)

__all__ = [
    "App",
    "BootHandler",
    "InstallHandler",
    "Outcome",
    "PackageList",
    "PackagesProvider",
    "RollbackHandler",
]

log = logging.getLogger("swlm_sdk.app")

Outcome: TypeAlias = ResultCode | int | str | tuple[ResultCode | int | str, str] | None
"""What an install handler returns: a code (``None`` means OK), or ``(code, text)``; or a
:class:`RebootNeeded`."""

InstallHandler: TypeAlias = Callable[
    [DownloadComplete], Outcome | RebootNeeded | Awaitable[Outcome | RebootNeeded]
]
"""A sync or async function that installs ``event.update_image``."""

Verdict: TypeAlias = Outcome
"""What the ``on_boot`` hook returns: a code or ``(code, text)``, but ``None`` is no verdict yet."""

BootHandler: TypeAlias = Callable[[AwaitingConfirmation], Verdict | Awaitable[Verdict]]
"""A sync or async function that decides, after a reboot, whether an update works."""

RollbackHandler: TypeAlias = Callable[[AwaitingConfirmation], Outcome | Awaitable[Outcome]]
"""A sync or async function that rolls back an update never confirmed; the report's outcome."""

PackageList: TypeAlias = Iterable[Package | tuple[str, str]]
"""Installed packages as :class:`Package` values or ``(name, version)`` pairs."""

PackagesProvider: TypeAlias = Callable[[], PackageList | Awaitable[PackageList]]
"""A sync or async function returning the installed packages."""

H = TypeVar("H", bound=InstallHandler)
B = TypeVar("B", bound=BootHandler)
R = TypeVar("R", bound=RollbackHandler)
P = TypeVar("P", bound=PackagesProvider)
F = TypeVar("F", bound=Callable[[Any], object])

_INTERRUPTED = "the install was interrupted: the SWLM stopped before it finished"
_MAX_TEXT = 1000


def _lone_swlm_error(group: BaseExceptionGroup[BaseException]) -> SwlmError | None:
    """The SwlmError inside nested one-exception groups (e.g. ListenerError), if that is all."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error if isinstance(error, SwlmError) else None


def _describe(event: Event) -> str:
    if isinstance(event, DownloadComplete):
        return f"DownloadComplete for update {event.update_id!r}"
    return event_name(event)


def _code_name(code: int | None) -> str:
    return ResultCode(code).name if code is not None else "no code"


def _outcome(value: object, what: str = "the install handler") -> tuple[ResultCode, str]:
    if value is None:
        return ResultCode.OK, ""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return ResultCode.parse(value[0]), value[1]
    if isinstance(value, int | str):
        return ResultCode.parse(value), ""
    raise TypeError(
        f"{what} returned {value!r}, not a ResultCode, its number or name, "
        "a (code, text) tuple or None"
    )


def _install_result(value: object) -> tuple[ResultCode, str] | RebootNeeded:
    return value if isinstance(value, RebootNeeded) else _outcome(value)


def _packages(listed: object) -> tuple[Package, ...]:
    if isinstance(listed, str | bytes) or not isinstance(listed, Iterable):
        raise TypeError(f"the installed-packages provider returned {listed!r}, not a list")
    out = []
    for item in listed:
        if isinstance(item, Package):
            out.append(item)
        elif isinstance(item, tuple | list) and len(item) == 2:
            out.append(Package(str(item[0]), str(item[1])))
        else:
            raise TypeError(f"installed package {item!r} is not a Package or (name, version)")
    return tuple(out)


class App:
    """An SWLM in a few lines: register an install handler, then ``app.run()``.

    ::

        app = App(state_dir="/var/lib/my-swlm")

        @app.on_download_complete
        def install(event: DownloadComplete) -> ResultCode:
            ...
            return ResultCode.OK

        app.run()

    The app creates the events socket, calls the handler for each ``DownloadComplete``
    (``concurrency`` at a time) and sends ``SendUpdateReport`` with its outcome. Reports are
    kept in a journal under ``state_dir`` until the daemon accepts them (retried with
    ``report_retry`` backoff, and re-sent at the next start). An update already handled is
    not installed again, and a report the daemon accepted is final: it is never sent again.
    A handler that returns :class:`RebootNeeded` has its report held back until the device has
    rebooted into the update and ``on_boot`` (or ``swlm confirm``, on the ``control_socket``,
    by default ``state_dir/control.socket``) confirmed it, or ``on_rollback`` undid it.

    Socket paths: ``commands_socket``/``events_socket``, else ``config`` (the daemon's TOML),
    else ``$SOTA_CONFIG``, else the 2016 defaults.

    :raises ConfigError: a socket path or the config file is unusable.
    """

    def __init__(
        self,
        state_dir: StrPath,
        *,
        commands_socket: StrPath | None = None,
        events_socket: StrPath | None = None,
        config: StrPath | None = None,
        socket_mode: int = 0o660,
        concurrency: int = 1,
        reply_timeout: float = DEFAULT_TIMEOUT,
        report_retry: Retry | None = None,
        shutdown_grace: float = 30.0,
        event_max_size: int = DEFAULT_MAX_EVENT,
        event_read_timeout: float = DEFAULT_EVENT_TIMEOUT,
        journal_keep: int = 1000,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        confirm_boots: int = 3,
        boot_id_file: StrPath = DEFAULT_BOOT_ID_FILE,
        control_socket: StrPath | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if confirm_boots < 1:
            raise ValueError(f"confirm_boots must be at least 1, got {confirm_boots}")
        paths = resolve_socket_paths(
            commands_socket=commands_socket, events_socket=events_socket, config=config
        )
        self.client = Client(paths.commands, reply_timeout=reply_timeout)
        """The client used for reports; also usable by handlers for other commands."""
        self.events_socket = paths.events
        self.state_dir = state_dir
        self.socket_mode = socket_mode
        self.concurrency = concurrency
        self.report_retry = report_retry or Retry(attempts=None, initial_delay=0.5, max_delay=60)
        self.shutdown_grace = shutdown_grace
        self.event_max_size = event_max_size
        self.event_read_timeout = event_read_timeout
        self.journal = Journal(state_dir, keep=journal_keep)
        self.progress_interval = progress_interval
        self.confirm_boots = confirm_boots
        self.boot_id_file = boot_id_file
        self.control_socket = (
            control_socket_path(state_dir)
            if control_socket is None
            else check_socket_path(control_socket, "control socket")
        )
        """Where ``swlm confirm`` reaches this App (mode 0600)."""
        #: False once the daemon answered SendInstallProgress as a 2016 client does.
        self.progress_taken = True
        self._progress_warned: set[str] = set()  # installs whose progress failed, warned of
        self._install: InstallHandler | None = None
        self._provider: PackagesProvider | None = None
        self._on_boot: BootHandler | None = None
        self._on_rollback: RollbackHandler | None = None
        self._boot_id: str | None = None  # this boot's, read at each start
        self._boot_problem = ""  # why it could not be read
        self._deciding: anyio.Lock | None = None  # one verdict at a time
        self._announce_refused = False  # a 2016 daemon: SendRebootNeeded is not sent again
        self._observers: list[tuple[tuple[frozenset[str] | None, bool], Callable[[Any], object]]]
        self._observers = []
        self._observed: list[type[Event] | str] = []
        self._active: set[str] = set()
        self._serving = False
        self._stop_requested = False
        self._closing = False
        self._packages_due = False
        self._dispatch_scope: anyio.CancelScope | None = None
        self._wake: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"App(events={self.events_socket!r}, commands={self.client.socket_path!r})"

    # -- registration -------------------------------------------------------------------

    def on_download_complete(self, handler: H) -> H:
        """Decorator: install each downloaded update with ``handler(event)``.

        The handler returns an :data:`Outcome` or raises :class:`InstallError`; any other
        exception is reported as ``INTERNAL_ERROR`` with its text, and the SWLM goes on. A
        sync handler runs in a worker thread and is never interrupted (shutdown waits for
        it); an async one is cancelled if it outlasts ``shutdown_grace`` at shutdown.

        When the event announces the image's ``size`` or ``sha256`` (a daemon with
        ``device.event_metadata``), the image is checked against them first; one that differs,
        is missing or cannot be read is reported ``VALIDATION_FAILED`` and the handler is not
        called.
        """
        if self._install is not None:
            raise ValueError("an install handler is already registered")
        self._install = handler
        return handler

    def installed_packages(self, provider: P) -> P:
        """Decorator: the installed-package list, sent at start-up and after each report."""
        if self._provider is not None:
            raise ValueError("an installed-packages provider is already registered")
        self._provider = provider
        return provider

    def on_boot(self, handler: B) -> B:
        """Decorator: after each reboot, decide whether each update that awaits its
        confirmation works (see :class:`RebootNeeded`): ``handler(pending)``.

        It runs once per boot and update, at start-up before the events socket opens, and
        again when ``swlm confirm`` asks (``pending.manual``). It returns ``OK`` (or
        ``(OK, text)``) once it has made the update permanent (marked the slot good), a
        failure code once it has rolled back (or found that the bootloader did), or ``None``:
        no verdict yet. An update with no verdict in ``confirm_boots`` boots is asked a last
        time at the start of the next one, then rolled back (:meth:`on_rollback`) if there is
        still none. An exception counts as no verdict, and is logged.

        It must be idempotent: a power cut after it acted and before its verdict is on disk
        makes it run again in the same boot. Without a hook, ``swlm confirm`` confirms.
        """
        if self._on_boot is not None:
            raise ValueError("an on_boot handler is already registered")
        self._on_boot = handler
        return handler

    def on_rollback(self, handler: R) -> R:
        """Decorator: roll back an update not confirmed within ``confirm_boots`` boots, at the
        start of the next one: ``handler(pending)`` (``pending.boots`` is ``confirm_boots``)
        returns the failure to report, e.g. ``(ResultCode.INSTALL_FAILED, "rolled back to slot
        a after 3 unconfirmed boots")``. Without it the App reports ``INSTALL_FAILED`` ("not
        confirmed after 3 boots") and rolls nothing back. It is also called, with
        ``pending.boots == 0``, for an install the SWLM was killed in, to undo what it may have
        done (that update is reported ``INTERNAL_ERROR``, the hook's text in brackets). Like
        :meth:`on_boot` it must be idempotent; if it raises, ``INTERNAL_ERROR`` is reported
        with its text.
        """
        if self._on_rollback is not None:
            raise ValueError("an on_rollback handler is already registered")
        self._on_rollback = handler
        return handler

    def on_event(self, *kinds: type[Event] | str) -> Callable[[F], F]:
        """Decorator: also call ``handler(event)`` for these event kinds (observers).

        Use it for ``DownloadFailed`` or events a newer daemon may send (pass
        :class:`~swlm_sdk.UnknownEvent` or a name). Return values are ignored; exceptions
        are logged.
        """
        if not kinds:
            raise ValueError("on_event needs at least one event kind")
        compiled = compile_kinds(kinds)

        def register(handler: F) -> F:
            self._observers.append((compiled, handler))
            self._observed.extend(kinds)
            return handler

        return register

    # -- running ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully: close the events socket, let running installs finish (up to
        ``shutdown_grace`` for async ones), deliver their reports, then return from
        :meth:`serve`. Call it from the event loop's thread.
        """
        self._stop_requested = True
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()

    def run(self, *, backend: str = "asyncio", handle_signals: bool = True) -> None:
        """Serve until SIGTERM or SIGINT (a second signal abandons running async installs).

        :raises ListenerError: the events socket cannot be created.
        :raises SwlmError: e.g. no install handler was registered.
        """
        try:
            anyio.run(self._main, handle_signals, backend=backend)
        except BaseExceptionGroup as group:
            raise _lone_swlm_error(group) or group from None

    async def _main(self, handle_signals: bool) -> None:
        if not handle_signals:
            await self.serve()
            return
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if self._stop_requested:
                            log.warning("%s again: abandoning the work in progress", name)
                            group.cancel_scope.cancel()
                            return
                        log.info("%s: stopping after the work in progress", name)
                        self.stop()

                group.start_soon(watch)
                await self.serve()
                group.cancel_scope.cancel()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the SWLM until :meth:`stop` is called or the caller cancels it.

        ``task_status.started()`` is called once the events socket listens, so
        ``await task_group.start(app.serve)`` returns when the daemon can deliver events.
        Pending reports from an earlier run are sent at start-up, and so is the package list
        if a provider is registered.

        :raises ListenerError: the events socket cannot be created.
        :raises SwlmError: no install handler was registered.
        """
        if self._install is None:
            raise SwlmError(
                "no install handler: decorate a function with @app.on_download_complete"
            )
        if self._serving:
            raise RuntimeError("this App is already serving")
        self._serving = True
        try:
            await self._serve(task_status)
        finally:
            self._serving = False
            self._stop_requested = False

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        """Serve, then shut down in this order: stop accepting events, let the running
        installs finish, flush their reports (each phase within ``shutdown_grace``). Reports
        are delivered all along, from start-up on."""
        await self._open_journal()
        self._begin_run()
        await self._check_boots()
        slots = anyio.Semaphore(self.concurrency)
        listener = EventListener(
            self.events_socket,
            kinds=[DownloadComplete, *self._observed],
            mode=self.socket_mode,
            max_size=self.event_max_size,
            read_timeout=self.event_read_timeout,
        )
        try:
            async with anyio.create_task_group() as reporting:
                reporting.start_soon(self._deliver_loop)
                async with anyio.create_task_group() as installs:
                    await self._accept_events_until_stopped(listener, slots, installs, task_status)
                    self._let_installs_finish(installs.cancel_scope)
                self._let_reports_flush(reporting.cancel_scope)
        except BaseExceptionGroup as group:
            raise _lone_swlm_error(group) or group from None
        log.info("SWLM stopped")

    async def _open_journal(self) -> None:
        """Open the journal; an install the last run left unfinished is rolled back (if there
        is an ``on_rollback`` hook) and reported as failed, since nobody knows how far it got."""
        await self.journal.open()
        for update_id in self.journal.interrupted():
            log.error("update %s: %s; reporting INTERNAL_ERROR", update_id, _INTERRUPTED)
            text = _INTERRUPTED
            if self._on_rollback is not None:  # undo what the install may have done
                pending = AwaitingConfirmation(update_id, _INTERRUPTED, boots=0)
                _, undone = await self._roll_back(pending)
                text = f"{_INTERRUPTED} ({undone})"[:_MAX_TEXT]
            await self.journal.record(update_id, ResultCode.INTERNAL_ERROR, text)

    def _begin_run(self) -> None:
        """Fresh per-run state; a :meth:`stop` that came before the start stops at once."""
        self._wake = anyio.Event()
        self._deciding = anyio.Lock()
        try:
            self._boot_id, self._boot_problem = read_boot_id(self.boot_id_file), ""
        except ConfigError as exc:
            self._boot_id, self._boot_problem = None, str(exc)
        self._closing = False
        self._packages_due = self._provider is not None
        self._dispatch_scope = anyio.CancelScope()
        if self._stop_requested:
            self._dispatch_scope.cancel()

    async def _accept_events_until_stopped(
        self,
        listener: EventListener,
        slots: anyio.Semaphore,
        installs: TaskGroup,
        task_status: TaskStatus[None],
    ) -> None:
        """Until :meth:`stop`, listen on the events socket and handle each event in
        ``installs``, ``concurrency`` at a time; then close the socket (shutdown phase 1), so
        that the daemon sees no more events are taken."""
        assert self._dispatch_scope is not None
        async with listener, control_server(self.control_socket, self.confirm):
            log.info(
                "SWLM ready: events on %s, reports to %s", listener.path, self.client.socket_path
            )
            task_status.started()
            with self._dispatch_scope:
                async for event in listener:
                    if slots.value == 0:
                        log.debug(
                            "%s waits: %d handler(s) running", _describe(event), self.concurrency
                        )
                    await slots.acquire()
                    installs.start_soon(self._dispatch, event, slots)

    def _let_installs_finish(self, installs: anyio.CancelScope) -> None:
        """Shutdown phase 2: the running installs get ``shutdown_grace`` to finish (their task
        group's exit waits for them); an async one still running then is cancelled, a sync
        one cannot be."""
        if self._active:
            log.info("events socket closed; waiting for %d install(s) to finish", len(self._active))
        installs.deadline = anyio.current_time() + self.shutdown_grace

    def _let_reports_flush(self, reporting: anyio.CancelScope) -> None:
        """Shutdown phase 3, once every install is over: the delivery loop makes one last pass
        for their reports, within another ``shutdown_grace`` (its task group's exit waits for
        it; what it cannot send stays in the journal for the next start)."""
        self._closing = True
        self._kick()
        reporting.deadline = anyio.current_time() + self.shutdown_grace

    # -- installing ---------------------------------------------------------------------

    async def _dispatch(self, event: Event, slots: anyio.Semaphore) -> None:
        try:
            if isinstance(event, DownloadComplete):
                await self._handle_download(event)
            for kinds, observer in self._observers:
                if kinds_match(kinds, event):
                    await self._observe(observer, event)
        finally:
            slots.release()

    async def _observe(self, observer: Callable[[Any], object], event: Event) -> None:
        try:
            await call_user(observer, event)
        except Exception:
            log.exception("event handler %r failed on %r", observer, event)

    async def _handle_download(self, event: DownloadComplete) -> None:
        update_id = event.update_id
        if not REPORTABLE_ID.fullmatch(update_id):
            log.error(
                "DownloadComplete for update id %r ignored: an id must be 1 to 1024 characters "
                "without blanks, line breaks or ';' to be reported",
                update_id,
            )
            return
        if update_id in self._active:
            log.warning("update %s is being installed already; ignoring the redelivery", update_id)
            return
        entry = self.journal.get(update_id)
        if entry is not None and entry.state == "sent":
            # The daemon accepted this report: it is final, and the daemon answers for it.
            log.info(
                "update %s was already reported (%s) and the daemon acknowledged it: "
                "ignoring the redelivery",
                update_id,
                _code_name(entry.code),
            )
            return
        if entry is not None and entry.state == "awaiting_reboot":
            log.info(
                "update %s is installed and awaits its confirmation after a reboot: ignoring "
                "the redelivery",
                update_id,
            )
            return
        if entry is not None and entry.state == "pending":
            log.info(
                "update %s was handled already (%s) and its report is not acknowledged yet: "
                "sending it, not installing",
                update_id,
                _code_name(entry.code),
            )
            self._kick()
            return
        self._active.add(update_id)
        try:
            # Before the journal says "installing": a crash or a stop during the check leaves
            # no trace, and the daemon's next delivery checks again (nothing was installed).
            problem = await self._check_image(event)
            if problem is not None:
                log.error(
                    "update %s: %s; reporting VALIDATION_FAILED without installing",
                    update_id,
                    problem,
                )
                with anyio.CancelScope(shield=True):
                    await self.journal.record(update_id, ResultCode.VALIDATION_FAILED, problem)
                self._kick()
                return
            await self.journal.mark_installing(update_id)
            log.info("installing update %s from %s", update_id, event.update_image)
            result = await self._run_install(event)
            kill_point("swlm.install.done")
            with anyio.CancelScope(shield=True):
                if isinstance(result, RebootNeeded):
                    await self._await_reboot(update_id, result.text[:_MAX_TEXT])
                else:
                    code, text = result
                    await self.journal.record(update_id, code, text)
                    log.info("update %s finished: %s %s", update_id, code.name, text)
            self._kick()
        finally:
            self._active.discard(update_id)

    async def _check_image(self, event: DownloadComplete) -> str | None:
        """Why the image is not the one the event announced (its ``size`` and ``sha256``, when
        the daemon sent them), or None. Hashed in a worker thread, which a stop abandons: it
        only reads."""
        if event.sha256 is None and event.size is None:
            return None
        try:
            problem = await anyio.to_thread.run_sync(image_problem, event, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            log.info(
                "check of update %s abandoned at shutdown; it is checked again if the daemon "
                "delivers it again",
                event.update_id,
            )
            raise
        if problem is None:
            kill_point("swlm.image.checked")
        return problem

    async def _run_install(self, event: DownloadComplete) -> tuple[ResultCode, str] | RebootNeeded:
        handler = self._install
        assert handler is not None
        kill_point("swlm.install.start")
        progress = ProgressReporter(
            functools.partial(self._send_progress, event.update_id), interval=self.progress_interval
        )
        try:
            async with progress.sending():  # report_progress() in the handler
                # A sync install cannot be interrupted half-way (think dpkg): let it finish.
                value = await call_user(handler, event, shield_thread=True)
            return _install_result(value)
        except InstallError as exc:
            return exc.code, exc.text
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self.journal.forget(event.update_id)
            log.warning(
                "install of update %s abandoned at shutdown; it is installed again if the "
                "daemon delivers it again",
                event.update_id,
            )
            raise
        except Exception as exc:
            log.exception("install handler failed for update %s", event.update_id)
            return ResultCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:_MAX_TEXT]
        finally:
            self._progress_warned.discard(event.update_id)

    async def _send_progress(self, update_id: str, percent: int, text: str) -> None:
        """One progress to the daemon; a failure costs the install nothing. A 2016 daemon has
        no such command: after its answer no more progress is sent."""
        if not self.progress_taken:
            return
        try:
            await self.client.send_install_progress(update_id, percent, text)
        except CommandRejected as exc:
            if exc.reply.startswith(EXTENSION_REJECTED):
                self.progress_taken = False
                log.info("the daemon does not take install progress (a 2016 client?); not sent")
            else:
                self._progress_failed(update_id, exc.reply)
        except (CommandFailed, ProtocolError, TransportError) as exc:
            self._progress_failed(update_id, str(exc))

    def _progress_failed(self, update_id: str, why: str) -> None:
        if update_id not in self._progress_warned:  # once an install
            self._progress_warned.add(update_id)
            log.warning("progress of update %s not taken (the install goes on): %s", update_id, why)

    # -- reboot, confirm, rollback --------------------------------------------------------

    async def _await_reboot(self, update_id: str, text: str) -> None:
        if self._boot_id is None:
            log.error(
                "update %s is installed and needs a reboot, but %s; reporting INTERNAL_ERROR",
                update_id,
                self._boot_problem,
            )
            problem = f"installed, needs a reboot, but {self._boot_problem}"
            await self.journal.record(update_id, ResultCode.INTERNAL_ERROR, problem[:_MAX_TEXT])
            return
        await self.journal.await_reboot(update_id, text, self._boot_id)
        log.info(
            "update %s is installed and counts once the device has rebooted into it and it is "
            "confirmed: %s",
            update_id,
            text or "(no text)",
        )

    async def _check_boots(self) -> None:
        """At start-up, for each update that awaits its confirmation: count this boot if it
        is a new one, then ask the ``on_boot`` hook, once a boot (the journal says if it was)."""
        awaiting = self.journal.awaiting_reboot()
        if self._boot_id is None:
            if awaiting:
                log.error(
                    "%d update(s) await their confirmation after a reboot, but %s: they stay "
                    "unconfirmed until the boot id can be read",
                    len(awaiting),
                    self._boot_problem,
                )
            else:
                log.warning("%s: an install that needs a reboot will fail", self._boot_problem)
            return
        for update_id, entry in awaiting:
            if entry.boot_id != self._boot_id:
                counted = await self.journal.count_boot(update_id, self._boot_id)
                assert counted is not None
                entry = counted
                log.info(
                    "update %s: boot %d of at most %d into it",
                    update_id,
                    entry.boots,
                    self.confirm_boots,
                )
            if not entry.checked:
                with contextlib.suppress(ConfirmRefused):  # e.g. not rebooted into yet
                    await self._decide(update_id, manual=False)

    async def confirm(self, update_id: str) -> str:
        """Confirm an update that awaits its confirmation after a reboot, as ``swlm confirm``
        does: the ``on_boot`` hook is asked with ``pending.manual`` set (without a hook, the
        update is confirmed). The text of the report to be sent, or:

        :raises ConfirmRefused: the update does not await a confirmation (unknown, already
            reported, not rebooted into yet) or the hook gave no verdict, with why.
        """
        return await self._decide(update_id, manual=True)

    async def _decide(self, update_id: str, *, manual: bool) -> str:
        """Journal what follows for one update: the report of the ``on_boot`` hook's verdict;
        or, once it went ``confirm_boots`` boots unconfirmed (known at the start of the next
        one, where the hook is asked a last time: it may have made the update permanent right
        before a power cut), the rollback's report; or that the hook was asked in this boot.
        The report's text; ConfirmRefused if there is no report."""
        if self._deciding is None:
            raise RuntimeError("the App is not serving")
        async with self._deciding:
            entry = self._awaiting(update_id)
            overdue = entry.boots > self.confirm_boots and not manual
            pending = AwaitingConfirmation(update_id, entry.text, entry.boots, manual)
            verdict = await self._ask_on_boot(pending)
            kill_point("swlm.boot.decided")
            with anyio.CancelScope(shield=True):
                if verdict is None and manual:
                    raise ConfirmRefused(
                        f"the on_boot handler gave no verdict for update {update_id}: see the "
                        "SWLM's log"
                    )
                if verdict is None and not overdue:
                    await self.journal.mark_checked(update_id)
                    log.warning(
                        "update %s is not confirmed in boot %d of %d; it is rolled back at the "
                        "start of boot %d unless confirmed before: swlm confirm --state-dir %s %s",
                        update_id,
                        entry.boots,
                        self.confirm_boots,
                        self.confirm_boots + 1,
                        self.journal.directory,
                        update_id,
                    )
                    raise ConfirmRefused("no verdict in this boot")
                unconfirmed = msgspec.structs.replace(pending, boots=self.confirm_boots)
                code, text = verdict or await self._roll_back(unconfirmed)
                text = text or entry.text
                await self.journal.record(update_id, code, text)
            log.info("update %s after its reboot: %s %s", update_id, code.name, text)
            self._kick()
            return text

    def _awaiting(self, update_id: str) -> JournalEntry:
        """The entry of an update that awaits its confirmation, else ConfirmRefused."""
        entry = self.journal.get(update_id)
        if entry is None:
            raise ConfirmRefused(f"update {update_id!r} is unknown to this SWLM")
        if entry.state in ("pending", "sent"):
            raise ConfirmRefused(
                f"update {update_id} is already reported: {_code_name(entry.code)} {entry.text}"
            )
        if entry.state == "installing":
            raise ConfirmRefused(f"update {update_id} is being installed")
        if entry.boots == 0:
            raise ConfirmRefused(
                f"update {update_id} is installed, but the device has not rebooted into it "
                "yet: reboot first"
            )
        return entry

    async def _ask_on_boot(self, pending: AwaitingConfirmation) -> tuple[ResultCode, str] | None:
        hook = self._on_boot
        if hook is None:
            return (ResultCode.OK, "") if pending.manual else None
        try:
            value = await call_user(hook, pending, shield_thread=True)
            return None if value is None else _outcome(value, "the on_boot handler")
        except InstallError as exc:
            return exc.code, exc.text
        except Exception:
            log.exception(
                "the on_boot handler failed for update %s: no verdict in this boot",
                pending.update_id,
            )
            return None

    async def _roll_back(self, pending: AwaitingConfirmation) -> tuple[ResultCode, str]:
        """The failure to report for an update never confirmed, from the ``on_rollback`` hook
        (a success it returns is reported ``INSTALL_FAILED``: the update did not stay)."""
        if pending.boots:
            reason = f"not confirmed after {pending.boots} boot{'' if pending.boots == 1 else 's'}"
        else:
            reason = "the install was interrupted"
        log.error("update %s: %s; rolling it back", pending.update_id, reason)
        hook = self._on_rollback
        if hook is None:
            return ResultCode.INSTALL_FAILED, reason
        try:
            value = await call_user(hook, pending, shield_thread=True)
            code, text = _outcome(value, "the on_rollback handler")
        except InstallError as exc:
            code, text = exc.code, exc.text
        except Exception as exc:
            log.exception("the on_rollback handler failed for update %s", pending.update_id)
            failed = f"{reason}, and the rollback failed: {type(exc).__name__}: {exc}"
            return ResultCode.INTERNAL_ERROR, failed[:_MAX_TEXT]
        if code in (ResultCode.OK, ResultCode.ALREADY_PROCESSED):
            code = ResultCode.INSTALL_FAILED
        return code, text or reason

    async def _announce(self, update_id: str, entry: JournalEntry) -> bool:
        """Tell the daemon that the update counts after a reboot (``SendRebootNeeded``), so
        that it holds back its report deadline; False if it must be tried again."""
        if not self._announce_refused:
            try:
                await self.client.send_reboot_needed(update_id, entry.text or None)
            except CommandRejected as exc:
                if not exc.reply.startswith(EXTENSION_REJECTED):
                    log.warning("the daemon refused SendRebootNeeded for %s: %s", update_id, exc)
                else:
                    self._announce_refused = True
                    log.info(
                        "the daemon does not take SendRebootNeeded (a 2016 client?): the "
                        "reports of updates that need a reboot follow after it"
                    )
            except CommandFailed as exc:
                log.warning("the daemon refused SendRebootNeeded for %s: %s", update_id, exc)
            except SwlmError as exc:
                log.warning("SendRebootNeeded for %s not delivered: %s; will retry", update_id, exc)
                return False
            kill_point("swlm.reboot.announced")
        with anyio.CancelScope(shield=True):
            await self.journal.mark_announced(update_id)
        return True

    # -- reporting ----------------------------------------------------------------------

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _wait_kick(self) -> None:
        assert self._wake is not None
        await self._wake.wait()
        self._wake = anyio.Event()

    async def _deliver_loop(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            # At shutdown, one last pass that starts after every install has finished.
            final = self._closing
            done = await self._deliver_once()
            if final:
                return
            if done:
                delays = None
                await self._wait_kick()
                continue
            if delays is None:
                delays = self.report_retry.delays()
            delay = next(delays, self.report_retry.max_delay)
            with anyio.move_on_after(delay):
                await self._wait_kick()

    async def _deliver_once(self) -> bool:
        """Say which updates await a reboot, send every pending report, then the package list
        if due; False if one failed."""
        for update_id, entry in self.journal.awaiting_reboot():
            if not entry.announced and not await self._announce(update_id, entry):
                return False
        for update_id, entry in self.journal.pending():
            code = ResultCode.parse(entry.code if entry.code is not None else 18)
            try:
                await self.client.send_update_report(update_id, code, entry.text or None)
            except SwlmError as exc:
                log.warning("report for update %s not delivered: %s; will retry", update_id, exc)
                return False
            kill_point("swlm.report.acknowledged")
            with anyio.CancelScope(shield=True):  # else a stop now sends it again at start-up
                await self.journal.mark_sent(update_id)
            log.info("report for update %s delivered: %s", update_id, code.name)
            self._packages_due = self._provider is not None
        if self._packages_due:
            return await self._send_packages()
        return True

    async def _send_packages(self) -> bool:
        provider = self._provider
        assert provider is not None
        try:
            packages = await call_user(provider, convert=_packages)
        except Exception:
            log.exception("the installed-packages provider failed; will retry")
            return False
        if not packages:
            log.warning("the installed-packages provider returned no packages: nothing sent")
            self._packages_due = False
            return True
        try:
            format_command(SendInstalledPackages(packages))
        except ProtocolError as exc:
            log.error("installed packages cannot be sent: %s", exc)
            self._packages_due = False
            return True
        try:
            await self.client.send_installed_packages(packages)
        except SwlmError as exc:
            log.warning("installed-package list not delivered: %s; will retry", exc)
            return False
        log.info("installed-package list delivered (%d packages)", len(packages))
        self._packages_due = False
        return True
