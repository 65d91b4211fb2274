"""CoreBackend against a real HTTP server on 127.0.0.1: exact requests, auth, redirects, errors."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from sota_client import __version__, _backend
from sota_client._backend import AccessToken, AuthSettings, CoreBackend
from sota_client._errors import (
    AuthError,
    BackendError,
    DecodeError,
    HttpStatusError,
    InternalError,
    SotaError,
    TokenError,
    TransportError,
)
from swlm_sdk import Backoff
from swlm_sdk.protocol import Package, ResultCode, UpdateReport, UpdateRequestStatus

from ._http_server import Exchange, Handler, ScriptedServer, answer, serve_bytes

pytestmark = pytest.mark.anyio

DEVICE = "123e4567-e89b-12d3-a456-426655440000"
API = f"/api/v1/mydevice/{DEVICE}"
TOKEN = b'{"access_token":"token","token_type":"type","expires_in":10,"scope":"scope1 scope2"}'
UA = f"sota_client/{__version__}"


class Sleeps:
    """Stands in for anyio.sleep: records the backoff waits instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.lowlevel.checkpoint()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(value: str, expires_in: int = 3600) -> bytes:
    return (
        f'{{"access_token":"{value}","token_type":"bearer",'
        f'"expires_in":{expires_in},"scope":"ota-core.{DEVICE}.write"}}'
    ).encode()


def tokens(*values: bytes) -> list[Handler]:
    return [answer(200, value, "application/json") for value in values]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


def backend(server: ScriptedServer, *, auth: bool = True, **kwargs: Any) -> CoreBackend:
    settings = AuthSettings(server.url, "client-id", "client-secret") if auth else None
    return CoreBackend(server.url, DEVICE, auth=settings, **kwargs)


# -- the token request --------------------------------------------------------------------


async def test_token_request_golden_bytes(server: ScriptedServer) -> None:
    server.route("POST", "/token", lambda ex: ex.json(200, TOKEN))
    settings = AuthSettings(server.url + "/some/base", "client-id", "client-secret")
    async with CoreBackend(server.url, DEVICE, auth=settings) as core:
        await core.authenticate()
    [request] = server.requests
    assert (
        request.raw
        == (
            b"POST /token HTTP/1.1\r\n"  # Url::join("/token") drops the /some/base path (2016)
            b"Host: 127.0.0.1:%d\r\n"
            b"Accept-Encoding: identity\r\n"
            b"Connection: keep-alive\r\n"
            b"User-Agent: " + UA.encode() + b"\r\n"
            b"Authorization: Basic Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=\r\n"
            b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
            b"Content-Length: 29\r\n"
            b"\r\n"
            b"grant_type=client_credentials"
        )
        % (server.port,)
    )


async def test_authenticate(server: ScriptedServer) -> None:
    """Reference 10.5 test_authenticate: the token has exactly the server's values."""
    server.route("POST", "/token", lambda ex: ex.json(200, TOKEN))
    async with backend(server) as core:
        assert core.auth_configured
        assert not core.authenticated
        got = await core.authenticate()
        assert core.authenticated
    assert got == AccessToken("token", "type", 10, "scope1 scope2")
    assert core.token == got
    assert len(server.requests_to("/token")) == 1
    assert "token'" not in repr(got)
    assert "access_token=<5 chars>" in repr(got)


def test_the_client_secret_is_never_in_a_repr() -> None:
    settings = AuthSettings("http://auth.example", "client-id", "s3cret-value")
    assert "s3cret-value" not in repr(settings)
    assert "s3cret-value" not in str(settings)
    assert repr(settings) == "AuthSettings(server='http://auth.example', client_id='client-id')"


