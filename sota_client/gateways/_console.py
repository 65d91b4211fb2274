"""The console gateway: a REPL on stdin/stdout for debugging (``[gateway] console = true``).

One command a line, after a ``> `` prompt; each command's final event is printed as its JSON.
End of input stops the console and leaves the daemon running (2016 spun in a busy loop, bug 49).
"""

from __future__ import annotations

import logging
from typing import TextIO

import anyio

from swlm_sdk.protocol import CommandSyntaxError, encode_event, parse_command

from ._socket import Execute

__all__ = ["run_console"]

logger = logging.getLogger(__name__)


async def run_console(execute: Execute, stdin: TextIO, stdout: TextIO) -> None:
    """Read and run commands until end of input, or until the terminal fails."""
    try:
        await _repl(execute, stdin, stdout)
    except (OSError, ValueError) as exc:  # a hung-up terminal, undecodable input, closed files
        logger.error("Console: %s; the console is closed, the daemon goes on", exc)


async def _repl(execute: Execute, stdin: TextIO, stdout: TextIO) -> None:
    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    while True:
        write("> ")
        line = await anyio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
        if not line:
            write("\n")
            logger.info("Console: end of input; the console is closed, the daemon goes on")
            return
        if not line.strip():
            continue
        try:
            command = parse_command(line.rstrip("\r\n"))  # so error texts end without one
        except CommandSyntaxError as exc:
            logger.error("Console Error: %s", exc.reply)
            write(exc.reply + "\n")
            continue
        event = await execute(command)
        if event is not None:
            write(encode_event(event).decode() + "\n")
