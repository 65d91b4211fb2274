"""The RVI gateway (``gateway.rvi``): updates pushed in chunks by the RVI backend, reports back.

The daemon registers its six ``/sota/*`` services with the RVI node at ``rvi.client`` (retried
with backoff, never holding up start-up: 2016 panicked if the node was down) and serves them on
``network.rvi_edge_server``. As in 2016 (reference §8.5), downloads, update reports and the
installed software then go over RVI instead of HTTP: :class:`RviBackend` puts those three
in front of Core's HTTP API. A download asks the backend to start a transfer, and ends when the
transfer's chunks are joined in index order and pass the SHA-1 that ``/sota/start`` announced.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from swlm_sdk import Backoff
from swlm_sdk.protocol import (
    Command,
    Event,
    InstalledSoftware,
    InstalledSoftwareNeeded,
    Package,
    SendInstalledSoftware,
    StartDownload,
    UpdateReport,
    UpdateRequest,
)

from .._download import Checkpoint
from .._errors import (
    BackendError,
    DownloadError,
    DownloadErrorKind,
    SotaError,
    TransportError,
    one_line,
)
from .._store import Journal
from .._warn_once import WarnOnce
from ._local_http import (
    Connection,
    LocalServer,
    Request,
    RequestError,
    host_allowed,
    origin_allowed,
    own_origins,
)
from ._rvi_rpc import (
    HANDLER_ERROR,
    INVALID_REQUEST,
    MAX_REQUEST_BYTES,
    SERVICES,
    Abort,
    BackendServices,
    Chunk,
    Finish,
    GetPackages,
    LocalServices,
    Message,
    Notify,
    RpcError,
    RviReplyError,
    ServicesAvailable,
    Start,
    chunk_received,
    download_started,
    encode_error,
    encode_message,
    encode_register,
    encode_result,
    installed_software,
    parse_edge_request,
    parse_message_reply,
    parse_register_reply,
    update_report,
)
from ._rvi_transfers import JoinedImage, TransferError, Transfers
from ._socket import Execute

__all__ = ["DEFAULT_IDLE_TIMEOUT", "RviBackend", "RviGateway"]

logger = logging.getLogger(__name__)

#: Seconds a download waits for the backend's next chunk when ``rvi.timeout`` is unset (2016
#: then waited for ever, so one transfer that never came held the download queue for good).
DEFAULT_IDLE_TIMEOUT = 300.0
MESSAGE_TIMEOUT = 60  # the "timeout" of each message to the node, seconds from now (2016)
READ_TIMEOUT = 10.0
_BACKEND_KEY = "rvi_backend_services"  # the backend's services from /sota/notify, kept
_JSON = "application/json"
_BACKOFF = Backoff(1.0, 60.0)  # between registration attempts while the node is away

Post = Callable[[str, bytes], Awaitable[bytes]]


class _Daemon(msgspec.Struct, frozen=True):
    """What the gateway does with the daemon (see :meth:`RviGateway.serve`)."""

    execute: Execute
    submit: Callable[[Command], None]
    publish: Callable[[Event], Awaitable[None]]
    installed_software: Callable[[], Awaitable[InstalledSoftware]]


class _Waiter:
    """A download waiting for its transfer: woken by each chunk, ended by finish or abort."""

    def __init__(self) -> None:
        self.changed = anyio.Event()
        self.last_chunk = time.monotonic()
        self.received = 0
        self.image: JoinedImage | None = None
        self.error: str | None = None

    def wake(self) -> None:
        self.last_chunk = time.monotonic()
        self.changed.set()
        self.changed = anyio.Event()


class RviGateway:
    """Serves the edge, talks to the node, and downloads over RVI.

    ``post(url, body)`` sends JSON to the node and returns its answer (the Core backend's
    HTTP client). What the gateway does with the daemon is given to :meth:`serve`.
    """

    def __init__(
        self,
        *,
        node_url: str,
        edge_address: str,
        storage_dir: str,
        packages_dir: str,
        device: str,
        journal: Journal,
        post: Post,
        idle_timeout: float | None = None,
        max_download_size: int = 4 << 30,
        backoff: Backoff = _BACKOFF,
    ) -> None:
        self._node_url = node_url
        self._device = device
        self._journal = journal
        self._post = post
        self._daemon: _Daemon | None = None  # given to serve()
        self._packages_dir = packages_dir
        self._idle = idle_timeout if idle_timeout and idle_timeout > 0 else DEFAULT_IDLE_TIMEOUT
        self._backoff = backoff
        self._transfers = Transfers(storage_dir, max_total_bytes=max_download_size)
        self._server = LocalServer(
            edge_address,
            self._handle,
            name="rvi edge server",
            setting="network.rvi_edge_server",
            busy_body=(_JSON, encode_error(RpcError(HANDLER_ERROR, "Server busy", "", 0))),
        )
        self.local: LocalServices | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._unsolicited: dict[str, JoinedImage] = {}  # transfers nobody asked for, joined
        self._tg: TaskGroup | None = None
        self._warn = WarnOnce(logger)
        self.registered = anyio.Event()

    @property
    def port(self) -> int:
        """The edge server's port once serving (tests bind port 0)."""
        return self._server.port

    @property
    def backend(self) -> BackendServices | None:
        """The backend's services, from its last ``/sota/notify`` (kept in the journal)."""
        text = self._journal.setting(_BACKEND_KEY)
        if text is None:
            return None
        try:
            return msgspec.json.decode(text, type=BackendServices)
        except msgspec.DecodeError:
            return None

    # -- running ----------------------------------------------------------------------------

    async def serve(
        self,
        *,
        execute: Execute,
        submit: Callable[[Command], None],
        publish: Callable[[Event], Awaitable[None]],
        installed_software: Callable[[], Awaitable[InstalledSoftware]],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the edge; register with the node meanwhile; drop idle transfers.

        ``execute`` runs a command; ``submit`` queues one; ``publish`` hands an event to the
        gateways (``UpdateAvailable`` goes to the SWLM over D-Bus); ``installed_software()``
        asks the SWLM (or the package manager) what is installed.
        """
        self._daemon = _Daemon(execute, submit, publish, installed_software)
        await anyio.to_thread.run_sync(self._transfers.clear_stale)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._server.serve)
            task_status.started()
            tg.start_soon(self._register)
            tg.start_soon(self._expire_forever)

    async def _register(self) -> None:
        """Register every service, in the 2016 order, retrying while the node is away."""
        edge = self._server.url
        names: dict[str, str] = {}
        failures = 0
        for service in SERVICES:
            while service not in names:
                body = encode_register(time.time_ns(), edge, service)
                try:
                    names[service] = parse_register_reply(await self._post(self._node_url, body))
                except Exception as exc:  # the node is away; a bug is logged and retried too
                    if not isinstance(exc, SotaError):
                        logger.exception("Registering %s with the RVI node failed", service)
                    failures += 1
                    delay = self._backoff.delay(failures)
                    self._warn(
                        "register",
                        "couldn't register %s with the RVI node at %s (%s); trying again in %.0f s",
                        service,
                        self._node_url,
                        one_line(str(exc)),
                        delay,
                    )
                    await self._backoff.wait(failures)
        self.local = LocalServices(
            start=names["/sota/start"],
            abort=names["/sota/abort"],
            chunk=names["/sota/chunk"],
            finish=names["/sota/finish"],
            getpackages=names["/sota/getpackages"],
        )
        self._warn.reset()
        logger.info(
            "Registered %d services with the RVI node at %s (edge %s)",
            len(names),
            self._node_url,
            edge,
        )
        self.registered.set()

    async def _expire_forever(self) -> None:
        while True:
            await anyio.sleep(1.0)
            try:
                expired = await anyio.to_thread.run_sync(self._transfers.expire, self._idle)
            except Exception:  # a disk error removing chunks: try again next time
                self._warn("expire", "couldn't drop an idle RVI transfer", exc_info=None)
                logger.debug("Dropping idle RVI transfers failed", exc_info=True)
                continue
            for update_id in expired:
                self._end(update_id, f"no chunk from the RVI backend for {self._idle:g} s")

    # -- to the backend ---------------------------------------------------------------------

    async def _send(self, service: str, body: bytes) -> None:
        """One message to a backend service through the node.

        :raises TransportError: the node is away or refused it (kept reports are retried).
        """
        message = encode_message(time.time_ns(), service, body, int(time.time()) + MESSAGE_TIMEOUT)
        try:
            parse_message_reply(await self._post(self._node_url, message))
        except TransportError:
            raise
        except (RviReplyError, BackendError) as exc:
            # Whatever the node says (an error object, a 4xx, a 401) is about the node, never
            # Core's refusal of a report: the message is kept and sent again.
            raise TransportError(
                f"the RVI node refused a message to {service}: {exc}", maybe_delivered=False
            ) from None

    def _backend_services(self, what: str) -> BackendServices:
        services = self.backend
        if services is None:
            raise TransportError(
                f"couldn't send {what} over RVI: the backend has not announced its services "
                "yet (no /sota/notify came)",
                maybe_delivered=False,
            )
        return services

    async def send_update_report(self, report: UpdateReport) -> None:
        """A report to the backend's ``report`` service."""
        services = self._backend_services("the report")
        await self._send(services.report, update_report(self._device, report))

    async def send_installed_software(self, software: InstalledSoftware) -> None:
        """The installed software to the backend's ``packages`` service, in the form the 2016
        server decodes (``device``, ``installed_software``)."""
        services = self._backend_services("the installed software")
        await self._send(services.packages, installed_software(self._device, software))

    async def download(
        self,
        update_id: str,
        packages_dir: str,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        max_size: int = 0,
        resume: Checkpoint | None = None,
        checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> JoinedImage:
        """Ask the backend for the update and wait for its transfer.

        :raises DownloadError: the transfer failed its checks, was aborted, or stopped
            sending chunks for the idle timeout.
        :raises TransportError: the node or the backend cannot be reached yet (the update
            stays downloading and is asked for again later).
        """
        del resume, checkpoint, max_size  # a pushed transfer starts over; sizes: Transfers
        image = self._unsolicited.pop(update_id, None)
        if image is not None:
            return image
        waiter = self._waiters.setdefault(update_id, _Waiter())
        try:
            if self.local is None:  # registering still (the node may be starting too)
                with anyio.move_on_after(self._idle):
                    await self.registered.wait()
            if self.local is None:
                raise TransportError(
                    f"couldn't ask for update {update_id} over RVI: the daemon is not "
                    f"registered with the RVI node at {self._node_url} yet",
                    maybe_delivered=False,
                )
            services = self._backend_services("the download request")
            await self._send(services.start, download_started(self._device, update_id, self.local))
            logger.info("Asked the RVI backend for update %s", update_id)
            while waiter.image is None and waiter.error is None:
                changed = waiter.changed
                remaining = waiter.last_chunk + self._idle - time.monotonic()
                if remaining <= 0:
                    await anyio.to_thread.run_sync(self._transfers.abort, update_id)
                    raise DownloadError(
                        DownloadErrorKind.NETWORK,
                        f"no chunk of update {update_id} from the RVI backend within "
                        f"{self._idle:g} s",
                        update_id=update_id,
                        transient=False,
                    )
                with anyio.move_on_after(remaining):
                    await changed.wait()
                if progress is not None and waiter.received:
                    progress(waiter.received, None)
            if waiter.error is not None:
                raise DownloadError(
                    DownloadErrorKind.IO, waiter.error, update_id=update_id, transient=False
                )
            assert waiter.image is not None
            return waiter.image
        finally:
            if self._waiters.get(update_id) is waiter:
                del self._waiters[update_id]

    def _end(self, update_id: str, error: str) -> None:
        waiter = self._waiters.get(update_id)
        if waiter is not None:
            waiter.error = error
            waiter.wake()
        logger.warning("The RVI transfer of update %s was dropped: %s", update_id, error)

    # -- the edge server --------------------------------------------------------------------

    async def _handle(self, conn: Connection) -> None:
        while True:
            try:
                request = await conn.read_request(max_body=MAX_REQUEST_BYTES, timeout=READ_TIMEOUT)
            except RequestError as exc:
                self._warn(f"request {exc.status}", "Rejected an RVI request: %s", exc.message)
                error = RpcError(INVALID_REQUEST, "Invalid Request", exc.message, 0)
                await conn.respond(exc.status, encode_error(error), content_type=_JSON, close=True)
                return
            if request is None:
                return
            status, body = await self._answer(request)
            await conn.respond(status, body, content_type=_JSON)

    async def _answer(self, request: Request) -> tuple[int, bytes]:
        origins = own_origins(self._server.host, self._server.port)
        # Only the RVI node talks to the edge: never a web page (which would send an Origin),
        # nor a name that resolves here by DNS rebinding.
        if not host_allowed(request, origins) or not origin_allowed(request, ()):
            self._warn("origin", "Refused an RVI request from a web page or a foreign Host")
            refused = "the RVI edge server takes requests from the RVI node only"
            return 403, encode_error(RpcError(INVALID_REQUEST, "Invalid Request", refused, 0))
        try:
            received = parse_edge_request(request.body)
            if isinstance(received, ServicesAvailable):
                return 200, encode_result(received.id)
            await self._on_message(received)
        except RpcError as exc:
            self._warn(f"rpc {exc.code}", "Refused an RVI message: %s %s", exc.message, exc.data)
            return 400, encode_error(exc)
        return 200, encode_result(received.id)

    async def _on_message(self, message: Message) -> None:
        parameter = message.parameter
        try:
            match parameter:
                case Notify(update=update, services=services):
                    self._journal.set_setting(_BACKEND_KEY, msgspec.json.encode(services).decode())
                    logger.info("The RVI backend announced update %s", update.update_id)
                    await self._serving().publish(update)
                case Start(update_id=update_id, checksum=checksum, chunkscount=count):
                    services = self._backend_services("the acknowledgement")
                    await anyio.to_thread.run_sync(
                        self._transfers.start, update_id, checksum, count
                    )
                    await self._ack(services, update_id, [])
                case Chunk(update_id=update_id, index=index, data=data):
                    services = self._backend_services("the acknowledgement")
                    try:
                        chunks = await anyio.to_thread.run_sync(
                            self._transfers.chunk, update_id, index, data
                        )
                    except TransferError as exc:
                        if update_id not in self._transfers.active():  # dropped: a bound
                            self._end(update_id, str(exc))
                        raise
                    waiter = self._waiters.get(update_id)
                    if waiter is not None:
                        waiter.received += len(data)
                        waiter.wake()
                    await self._ack(services, update_id, chunks)
                case Finish(update_id=update_id):
                    await self._finish(update_id)
                case GetPackages():
                    assert self._tg is not None  # messages arrive only while serving
                    self._tg.start_soon(self._send_packages)
                case Abort(update_id=update_id):
                    dropped = await anyio.to_thread.run_sync(self._transfers.abort, update_id)
                    # Also a download still waiting for its transfer to start.
                    waiting = list(self._waiters) if update_id is None else [update_id]
                    for aborted in dict.fromkeys([*dropped, *waiting]):
                        if aborted in dropped or aborted in self._waiters:
                            self._end(aborted, "the RVI backend aborted the transfer")
        except (SotaError, OSError) as exc:
            raise RpcError(
                HANDLER_ERROR,
                "Couldn't handle request",
                f"couldn't handle parameters: {exc}",
                message.id,
            ) from None

    async def _ack(self, services: BackendServices, update_id: str, chunks: Sequence[int]) -> None:
        await self._send(services.ack, chunk_received(self._device, update_id, chunks))

    async def _finish(self, update_id: str) -> None:
        destination = os.path.join(self._packages_dir, update_id)
        try:
            image = await anyio.to_thread.run_sync(
                self._transfers.finish_image, update_id, destination
            )
        except TransferError as exc:
            # Incomplete or corrupt: the download has failed, so nothing keeps the chunks.
            await anyio.to_thread.run_sync(self._transfers.abort, update_id)
            self._end(update_id, str(exc))
            raise
        waiter = self._waiters.get(update_id)
        if waiter is not None:
            waiter.image = image
            waiter.wake()
            return
        # Pushed without a download request (after a restart, say): take it all the same.
        self._unsolicited[update_id] = image
        logger.info("The RVI backend sent update %s unasked; taking it", update_id)
        self._serving().submit(StartDownload(update_id))

    async def _send_packages(self) -> None:
        daemon = self._serving()
        await daemon.publish(InstalledSoftwareNeeded())
        try:
            software = await daemon.installed_software()
        except SotaError as exc:
            logger.warning("couldn't tell the RVI backend what is installed: %s", exc)
            return
        except Exception:  # a bug in whoever answers: never the end of the gateway
            logger.exception("couldn't tell the RVI backend what is installed")
            return
        await daemon.execute(SendInstalledSoftware(software))

    def _serving(self) -> _Daemon:
        assert self._daemon is not None  # messages arrive only while serve() runs
        return self._daemon


class RviBackend:
    """Core's HTTP API with downloads, reports and the installed software going over RVI."""

    def __init__(self, core: _Core, rvi: RviGateway) -> None:
        self._core = core
        self.download = rvi.download
        self.send_update_report = rvi.send_update_report
        self.send_installed_software = rvi.send_installed_software

    @property
    def auth_configured(self) -> bool:
        return self._core.auth_configured

    @property
    def authenticated(self) -> bool:
        return self._core.authenticated

    async def authenticate(self) -> object:
        return await self._core.authenticate()

    async def token_backoff(self) -> None:
        await self._core.token_backoff()

    async def get_update_requests(self) -> list[UpdateRequest]:
        return await self._core.get_update_requests()

    async def send_installed_packages(self, packages: Sequence[Package]) -> None:
        await self._core.send_installed_packages(packages)

    async def send_system_info(self, text: str) -> None:
        await self._core.send_system_info(text)


class _Core(Protocol):
    """What :class:`RviBackend` takes from Core's backend (``CoreBackend``)."""

    @property
    def auth_configured(self) -> bool: ...
    @property
    def authenticated(self) -> bool: ...
    async def authenticate(self) -> object: ...
    async def token_backoff(self) -> None: ...
    async def get_update_requests(self) -> list[UpdateRequest]: ...
    async def send_installed_packages(self, packages: Sequence[Package]) -> None: ...
    async def send_system_info(self, text: str) -> None: ...
