"""The ``sota_client`` command line: the 2016 flags, config lookup, logging, then the daemon."""

from __future__ import annotations

import argparse
import importlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sota_client import __version__
from sota_client._config import (
    _SECTION_SETTINGS,
    Config,
    ConfigError,
    config_to_toml,
    load_config,
)

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

#: ``(gateway, section, message)``: a gateway that cannot start without a section (2016 texts).
_REQUIRED_SECTIONS = (
    ("dbus", "dbus", "dbus config required for dbus gateway"),
    ("rvi", "dbus", "dbus config required for rvi gateway"),
    ("rvi", "rvi", "rvi config required for rvi gateway"),
)


def build_parser() -> argparse.ArgumentParser:
    """The 2016 flags: ``-h -v -p -c`` and one ``--<section>-<key> VALUE`` per config key."""
    parser = argparse.ArgumentParser(
        prog="sota_client",
        usage="%(prog)s [options]\n       %(prog)s status [--config PATH] [--json]",
        description="SOTA client daemon, a drop-in replacement for the 2016 GENIVI sota_client.",
        epilog="'sota_client status' shows what the journal says about every update "
        "(see 'sota_client status --help'). "
        "Config lookup: --config PATH, else $SOTA_CONFIG, else the built-in defaults. "
        "Logging goes to stderr; set the level with SOTA_LOG or RUST_LOG "
        "(error, warn, info, debug, trace; default info).",
        add_help=False,
        allow_abbrev=False,
    )
    parser.add_argument("-h", "--help", action="help", help="print this help menu then quit")
    parser.add_argument(
        "-p", "--print", action="store_true", help="print the parsed config then quit"
    )
    parser.add_argument(
        "-v", "--version", action="version", version=__version__, help="print the version then quit"
    )
    parser.add_argument("-c", "--config", metavar="PATH", help="change config path")
    for section, settings in _SECTION_SETTINGS.items():
        group = parser.add_argument_group(f"[{section}] overrides")
        for setting in settings:
            group.add_argument(
                f"--{setting.flag}", dest=setting.flag, metavar=setting.metavar, help=setting.help
            )
    # getopts ignored free arguments; so do we, with a warning.
    parser.add_argument("free", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sota_client`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 after ``--help``, ``--version`` or ``--print``; 1 for a configuration error (one line on
    stderr); 2 for a usage error. Otherwise it runs the daemon and returns its status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return _status_main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else 1
    _configure_logging(os.environ)  # first, as in 2016, so config warnings are formatted
    if args.free:
        logger.warning("Ignoring extra arguments: %s", " ".join(args.free))
    try:
        config = load_config(
            args.config or os.environ.get("SOTA_CONFIG") or None, overrides=_overrides(vars(args))
        )
    except ConfigError as exc:
        print(f"sota_client: {exc}", file=sys.stderr)
        return 1
    if args.print:
        sys.stdout.write(config_to_toml(config))
        return 0
    for gateway, section, message in _REQUIRED_SECTIONS:
        if getattr(config.gateway, gateway) and getattr(config, section) is None:
            print(f"sota_client: {message}", file=sys.stderr)
            return 1
    return _run_daemon(config)


def _status_main(argv: Sequence[str]) -> int:
    """``sota_client status [--config PATH] [--json]``: the journal's view of every update.

    0 when the journal was read; 1 when the config or the journal cannot be read.
    """
    parser = argparse.ArgumentParser(
        prog="sota_client status",
        description="Show what the daemon's journal says about every update: its state, who "
        "holds it and since when, and the events and reports still waiting. Read-only; safe "
        "while the daemon runs.",
        epilog="Config lookup as for the daemon: --config PATH, else $SOTA_CONFIG, else the "
        "built-in defaults; the journal is <device.state_dir>/sota.db.",
        allow_abbrev=False,
    )
    parser.add_argument("-c", "--config", metavar="PATH", help="the daemon's config file")
    parser.add_argument("--json", action="store_true", help="print JSON for programs")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    environ = dict(os.environ)
    environ.setdefault("SOTA_LOG", "warn")  # the report is the output, not the loading
    _configure_logging(environ)
    try:
        config = load_config(
            args.config or os.environ.get("SOTA_CONFIG") or None, quiet=True, credentials=False
        )
    except ConfigError as exc:
        print(f"sota_client status: {exc}", file=sys.stderr)
        return 1
    from sota_client._status import format_status, read_status
    from sota_client._store import Journal, JournalError

    path = os.path.join(config.device.state_dir, "sota.db")
    try:
        with Journal.open_read_only(path) as journal:
            status = read_status(journal)
    except JournalError as exc:
        print(
            f"sota_client status: {exc} (device.state_dir = {config.device.state_dir})",
            file=sys.stderr,
        )
        return 1
    if args.json:
        import msgspec

        sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
    else:
        sys.stdout.write(format_status(status))
    return 0


def _overrides(flags: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """The values of the flags that were given, parsed; errors use the 2016 texts."""
    overrides: dict[tuple[str, str], Any] = {}
    for setting in itertools.chain.from_iterable(_SECTION_SETTINGS.values()):
        text, kind = flags[setting.flag], setting.kind
        if text is None:
            continue
        try:
            text.encode("utf-8")  # undecodable argv bytes arrive as lone surrogates
            overrides[setting.section, setting.key] = kind.parse_text(text)
        except UnicodeError:
            raise ConfigError(f"Invalid {setting.flag}: not valid UTF-8") from None
        except ValueError as exc:
            message = f"Invalid {setting.flag}{kind.flag_label}: {kind.flag_prefix}{exc}"
            raise ConfigError(message) from None
    return overrides


def _run_daemon(config: Config) -> int:
    """Hand over to ``sota_client._daemon.run(config)``, imported only now: --help, --version
    and --print stay fast and work without the daemon's dependencies."""
    try:
        daemon = importlib.import_module("sota_client._daemon")
    except ImportError as exc:
        detail = "" if exc.name == "sota_client._daemon" else f": {exc}"
        print(f"sota_client: the daemon is not available in this build{detail}", file=sys.stderr)
        return 1
    status = daemon.run(config)
    return status if isinstance(status, int) else 0


# --------------------------------------------------------------------------------------------
# Logging, in the 2016 env_logger format


_LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,  # Python has no level below DEBUG
}


def _log_level(spec: str | None) -> int:
    """The level a ``RUST_LOG``-style spec gives this program: ``sota_client=debug`` beats a
    bare ``debug``; other modules' directives and unknown words are ignored; default INFO."""
    chosen = {}
    for directive in (spec or "").split(","):
        module, _, level = directive.strip().rpartition("=")
        if module in ("", "sota_client") and level.lower() in _LEVELS:
            chosen[module] = _LEVELS[level.lower()]
    return chosen.get("sota_client", chosen.get("", logging.INFO))


class _EnvLoggerFormatter(logging.Formatter):
    """``2016-10-28T12:34:56Z (0.1.0): INFO - message``, like the 2016 client's env_logger."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        level = "WARN" if record.levelno == logging.WARNING else record.levelname
        line = f"{stamp} ({__version__}): {level} - {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by tests)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _configure_logging(environ: Mapping[str, str]) -> None:
    """Log to stderr at the level of ``SOTA_LOG`` (or else ``RUST_LOG``); safe to call twice."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_EnvLoggerFormatter())
    root.addHandler(handler)
    root.setLevel(_log_level(environ.get("SOTA_LOG") or environ.get("RUST_LOG")))
