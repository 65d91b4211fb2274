#!/usr/bin/env python3
"""swlm_deb: an example SWLM that installs the Debian packages the SOTA client downloads.

A template to copy: it depends only on ``swlm_sdk`` and the standard library. Lines marked
``ADAPT:`` are the places a vendor usually changes. Run ``python swlm_deb.py --help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from swlm_sdk import DownloadComplete, InstallError, Package, ResultCode, SwlmError
from swlm_sdk.app import App

log = logging.getLogger("swlm_deb")

# ADAPT: where the SDK keeps its journal of handled updates (systemd's StateDirectory= wins).
DEFAULT_STATE_DIR = "/var/lib/swlm-deb"
# ADAPT: how long one `dpkg -i` may run (maintainer scripts included) before it is killed.
DEFAULT_TIMEOUT = 600.0
# dpkg-deb, dpkg-query and `dpkg --compare-versions` only read; they are quick.
QUERY_TIMEOUT = 60.0
# How many lines of dpkg's output go into a failure report.
TAIL_LINES = 10

# dpkg's second status letter: installed, or installed with triggers awaited/pending ("iW",
# "it"); a held package ("hi") is installed too. "iU" (unpacked) and "rc" (removed) are not.
INSTALLED_STATES = ("i", "W", "t")
# Debian policy 5.6.1 and 5.6.12; checked because both values end up on dpkg command lines.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")


def tool_env() -> dict[str, str]:
    """The environment for dpkg: English messages, and the sbin directories in PATH."""
    env = dict(os.environ)
    # The results are told apart by dpkg's English phrases ("dependency problems").
    env["LC_ALL"] = "C.UTF-8"
    env.pop("LANGUAGE", None)
    # dpkg refuses to run unless it finds ldconfig and start-stop-daemon in PATH.
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p]
    path += [p for p in ("/usr/local/sbin", "/usr/sbin", "/sbin") if p not in path]
    env["PATH"] = os.pathsep.join(path)
    return env


def tail(output: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a tool's output, as one line joined by " | "."""
    # A result text is one line: the SDK would turn line breaks (and ';') into spaces.
    return " | ".join([line.strip() for line in output.splitlines() if line.strip()][-lines:])