async def test_authenticate_bad_json(server: ScriptedServer) -> None:
    """Reference 10.5 test_authenticate_bad_json, with its exact display text."""
    server.route("POST", "/token", lambda ex: ex.json(200, b'{"apa": 1}'))
    async with backend(server) as core:
        with pytest.raises(TokenError) as caught:
            await core.authenticate()
        assert not core.authenticated
    assert str(caught.value) == 'Failed to decode JSON: MissingFieldError("access_token")'
    assert isinstance(caught.value.cause, DecodeError)
    # Unlike Core's answers, a broken auth server may be fixed: retried, never fatal.
    assert caught.value.transient


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"[]", "Failed to decode JSON: Expected `object`, got `array`"),
        (
            b'{"access_token":"t","token_type":"b","expires_in":"10","scope":"s"}',
            "Failed to decode JSON: Expected `int`, got `str` - at `$.expires_in`",
        ),
        (
            b'{"access_token":"t","token_type":"b","expires_in":2147483648,"scope":"s"}',
            "Failed to decode JSON: Expected `int` <= 2147483647 - at `$.expires_in`",
        ),
        (b"{", "Failed to decode JSON: invalid JSON: Input data was truncated"),
    ],
)
async def test_token_response_must_be_the_2016_shape(
    server: ScriptedServer, body: bytes, text: str
) -> None:
    server.route("POST", "/token", lambda ex: ex.json(200, body))
    async with backend(server) as core:
        with pytest.raises(TokenError) as caught:
            await core.authenticate()
    assert str(caught.value) == text


async def test_authenticate_without_auth_does_nothing(server: ScriptedServer) -> None:
    async with backend(server, auth=False) as core:
        assert not core.auth_configured
        assert core.authenticated
        assert await core.authenticate() is None
    assert server.requests == []


async def test_bad_credentials_are_an_auth_error(server: ScriptedServer) -> None:
    server.route("POST", "/token", answer(401, b"bad credentials"))
    async with backend(server) as core:
        with pytest.raises(AuthError) as caught:
            await core.authenticate()
    assert str(caught.value) == (
        "HTTP authorization error: Response Code: 401 Unauthorized, Body:\nbad credentials"
    )
    assert caught.value.status == 401


# -- the Core calls -----------------------------------------------------------------------


def core_routes(server: ScriptedServer) -> None:
    server.route("POST", "/token", lambda ex: ex.json(200, TOKEN))
    server.route("POST", f"{API}/updates/u1", answer(204))
    server.route("PUT", f"{API}/installed", answer(200, b"OK"))
    server.route("PUT", f"{API}/system_info", lambda ex: ex.json(200, b"{}"))
    server.route("GET", f"{API}/updates", lambda ex: ex.json(200, b"[]"))
    server.route("GET", f"{API}/updates/u1/download", lambda ex: serve_bytes(ex, b"image"))


