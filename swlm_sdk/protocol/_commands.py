"""The eleven 2016 commands, two extensions, and their text grammar (commands socket, console).

A command is one line: a name or its alias, then arguments separated by spaces or tabs, ended by
the end of input, ``\\n``, ``\\r`` or ``;`` (anything after the first terminator is ignored, as
in 2016). Names are whole words: the 2016 prefix match (``dlx`` = ``dl x``) is not copied.
"""

from __future__ import annotations

import re
from typing import ClassVar

import msgspec

from .._errors import CommandSyntaxError, ProtocolError
from ._codes import ResultCode
from ._models import ClientCredentials, InstalledSoftware, OperationResult, Package, UpdateReport

__all__ = [
    "Authenticate",
    "Command",
    "GetUpdateRequests",
    "ListInstalledPackages",
    "ListSystemInfo",
    "SendInstallProgress",
    "SendInstalledPackages",
    "SendInstalledSoftware",
    "SendRebootNeeded",
    "SendSystemInfo",
    "SendUpdateReport",
    "Shutdown",
    "StartDownload",
    "StartInstall",
    "format_command",
    "parse_command",
]


class Command(msgspec.Struct, frozen=True):
    """Base of every command; ``name`` is the 2016 long name and ``alias`` its short form."""

    name: ClassVar[str] = ""
    alias: ClassVar[str] = ""


class Authenticate(Command, frozen=True):
    """Get an OAuth2 token (the daemon always uses its configured credentials)."""

    name: ClassVar[str] = "Authenticate"
    alias: ClassVar[str] = "auth"
    credentials: ClientCredentials | None = None


class Shutdown(Command, frozen=True):
    """Stop the daemon."""

    name: ClassVar[str] = "Shutdown"
    alias: ClassVar[str] = "shutdown"


class GetUpdateRequests(Command, frozen=True):
    """Ask Core for pending and in-flight updates."""

    name: ClassVar[str] = "GetUpdateRequests"
    alias: ClassVar[str] = "getreq"


class ListInstalledPackages(Command, frozen=True):
    """Ask the local package manager what is installed."""

    name: ClassVar[str] = "ListInstalledPackages"
    alias: ClassVar[str] = "ls"


class ListSystemInfo(Command, frozen=True):
    """Run the ``system_info`` command and return its output."""

    name: ClassVar[str] = "ListSystemInfo"
    alias: ClassVar[str] = "info"


class StartDownload(Command, frozen=True):
    """Download an update."""

    name: ClassVar[str] = "StartDownload"
    alias: ClassVar[str] = "dl"
    update_id: str


class StartInstall(Command, frozen=True):
    """Install a downloaded update with the local package manager."""

    name: ClassVar[str] = "StartInstall"
    alias: ClassVar[str] = "inst"
    update_id: str


class SendInstalledPackages(Command, frozen=True):
    """Replace the installed-package list on Core."""

    name: ClassVar[str] = "SendInstalledPackages"
    alias: ClassVar[str] = "sendpack"
    packages: tuple[Package, ...]


class SendInstalledSoftware(Command, frozen=True):
    """Send packages and firmware over RVI (no text form, as in 2016)."""

    name: ClassVar[str] = "SendInstalledSoftware"
    alias: ClassVar[str] = "sendinst"
    software: InstalledSoftware


class SendSystemInfo(Command, frozen=True):
    """Run ``system_info`` and send its output to Core."""

    name: ClassVar[str] = "SendSystemInfo"
    alias: ClassVar[str] = "sendinfo"


class SendUpdateReport(Command, frozen=True):
    """Report an update's outcome to Core."""

    name: ClassVar[str] = "SendUpdateReport"
    alias: ClassVar[str] = "sendup"
    report: UpdateReport


class SendInstallProgress(Command, frozen=True):
    """How far an install has got (an extension: a 2016 daemon answers it ``bad command``).

    The name and its alias start with no 2016 name or alias, so the 2016 client's prefix
    matching cannot take it for another command.
    """

    name: ClassVar[str] = "SendInstallProgress"
    alias: ClassVar[str] = "progress"
    update_id: str
    percent: int
    text: str = ""


class SendRebootNeeded(Command, frozen=True):
    """The update is installed but counts only once the device has rebooted into it and the
    SWLM has confirmed it (an extension: a 2016 daemon answers it ``bad command``). The daemon
    then waits for the report without a deadline."""

    name: ClassVar[str] = "SendRebootNeeded"
    alias: ClassVar[str] = "rebootneeded"
    update_id: str
    text: str = ""


