"""Absolute http(s) URLs as the daemon's HTTP client and the Core client use them.

Apart from ``_http1`` (and h11), so that the daemon reads its config and starts without
loading the HTTP stack, which the first request loads.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

import msgspec

__all__ = ["Url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# What may stay as it is in a path or query; anything else is percent-encoded (spaces, UTF-8).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


class Url(msgspec.Struct, frozen=True):
    """An absolute http(s) URL, split once: what a request needs, nothing more."""

    scheme: str
    host: str  # lower case, IDNA-encoded; an IPv6 address without brackets
    port: int
    explicit_port: bool
    path: str  # percent-encoded, starting with "/"
    query: str  # percent-encoded, without the "?"

    @classmethod
    def parse(cls, text: str) -> Url:
        """:raises ValueError: not an absolute http(s) URL with a host, or malformed."""
        parts = urllib.parse.urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"the scheme must be http or https, not {scheme or 'none'!r}")
        host = parts.hostname or ""
        if not host:
            raise ValueError("there is no host")
        try:
            port = parts.port  # raises ValueError for a port that is not a number in range
            host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError as exc:
            raise ValueError(f"the host {host!r} is not a valid name: {exc}") from None
        if any(char in host for char in " /\\\r\n\t") or (":" in host and not _is_ipv6(host)):
            raise ValueError(f"the host {host!r} is not a valid name")
        return cls(
            scheme=scheme,
            host=host,
            port=_DEFAULT_PORTS[scheme] if port is None else port,
            explicit_port=port is not None and port != _DEFAULT_PORTS[scheme],
            path=_quote(parts.path or "/", _PATH_SAFE),
            query=_quote(parts.query, _QUERY_SAFE),
        )

    def join(self, reference: str) -> Url:
        """``reference`` resolved against this URL (RFC 3986), e.g. a ``Location``.

        :raises ValueError: the result is not an absolute http(s) URL.
        """
        return Url.parse(urllib.parse.urljoin(str(self), reference.strip()))

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def netloc(self) -> str:
        """``host[:port]``, the port only when it is not the scheme's default (``Host:``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    @property
    def target(self) -> str:
        """The request target: path and query."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def shown(self) -> str:
        """``scheme://host[:port]/path``: no query (presigned URLs carry credentials there)."""
        return f"{self.scheme}://{self.netloc}{self.path}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _quote(text: str, safe: str) -> str:
    return urllib.parse.quote(text, safe=safe, encoding="utf-8", errors="strict")
