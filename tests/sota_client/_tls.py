"""Test certificates made with the ``openssl`` command line, and a tiny HTTPS Core on loopback.

:func:`make_certificates` writes two unrelated CAs and server certificates signed by the first:
right for ``localhost`` and ``127.0.0.1``, for another name only, expired; plus a self-signed one.
:class:`HttpsCore` serves one certificate and answers ``GET /api/v1/mydevice/<uuid>/updates``
with ``200 []`` (anything else is a 404).
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["Certificates", "HttpsCore", "make_certificates", "requires_openssl"]

requires_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command line"
)

_HOSTS = "DNS:localhost,IP:127.0.0.1"
#: One file for every openssl call, so that no system openssl.cnf changes the certificates.
_CONFIG = f"""\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_cert]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_cert]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {_HOSTS}

[other_name_cert]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:core.example.com

[self_signed_cert]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = {_HOSTS}

# `openssl ca` is the one way to back-date a certificate with OpenSSL 3.0 (`req -x509` and
# `x509 -req` start it now; `-not_before` came in 3.4).
[ca]
default_ca = test_ca

[test_ca]
database = index.txt
new_certs_dir = issued
serial = serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none

[any_name]
commonName = supplied
"""


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files; each ``*_server`` is a ``(certificate, key)`` pair."""

    ca: Path
    other_ca: Path
    server: tuple[Path, Path]
    other_name_server: tuple[Path, Path]
    expired_server: tuple[Path, Path]
    self_signed_server: tuple[Path, Path]


def make_certificates(directory: Path) -> Certificates:
    """Make every certificate in ``directory`` (EC P-256 keys: quick to generate)."""
    config = directory / "openssl.cnf"
    config.write_text(_CONFIG)
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    (directory / "issued").mkdir()

    def openssl(*args: str | Path) -> None:
        subprocess.run(
            ["openssl", *map(str, args)],
            cwd=directory,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def new_key(name: str) -> Path:
        key = directory / f"{name}.key"
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        return key

    def self_signed(name: str, subject: str, extensions: str) -> tuple[Path, Path]:
        key, cert = new_key(name), directory / f"{name}.pem"
        openssl(
            "req",
            *("-config", config, "-x509", "-new", "-key", key, "-subj", subject),
            *("-extensions", extensions, "-days", "30", "-sha256", "-out", cert),
        )
        return cert, key

    def request(name: str, subject: str = "/CN=localhost") -> tuple[Path, Path]:
        key, csr = new_key(name), directory / f"{name}.csr"
        openssl("req", "-config", config, "-new", "-key", key, "-subj", subject, "-out", csr)
        return csr, key

    def signed(name: str, extensions: str, serial: int, subject: str) -> tuple[Path, Path]:
        csr, key = request(name, subject)
        cert = directory / f"{name}.pem"
        openssl(
            "x509",
            *("-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", str(serial)),
            *("-extfile", config, "-extensions", extensions, "-days", "30", "-sha256"),
            *("-out", cert),
        )
        return cert, key

    ca, ca_key = self_signed("ca", "/CN=SOTA test CA", "ca_cert")
    other_ca, _ = self_signed("other-ca", "/CN=Another test CA", "ca_cert")
    csr, expired_key = request("expired")
    expired = directory / "expired.pem"
    openssl(
        "ca",
        *("-batch", "-config", config, "-cert", ca, "-keyfile", ca_key, "-in", csr),
        *("-extensions", "server_cert", "-startdate", "20200101000000Z"),
        *("-enddate", "20200201000000Z", "-notext", "-out", expired),
    )
    return Certificates(
        ca=ca,
        other_ca=other_ca,
        server=signed("server", "server_cert", 1, "/CN=localhost"),
        other_name_server=signed("other-name", "other_name_cert", 2, "/CN=core.example.com"),
        expired_server=(expired, expired_key),
        self_signed_server=self_signed("self-signed", "/CN=localhost", "self_signed_cert"),
    )


_UPDATES = re.compile(r"/api/v1/mydevice/[^/?]+/updates")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection cannot hold a thread for ever

    def do_GET(self) -> None:
        found = bool(_UPDATES.fullmatch(self.path))
        body = b"[]" if found else b"not found"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json" if found else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake runs here, in the connection's thread, not in the accept loop."""
        assert isinstance(request, socket.socket)
        request.settimeout(10)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError too: the client refused the certificate
            return
        with connection:
            try:
                _Handler(connection, client_address, self)
            except OSError:
                pass


class HttpsCore:
    """``with HttpsCore(cert, key) as core:`` serves HTTPS on 127.0.0.1, port ``core.port``."""

    def __init__(self, certificate: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.context = context
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HttpsCore:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=30)
