"""``CoreSimulator``: the embedded Core as a context manager, with a synchronous Python API."""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import anyio.to_thread
import msgspec

from swlm_sdk.protocol import ClientCredentials, Package, UpdateRequestStatus

from ._app import SimApp
from ._auth import AuthSettings, TokenStore
from ._core_api import canonical_uuid
from ._faults import Fault
from ._models import (
    DeviceState,
    OperationResultRow,
    PackageInfo,
    PendingUpdateRequest,
    ReportRecord,
    RequestRecord,
)
from ._server import HttpServer
from ._state import CoreState
from ._store import PackageBlob

__all__ = ["CoreSimulator", "is_loopback"]

T = TypeVar("T")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class CoreSimulator:
    """A SOTA Core (device API, operator API, OAuth2 token endpoint) on a loopback port.

    Thread-based and synchronous, so sync tests and async tests on any event loop can drive
    it. Use it as a context manager::

        with CoreSimulator() as sim:
            sim.add_package("nano", "2.2.6", data=b"...")
            request_id = sim.queue_update(device, "nano", "2.2.6")
            ...  # run the client against sim.url
            sim.wait_for(lambda: sim.status(device, request_id) == "Finished")

    :param auth: turn on token auth for the device routes (off by default, as in the
        reference deployment).
    :param data_dir: where uploaded package bodies are stored (default: a private temporary
        directory, removed on stop). It is also a directory from which local files may be
        registered over HTTP, with ``path_roots``.
    :param allow_remote: allow a non-loopback ``host``.
    :param version_format: regex every package version must match (Core's
        ``packages.versionFormat``; the reference deployment uses ``.+``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auth: AuthSettings | None = None,
        data_dir: str | None = None,
        allow_remote: bool = False,
        path_roots: Sequence[str] = (),
        version_format: str = ".+",
        max_body: int = 16 * 1024 * 1024,
        max_upload: int = 8 * 1024 * 1024 * 1024,
        idle_timeout: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host!r}, which is not a loopback address "
                "(pass allow_remote=True, or --allow-remote on the command line)"
            )
        self._host = host
        self._port = port
        self._auth = auth
        self._own_data_dir = data_dir is None
        self._data_dir = data_dir
        self._path_roots = tuple(path_roots)
        self._limits = (max_body, max_upload, idle_timeout, max_connections)
        self._state = CoreState(version_format=version_format)
        self._server: HttpServer | None = None
        self._app: SimApp | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> CoreSimulator:
        """Bind and start serving; :attr:`url` is valid from now on."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        max_body, max_upload, idle_timeout, max_connections = self._limits
        if self._data_dir is None:
            self._data_dir = tempfile.mkdtemp(prefix="sota-sim-")
        app = SimApp(
            state=self._state,
            data_dir=self._data_dir,
            tokens=TokenStore(self._auth) if self._auth is not None else None,
            path_roots=(self._data_dir, *self._path_roots),
            max_body=max_body,
            max_upload=max_upload,
        )
        try:
            server = HttpServer(
                app,
                self._host,
                self._port,
                idle_timeout=idle_timeout,
                max_connections=max_connections,
            )
        except BaseException:
            self._remove_data_dir()
            raise
        host = self._host.strip("[]")
        if host in ("0.0.0.0", "::", "", "localhost"):
            host = "127.0.0.1"  # an address this machine can always reach the server on
        netloc = f"[{host}]" if ":" in host else host
        app.base_url = f"http://{netloc}:{server.port}"
        self._app, self._server = app, server
        server.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; state stays readable. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._app = None
        server.stop()
        self._state.discard_uploads()
        self._remove_data_dir()

    def _remove_data_dir(self) -> None:
        if self._own_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> CoreSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def _running(self) -> SimApp:
        if self._app is None:
            raise RuntimeError("the simulator is not started (use it as a context manager)")
        return self._app

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return self._running.base_url

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return self._server.port

    @property
    def auth(self) -> AuthSettings | None:
        return self._auth

    @property
    def client_credentials(self) -> ClientCredentials:
        """The client id and secret the token endpoint accepts.

        :raises RuntimeError: auth is off.
        """
        if self._auth is None:
            raise RuntimeError("auth is off: create the simulator with auth=AuthSettings()")
        return ClientCredentials(self._auth.client_id, self._auth.client_secret)

    # -- operator side ----------------------------------------------------------------------

    def add_package(
        self, name: str, version: str, data: bytes | None = None, path: str | None = None
    ) -> None:
        """Make a package downloadable, from bytes or from a local file served with sendfile.

        :raises ValueError: not exactly one of ``data`` and ``path``, a missing file, or a
            name or version Core would refuse.
        """
        if (data is None) == (path is None):
            raise ValueError("add_package takes exactly one of data and path")
        if path is not None:
            # Resolved now: the file is later opened with O_NOFOLLOW.
            path = os.path.realpath(path)
            if not os.path.isfile(path):
                raise ValueError(f"{path} is not a regular file")
            blob = PackageBlob(path=path, source="path")
        else:
            assert data is not None
            blob = PackageBlob(data=bytes(data))
        self._state.put_package(name, version, blob)

    def packages(self) -> list[PackageInfo]:
        return self._state.packages()

    def queue_update(self, device: str, name: str, version: str) -> str:
        """Queue a package for a device, as the operator route does; return the request id.

        :raises CoreError: 404 ``missing_package`` for a package never added.
        """
        return self._state.queue(canonical_uuid(device), name, version).request_id

    def cancel_update(self, device: str, request_id: str) -> None:
        """Pending -> Canceled; :raises CoreError: 404 when the update is not Pending."""
        self._state.cancel(canonical_uuid(device), canonical_uuid(request_id, "update"))

    def set_install_order(self, device: str, request_ids: Sequence[str]) -> None:
        """Order the device's Pending updates; all of them must be named."""
        ids = [canonical_uuid(r, "update") for r in request_ids]
        self._state.set_order(canonical_uuid(device), ids)

    # -- what the device did ----------------------------------------------------------------

    def updates(self, device: str) -> list[PendingUpdateRequest]:
        """All the device's updates, any status, in install order."""
        return self._state.updates(canonical_uuid(device))

    def pending(self, device: str) -> list[PendingUpdateRequest]:
        """The list the device would get now (without marking it seen)."""
        return self._state.pending(canonical_uuid(device), seen=False)

    def status(self, device: str, request_id: str) -> UpdateRequestStatus:
        """``Pending``, ``InFlight``, ``Canceled``, ``Failed`` or ``Finished`` (a str enum).

        :raises CoreError: 404 when the device has no such update.
        """
        return self._state.status(canonical_uuid(device), canonical_uuid(request_id, "update"))

    def reports(self, device: str) -> list[ReportRecord]:
        """Every report the device posted, accepted or refused, with the exact body."""
        return self._state.reports(canonical_uuid(device))

    def results(self, device: str) -> list[OperationResultRow]:
        """The stored operation results (the operator's ``GET .../results``)."""
        return self._state.results(canonical_uuid(device))

    def installed(self, device: str) -> list[Package] | None:
        """The last installed-package list the device sent; None if it never sent one."""
        return self._state.installed(canonical_uuid(device))

    def system_info(self, device: str) -> Any:
        """The decoded JSON of the last system_info; None if the device never sent one."""
        raw = self._state.system_info(canonical_uuid(device))
        return None if raw is None else msgspec.json.decode(raw)

    def device_state(self, device: str) -> DeviceState:
        """Everything known about the device, as ``GET /sim/devices/<uuid>`` returns it."""
        return self._state.device_state(canonical_uuid(device))

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received, oldest first (bounded to the last 10 000)."""
        return self._state.requests()

    # -- faults, tokens, waiting ------------------------------------------------------------

    def inject(self, fault: Fault | Mapping[str, Any]) -> None:
        """Arm a fault for the next ``fault.count`` matching requests.

        A mapping is read as the JSON fault spec of ``POST /sim/faults``.
        """
        armed: Fault = msgspec.convert(fault, Fault) if isinstance(fault, Mapping) else fault
        self._running.faults.add(armed)

    def clear_faults(self) -> None:
        self._running.faults.clear()

    def expire_tokens(self) -> int:
        """Expire every token issued so far; return how many there were."""
        tokens = self._running.tokens
        return tokens.revoke_all() if tokens is not None else 0

    def reset(self) -> None:
        """Forget packages, devices, reports, faults, tokens and the request log."""
        if self._app is not None:
            self._app.reset()
        else:
            self._state.reset()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Block until ``predicate()`` is truthy (re-checked on every state change).

        Do not call this from an event loop that also runs the client under test; use
        :meth:`wait_for_async` there.

        :raises TimeoutError: still falsy after ``timeout`` seconds.
        """
        return self._state.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Callable[[], T]) -> T:
        """:meth:`wait_for` for asyncio and trio tests: put it under ``anyio.fail_after``.

        The wait runs in a worker thread; when the caller is cancelled the thread is woken
        and ends at once.
        """
        abandoned = False

        def wait() -> T | bool:
            return self._state.wait_for(lambda: abandoned or predicate(), None)

        try:
            result = await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
        except BaseException:
            abandoned = True
            self._state.wake()
            raise
        return cast("T", result)
