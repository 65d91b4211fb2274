"""The ``swlm`` command line: listen for events, send reports and commands, print result codes.

Exit codes (stable, for shell scripts):

* 0: done; the daemon accepted the command (``confirm``: the SWLM confirmed the update).
* 1: the daemon answered with an error: a rejection text (``Unknown Command: ...``) or a
  failure event (``Error``, ``NotAuthenticated``, ``DownloadFailed``, ``InstallFailed``);
  ``confirm``: the SWLM did not confirm the update, and says why.
* 2: usage error: bad arguments, result code, update id or config file.
* 3: no valid answer: the daemon (``confirm``: the SWLM) is unreachable, timed out, or
  answered garbage.
* 4: ``listen`` could not create the events socket.
* 5: ``listen`` could not pass an event on: its standard output is closed or failing.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import anyio
import msgspec

from ._client import DEFAULT_TIMEOUT, Client, Retry
from ._control import DEFAULT_CONFIRM_TIMEOUT, confirm_update, control_socket_path
from ._errors import (
    CommandFailed,
    CommandRejected,
    ConfigError,
    ConfirmRefused,
    ListenerError,
    ProtocolError,
    SwlmError,
    TransportError,
)
from ._listener import EventListener, event_name
from ._paths import resolve_socket_paths
from .protocol import (
    DownloadComplete,
    DownloadFailed,
    ErrorEvent,
    Event,
    InstallFailed,
    NotAuthenticated,
    Package,
    ResultCode,
    SendInstalledPackages,
    SendUpdateReport,
    Shutdown,
    UnknownEvent,
    UpdateReport,
    decode_reply,
    encode_envelope,
    encode_event,
    format_command,
    parse_command,
)

__all__ = [
    "EXIT_LISTEN",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_REJECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_LISTEN = 4
EXIT_OUTPUT = 5

_FAILURES = (ErrorEvent, NotAuthenticated, DownloadFailed, InstallFailed)

log = logging.getLogger("swlm_sdk.cli")


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _fail(code: int, message: str) -> NoReturn:
    raise _Exit(code, message)


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default(None),
        help="the daemon's TOML config ([network] socket paths); default: $SOTA_CONFIG",
    )
    parser.add_argument(
        "--commands-socket",
        metavar="PATH",
        default=default(None),
        help="commands socket (overrides the config)",
    )
    parser.add_argument(
        "--events-socket",
        metavar="PATH",
        default=default(None),
        help="events socket (overrides the config)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(DEFAULT_TIMEOUT),
        help=f"seconds to wait for the daemon's reply (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--retry",
        type=int,
        metavar="N",
        default=default(0),
        help="retry up to N times, with backoff, while the daemon is unreachable",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="log more (repeat for debug)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swlm",
        description="Talk to the SOTA client daemon over its Unix sockets (wire protocol 0.1).",
        epilog="exit codes: 0 accepted, 1 the daemon answered with an error, 2 usage, "
        "3 daemon unreachable or timed out, 4 cannot create the events socket, "
        "5 listen cannot write an event to stdout",
    )
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(name: str, help_text: str) -> argparse.ArgumentParser:
        child = commands.add_parser(name, help=help_text, description=help_text)
        _common(child, suppress=True)
        return child

    listen = sub("listen", "create the events socket and print events as they arrive")
    listen.add_argument(
        "--event",
        action="append",
        metavar="NAME",
        help="only this event (repeatable), e.g. DownloadComplete",
    )
    listen.add_argument("--json", action="store_true", help="one JSON envelope per line")
    listen.add_argument(
        "--mode",
        type=lambda text: int(text, 8),
        default=0o660,
        metavar="OCTAL",
        help="permissions of the events socket (default 660)",
    )
    listen.add_argument(
        "--count", type=int, metavar="N", help="exit after N events (default: run until a signal)"
    )

    report = sub("report", "send SendUpdateReport ID CODE [TEXT]")
    report.add_argument("update_id", metavar="ID")
    report.add_argument("code", metavar="CODE", help="0-19 or a name such as OK, INSTALL_FAILED")
    report.add_argument(
        "text", nargs="*", metavar="TEXT", help="optional result text (dropped for a 2016 daemon)"
    )

    packages = sub("packages", "send SendInstalledPackages NAME VERSION [NAME VERSION ...]")
    packages.add_argument("pairs", nargs="+", metavar="NAME VERSION")

    send = sub("send", "send one raw command and print the reply as it came")
    send.add_argument("raw", metavar="'COMMAND'", help="e.g. 'GetUpdateRequests'")

    confirm = commands.add_parser(
        "confirm",
        help="confirm an update after the reboot into it (to the running App, not the daemon)",
        description="Ask the running SWLM (an swlm_sdk App) to confirm an update that awaits "
        "its confirmation after a reboot; it runs its on_boot hook, then reports the update.",
    )
    where = confirm.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir", metavar="DIR", help="the App's state directory")
    where.add_argument("--control-socket", metavar="PATH", help="the App's control socket")
    confirm.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_CONFIRM_TIMEOUT,
        help=f"seconds to wait for the SWLM (default {DEFAULT_CONFIRM_TIMEOUT:g})",
    )
    confirm.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    confirm.add_argument("update_id", metavar="ID")

    sub("codes", "print the result-code table")
    return parser


def _client(args: argparse.Namespace) -> Client:
    paths = resolve_socket_paths(
        commands_socket=args.commands_socket,
        events_socket=args.events_socket or args.commands_socket,
        config=args.config,
    )
    retry = Retry(attempts=args.retry + 1) if args.retry > 0 else None
    if not args.timeout > 0:
        _fail(EXIT_USAGE, f"--timeout must be positive, got {args.timeout:g}")
    return Client(paths.commands, reply_timeout=args.timeout, retry=retry)


def _event_line(event: Event, as_json: bool) -> str:
    if as_json:
        if isinstance(event, DownloadComplete | DownloadFailed):
            return encode_envelope(event).decode()
        if isinstance(event, UnknownEvent) and event.version is not None:
            envelope = {"version": event.version, "event": event.event, "data": event.data}
            return msgspec.json.encode(envelope).decode()
        return encode_event(event).decode()
    if isinstance(event, UnknownEvent):
        return f"{event.event} data={shlex.quote(msgspec.json.encode(event.data).decode())}"
    fields = " ".join(
        f"{field.name}={shlex.quote(_value_text(value))}"
        for field in msgspec.structs.fields(event)
        # An optional field the daemon did not send (DownloadComplete's metadata, say).
        if (value := getattr(event, field.name)) is not None or field.default is not None
    )
    return f"{event_name(event)} {fields}".rstrip()


def _value_text(value: object) -> str:
    """A field as ``listen`` prints it: a package as ``name version``, as ``sendpack`` has it."""
    if isinstance(value, Package):
        return f"{value.name} {value.version}"
    return str(value)


async def _listen(args: argparse.Namespace) -> int:
    paths = resolve_socket_paths(
        commands_socket=args.commands_socket or args.events_socket,
        events_socket=args.events_socket,
        config=args.config,
    )
    listener = EventListener(paths.events, kinds=args.event, mode=args.mode)
    seen = 0
    lost: str | None = None
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with listener, anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

            group.start_soon(stop_on_signal)
            print(f"swlm: listening on {listener.path}", file=sys.stderr, flush=True)
            async for event in listener:
                try:
                    print(_event_line(event, args.json), flush=True)
                except OSError as exc:
                    # The event is off the socket and 0.1 has no acknowledgement: saying which
                    # one and failing is all that is left; the daemon hands unreported updates
                    # over again to the next listener (a new socket file).
                    _silence_stdout()
                    lost = f"couldn't pass on {_describe(event)}: {_stdout_failure(exc)}"
                    break
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
            group.cancel_scope.cancel()
    if lost is not None:
        _fail(EXIT_OUTPUT, lost)
    return EXIT_OK


def _describe(event: Event) -> str:
    update_id = getattr(event, "update_id", None)
    name = event_name(event)
    return name if update_id is None else f"{name} for update {update_id}"


def _stdout_failure(exc: OSError) -> str:
    if isinstance(exc, BrokenPipeError):
        return "stdout is closed (broken pipe)"
    return f"cannot write to stdout: {exc.strerror or exc}"


def _silence_stdout() -> None:
    """Stdout is unusable (the reader went away, the disk is full): send the rest nowhere,
    so that writing, and the flush at exit, cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _check_reply(reply: Event) -> int:
    return EXIT_REJECTED if isinstance(reply, _FAILURES) else EXIT_OK