async def test_core_requests_golden_bytes(server: ScriptedServer) -> None:
    core_routes(server)
    async with backend(server) as core:
        await core.send_update_report(UpdateReport.single("u1", ResultCode.OK))
        await core.send_installed_packages(
            [Package("gcc", "7.63"), Package("Movie&MusicPlayer", "rc2-beta3")]
        )
        await core.send_system_info('{"id":"host","class":"system"}\n')
    _, report, installed, system_info = server.requests
    head = (
        b"Host: 127.0.0.1:%d\r\n"
        b"Accept-Encoding: identity\r\n"
        b"Connection: keep-alive\r\n"
        b"User-Agent: " + UA.encode() + b"\r\n"
        b"Authorization: Bearer token\r\n"
        b"Content-Type: application/json\r\n"
    ) % (server.port,)
    body = b'[{"id":"u1","result_code":0,"result_text":""}]'
    assert report.raw == (
        b"POST " + API.encode() + b"/updates/u1 HTTP/1.1\r\n"
        + head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    body = b'[{"name":"gcc","version":"7.63"},{"name":"Movie&MusicPlayer","version":"rc2-beta3"}]'
    assert installed.raw == (
        b"PUT " + API.encode() + b"/installed HTTP/1.1\r\n"
        + head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    body = b'{"id":"host","class":"system"}\n'
    assert system_info.raw == (
        b"PUT " + API.encode() + b"/system_info HTTP/1.1\r\n"
        + head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


async def test_report_with_a_result_text(server: ScriptedServer) -> None:
    core_routes(server)
    report = UpdateReport.single("u1", ResultCode.INSTALL_FAILED, 'dpkg: "x"\nfailed')
    async with backend(server, auth=False) as core:
        await core.send_update_report(report)
    [request] = server.requests
    assert request.body == b'[{"id":"u1","result_code":4,"result_text":"dpkg: \\"x\\"\\nfailed"}]'


async def test_bearer_on_every_core_call(server: ScriptedServer, tmp_path: Path) -> None:
    core_routes(server)
    async with backend(server) as core:
        await core.get_update_requests()
        await core.send_update_report(UpdateReport.single("u1", ResultCode.OK))
        await core.send_installed_packages([])
        await core.send_system_info("{}")
        await core.download("u1", str(tmp_path))
    token_request, *core_requests = server.requests
    assert token_request.path == "/token"
    assert len(core_requests) == 5
    for request in core_requests:
        assert request.header("Authorization") == "Bearer token", request.raw
        assert request.header("User-Agent") == UA


async def test_no_authorization_without_auth(server: ScriptedServer, tmp_path: Path) -> None:
    core_routes(server)
    async with backend(server, auth=False) as core:
        await core.get_update_requests()
        await core.send_update_report(UpdateReport.single("u1", ResultCode.OK))
        await core.send_installed_packages([])
        await core.send_system_info("{}")
        await core.download("u1", str(tmp_path))
    assert len(server.requests) == 5
    for request in server.requests:
        assert request.header("Authorization") is None, request.raw
    get = server.requests[0]
    assert get.raw == (
        b"GET " + API.encode() + b"/updates HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Accept-Encoding: identity\r\n"
        b"Connection: keep-alive\r\n"
        b"User-Agent: " + UA.encode() + b"\r\n\r\n"
    ) % (server.port,)  # no Content-Type on a GET (2016 bug 43)


async def test_get_update_requests(server: ScriptedServer) -> None:
    """Reference 10.5 test_get_update_requests."""
    body = (
        b'[{"requestId":"someid","status":"Pending","packageId":{"name":"fake-pkg",'
        b'"version":"0.1.1"},"installPos":0,"createdAt":"2010-01-01"}]'
    )
    server.route("GET", f"{API}/updates", lambda ex: ex.json(200, body))
    async with backend(server, auth=False) as core:
        requests = await core.get_update_requests()
    assert [request.request_id for request in requests] == ["someid"]
    assert requests[0].status is UpdateRequestStatus.PENDING
    assert requests[0].package_id == Package("fake-pkg", "0.1.1")


def update(request_id: str, pos: int, status: str = "Pending") -> str:
    return (
        f'{{"requestId":"{request_id}","packageId":{{"name":"p","version":"1.0.0"}},'
        f'"installPos":{pos},"status":"{status}","createdAt":"2016-10-28T10:15:30.123Z",'
        f'"updatedAt":"2016-10-28T10:15:30.123Z"}}'
    )


async def test_update_requests_sorted_stably_extra_fields_ignored(server: ScriptedServer) -> None:
    body = f"[{update('a', 5)},{update('b', 1, 'InFlight')},{update('c', 1)}]".encode()
    server.route("GET", f"{API}/updates", lambda ex: ex.json(200, body))
    async with backend(server, auth=False) as core:
        requests = await core.get_update_requests()
    assert [request.request_id for request in requests] == ["b", "c", "a"]


async def test_chunked_update_list_is_read(server: ScriptedServer) -> None:
    """2016 read only Content-Length bodies, so a chunked list decoded as "" (bug 37)."""
    body = ("[" + ",".join(update(f"id{n}", n) for n in range(40)) + "]").encode()
    server.route(
        "GET",
        f"{API}/updates",
        lambda ex: ex.respond(200, body, [("Content-Type", "application/json")], chunked=True),
    )
    async with backend(server, auth=False) as core:
        requests = await core.get_update_requests()
    assert len(body) > 5000
    assert [request.request_id for request in requests] == [f"id{n}" for n in range(40)]


async def test_update_list_missing_field(server: ScriptedServer) -> None:
    body = (
        b'[{"requestId":"x","packageId":{"name":"p","version":"1"},"installPos":0,"createdAt":""}]'
    )
    server.route("GET", f"{API}/updates", lambda ex: ex.json(200, body))
    async with backend(server, auth=False) as core:
        with pytest.raises(DecodeError) as caught:
            await core.get_update_requests()
    assert str(caught.value) == 'Failed to decode JSON: MissingFieldError("status")'


async def test_base_path_of_core_url_is_replaced(server: ScriptedServer) -> None:
    server.route("GET", f"{API}/updates", lambda ex: ex.json(200, b"[]"))
    async with CoreBackend(server.url + "/some/prefix/", DEVICE) as core:
        assert await core.get_update_requests() == []
    assert server.requests[0].target == f"{API}/updates"


async def test_ids_are_one_percent_encoded_path_segment(server: ScriptedServer) -> None:
    async with CoreBackend(server.url, "dev/ice") as core:
        for update_id in ("a b/c?d", "..", "é"):
            with pytest.raises(HttpStatusError):
                await core.send_update_report(UpdateReport.single(update_id, ResultCode.OK))
    assert [request.target for request in server.requests] == [
        "/api/v1/mydevice/dev%2Fice/updates/a%20b%2Fc%3Fd",
        "/api/v1/mydevice/dev%2Fice/updates/%2E%2E",
        "/api/v1/mydevice/dev%2Fice/updates/%C3%A9",
    ]


async def test_empty_update_id_is_refused_without_a_request(server: ScriptedServer) -> None:
    async with backend(server, auth=False) as core:
        with pytest.raises(BackendError, match="the update id is empty"):
            await core.send_update_report(UpdateReport.single("", ResultCode.OK))
    assert server.requests == []


# -- token lifetime and re-authentication -------------------------------------------------


async def test_token_is_refreshed_before_it_expires(server: ScriptedServer) -> None:
    core_routes(server)
    server.route("POST", "/token", *tokens(token("t1", 100), token("t2", 100)))
    clock = Clock()
    async with backend(server, clock=clock) as core:
        await core.authenticate()
        clock.now += 69  # 100 s lifetime: refreshed 30 s early
        await core.send_installed_packages([])
        clock.now += 1
        await core.send_installed_packages([])
        await core.send_installed_packages([])
    assert [request.path for request in server.requests] == [
        "/token",
        f"{API}/installed",
        "/token",
        f"{API}/installed",
        f"{API}/installed",
    ]
    assert [request.header("Authorization") for request in server.requests[1:]] == [
        "Bearer t1",
        "Basic Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=",
        "Bearer t2",
        "Bearer t2",
    ]


async def test_token_is_fetched_lazily(server: ScriptedServer) -> None:
    core_routes(server)
    async with backend(server) as core:
        await core.get_update_requests()
    assert [request.path for request in server.requests] == ["/token", f"{API}/updates"]


async def test_401_reauthenticates_and_the_report_is_not_lost(server: ScriptedServer) -> None:
    core_routes(server)
    server.route("POST", "/token", *tokens(token("t1"), token("t2")))
    server.route("POST", f"{API}/updates/u1", answer(401, b"expired"), answer(204))
    sleeps = Sleeps()
    async with backend(server, backoff=Backoff(sleep=sleeps)) as core:
        await core.authenticate()
        await core.send_update_report(UpdateReport.single("u1", ResultCode.OK))
        assert core.token is not None
        assert core.token.access_token == "t2"
    reports = server.requests_to(f"{API}/updates/u1")
    assert [request.header("Authorization") for request in reports] == ["Bearer t1", "Bearer t2"]
    assert reports[0].body == reports[1].body
    assert len(server.requests_to("/token")) == 2
    assert sleeps.delays == []


async def test_403_also_reauthenticates(server: ScriptedServer) -> None:
    core_routes(server)
    server.route("POST", "/token", *tokens(token("t1"), token("t2")))
    server.route("PUT", f"{API}/installed", answer(403), answer(200))
    async with backend(server) as core:
        await core.send_installed_packages([])
    assert len(server.requests_to("/token")) == 2


async def test_bad_credentials_give_up_after_bounded_attempts(server: ScriptedServer) -> None:
    core_routes(server)
    server.route("POST", "/token", *tokens(token("t1")), answer(401))
    server.route("POST", f"{API}/updates/u1", answer(401))
    sleeps = Sleeps()
    async with backend(
        server, backoff=Backoff(initial_delay=1.0, max_delay=60.0, sleep=sleeps)
    ) as core:
        await core.authenticate()
        with pytest.raises(AuthError) as caught:
            await core.send_update_report(UpdateReport.single("u1", ResultCode.OK))
        assert not core.authenticated
        assert str(caught.value) == "HTTP authorization error: Response Code: 401 Unauthorized"
        # 1 good token, then 5 refused attempts with growing waits: never a tight loop.
        assert len(server.requests_to("/token")) == 6
        assert sleeps.delays == [pytest.approx(d, abs=0.5) for d in (1.0, 2.0, 4.0, 8.0)]
        # A caller that retries at once (2016: NotAuthenticated -> Authenticate) still waits.
        with pytest.raises(AuthError):
            await core.authenticate()
        assert sleeps.delays == [pytest.approx(d, abs=0.5) for d in (1.0, 2.0, 4.0, 8.0, 16.0)]
    assert len(server.requests_to(f"{API}/updates/u1")) == 1


async def test_auth_server_down_is_transient(server: ScriptedServer) -> None:
    core_routes(server)
    server.route("POST", "/token", answer(503, b"later"), *tokens(token("t1")))
    sleeps = Sleeps()
    async with backend(server, backoff=Backoff(sleep=sleeps)) as core:
        with pytest.raises(TokenError) as caught:
            await core.get_update_requests()
        assert caught.value.transient
        assert isinstance(caught.value.cause, HttpStatusError)
        assert await core.get_update_requests() == []
    assert sleeps.delays == [pytest.approx(1.0, abs=0.5)]


async def test_secrets_are_not_logged(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    core_routes(server)
    with caplog.at_level(logging.DEBUG, logger="sota_client"):
        async with backend(server) as core:
            await core.send_installed_packages([])
    assert f"POST {server.url}/token" in caplog.text
    assert f"PUT {server.url}{API}/installed" in caplog.text
    assert "Response status: 200 OK" in caplog.text
    assert "client-secret" not in caplog.text
    assert "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ" not in caplog.text
    assert "Bearer" not in caplog.text
    assert '"token"' not in caplog.text


# -- redirects ----------------------------------------------------------------------------


async def test_redirect_is_followed_without_authorization(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    core_routes(server)
    server.route(
        "GET",
        f"{API}/updates/u1/download",
        lambda ex: ex.respond(302, headers=[("Location", "/storage/blob?X-Signature=secret")]),
    )
    server.route(
        "GET",
        "/storage/blob",
        lambda ex: ex.respond(307, headers=[("Location", f"{server.url}/storage/final")]),
    )
    server.route("GET", "/storage/final", lambda ex: serve_bytes(ex, b"presigned image"))
    with caplog.at_level(logging.DEBUG):
        async with backend(server) as core:
            result = await core.download("u1", str(tmp_path))
    assert await anyio.Path(result.path).read_bytes() == b"presigned image"
    assert f"GET {server.url}/storage/blob\n" in caplog.text + "\n"
    assert "X-Signature" not in caplog.text  # presigned URLs carry credentials in the query
    first, second, third = server.requests[1:]
    assert first.header("Authorization") == "Bearer token"
    assert second.target == "/storage/blob?X-Signature=secret"
    assert second.header("Authorization") is None
    assert third.header("Authorization") is None


async def test_redirect_limit(server: ScriptedServer) -> None:
    server.route(
        "GET", f"{API}/updates", lambda ex: ex.respond(301, headers=[("Location", "/loop")])
    )
    server.route("GET", "/loop", lambda ex: ex.respond(302, headers=[("Location", "/loop")]))
    async with backend(server, auth=False) as core:
        with pytest.raises(BackendError) as caught:
            await core.get_update_requests()
    assert str(caught.value) == "Http client error: more than 10 redirects"
    assert len(server.requests) == 11


async def test_redirect_without_location(server: ScriptedServer) -> None:
    server.route("PUT", f"{API}/installed", answer(302))
    async with backend(server, auth=False) as core:
        with pytest.raises(BackendError) as caught:
            await core.send_installed_packages([])
    assert str(caught.value) == (
        "Http client error: redirect missing Location header "
        f"(302 Found from PUT {server.url}{API}/installed)"
    )


async def test_304_is_not_a_redirect(server: ScriptedServer) -> None:
    server.route("GET", f"{API}/updates", answer(304))
    async with backend(server, auth=False) as core:
        with pytest.raises(HttpStatusError) as caught:
            await core.get_update_requests()
    assert str(caught.value) == "HTTP client error: Response Code: 304 Not Modified"


# -- error statuses and transport failures ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "text", "transient"),
    [
        (
            500,
            b"boom",
            "HTTP client error: Response Code: 500 Internal Server Error, Body:\nboom",
            True,
        ),
        (404, b"", "HTTP client error: Response Code: 404 Not Found", False),
        (
            404,
            b'{"code":"missing_entity","description":"UpdateSpec not found"}',
            "HTTP client error: Response Code: 404 Not Found, Body:\n"
            '{"code":"missing_entity","description":"UpdateSpec not found"}',
            False,
        ),
        (
            400,
            b"\xff\xfe\x00",
            "HTTP client error: Response Code: 400 Bad Request, Body: 3 bytes",
            False,
        ),
        (429, b"", "HTTP client error: Response Code: 429 Too Many Requests", True),
    ],
)
async def test_status_errors_have_the_2016_display(
    server: ScriptedServer, status: int, body: bytes, text: str, transient: bool
) -> None:
    server.route("PUT", f"{API}/installed", answer(status, body))
    async with backend(server, auth=False) as core:
        with pytest.raises(HttpStatusError) as caught:
            await core.send_installed_packages([])
    assert str(caught.value) == text
    assert caught.value.status == status
    assert caught.value.body == body
    assert caught.value.transient is transient


@pytest.mark.parametrize(("status", "reason"), [(401, "Unauthorized"), (403, "Forbidden")])
async def test_auth_statuses_without_auth(server: ScriptedServer, status: int, reason: str) -> None:
    server.route("GET", f"{API}/updates", answer(status))
    async with backend(server, auth=False) as core:
        with pytest.raises(AuthError) as caught:
            await core.get_update_requests()
    assert str(caught.value) == f"HTTP authorization error: Response Code: {status} {reason}"
    assert len(server.requests) == 1


async def test_connection_refused_names_the_request() -> None:
    with ScriptedServer() as gone:
        url = gone.url
    async with CoreBackend(url, DEVICE) as core:
        with pytest.raises(TransportError) as caught:
            await core.get_update_requests()
    assert str(caught.value).startswith(
        f"HTTP transport error: GET {url}{API}/updates: could not connect: "
    )
    assert caught.value.transient


async def test_read_timeout(server: ScriptedServer) -> None:
    release = threading.Event()

    def stall(exchange: Exchange) -> None:
        release.wait(30)

    server.route("GET", f"{API}/updates", stall)
    try:
        async with CoreBackend(server.url, DEVICE, timeout=0.2) as core:
            with pytest.raises(TransportError) as caught:
                await core.get_update_requests()
    finally:
        release.set()
    assert "timed out waiting for data" in str(caught.value)


async def test_body_dropped_midway(server: ScriptedServer) -> None:
    server.route("GET", f"{API}/updates", lambda ex: ex.truncated(200, b"[" + b" " * 999, 10))
    async with backend(server, auth=False) as core:
        with pytest.raises(TransportError) as caught:
            await core.get_update_requests()
    assert "the server closed the connection or broke HTTP" in str(caught.value)


# -- start-up checks ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "not a url", "ftp://example.com", "http://", "/api"])
def test_core_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(SotaError, match=r"^Url parse error: core\.server = "):
        CoreBackend(url, DEVICE)


async def test_https_needs_a_loadable_ca_bundle(tmp_path: Path) -> None:
    missing = str(tmp_path / "sota_certificates")
    with pytest.raises(SotaError) as caught:
        CoreBackend("https://core.example.com", DEVICE, ca_file=missing)
    assert str(caught.value) == (
        f"couldn't set CA certificates: {missing}: No such file or directory"
    )
    auth = AuthSettings("https://auth.example.com", "id", "secret")
    with pytest.raises(SotaError, match="couldn't set CA certificates"):
        CoreBackend("http://core.example.com", DEVICE, auth=auth, ca_file=missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SotaError, match=f"couldn't set CA certificates: {garbage}"):
        CoreBackend("https://core.example.com", DEVICE, ca_file=str(garbage))


async def test_plain_http_does_not_need_the_ca_bundle(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.route("GET", f"{API}/updates", lambda ex: ex.json(200, b"[]"))
    async with CoreBackend(server.url, DEVICE, ca_file=str(tmp_path / "missing")) as core:
        assert await core.get_update_requests() == []


def ca_bundle() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    import certifi  # httpx's own dependency

    return str(certifi.where())


async def test_https_with_a_ca_bundle_starts() -> None:
    async with CoreBackend("https://core.example.com", DEVICE, ca_file=ca_bundle()):
        pass


# -- status-code edge cases --------------------------------------------------------------


async def test_unknown_status_keeps_the_servers_reason(server: ScriptedServer) -> None:
    server.route("PUT", f"{API}/system_info", answer(599))  # the server says "Whatever"
    async with backend(server, auth=False) as core:
        with pytest.raises(HttpStatusError) as caught:
            await core.send_system_info("{}")
    assert str(caught.value) == "HTTP client error: Response Code: 599 Whatever"
    assert caught.value.transient


async def test_other_2xx_are_success(server: ScriptedServer) -> None:
    server.route("PUT", f"{API}/system_info", answer(202, b"queued"))
    async with backend(server, auth=False) as core:
        await core.send_system_info("{}")


async def test_json_response_is_bounded(server: ScriptedServer) -> None:
    big = b"[" + b" " * (16 << 20) + b"]"
    server.route("GET", f"{API}/updates", answer(200, big))
    async with backend(server, auth=False) as core:
        with pytest.raises(BackendError, match="larger than 16777216 bytes"):
            await core.get_update_requests()


async def test_redirect_303_turns_a_post_into_a_get(server: ScriptedServer) -> None:
    server.route(
        "POST", f"{API}/updates/u1", lambda ex: ex.respond(303, headers=[("Location", "/moved")])
    )
    server.route("GET", "/moved", answer(200))
    async with backend(server, auth=False) as core:
        await core.send_update_report(UpdateReport.single("u1", ResultCode.OK))
    post, get = server.requests
    assert post.method == "POST"
    assert (get.method, get.path, get.body, get.header("Content-Type")) == (
        "GET",
        "/moved",
        b"",
        None,
    )


async def test_redirect_to_a_non_http_url(server: ScriptedServer) -> None:
    server.route(
        "GET",
        f"{API}/updates",
        lambda ex: ex.respond(302, headers=[("Location", "file:///etc/passwd")]),
    )
    async with backend(server, auth=False) as core:
        with pytest.raises(BackendError, match="redirect to a non-http URL"):
            await core.get_update_requests()


async def test_long_error_body_is_cut(server: ScriptedServer) -> None:
    server.route("PUT", f"{API}/installed", answer(500, b"x" * (1 << 20)))
    async with backend(server, auth=False) as core:
        with pytest.raises(HttpStatusError) as caught:
            await core.send_installed_packages([])
        with pytest.raises(HttpStatusError):  # the client is still usable
            await core.send_installed_packages([])
    assert caught.value.body == b"x" * (64 << 10)


async def test_calls_refused_together_reauthenticate_once(server: ScriptedServer) -> None:
    """Two calls refused with the same token fetch one new token, not one each."""
    both_sent = threading.Barrier(2, timeout=10)
    issued: list[str] = []

    def issue(exchange: Exchange) -> None:
        issued.append(f"t{len(issued) + 1}")
        exchange.json(200, token(issued[-1]))

    def refuse_t1(exchange: Exchange) -> None:
        if exchange.request.header("Authorization") == "Bearer t1":
            both_sent.wait()
            exchange.respond(401)
        else:
            exchange.json(200, b"[]")

    server.route("POST", "/token", issue)
    server.route("GET", f"{API}/updates", refuse_t1)
    server.route("PUT", f"{API}/installed", refuse_t1)
    async with backend(server) as core:
        await core.authenticate()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(core.get_update_requests)
                group.start_soon(core.send_installed_packages, [])
    assert issued == ["t1", "t2"]
    refused = [r.path for r in server.requests if r.header("Authorization") == "Bearer t1"]
    assert sorted(refused) == [f"{API}/installed", f"{API}/updates"]


# -- the boundary: nothing but a SotaError leaves the backend ------------------------------


async def test_a_header_that_cannot_be_sent_is_a_backend_error(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind the token check, the request builder still turns the encoding error into ours."""
    core_routes(server)
    body = b'{"access_token":"t\xc3\xb6k","token_type":"b","expires_in":60,"scope":""}'
    server.route("POST", "/token", lambda ex: ex.json(200, body))
    monkeypatch.setattr(_backend, "_check_token", lambda token: None)
    async with backend(server) as core:
        with pytest.raises(BackendError) as caught:
            await core.get_update_requests()
    assert str(caught.value).startswith("Http client error: cannot make the request GET ")
    assert [request.path for request in server.requests] == ["/token"]


async def test_an_unexpected_library_error_becomes_an_internal_error(
    server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core_routes(server)
    async with backend(server, auth=False) as core:

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug deep in a library")

        monkeypatch.setattr(core._client, "request", broken)
        for call in (
            core.get_update_requests(),
            core.send_update_report(UpdateReport.single("u1", ResultCode.OK)),
            core.send_installed_packages([]),
            core.send_system_info("{}"),
            core.download("u1", str(tmp_path)),
        ):
            with pytest.raises(InternalError) as caught:
                await call
            assert "RuntimeError: a bug deep in a library" in str(caught.value)
    assert caplog.text.count("Unexpected error in CoreBackend.") == 5


@pytest.mark.parametrize(
    "token",
    ["t\u00f6k\u20ac", "has space", "x" * (16 * 1024 + 1), "a\r\nInjected: yes"],
    ids=["non-ascii", "space", "too-long", "header-injection"],
)
async def test_a_token_that_cannot_be_a_bearer_token_is_refused(
    server: ScriptedServer, token: str
) -> None:
    body = msgspec.json.encode(
        {"access_token": token, "token_type": "bearer", "expires_in": 60, "scope": ""}
    )
    server.route("POST", "/token", lambda ex: ex.json(200, body))
    async with backend(server) as core:
        with pytest.raises(TokenError) as caught:
            await core.authenticate()
        assert not core.authenticated
    assert str(caught.value).startswith("Invalid access token: ")
    assert caught.value.transient
