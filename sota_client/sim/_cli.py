"""The command line: ``serve`` a simulator, or ``queue``/inspect/fault a running one over HTTP."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import msgspec

from ._auth import AuthSettings
from ._simulator import CoreSimulator, is_loopback

__all__ = ["main"]

_TIMEOUT = 30.0
# Never send simulator traffic through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CliError(Exception):
    """A failure to report on stderr, with the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _call(
    method: str,
    url: str,
    body: Any = None,
    *,
    content_type: str | None = None,
    length: int | None = None,
) -> bytes:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if length is not None:
        headers["Content-Length"] = str(length)
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=_TIMEOUT) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read().decode("utf-8", "replace").strip()
        raise CliError(f"{method} {url}: {exc.code} {text}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise CliError(f"cannot reach the simulator at {url}: {reason}") from None


def _json(method: str, url: str, value: object) -> bytes:
    return _call(method, url, msgspec.json.encode(value), content_type="application/json")


def _print_json(data: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())


# -- serve ------------------------------------------------------------------------------------


def _write_ready_file(path: str, url: str) -> None:
    # Atomic and private: a watcher never reads half a line, and nobody else can swap it.
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(url + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _serve(args: argparse.Namespace) -> int:
    auth = None
    if args.auth or args.client_id or args.client_secret:
        options: dict[str, Any] = {"token_lifetime": args.token_lifetime}
        if args.client_id:
            options["client_id"] = args.client_id
        if args.client_secret:
            options["client_secret"] = args.client_secret
        auth = AuthSettings(**options)
    try:
        sim = CoreSimulator(
            args.host,
            args.port,
            auth=auth,
            data_dir=args.data_dir,
            allow_remote=args.allow_remote,
            path_roots=args.allow_path,
            version_format=args.version_format,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Block the stop signals before any server thread exists, so only sigwait() sees them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        with sim:
            # The file first: whoever sees the stdout line may rely on the file being there.
            if args.ready_file:
                _write_ready_file(args.ready_file, sim.url)
            print(f"listening on {sim.url}", flush=True)
            if auth is not None:
                print(f"client_id {auth.client_id}", flush=True)
                print(f"client_secret {auth.client_secret}", flush=True)
            signal.sigwait(stop_signals)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


# -- client subcommands ---------------------------------------------------------------------


def _default_name(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9+._-]", "-", os.path.basename(path))[:100]
    return name or "package"


def _upload(url: str, path: str, name: str, version: str) -> None:
    target = f"{url}/sim/packages/{urllib.parse.quote(name, safe='')}/"
    target += urllib.parse.quote(version, safe="")
    if is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        try:
            _json("PUT", target, {"path": os.path.abspath(path)})
            return
        except CliError as exc:
            if exc.status not in (400, 403):
                raise
            # The server may not serve this directory: fall back to sending the bytes.
    size = os.path.getsize(path)
    with open(path, "rb") as body:
        _call("PUT", target, body, content_type="application/octet-stream", length=size)


def _queue(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    if not os.path.isfile(args.file):
        raise CliError(f"{args.file} is not a file")
    name = args.name or _default_name(args.file)
    _upload(url, args.file, name, args.version)
    device = urllib.parse.quote(args.device, safe="")
    reply = _json(
        "POST", f"{url}/api/v1/device_updates/{device}", {"name": name, "version": args.version}
    )
    print(msgspec.json.decode(reply)["requestId"])
    return 0


def _state_part(part: str | None) -> Any:
    def run(args: argparse.Namespace) -> int:
        device = urllib.parse.quote(args.device, safe="")
        state = msgspec.json.decode(_call("GET", f"{args.url.rstrip('/')}/sim/devices/{device}"))
        _print_json(state if part is None else state[part])
        return 0

    return run


def _inject(args: argparse.Namespace) -> int:
    spec = args.spec
    if spec.startswith("@"):
        with open(spec[1:], encoding="utf-8") as f:
            spec = f.read()
    try:
        json.loads(spec)
    except ValueError as exc:
        raise CliError(f"the fault spec is not JSON: {exc}") from None
    reply = _call(
        "POST", f"{args.url.rstrip('/')}/sim/faults", spec.encode(), content_type="application/json"
    )
    _print_json(msgspec.json.decode(reply))
    return 0


def _reset(args: argparse.Namespace) -> int:
    _call("POST", f"{args.url.rstrip('/')}/sim/reset", b"")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sota_client.sim", description="SOTA Core simulator (docs/simulator.md)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a simulator until SIGTERM or SIGINT")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--auth", action="store_true", help="require OAuth2 tokens on device calls")
    serve.add_argument("--client-id", help="client id the token endpoint accepts (implies --auth)")
    serve.add_argument("--client-secret", help="its secret (default: random, printed)")
    serve.add_argument("--token-lifetime", type=float, default=3600.0, metavar="SECONDS")
    serve.add_argument("--ready-file", help="write the URL to this file once listening")
    serve.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    serve.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="directory whose files may be registered by path (repeatable)",
    )
    serve.add_argument("--data-dir", help="where uploaded packages are stored")
    serve.add_argument("--version-format", default=".+", metavar="REGEX")
    serve.set_defaults(func=_serve)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--url", required=True, help="the simulator, e.g. http://127.0.0.1:8080")
        return p

    queue = client("queue", "upload a file as a package and queue it for a device")
    queue.add_argument("--device", required=True, help="device UUID")
    queue.add_argument("file")
    queue.add_argument("--name", help="package name (default: from the file name)")
    queue.add_argument("--version", default="1.0.0")
    queue.set_defaults(func=_queue)

    for name, part, help_text in (
        ("reports", "reports", "the update reports a device posted"),
        ("installed", "installed", "a device's installed-package list"),
        ("system-info", "systemInfo", "a device's system_info"),
        ("state", None, "everything the simulator knows about a device"),
    ):
        p = client(name, help_text)
        p.add_argument("--device", required=True, help="device UUID")
        p.set_defaults(func=_state_part(part))

    inject = client("inject", "arm a fault (JSON spec, or @file)")
    inject.add_argument("spec")
    inject.set_defaults(func=_inject)

    reset = client("reset", "forget all packages, devices, reports and faults")
    reset.set_defaults(func=_reset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code
