"""Core and auth-server HTTP calls over one keep-alive HTTP/1.1 client (``_http1``).

The 2016 wire behaviour is kept (paths, bodies, headers, ``Url::join`` semantics, error texts)
and its bugs are fixed: chunked bodies are read, redirects are bounded, TLS is verified, tokens
are refreshed before they expire, and a call refused with 401/403 is retried once after
re-authenticating (with backoff, so bad credentials never cause a tight loop).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Self, TypeVar

import anyio
import msgspec

from swlm_sdk import Backoff
from swlm_sdk.protocol import InstalledSoftware, Package, UpdateReport, UpdateRequest

from ._download import (
    DEFAULT_MAX_DOWNLOAD_SIZE,
    Checkpoint,
    DownloadResult,
    Progress,
    StreamedResponse,
    download_update,
)
from ._errors import (
    AuthError,
    BackendError,
    DecodeError,
    InternalError,
    SotaError,
    TokenError,
    TransportError,
    error_for_status,
)
from ._ids import check_update_id
from ._url import Url

if TYPE_CHECKING:
    from ._http1 import HttpClient, Response

__all__ = ["AccessToken", "AuthSettings", "CoreBackend"]

logger = logging.getLogger(__name__)

_DEFAULT_BACKOFF = Backoff()

T = TypeVar("T")

JSON_LIMIT = 16 << 20
"""Largest JSON response accepted (the update list, a token)."""

ERROR_BODY_LIMIT = 64 << 10
"""Bytes of an error or ignored body kept (error texts) or drained (so the connection is reused)."""

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_JSON = "application/json"  # no charset: the 2016 client sent none ("to keep RVI happy")
_FORM = "application/x-www-form-urlencoded; charset=utf-8"
_TOKEN_BODY = b"grant_type=client_credentials"
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]*)`")
_ENCODER = msgspec.json.Encoder()
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_TOKEN_LENGTH = 16 << 10
"""Longest access token accepted (JWTs are a few KiB); it is sent in every request's header."""


class AuthSettings(msgspec.Struct, frozen=True):
    """The ``[auth]`` section: OAuth2 client-credentials server and credentials."""

    server: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"AuthSettings(server={self.server!r}, client_id={self.client_id!r})"


class AccessToken(msgspec.Struct, frozen=True):
    """The token response; all four fields are required, as in 2016 (extra fields ignored)."""

    access_token: str
    token_type: str  # ignored: the token is always sent as Bearer (2016)
    expires_in: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]  # an i32 in 2016
    scope: str

    def __repr__(self) -> str:  # the token is a secret: keep it out of logs and tracebacks
        return (
            f"AccessToken(access_token=<{len(self.access_token)} chars>, "
            f"token_type={self.token_type!r}, expires_in={self.expires_in}, scope={self.scope!r})"
        )


_TOKEN_DECODER = msgspec.json.Decoder(AccessToken)
_UPDATES_DECODER = msgspec.json.Decoder(list[UpdateRequest])