async def _report(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        code = ResultCode.parse(args.code)
        format_command(SendUpdateReport(UpdateReport.single(args.update_id, code)))
    except ProtocolError as exc:
        _fail(EXIT_USAGE, str(exc))
    reply = await client.send_update_report(args.update_id, code, " ".join(args.text) or None)
    print(reply.name, flush=True)
    return EXIT_OK


async def _packages(args: argparse.Namespace) -> int:
    pairs: list[str] = args.pairs
    if len(pairs) % 2:
        _fail(EXIT_USAGE, "packages needs NAME VERSION pairs: got an odd number of words")
    packages = [Package(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
    try:
        format_command(SendInstalledPackages(tuple(packages)))
    except ProtocolError as exc:
        _fail(EXIT_USAGE, str(exc))
    client = _client(args)
    reply = await client.send_installed_packages(packages)
    print(reply.name, flush=True)
    return EXIT_OK


async def _send(args: argparse.Namespace) -> int:
    client = _client(args)
    raw: bytes = await client.send_raw(args.raw)
    sys.stdout.buffer.write(raw + b"\n")
    sys.stdout.flush()
    try:
        reply = decode_reply(raw)
    except CommandRejected:
        return EXIT_REJECTED
    except ProtocolError as exc:
        try:
            is_shutdown = isinstance(parse_command(args.raw), Shutdown)
        except ProtocolError:
            is_shutdown = False
        if not raw and is_shutdown:
            return EXIT_OK  # the daemon stops without answering, as in 2016
        _fail(EXIT_UNREACHABLE, f"the daemon's reply is not valid: {exc}")
    return _check_reply(reply)


async def _confirm(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        _fail(EXIT_USAGE, f"--timeout must be positive, got {args.timeout:g}")
    path = args.control_socket or control_socket_path(args.state_dir)
    text = await confirm_update(path, args.update_id, reply_timeout=args.timeout)
    print(f"confirmed update {args.update_id}: {text}" if text else "confirmed", flush=True)
    return EXIT_OK


def _codes() -> int:
    width = max(len(code.name) for code in ResultCode)
    for code in ResultCode:
        print(f"{code.value:>2}  {code.name:<{width}}  {code.description}")
    return EXIT_OK


async def _dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "listen": _listen,
        "report": _report,
        "packages": _packages,
        "send": _send,
        "confirm": _confirm,
    }
    result: int = await handlers[args.command](args)
    return result


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "codes":
            return _codes()
        return anyio.run(_dispatch, args)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except _Exit as exc:
        print(f"swlm: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"swlm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ListenerError as exc:
        print(f"swlm: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    except CommandRejected as exc:
        print(f"swlm: the daemon rejected the command: {exc.reply}", file=sys.stderr)
        return EXIT_REJECTED
    except CommandFailed as exc:
        print(f"swlm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except ConfirmRefused as exc:
        print(f"swlm: the SWLM did not confirm it: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except TransportError as exc:
        print(f"swlm: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ProtocolError as exc:
        print(f"swlm: the daemon's reply is not valid: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except SwlmError as exc:  # pragma: no cover - every subclass is handled above
        print(f"swlm: {exc}", file=sys.stderr)
        return EXIT_REJECTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``swlm`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="swlm: %(levelname)s %(name)s: %(message)s")
    return _run(args)