_COMMAND_TYPES: tuple[type[Command], ...] = (
    Authenticate,
    GetUpdateRequests,
    ListInstalledPackages,
    ListSystemInfo,
    Shutdown,
    SendInstalledPackages,
    SendInstalledSoftware,
    SendSystemInfo,
    SendUpdateReport,
    StartDownload,
    StartInstall,
    SendInstallProgress,
    SendRebootNeeded,
)
_EXTENSIONS: frozenset[type[Command]] = frozenset({SendInstallProgress, SendRebootNeeded})
_BY_WORD: dict[str, type[Command]] = {
    **{cls.name: cls for cls in _COMMAND_TYPES},
    **{cls.alias: cls for cls in _COMMAND_TYPES},
}

_TERMINATOR = re.compile(r"[\r\n;]")
_TOKEN = re.compile(r"[^ \t\r\n;]+")
_PERCENT = re.compile(r"100|[1-9]?[0-9]")


def _rust_debug(args: list[str]) -> str:
    """A list of strings as Rust's ``{:?}`` printed it in the 2016 error texts: ``["a", "b"]``."""

    def one(arg: str) -> str:
        out = []
        for ch in arg:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch == "\t":
                out.append("\\t")
            elif ch == "\0":
                out.append("\\0")
            elif not ch.isprintable():
                out.append(f"\\u{{{ord(ch):x}}}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    return "[" + ", ".join(one(arg) for arg in args) + "]"


def parse_command(data: bytes | str, *, extensions: bool = True) -> Command:
    """Parse one text command as the 2016 client did (whole-word names, see the module doc).

    Two extensions: ``SendUpdateReport <id> <code> <text...>`` takes an optional result text
    (everything after the code up to the terminator, without the surrounding spaces), and
    ``SendInstallProgress <id> <percent> [<text...>]``. ``extensions=False`` refuses both as
    the 2016 client did (``unexpected SendUpdateReport args: ["u1", "4", "dpkg", "failed"]``,
    ``bad command: SendInstallProgress u1 40``): for a peer that acts as a 2016 daemon, e.g.
    :class:`~swlm_sdk.testing.FakeDaemon` with ``strict_2016``.

    :raises CommandSyntaxError: with the 2016 message, e.g. ``usage: dl <id>``.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise CommandSyntaxError(
                "stream did not contain valid UTF-8",
                reply="IO error: stream did not contain valid UTF-8",
            ) from None
    else:
        text = data
    line = _TERMINATOR.split(text, maxsplit=1)[0]
    tokens = list(_TOKEN.finditer(line))
    cls = _BY_WORD.get(tokens[0].group()) if tokens else None
    if cls is None or (cls in _EXTENSIONS and not extensions):
        raise CommandSyntaxError(f"bad command: {text}")
    args = [token.group() for token in tokens[1:]]
    # What follows the n-th argument, to the terminator: a free text in the last place.
    after = [line[token.end() :] for token in tokens[1:]]
    return _build(cls, args, after, result_text=extensions)


def _unexpected(name: str, args: list[str]) -> CommandSyntaxError:
    return CommandSyntaxError(f"unexpected {name} args: {_rust_debug(args)}")


def _build(cls: type[Command], args: list[str], after: list[str], *, result_text: bool) -> Command:
    """The 2016 argument rules (``parse_arguments``), with its messages."""
    n = len(args)
    if cls is Authenticate:
        if n == 0:
            return Authenticate()
        if n == 2:
            return Authenticate(ClientCredentials(args[0], args[1]))
        if n == 1:
            raise CommandSyntaxError("usage: auth <client-id> <client-secret>")
        raise _unexpected(cls.name, args)
    if cls in (StartDownload, StartInstall):
        if n == 1:
            return cls(args[0])
        if n == 0:
            raise CommandSyntaxError(f"usage: {cls.alias} <id>")
        raise _unexpected(cls.name, args)
    if cls is SendInstalledPackages:
        if n < 2:
            raise CommandSyntaxError("usage: sendpack (<name> <version> )+")
        if n % 2:
            raise CommandSyntaxError(
                "SendInstalledPackages expects an even number of 'name version' pairs"
            )
        return SendInstalledPackages(tuple(Package(args[i], args[i + 1]) for i in range(0, n, 2)))
    if cls is SendUpdateReport:
        if n < 2:
            raise CommandSyntaxError("usage: sendup <update-id> <result-code>")
        try:
            code = ResultCode.parse(args[1])
        except ProtocolError:
            raise CommandSyntaxError("couldn't parse 2nd argument as an UpdateResultCode") from None
        if n > 2 and not result_text:
            raise _unexpected(cls.name, args)
        text = after[1].strip(" \t") if n > 2 else ""
        return SendUpdateReport(UpdateReport.single(args[0], code, text))
    if cls is SendInstallProgress:
        if n < 2:
            raise CommandSyntaxError("usage: progress <update-id> <percent> [<text>]")
        if _PERCENT.fullmatch(args[1]) is None:
            raise CommandSyntaxError("couldn't parse 2nd argument as a percentage from 0 to 100")
        return SendInstallProgress(args[0], int(args[1]), after[1].strip(" \t") if n > 2 else "")
    if cls is SendRebootNeeded:
        if n < 1:
            raise CommandSyntaxError("usage: rebootneeded <update-id> [<text>]")
        return SendRebootNeeded(args[0], after[0].strip(" \t") if n > 1 else "")
    if cls is SendInstalledSoftware:
        # FIXME(PRO-1160) in 2016: there is no text form of this command.
        raise _unexpected(cls.name, args)
    if n:
        raise _unexpected(cls.name, args)
    return cls()


def _check_token(value: str, what: str) -> str:
    if not value or _TOKEN.fullmatch(value) is None:
        raise ProtocolError(
            f"{what} {value!r} cannot be sent as text: it must be non-empty and contain no "
            "spaces, tabs, line breaks or ';'"
        )
    return value


def format_command(command: Command, *, alias: bool = False) -> str:
    """The canonical text of a command, which :func:`parse_command` reads back unchanged.

    ``SendUpdateReport`` writes the code as a number and, only when there is one, the result
    text after it (the extension announced in the client guide's TIP).

    :raises ProtocolError: the command has no text form, or an argument contains a space,
        tab, line break or ``;`` (the text grammar cannot carry it).
    """
    word = command.alias if alias else command.name
    match command:
        case Authenticate(credentials=None):
            args: list[str] = []
        case Authenticate(credentials=ClientCredentials(client_id=cid, client_secret=secret)):
            args = [_check_token(cid, "client id"), _check_token(secret, "client secret")]
        case StartDownload(update_id=uid) | StartInstall(update_id=uid):
            args = [_check_token(uid, "update id")]
        case SendInstalledPackages(packages=packages):
            if not packages:
                raise ProtocolError("SendInstalledPackages needs at least one package as text")
            args = []
            for package in packages:
                args += [_check_token(package.name, "package name")]
                args += [_check_token(package.version, "package version")]
        case SendUpdateReport(report=report):
            args = _report_args(report)
        case SendRebootNeeded(update_id=uid, text=text):
            args = [_check_token(uid, "update id")] + ([_check_text(text)] if text else [])
        case SendInstallProgress(update_id=uid, percent=percent, text=text):
            if _PERCENT.fullmatch(str(percent)) is None:
                raise ProtocolError(f"a percentage is from 0 to 100, not {percent!r}")
            args = [_check_token(uid, "update id"), str(percent)]
            if text:
                args.append(_check_text(text))
        case SendInstalledSoftware():
            raise ProtocolError("SendInstalledSoftware has no text form")
        case _:
            args = []
    return " ".join([word, *args])


def _report_args(report: UpdateReport) -> list[str]:
    match report.operation_results:
        case (OperationResult(id=rid, result_code=code, result_text=text),) if (
            rid == report.update_id
        ):
            pass
        case _:
            raise ProtocolError(
                "the text form carries one result whose id is the update id; "
                f"report {report.update_id!r} has {len(report.operation_results)}"
            )
    args = [_check_token(report.update_id, "update id"), str(int(code))]
    if text:
        args.append(_check_text(text, "result text"))
    return args


def _check_text(text: str, what: str = "text") -> str:
    """A free text as the last argument: it runs to the terminator, blanks around it dropped."""
    if _TERMINATOR.search(text) or text != text.strip(" \t"):
        raise ProtocolError(
            f"{what} cannot contain line breaks or ';' nor start or end with a space"
        )
    return text