class Dpkg:
    """Installs .deb files with dpkg and lists what is installed, on ``/`` or a test root.

    :param root: install into this directory instead of ``/`` (``dpkg --root``, as an
        unprivileged user, maintainer scripts run outside a chroot, no dpkg log). For tests
        and demos only; its database ``<root>/var/lib/dpkg`` is created if missing.
    :param allow_downgrade: install a lower version than the installed one.
    :param timeout: seconds one ``dpkg -i`` may take before it is killed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        allow_downgrade: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.root = None if root is None else os.path.abspath(root)
        self.admindir = None if self.root is None else os.path.join(self.root, "var/lib/dpkg")
        self.allow_downgrade = allow_downgrade
        self.timeout = timeout

    def prepare_root(self) -> None:
        """Create the test root's dpkg database (the files and directories dpkg expects)."""
        if self.admindir is None:
            return
        for sub in ("info", "updates"):
            os.makedirs(os.path.join(self.admindir, sub), exist_ok=True)
        for name in ("status", "available"):
            Path(self.admindir, name).touch()

    def _db(self) -> list[str]:
        return [] if self.admindir is None else [f"--admindir={self.admindir}"]

    def _dpkg(self) -> list[str]:
        if self.root is None:
            return ["dpkg"]
        return [
            "dpkg",
            f"--root={self.root}",
            *self._db(),
            "--force-not-root",
            "--force-script-chrootless",
            "--log=/dev/null",
        ]

    def _query(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        # A list of arguments, never a shell string: the image path and the package's fields
        # come from outside.
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=QUERY_TIMEOUT,
            env=tool_env(),
            check=False,
        )

    # -- the install handler --------------------------------------------------------------

    def install(self, event: DownloadComplete) -> tuple[ResultCode, str]:
        """Install ``event.update_image``; called by the SDK in a worker thread."""
        image = event.update_image
        if not os.path.isfile(image):
            raise InstallError(ResultCode.VALIDATION_FAILED, f"no update image file at {image}")
        if image.startswith("-"):
            image = "./" + image  # a relative name must not read as an option
        name, version = self.read_control(image)
        installed = self.installed_version(name)
        if installed is not None:
            if self.compare(installed, "eq", version):
                return ResultCode.ALREADY_PROCESSED, f"{name} {version} is already installed"
            if not self.allow_downgrade and self.compare(version, "lt", installed):
                return (
                    ResultCode.OLD_VERSION,
                    f"{name} {version} is older than the installed {installed}",
                )
        log.info("installing %s %s (installed: %s)", name, version, installed or "none")
        try:
            # start_new_session: a Ctrl-C at the terminal must not reach dpkg half-way; the
            # SDK lets a running sync handler finish before it exits.
            result = subprocess.run(
                [*self._dpkg(), "-i", image],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=self.timeout,
                env=tool_env(),
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return (
                ResultCode.INSTALL_FAILED,
                f"dpkg did not finish within {self.timeout:g} s and was killed",
            )
        if result.returncode == 0:
            return ResultCode.OK, f"installed {name} {version}"
        output = result.stdout
        log.error("dpkg -i %s failed (exit %d):\n%s", image, result.returncode, output)
        if "dependency problems" in output:
            if installed is None:
                self.remove(name)
            return ResultCode.DEPENDENCY_FAILURE, tail(output)
        if "No space left on device" in output:
            return ResultCode.DISK_FULL, tail(output)
        # ADAPT: map more dpkg failures here (e.g. "dpkg frontend lock" -> retry later).
        return ResultCode.INSTALL_FAILED, tail(output)

    def read_control(self, image: str) -> tuple[str, str]:
        """The package's name and version, read with dpkg-deb: this also validates the file.

        :raises InstallError: VALIDATION_FAILED when it is not a readable .deb.
        """
        result = self._query(["dpkg-deb", "--field", image, "Package", "Version"])
        if result.returncode != 0:
            message = tail(result.stderr) or f"dpkg-deb exited with status {result.returncode}"
            raise InstallError(ResultCode.VALIDATION_FAILED, message)
        fields: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, colon, value = line.partition(":")
            if colon:
                fields[key.strip()] = value.strip()
        name, version = fields.get("Package", ""), fields.get("Version", "")
        if not PACKAGE_NAME.fullmatch(name):
            raise InstallError(ResultCode.VALIDATION_FAILED, f"bad Package field {name!r}")
        if not VERSION.fullmatch(version):
            raise InstallError(ResultCode.VALIDATION_FAILED, f"bad Version field {version!r}")
        # ADAPT: check the vendor's signature here (event.signature, or a detached .sig).
        return name, version

    def installed_version(self, name: str) -> str | None:
        """The installed version of package ``name``, or None if it is not installed."""
        fmt = "${db:Status-Abbrev} ${Version}"
        result = self._query(["dpkg-query", *self._db(), "-W", "-f", fmt, name])
        if result.returncode != 0:  # "no packages found matching <name>"
            return None
        status, _, version = result.stdout.partition(" ")
        return version.strip() if status[1:2] in INSTALLED_STATES else None

    def compare(self, left: str, op: str, right: str) -> bool:
        """Debian version order (epochs, ``~``) as dpkg itself computes it."""
        result = self._query(["dpkg", "--compare-versions", left, op, right])
        if result.returncode > 1:
            raise InstallError(ResultCode.VALIDATION_FAILED, tail(result.stderr))
        return result.returncode == 0

    def remove(self, name: str) -> None:
        """Remove a package dpkg left unpacked, so that a failed new install leaves no trace."""
        # ADAPT: for an upgrade the old version is already gone; `apt-get -f install` or a
        # reinstall of the old .deb repairs it. We leave that to the operator.
        result = subprocess.run(
            [*self._dpkg(), "--remove", name],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=self.timeout,
            env=tool_env(),
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            log.warning("could not remove the unconfigured %s: %s", name, tail(result.stderr))

    # -- the installed-packages provider ------------------------------------------------

    def installed_packages(self) -> list[Package]:
        """Every installed package, sent to Core after each install.

        :raises RuntimeError: dpkg-query failed (the SDK logs it and retries later).
        """
        fmt = "${db:Status-Abbrev} ${Package} ${Version}\n"
        result = self._query(["dpkg-query", *self._db(), "-W", "-f", fmt])
        if result.returncode != 0:
            raise RuntimeError(f"dpkg-query failed: {tail(result.stderr)}")
        packages = []
        for line in result.stdout.splitlines():
            # "ii  bash 5.2.15-2": the status is always three characters.
            status, fields = line[:3], line[3:].split()
            if status[1:2] in INSTALLED_STATES and len(fields) == 2:
                packages.append(Package(fields[0], fields[1]))
        return packages


def build_app(
    state_dir: str | os.PathLike[str],
    *,
    commands_socket: str | os.PathLike[str] | None = None,
    events_socket: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    dpkg_root: str | os.PathLike[str] | None = None,
    allow_downgrade: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> App:
    """The SWLM, ready for ``app.run()`` or ``await app.serve()``.

    Socket paths: the explicit ones, else ``config`` (the daemon's TOML), else
    ``$SOTA_CONFIG``, else the 2016 defaults.

    :raises swlm_sdk.ConfigError: a socket path or the config is unusable.
    :raises OSError: the test root's dpkg database cannot be created.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    dpkg = Dpkg(dpkg_root, allow_downgrade=allow_downgrade, timeout=timeout)
    dpkg.prepare_root()
    app = App(
        state_dir, commands_socket=commands_socket, events_socket=events_socket, config=config
    )
    # Plain functions: the SDK runs them in a worker thread and never interrupts one, because
    # a dpkg killed half-way leaves a broken package database.
    app.on_download_complete(dpkg.install)
    app.installed_packages(dpkg.installed_packages)
    return app


def positive_seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the SWLM until SIGTERM or SIGINT; 0 on a clean stop, 1 if it cannot start."""
    parser = argparse.ArgumentParser(
        prog="swlm_deb", description="Install the .deb updates the SOTA client downloads."
    )
    parser.add_argument("--config", metavar="PATH", help="the daemon's TOML (socket paths)")
    parser.add_argument("--commands-socket", metavar="PATH", help="the daemon's commands socket")
    parser.add_argument("--events-socket", metavar="PATH", help="the socket this SWLM creates")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        # systemd's StateDirectory= sets STATE_DIRECTORY (a list if several are given).
        default=os.environ.get("STATE_DIRECTORY", DEFAULT_STATE_DIR).split(":")[0],
        help="where the journal of handled updates is kept (default: %(default)s)",
    )
    parser.add_argument("--dpkg-root", metavar="DIR", help="install into DIR (tests, demos)")
    parser.add_argument("--allow-downgrade", action="store_true", help="install lower versions too")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="kill a dpkg install after this long (default: %(default)g)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    path = tool_env()["PATH"]
    missing = [t for t in ("dpkg", "dpkg-deb", "dpkg-query") if not shutil.which(t, path=path)]
    if missing:
        log.error("cannot start: %s not found in PATH", ", ".join(missing))
        return 1
    try:
        app = build_app(
            args.state_dir,
            commands_socket=args.commands_socket,
            events_socket=args.events_socket,
            config=args.config,
            dpkg_root=args.dpkg_root,
            allow_downgrade=args.allow_downgrade,
            timeout=args.timeout,
        )
        app.run()
    except (SwlmError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
