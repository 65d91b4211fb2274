"""The OAuth2 client-credentials server the 2016 client talks to: token issue, check, revoke."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from typing import Annotated, Literal

import msgspec

__all__ = ["AuthSettings", "TokenResponse", "TokenStore"]

NO_TOKEN = "The resource requires authentication, which was not supplied with the request"
BAD_TOKEN = "The supplied authentication is invalid"
NO_SCOPE = "The supplied authentication is not authorized to access this resource"


def _new_secret() -> str:
    return secrets.token_urlsafe(24)


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Turns on token auth for the device routes.

    ``token_lifetime`` is in seconds (``expires_in`` is its integer part); 0 gives tokens that
    are already expired. With ``check_scopes``, a device call also needs
    ``ota-core.<uuid>.read`` (GET) or ``ota-core.<uuid>.write`` (PUT, POST) in the token's
    ``scope``; otherwise any valid token may act for any device.
    """

    client_id: str = "sota-sim-client"
    client_secret: str = msgspec.field(default_factory=_new_secret)
    token_lifetime: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    scope: str = "ota-core"
    check_scopes: bool = False


class TokenResponse(msgspec.Struct, frozen=True):
    """The token endpoint's answer: all four fields, as the 2016 client requires."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str


class _Token(msgspec.Struct):
    expires_at: float
    scopes: frozenset[str]


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(id, secret)`` from an ``Authorization: Basic ...`` header, or None if absent or bad."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class TokenStore:
    """Issued tokens with their expiry; thread-safe."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}

    def credentials_ok(self, client_id: str, client_secret: str) -> bool:
        # Constant-time compares: the secret is the only thing standing between a client and Core.
        ok_id = hmac.compare_digest(client_id.encode(), self.settings.client_id.encode())
        ok_secret = hmac.compare_digest(
            client_secret.encode(), self.settings.client_secret.encode()
        )
        return ok_id and ok_secret

    def issue(self) -> TokenResponse:
        token = secrets.token_urlsafe(32)
        lifetime = self.settings.token_lifetime
        now = time.monotonic()
        with self._lock:
            # Forget expired tokens so a long-running demo does not accumulate them.
            self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
            self._tokens[token] = _Token(now + lifetime, frozenset(self.settings.scope.split()))
        return TokenResponse(token, "bearer", int(lifetime), self.settings.scope)

    def revoke_all(self) -> int:
        """Expire every issued token; return how many there were."""
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count

    def check(
        self, header: str | None, device: str | None, access: Literal["read", "write"]
    ) -> tuple[int, str] | None:
        """None if the request may go on, else ``(status, text)`` to answer with."""
        token = parse_bearer(header)
        if token is None:
            return 401, NO_TOKEN
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry.expires_at <= time.monotonic():
            return 401, BAD_TOKEN
        if self.settings.check_scopes and device is not None:
            wanted = {f"ota-core.{device}.{access}"}
            if access == "read":
                wanted.add(f"ota-core.{device}.read.readonly")
            if not wanted & entry.scopes:
                return 403, NO_SCOPE
        return None
