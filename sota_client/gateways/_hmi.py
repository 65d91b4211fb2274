"""The web HMI page the HTTP gateway serves at ``/``: one static file, told where to connect.

The page has no dependencies and no build step. It learns the websocket gateway's URL and the
package manager from two placeholders filled in here, so it needs no configuration of its own.
"""

from __future__ import annotations

import html
from importlib import resources

from .._config import parse_socket_addr
from ._local_http import url_host

__all__ = ["hmi_page", "page_url", "websocket_url"]

_PAGE = ("hmi", "index.html")
_WEBSOCKET_PLACEHOLDER = "__SOTA_WEBSOCKET_URL__"
_PACKAGE_MANAGER_PLACEHOLDER = "__SOTA_PACKAGE_MANAGER__"


def hmi_page(websocket: str, package_manager: str) -> bytes:
    """The page, with the websocket URL (``""``: the page's own host) and the package manager."""
    page = resources.files(__package__).joinpath(*_PAGE).read_text(encoding="utf-8")
    page = page.replace(_WEBSOCKET_PLACEHOLDER, html.escape(websocket, quote=True))
    page = page.replace(_PACKAGE_MANAGER_PLACEHOLDER, html.escape(package_manager, quote=True))
    return page.encode("utf-8")


def websocket_url(address: str) -> str:
    """``ws://host:port/`` for the page (``0.0.0.0`` or ``[::]`` when the gateway listens on
    every address: the page then puts in the host it was loaded from)."""
    host, port = parse_socket_addr(address)
    return f"ws://{url_host(host)}:{port}/"


def page_url(address: str) -> str:
    """``http://host:port/``: where the HTTP gateway at ``address`` serves the page."""
    host, port = parse_socket_addr(address)
    return f"http://{url_host(host)}:{port}/"
