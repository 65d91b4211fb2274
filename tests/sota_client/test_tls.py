"""TLS verification against real HTTPS servers on loopback, with certificates made by openssl.

``device.certificates_path`` is the CA bundle: a server is accepted only with a certificate that
bundle vouches for, that is valid now, and that names the host in the URL. The refusals are
verification's doing: with it switched off (the last test), every one of those servers answers.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator

import pytest

from sota_client import _backend
from sota_client._backend import CoreBackend
from sota_client._errors import TransportError
from tests.sota_client._tls import Certificates, HttpsCore, make_certificates, requires_openssl

pytestmark = [pytest.mark.anyio, requires_openssl]

DEVICE = "123e4567-e89b-12d3-a456-426655440000"
SERVERS = ("server", "other_name_server", "expired_server", "self_signed_server")
#: (server, client CA, host in the URL, what OpenSSL says, as a regex): each way to be refused.
REFUSALS = [
    pytest.param(
        "server", "other_ca", "localhost", "unable to get local issuer certificate", id="wrong CA"
    ),
    pytest.param(
        "other_name_server",
        "ca",
        "localhost",
        r"Hostname mismatch, certificate is not valid for 'localhost'",
        id="wrong host name",
    ),
    pytest.param(
        "other_name_server",
        "ca",
        "127.0.0.1",
        r"IP address mismatch, certificate is not valid for '127\.0\.0\.1'",
        id="wrong IP address",
    ),
    pytest.param("expired_server", "ca", "localhost", "certificate has expired", id="expired"),
    pytest.param(
        "self_signed_server", "ca", "localhost", "self[- ]signed certificate", id="self-signed"
    ),
]


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def ports(certificates: Certificates) -> Iterator[dict[str, int]]:
    """One HTTPS server per server certificate, for the whole session: name -> port."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(HttpsCore(*getattr(certificates, name))).port
            for name in SERVERS
        }


def backend(certificates: Certificates, ca: str, host: str, port: int) -> CoreBackend:
    ca_file = str(getattr(certificates, ca))
    return CoreBackend(f"https://{host}:{port}", DEVICE, ca_file=ca_file, timeout=10)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_the_right_ca_and_host_are_accepted(
    certificates: Certificates, ports: dict[str, int], host: str
) -> None:
    async with backend(certificates, "ca", host, ports["server"]) as core:
        assert await core.get_update_requests() == []


@pytest.mark.parametrize(("server", "ca", "host", "reason"), REFUSALS)
async def test_a_certificate_that_does_not_verify_is_refused(
    certificates: Certificates,
    ports: dict[str, int],
    server: str,
    ca: str,
    host: str,
    reason: str,
) -> None:
    port = ports[server]
    async with backend(certificates, ca, host, port) as core:
        with pytest.raises(TransportError) as caught:
            await core.get_update_requests()
    text = str(caught.value)
    assert text.startswith(
        f"HTTP transport error: GET https://{host}:{port}/api/v1/mydevice/{DEVICE}/updates: "
        "could not connect: "
    )
    assert "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: " in text
    assert re.search(reason, text), text


@pytest.mark.parametrize(("server", "ca", "host", "reason"), REFUSALS)
async def test_without_verification_every_refused_server_answers(
    certificates: Certificates,
    ports: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    server: str,
    ca: str,
    host: str,
    reason: str,
) -> None:
    """The refusals above are verification's doing: these servers speak TLS and answer."""

    def unverified(ca_file: str | None, *, required: bool) -> ssl.SSLContext:
        return ssl._create_unverified_context()

    monkeypatch.setattr(_backend, "_tls_context", unverified)
    async with backend(certificates, ca, host, ports[server]) as core:
        assert await core.get_update_requests() == []
