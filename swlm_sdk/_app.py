"""The handler framework: DownloadComplete -> the author's install handler -> a durable report."""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeAlias, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._calls import call_user
from ._client import DEFAULT_TIMEOUT, EXTENSION_REJECTED, Client, Retry
from ._errors import (
    CommandFailed,
    CommandRejected,
    InstallError,
    ProtocolError,
    SwlmError,
    TransportError,
)
from ._image import image_problem
from ._journal import REPORTABLE_ID, Journal
from ._killpoints import kill_point
from ._listener import (
    DEFAULT_EVENT_TIMEOUT,
    DEFAULT_MAX_EVENT,
    EventListener,
    compile_kinds,
    event_name,
    kinds_match,
)
from ._paths import StrPath, resolve_socket_paths
from ._progress import DEFAULT_PROGRESS_INTERVAL, ProgressReporter
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
    "InstallHandler",
    "Outcome",
    "PackageList",
    "PackagesProvider",
]

log = logging.getLogger("swlm_sdk.app")

Outcome: TypeAlias = ResultCode | int | str | tuple[ResultCode | int | str, str] | None
"""What an install handler returns: a code (``None`` means OK), or ``(code, text)``."""

InstallHandler: TypeAlias = Callable[[DownloadComplete], Outcome | Awaitable[Outcome]]
"""A sync or async function that installs ``event.update_image``."""

PackageList: TypeAlias = Iterable[Package | tuple[str, str]]
"""Installed packages as :class:`Package` values or ``(name, version)`` pairs."""

PackagesProvider: TypeAlias = Callable[[], PackageList | Awaitable[PackageList]]
"""A sync or async function returning the installed packages."""

H = TypeVar("H", bound=InstallHandler)
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


def _outcome(value: object) -> tuple[ResultCode, str]:
    if value is None:
        return ResultCode.OK, ""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return ResultCode.parse(value[0]), value[1]
    if isinstance(value, int | str):
        return ResultCode.parse(value), ""
    raise TypeError(
        f"the install handler returned {value!r}, not a ResultCode, its number or name, "
        "a (code, text) tuple or None"
    )


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
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
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
        #: False once the daemon answered SendInstallProgress as a 2016 client does.
        self.progress_taken = True
        self._progress_warned: set[str] = set()  # installs whose progress failed, warned of
        self._install: InstallHandler | None = None
        self._provider: PackagesProvider | None = None
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
        """Open the journal; an install the last run left unfinished is reported as failed,
        since nobody knows how far it got."""
        await self.journal.open()
        for update_id in self.journal.interrupted():
            log.error("update %s: %s; reporting INTERNAL_ERROR", update_id, _INTERRUPTED)
            await self.journal.record(update_id, ResultCode.INTERNAL_ERROR, _INTERRUPTED)

    def _begin_run(self) -> None:
        """Fresh per-run state; a :meth:`stop` that came before the start stops at once."""
        self._wake = anyio.Event()
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
        async with listener:
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
            code, text = await self._run_install(event)
            kill_point("swlm.install.done")
            with anyio.CancelScope(shield=True):
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

    async def _run_install(self, event: DownloadComplete) -> tuple[ResultCode, str]:
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
            return _outcome(value)
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
        """Send every pending report, then the package list if due; False if one failed."""
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
