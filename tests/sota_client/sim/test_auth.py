"""S21: the OAuth2 client-credentials endpoint and token checks on the device routes."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from sota_client.sim import AuthSettings, CoreSimulator

from ._client import DEVICE, MY, OP, OTHER_DEVICE, call

FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
BODY = b"grant_type=client_credentials"


def _basic(client_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}", **FORM}


def _token(sim: CoreSimulator) -> str:
    creds = sim.client_credentials
    reply = call(sim, "POST", "/token", BODY, _basic(creds.client_id, creds.client_secret))
    assert reply.status == 200
    token: str = reply.json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def asim() -> Iterator[CoreSimulator]:
    settings = AuthSettings(client_id="device-1", client_secret="s3cret", token_lifetime=600)
    with CoreSimulator(auth=settings) as simulator:
        simulator.add_package("nano", "2.2.6", data=b"nano")
        yield simulator


def test_token_request_as_the_2016_client_sends_it(asim: CoreSimulator) -> None:
    reply = call(asim, "POST", "/token", BODY, _basic("device-1", "s3cret"))
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    token = reply.json()
    assert list(token) == ["access_token", "token_type", "expires_in", "scope"]
    assert (token["token_type"], token["expires_in"], token["scope"]) == ("bearer", 600, "ota-core")
    listed = call(asim, "GET", f"{MY}/updates", headers=_bearer(token["access_token"]))
    assert (listed.status, listed.body) == (200, b"[]")
    (token_request, _) = asim.requests
    assert token_request.headers["content-type"] == FORM["Content-Type"]


@pytest.mark.parametrize(
    "headers",
    [
        _basic("device-1", "wrong"),
        _basic("other", "s3cret"),
        FORM,
        {"Authorization": "Basic !!!", **FORM},
        {"Authorization": "Bearer x", **FORM},
    ],
)
def test_bad_client_credentials_are_401(asim: CoreSimulator, headers: dict[str, str]) -> None:
    reply = call(asim, "POST", "/token", BODY, headers)
    assert reply.status == 401
    assert reply.json()["error"] == "invalid_client"
    assert reply.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"grant_type=password", FORM["Content-Type"], "unsupported_grant_type"),
        (b"", FORM["Content-Type"], "invalid_request"),
        (BODY, "application/json", "invalid_request"),
    ],
)
def test_bad_token_request_is_400(
    asim: CoreSimulator, body: bytes, content_type: str, error: str
) -> None:
    headers = {**_basic("device-1", "s3cret"), "Content-Type": content_type}
    reply = call(asim, "POST", "/token", body, headers)
    assert reply.status == 400
    assert reply.json()["error"] == error


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "/updates", None),
        ("PUT", "/installed", b"[]"),
        ("PUT", "/system_info", b"{}"),
        ("POST", f"/updates/{DEVICE}", b"[]"),
    ],
)
@pytest.mark.parametrize(
    ("authorization", "text"),
    [
        (None, "The resource requires authentication, which was not supplied with the request"),
        ("Bearer not-a-token", "The supplied authentication is invalid"),
        ("Basic ZGV2aWNlLTE6czNjcmV0", "The resource requires authentication"),
    ],
)
def test_device_calls_need_a_valid_token(
    asim: CoreSimulator,
    method: str,
    suffix: str,
    body: bytes | None,
    authorization: str | None,
    text: str,
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    reply = call(asim, method, f"{MY}{suffix}", body, headers)
    assert reply.status == 401
    assert reply.text.startswith(text)
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert asim.installed(DEVICE) is None


def test_expired_token_then_reauthentication(asim: CoreSimulator) -> None:
    token = _token(asim)
    assert call(asim, "GET", f"{MY}/updates", headers=_bearer(token)).status == 200
    assert asim.expire_tokens() == 1
    reply = call(asim, "GET", f"{MY}/updates", headers=_bearer(token))
    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]
    fresh = _token(asim)
    assert fresh != token
    assert call(asim, "GET", f"{MY}/updates", headers=_bearer(fresh)).status == 200


def test_zero_lifetime_tokens_are_born_expired() -> None:
    with CoreSimulator(auth=AuthSettings(token_lifetime=0)) as sim:
        token = _token(sim)
        assert call(sim, "GET", f"{MY}/updates", headers=_bearer(token)).status == 401


def test_scopes_when_checked() -> None:
    settings = AuthSettings(scope=f"ota-core.{DEVICE}.read", check_scopes=True)
    with CoreSimulator(auth=settings) as sim:
        auth = {**_bearer(_token(sim)), "Content-Type": "application/json"}
        assert call(sim, "GET", f"{MY}/updates", headers=auth).status == 200
        forbidden = call(sim, "PUT", f"{MY}/installed", b"[]", auth)
        assert forbidden.status == 403
        assert forbidden.text == (
            "The supplied authentication is not authorized to access this resource"
        )
        other = call(sim, "GET", f"/api/v1/mydevice/{OTHER_DEVICE}/updates", headers=auth)
        assert other.status == 403


def test_operator_routes_and_health_need_no_token(asim: CoreSimulator) -> None:
    assert call(asim, "POST", OP, json_body={"name": "nano", "version": "2.2.6"}).status == 200
    assert call(asim, "GET", "/health").status == 200


def test_without_auth_there_is_no_token_endpoint(sim: CoreSimulator) -> None:
    assert call(sim, "POST", "/token", BODY, _basic("a", "b")).status == 404
    assert call(sim, "GET", f"{MY}/updates").status == 200
    with pytest.raises(RuntimeError, match="auth is off"):
        _ = sim.client_credentials


def test_default_secret_is_random() -> None:
    assert AuthSettings().client_secret != AuthSettings().client_secret
