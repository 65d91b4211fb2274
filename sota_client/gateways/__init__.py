"""Gateways: how SWLMs and people talk to the daemon (Unix sockets, console)."""

from ._console import run_console as run_console
from ._events import EventOutbox as EventOutbox
from ._socket import CommandServer as CommandServer
from ._unix import claim_socket_path as claim_socket_path

__all__ = ["CommandServer", "EventOutbox", "claim_socket_path", "run_console"]