class CoreBackend:
    """The device side of Core's ``/api/v1/mydevice/<uuid>`` API and of the auth server.

    Use it as an async context manager; it owns one keep-alive HTTP/1.1 client. Every request
    carries ``User-Agent``; with ``auth`` set, Core requests carry ``Authorization: Bearer``
    (fetched lazily, refreshed before ``expires_in`` runs out), and never otherwise.

    :param core_url: ``core.server``; the API path replaces any path it has (2016 ``Url::join``).
    :param device_uuid: ``device.uuid``, percent-encoded into every path.
    :param auth: the ``[auth]`` section, or None for an open Core (no token, no Authorization).
    :param ca_file: ``device.certificates_path``: the CA bundle that verifies https servers. It
        must load when a configured URL is https; for plain http it only serves redirects to
        https, and the system's CAs are used when it is missing.
    :param timeout: seconds for each connect, read and write wait; a whole JSON call (all its
        redirects and its body) must finish within three times this.
    :param keepalive: seconds an idle connection is kept for the next call; the daemon makes it
        longer than ``polling_sec``, so that polls do not connect anew each time.
    :param backoff: waits between token requests after failures and between download retries.
    :param auth_attempts: token requests made to recover from a 401/403 before giving up.
    :param download_retries: retries of a download that makes no progress.
    :param clock: monotonic seconds, injectable for token-expiry tests.
    :raises SotaError: a URL is not absolute http(s), or an https URL is configured and the CA
        bundle cannot be loaded.
    """

    def __init__(
        self,
        core_url: str,
        device_uuid: str,
        *,
        auth: AuthSettings | None = None,
        ca_file: str | None = None,
        timeout: float = 20.0,
        keepalive: float = 60.0,
        user_agent: str | None = None,
        backoff: Backoff = _DEFAULT_BACKOFF,
        auth_attempts: int = 5,
        download_retries: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = _base_url(core_url, "core.server")
        self._device_path = "/api/v1/mydevice/" + _segment(device_uuid, "device.uuid")
        self._auth = auth
        self._token_url: Url | None = None
        self._basic = ""
        urls = [self._core]
        if auth is not None:
            self._token_url = _base_url(auth.server, "auth.server").join("/token")
            urls.append(self._token_url)
            credentials = f"{auth.client_id}:{auth.client_secret}".encode()
            self._basic = "Basic " + base64.b64encode(credentials).decode("ascii")
        if any(url.scheme == "https" for url in urls):
            context = _tls_context(ca_file, required=True)  # a bad bundle fails at start-up
            tls: Callable[[], ssl.SSLContext] = lambda: context  # noqa: E731
        else:  # only a redirect to https needs it: built then (loading CAs takes 30 ms)
            tls = lambda: _tls_context(ca_file, required=False)  # noqa: E731
        self._deadline = 3 * timeout
        self._backoff = backoff
        self._auth_attempts = max(1, auth_attempts)
        self._download_retries = download_retries
        self._clock = clock
        self._token: AccessToken | None = None
        self._refresh_at: float | None = None
        self._token_failures = 0
        self._token_retry_at: float | None = None  # no token request before this (backoff)
        self._token_lock = anyio.Lock()
        self._client_settings = (tls, timeout, keepalive, user_agent or _default_user_agent())
        self._http: HttpClient | None = None

    # -- lifecycle and state --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        if self._http is not None:
            await self._http.aclose()

    @property
    def _client(self) -> HttpClient:
        """The HTTP client, made (and h11 loaded) at the first request, not at start-up."""
        if self._http is None:
            from ._http1 import HttpClient

            tls, timeout, keepalive, user_agent = self._client_settings
            # No proxy or CA settings come from the environment of a daemon; no Accept (2016
            # sent none); identity encoding, so that image bytes and Range offsets stay exact.
            self._http = HttpClient(
                tls=tls,
                timeout=timeout,
                keepalive=keepalive,
                headers=[
                    ("Accept-Encoding", "identity"),
                    ("Connection", "keep-alive"),
                    ("User-Agent", user_agent),
                ],
            )
        return self._http

    @property
    def auth_configured(self) -> bool:
        """Whether an ``[auth]`` section was given."""
        return self._auth is not None

    @property
    def authenticated(self) -> bool:
        """True without ``[auth]``, else whether a token is held (it may be due for refresh)."""
        return self._auth is None or self._token is not None

    @property
    def token(self) -> AccessToken | None:
        """The token held, if any."""
        return self._token

    # -- the calls ------------------------------------------------------------------------

    async def authenticate(self) -> AccessToken | None:
        """Fetch a new token (``POST <auth.server>/token``); None when no auth is configured.

        After failed attempts, the request waits first (backoff), so a caller that retries at
        once cannot make a tight loop.

        :raises AuthError: the auth server refused the credentials (401/403).
        :raises BackendError: it could not be reached, failed, or sent an invalid token.
        """
        if self._auth is None:
            return None
        with _boundary("authenticate"):
            async with self._token_lock:
                return await self._fetch_token()

    async def get_update_requests(self) -> list[UpdateRequest]:
        """``GET /updates``: the pending and in-flight updates, stably sorted by ``installPos``."""
        with _boundary("get_update_requests"):
            body = await self._call("GET", "/updates", body_limit=JSON_LIMIT)
            requests: list[UpdateRequest] = _decode(_UPDATES_DECODER, body)
            return sorted(requests, key=lambda request: request.install_pos)

    async def send_update_report(self, report: UpdateReport) -> None:
        """``POST /updates/<update_id>`` with the JSON array of the report's operation results."""
        with _boundary("send_update_report"):
            path = "/updates/" + _segment(report.update_id, "update id")
            await self._call("POST", path, content=_ENCODER.encode(report.operation_results))

    async def send_installed_packages(self, packages: Sequence[Package]) -> None:
        """``PUT /installed`` with ``[{"name":..,"version":..}]``; Core replaces its list."""
        with _boundary("send_installed_packages"):
            await self._call("PUT", "/installed", content=_ENCODER.encode(list(packages)))

    async def send_system_info(self, text: str) -> None:
        """``PUT /system_info`` with the system_info output as-is (Core requires JSON)."""
        with _boundary("send_system_info"):
            await self._call("PUT", "/system_info", content=text.encode("utf-8"))

    async def send_installed_software(self, software: InstalledSoftware) -> None:
        """Nothing: Core's HTTP API has no such call; the RVI gateway sends it (2016 did too)."""
        del software

    async def post_json(self, url: str, content: bytes, *, body_limit: int = JSON_LIMIT) -> bytes:
        """POST JSON to a server that is not Core (the RVI node at ``rvi.client``), without
        credentials; returns the 2xx body. The same client, deadlines and TLS checks as Core's.

        :raises BackendError: the URL is unusable, the exchange failed, or not 2xx.
        """
        with _boundary("post_json"):
            target = _base_url(url, "the URL")
            headers = {"Content-Type": _JSON}
            return await self._exchange("POST", target, headers, content, body_limit)

    async def download(
        self,
        update_id: str,
        packages_dir: str,
        *,
        progress: Progress | None = None,
        max_size: int = DEFAULT_MAX_DOWNLOAD_SIZE,
        resume: Checkpoint | None = None,
        checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> DownloadResult:
        """``GET /updates/<id>/download`` into ``<packages_dir>/<id>``; see ``download_update``.

        The id is checked before any request. Redirects (e.g. to presigned storage URLs) are
        followed without ``Authorization``; a 401/403 re-authenticates and resumes once.

        :raises DownloadError: the image could not be fetched or stored (the 2016
            ``DownloadFailed`` reason is its text).
        :raises AuthError: still refused after re-authenticating.
        """
        check_update_id(update_id)
        url = self._api_url(f"/updates/{_segment(update_id)}/download")
        latest = resume  # the attempt after re-authenticating resumes from the newest one

        def record(point: Checkpoint) -> None:
            nonlocal latest
            latest = point
            if checkpoint is not None:
                checkpoint(point)

        async def attempt(credentials: _Credentials) -> DownloadResult:
            @asynccontextmanager
            async def fetch(extra: Mapping[str, str]) -> AsyncIterator[StreamedResponse]:
                headers = {**await credentials.headers(), **extra}
                async with self._open("GET", url, headers) as response:
                    yield response

            return await download_update(
                fetch,
                packages_dir,
                update_id,
                progress=progress,
                max_size=max_size,
                resume=latest,
                checkpoint=record,
                retries=self._download_retries,
                backoff=self._backoff,
            )

        with _boundary("download"):
            return await self._authorized(attempt)

    # -- auth -----------------------------------------------------------------------------

    def _api_url(self, suffix: str) -> Url:
        try:
            return self._core.join(self._device_path + suffix)
        except ValueError as exc:
            raise BackendError(f"Url parse error: {suffix[:200]!r}: {exc}") from None

    async def _call(
        self, method: str, suffix: str, *, content: bytes | None = None, body_limit: int = 0
    ) -> bytes:
        """One Core call, authorized: ``content`` is sent as JSON; returns the 2xx body."""
        url = self._api_url(suffix)

        async def attempt(credentials: _Credentials) -> bytes:
            headers = await credentials.headers()
            if content is not None:
                headers["Content-Type"] = _JSON
            return await self._exchange(method, url, headers, content, body_limit)

        return await self._authorized(attempt)

    async def _authorized(self, operation: Callable[[_Credentials], Awaitable[T]]) -> T:
        """Run ``operation``; if Core refuses its token, re-authenticate and run it once more."""
        credentials = _Credentials(self)
        try:
            return await operation(credentials)
        except AuthError as exc:
            if self._auth is None or credentials.refused:
                raise
            logger.warning("HTTP authorization failed: %s; authenticating again", exc)
        await self._reauthenticate(stale=credentials.used)
        return await operation(credentials)

    async def _current_token(self) -> AccessToken | None:
        """The token to send, fetched first if none is held or it is due for refresh."""
        if self._auth is None:
            return None
        async with self._token_lock:
            if self._token is None or (
                self._refresh_at is not None and self._clock() >= self._refresh_at
            ):
                await self._fetch_token()
            return self._token

    async def _reauthenticate(self, stale: AccessToken | None) -> None:
        """Replace a refused token, trying up to ``auth_attempts`` times with backoff."""
        async with self._token_lock:
            if self._token is not None and self._token is not stale:
                return  # another call already replaced it
            self._token = None
            for attempt in range(1, self._auth_attempts + 1):
                try:
                    await self._fetch_token()
                    break
                except BackendError as exc:
                    if attempt == self._auth_attempts or not (
                        exc.transient or isinstance(exc, AuthError)
                    ):
                        raise
                    logger.warning("Authentication attempt %d failed: %s", attempt, exc)

    async def token_backoff(self) -> None:
        """Wait until the next token request is due: at once, or after failures the backoff.

        Every token request waits here, so no caller can make a tight loop; a caller may also
        wait here first, without holding anything, to know the request will go out at once.
        """
        retry_at = self._token_retry_at
        if retry_at is not None:
            delay = retry_at - self._clock()
            if delay > 0:
                await self._backoff.sleep(delay)
            if self._token_retry_at == retry_at:
                self._token_retry_at = None  # served: the request after it goes out at once

    async def _fetch_token(self) -> AccessToken:
        """One token request (after a backoff wait if the last ones failed); lock held.

        :raises AuthError: the auth server refused the credentials (401/403).
        :raises TokenError: any other failure; its text is the underlying 2016 text.
        """
        assert self._token_url is not None
        await self.token_backoff()
        headers = {"Authorization": self._basic, "Content-Type": _FORM}
        try:
            body = await self._exchange("POST", self._token_url, headers, _TOKEN_BODY, JSON_LIMIT)
            token = _decode(_TOKEN_DECODER, body)
            _check_token(token)
        except BackendError as exc:
            self._token = None
            self._token_failures += 1
            self._token_retry_at = self._clock() + self._backoff.delay(self._token_failures)
            if isinstance(exc, AuthError | TokenError):
                raise
            raise TokenError(str(exc), cause=exc) from exc
        self._token_failures = 0
        self._token_retry_at = None
        self._token = token
        self._refresh_at = _refresh_time(self._clock(), token.expires_in)
        logger.info("Authenticated; the token expires in %d s", token.expires_in)
        return token

    # -- HTTP -----------------------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        url: Url,
        headers: Mapping[str, str],
        content: bytes | None,
        body_limit: int,
    ) -> bytes:
        """One request and its bounded body, under a deadline; non-2xx raises."""
        try:
            with anyio.fail_after(self._deadline):
                async with self._open(method, url, headers, content) as response:
                    if not 200 <= response.status < 300:
                        body = await response.read(ERROR_BODY_LIMIT)
                        raise error_for_status(response.status, response.reason, body)
                    if not body_limit:
                        await response.read(ERROR_BODY_LIMIT)  # drained for keep-alive
                        return b""
                    body = await response.read(body_limit + 1)
        except TimeoutError:
            raise TransportError(
                f"HTTP transport error: {method} {url.shown()}: "
                f"no complete answer within {self._deadline:g} s"
            ) from None
        if len(body) > body_limit:
            raise BackendError(
                f"HTTP client error: {method} {url.shown()}: "
                f"the response is larger than {body_limit} bytes"
            )
        return body

    @asynccontextmanager
    async def _open(
        self,
        method: str,
        url: Url,
        headers: Mapping[str, str],
        content: bytes | None = None,
    ) -> AsyncIterator[Response]:
        """Send a request and follow redirects (without Authorization); yield the final response."""
        request_headers = dict(headers)
        for _hop in range(MAX_REDIRECTS + 1):
            logger.debug("%s %s", method, url.shown())
            response = await self._client.request(
                method, url, request_headers.items(), content=content
            )
            try:
                logger.debug("Response status: %d %s", response.status, response.reason)
                if response.status not in _REDIRECTS:
                    yield response
                    return
                location = response.header("Location")
                if not location:
                    raise BackendError(
                        "Http client error: redirect missing Location header "
                        f"({response.status} {response.reason} from {method} {url.shown()})",
                        transient=True,  # a server misconfiguration, which may be fixed
                    )
                url = _redirect_target(url, location)
                # 2016: a redirect goes out without credentials (presigned storage URLs).
                request_headers.pop("Authorization", None)
                if response.status == 303:
                    method, content = "GET", None
                    request_headers.pop("Content-Type", None)
                await response.read(ERROR_BODY_LIMIT)  # drained, so the connection is reused
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        # Transient: a redirect loop is a server misconfiguration, which may be fixed.
        raise BackendError(
            f"Http client error: more than {MAX_REDIRECTS} redirects", transient=True
        )


class _Credentials:
    """The Authorization one call sends, and which token it used (to tell a stale refusal)."""

    def __init__(self, backend: CoreBackend) -> None:
        self._backend = backend
        self.used: AccessToken | None = None
        self.refused = False  # the token request itself was refused: re-trying cannot help

    async def headers(self) -> dict[str, str]:
        try:
            token = await self._backend._current_token()
        except AuthError:
            self.refused = True
            raise
        self.used = token
        return {} if token is None else {"Authorization": f"Bearer {token.access_token}"}


def _refresh_time(now: float, expires_in: int) -> float | None:
    """When to fetch a new token: 10% of the lifetime (at least 30 s, at most half) early.

    A lifetime of zero or less means "unknown": the token is kept until Core refuses it.
    """
    if expires_in <= 0:
        return None
    margin = min(max(0.1 * expires_in, 30.0), 0.5 * expires_in)
    return now + expires_in - margin


@contextlib.contextmanager
def _boundary(call: str) -> Iterator[None]:
    """Nothing but a SotaError leaves the backend: anything else (a library's exception, a bug)
    becomes an :class:`InternalError`, with its traceback logged once here."""
    try:
        yield
    except SotaError:
        raise
    except Exception as exc:
        logger.exception("Unexpected error in CoreBackend.%s", call)
        raise InternalError(f"CoreBackend.{call}", exc) from exc


def _check_token(token: AccessToken) -> None:
    """The token goes into an HTTP header: it must be an RFC 6750 ``b64token`` of sane size."""
    if len(token.access_token) > MAX_TOKEN_LENGTH:
        raise TokenError(
            f"Invalid access token: longer than {MAX_TOKEN_LENGTH} characters "
            f"({len(token.access_token)})"
        )
    if not _B64TOKEN.fullmatch(token.access_token):
        raise TokenError(
            "Invalid access token: only letters, digits and -._~+/ (then '=') may appear "
            "in a bearer token"
        )


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a JSON body, with the 2016 wording for a missing field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        missing = _MISSING_FIELD.match(str(exc))
        raise DecodeError(f'MissingFieldError("{missing[1]}")' if missing else str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


def _segment(value: str, what: str = "update id") -> str:
    """``value`` percent-encoded as one path segment (``.`` and ``..`` too, so they stay ids)."""
    if not value:
        raise BackendError(f"Http client error: the {what} is empty")
    try:
        quoted = urllib.parse.quote(value, safe="")
    except UnicodeEncodeError:
        raise BackendError(f"Http client error: the {what} {value!r} is not valid UTF-8") from None
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _base_url(value: str, what: str) -> Url:
    try:
        return Url.parse(value)
    except ValueError as exc:
        raise SotaError(
            f"Url parse error: {what} = {value!r} is not an absolute http(s) URL: {exc}"
        ) from None


def _redirect_target(url: Url, location: str) -> Url:
    target = urllib.parse.urljoin(str(url), location.strip())
    scheme = urllib.parse.urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        shown = target.split("?", 1)[0][:200]
        raise BackendError(f"Http client error: redirect to a non-http URL {shown!r}")
    try:
        return Url.parse(target)
    except ValueError as exc:
        raise BackendError(f"Url parse error: redirect to {location[:200]!r}: {exc}") from None


def _tls_context(ca_file: str | None, *, required: bool) -> ssl.SSLContext:
    """One verifying context for the client's whole life (building one per request is slow)."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = exc.strerror or str(exc)
        if required:
            raise SotaError(f"couldn't set CA certificates: {ca_file}: {reason}") from None
        logger.info(
            "CA certificates %s not loaded (%s); using the system's for https", ca_file, reason
        )
        return ssl.create_default_context()


def _default_user_agent() -> str:
    from . import __version__  # late: the package imports this module

    return f"sota_client/{__version__}"
