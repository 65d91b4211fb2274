"""The ``sota_client`` command line: flags, config lookup, --print, errors, logging, hand-over."""

from __future__ import annotations

import importlib.abc
import logging
import os
import re
import stat
import subprocess
import sys
import tomllib
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sota_client import __version__
from sota_client.__main__ import main
from sota_client._cli import _configure_logging, _log_level, build_parser
from sota_client._config import (
    AuthConfig,
    Config,
    DBusConfig,
    RviConfig,
    config_to_toml,
    default_config,
    load_config,
    parse_config,
)
from tests.sota_client.test_config import ALL_KEYS, SAMPLES, TOML_DIR, expected_value, shipped

REPO = Path(__file__).parents[2]
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No outside config or log level; main() configures the root logger, so put it back."""
    for name in ("SOTA_CONFIG", "SOTA_LOG", "RUST_LOG"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def printed(capsys: pytest.CaptureFixture[str], *argv: str) -> Config:
    """The config that ``--print`` shows, read back."""
    code, out, err = run(capsys, "--print", *argv)
    assert code == 0, err
    return parse_config(out)


def error_line(err: str) -> str:
    """The last stderr line (earlier ones may be log lines)."""
    return err.splitlines()[-1]


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Stand in for sota_client._daemon; collects the configs it is run with."""
    calls: list[Config] = []
    module = types.ModuleType("sota_client._daemon")

    def fake_run(config: Config) -> int:
        calls.append(config)
        logging.getLogger("sota_client._daemon").debug("daemon ran")
        return 0

    module.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sota_client._daemon", module)
    return calls


# ---------------------------------------------------------------------------------------------
# -h, -v, usage errors (10.13.1)


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, _ = run(capsys, flag)
    assert code == 0
    assert out.startswith("usage: sota_client [options]\n")
    for section, key in ALL_KEYS:
        assert f"--{section}-{key.replace('_', '-')} " in out
    for short, long in [("-h", "--help"), ("-p", "--print"), ("-v", "--version")]:
        assert f"{short}, {long}" in out
    assert "-c PATH, --config PATH" in out


@pytest.mark.parametrize("flag", ["-v", "--version"])
def test_version(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert run(capsys, flag) == (0, f"{__version__}\n", "")


def test_main_reads_sys_argv_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["sota_client", "--version"])
    assert main() == 0
    assert capsys.readouterr().out == f"{__version__}\n"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--config"], "argument -c/--config: expected one argument"),
        (["--core-server"], "argument --core-server: expected one argument"),
        (["--core-poll", "true"], "unrecognized arguments: --core-poll"),  # no abbreviations
        (["-x"], "unrecognized arguments: -x"),
    ],
)
def test_bad_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:  # 2016 item 14: this panicked with exit 101
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("usage: sota_client [options]\n")
    assert error_line(err) == f"sota_client: error: {problem}"


def test_free_arguments_are_ignored_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--print", "extra", "words")
    assert code == 0
    assert parse_config(out) == default_config()
    assert re.search(
        rf"^{TIMESTAMP} \({__version__}\): WARN - Ignoring extra arguments: extra words$", err, re.M
    )


# ---------------------------------------------------------------------------------------------
# 10.2: the reference's TOML files through the real entry point


def test_print_default_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    credentials = tmp_path / "secret" / "credentials.toml"
    config = printed(
        capsys, f"--config={TOML_DIR / 'default.toml'}", f"--auth-credentials-file={credentials}"
    )
    assert config.auth == AuthConfig(credentials_file=str(credentials))
    assert config.dbus == DBusConfig()
    assert config.rvi == RviConfig(timeout=20)
    # --print resolves the config like a real start, so the credentials file now exists.
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_print_genivi_toml(capsys: pytest.CaptureFixture[str]) -> None:
    config = printed(capsys, "--config", str(TOML_DIR / "genivi.toml"))
    assert config.auth is None
    assert (config.core.server, config.core.polling) == ("http://192.168.1.40:8080", False)
    assert config.device.uuid == "9ea653bc-3486-44cd-aa86-d936bd957e52"
    assert config.device.certificates_path == "run/sota_certificates"  # --print needs no CA file
    assert (config.gateway.dbus, config.gateway.rvi, config.gateway.socket) == (True, True, False)
    assert config.network.rvi_edge_server == "192.168.1.40:9080"
    assert config.network.http_server == "127.0.0.1:8888"
    assert config.rvi == RviConfig(
        client="http://192.168.1.40:8901", storage_dir="/tmp", timeout=20
    )


def test_print_old_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = printed(capsys, f"-c{shipped('old.toml', tmp_path)}")
    assert (config.core.polling, config.core.polling_sec) == (True, 10)


def test_polling_toml_fails(capsys: pytest.CaptureFixture[str]) -> None:
    path = TOML_DIR / "polling.toml"
    code, out, err = run(capsys, "--print", f"--config={path}")
    assert (code, out) == (1, "")
    assert error_line(err) == (
        f"sota_client: {path}:7: [device] polling_interval: "
        "Bad Config: core.polling_sec and device.polling_interval both set"
    )


@pytest.mark.parametrize(
    ("name", "status"),
    [("default.toml", 0), ("genivi.toml", 0), ("old.toml", 0), ("polling.toml", 1)],
)
def test_python_m_sota_client_print(name: str, status: int, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for variable in ("SOTA_CONFIG", "SOTA_LOG", "RUST_LOG"):
        env.pop(variable, None)
    credentials = tmp_path / "credentials.toml"
    argv = ["--print", f"--config={TOML_DIR / name}", f"--auth-credentials-file={credentials}"]
    result = subprocess.run(
        [sys.executable, "-m", "sota_client", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, result.stderr
    if status == 0:
        expected = load_config(
            str(TOML_DIR / name), overrides={("auth", "credentials_file"): str(credentials)}
        )
        assert parse_config(result.stdout) == expected
    else:
        assert result.stdout == ""
        assert result.stderr.endswith(
            "Bad Config: core.polling_sec and device.polling_interval both set\n"
        )


# ---------------------------------------------------------------------------------------------
# 10.13: the old CLI tests, and the other error messages


def test_bad_core_server_flag(capsys: pytest.CaptureFixture[str]) -> None:  # 10.13.2
    code, out, err = run(
        capsys, "--config", str(TOML_DIR / "genivi.toml"), "--core-server", "bad-url"
    )
    assert (code, out) == (1, "")
    assert (
        err
        == "sota_client: Invalid core-server URL: Url parse error: relative URL without a base\n"
    )


def test_toml_syntax_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # 10.13.3
    path = tmp_path / "sota.toml"
    path.write_text("auth]\n")
    code, _, err = run(capsys, f"--config={path}")
    assert code == 1
    assert error_line(err).startswith(f"sota_client: {path}: Toml parser errors: ")
    assert error_line(err).endswith("(at line 1, column 5)")


def test_config_is_a_directory(capsys: pytest.CaptureFixture[str]) -> None:  # 10.13.4
    code, _, err = run(capsys, "--config=/")
    assert code == 1
    assert error_line(err) == "sota_client: /: IO error: Is a directory (os error 21)"


def test_config_only_with_an_unknown_section(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:  # 10.13.5
    path = tmp_path / "foo.toml"
    path.write_text("[foo]\n")
    code, out, err = run(capsys, "--print", f"--config={path}")
    assert (code, out) == (0, config_to_toml(default_config()))
    assert f"WARN - {path}:1: [foo]: unknown section ignored" in err


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    code, _, err = run(capsys, "-c", str(path))
    assert code == 1
    assert (
        error_line(err) == f"sota_client: {path}: IO error: No such file or directory (os error 2)"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '[core]\npolling = "yes"\n',
            "{path}:2: [core] polling: Toml decode error: expected a value of type `bool`, "
            "but found a value of type `string` for the key `polling`: "
            "expected true or false, without quotes",
        ),
        (
            '[device]\nuuid = "x"\npackage_manager = "yum"\n',
            "{path}:3: [device] package_manager: Toml decode error: Parse error: "
            "unknown package manager: yum for the key `package_manager`: "
            "expected off, deb, rpm, file:PATH or otb:REPODIR",
        ),
        (
            '[rvi]\nclient = "rvi-node:8901"\n[gateway]\nrvi = true\n',
            "{path}:2: [rvi] client: Toml decode error: Url parse error: empty host "
            "for the key `client`: expected an absolute URL such as http://127.0.0.1:8080 or "
            "https://sota.example.com",
        ),
        (
            '[network]\nhttp_server = "localhost:8888"\n[gateway]\nhttp = true\n',
            "{path}:2: [network] http_server: Toml decode error: invalid IP address syntax "
            "for the key `http_server`: expected IP:port such as 127.0.0.1:8888, or "
            "http://127.0.0.1:8888",
        ),
    ],
)
def test_file_errors_are_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "sota.toml"
    path.write_text(content)
    code, out, err = run(capsys, "--print", "--config", str(path))
    assert (code, out) == (1, "")
    assert error_line(err) == "sota_client: " + message.format(path=path)


_GATEWAYS = ["console", "dbus", "http", "rvi", "socket", "websocket"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--core-server", "bad-url"],
            "Invalid core-server URL: Url parse error: relative URL without a base",
        ),
        (["--auth-server=http://"], "Invalid auth-server URL: Url parse error: empty host"),
        (
            ["--rvi-client=x"],
            "Invalid rvi-client URL: Url parse error: relative URL without a base",
        ),
        (
            ["--core-polling", "yes"],
            "Invalid core-polling boolean: provided string was not `true` or `false`",
        ),
        (
            ["--core-polling=True"],
            "Invalid core-polling boolean: provided string was not `true` or `false`",
        ),
        *[
            (
                [f"--gateway-{name}=1"],
                f"Invalid gateway-{name} boolean: provided string was not `true` or `false`",
            )
            for name in _GATEWAYS
        ],
        (["--core-polling-sec=ten"], "Invalid core-polling-sec: invalid digit found in string"),
        (["--core-polling-sec=-1"], "Invalid core-polling-sec: invalid digit found in string"),
        (["--core-polling-sec= 5"], "Invalid core-polling-sec: invalid digit found in string"),
        (
            ["--core-polling-sec="],
            "Invalid core-polling-sec: cannot parse integer from empty string",
        ),
        (
            ["--core-polling-sec=18446744073709551616"],
            "Invalid core-polling-sec: number too large to fit in target type",
        ),
        (
            ["--dbus-timeout=2147483648"],
            "Invalid dbus-timeout: number too large to fit in target type",
        ),
        (
            ["--dbus-timeout=-2147483649"],
            "Invalid dbus-timeout: number too small to fit in target type",
        ),
        (["--rvi-timeout=1.5"], "Invalid rvi-timeout: invalid digit found in string"),
        (
            ["--device-package-manager=yum"],
            "Invalid device-package-manager: Parse error: unknown package manager: yum",
        ),
        (
            ["--device-package-manager=file:"],
            "Invalid device-package-manager: Parse error: unknown package manager: file:",
        ),
        (
            ["--network-http-server", "localhost:80"],
            "Invalid network-http-server: Parse error: couldn't parse SocketAddr: "
            "invalid IP address syntax",
        ),
        (
            ["--network-rvi-edge-server=http://localhost:9080"],
            "Invalid network-rvi-edge-server: Parse error: couldn't parse SocketAddr: "
            "invalid IP address syntax",
        ),
        (
            ["--core-timeout=0"],
            "Invalid core-timeout: expected a positive number of seconds, but found 0.0",
        ),
        (["--core-timeout=soon"], "Invalid core-timeout: invalid float literal"),
        (
            ["--network-socket-mode=999"],
            "Invalid network-socket-mode: expected an octal file mode such as 0o660, "
            "but found '999'",
        ),
        (["--device-uuid=\udcff"], "Invalid device-uuid: not valid UTF-8"),
        (
            ["--device-max-download-size=0"],
            "Invalid device-max-download-size: expected a size in bytes between 1 and "
            "18446744073709551615, but found 0",
        ),
        (
            ["--device-max-download-size=18446744073709551616"],
            "Invalid device-max-download-size: expected a size in bytes between 1 and "
            "18446744073709551615, but found 18446744073709551616",
        ),
        (
            ["--device-max-download-size=4GiB"],
            "Invalid device-max-download-size: invalid digit found in string",
        ),
        (
            ["--device-max-concurrent-downloads=17"],
            "Invalid device-max-concurrent-downloads: expected a number of downloads between 1 "
            "and 16, but found 17",
        ),
        (
            ["--device-max-concurrent-downloads="],
            "Invalid device-max-concurrent-downloads: cannot parse integer from empty string",
        ),
        (
            ["--device-package-manager=a\nb"],
            "Invalid device-package-manager: Parse error: unknown package manager: a\\nb",
        ),
    ],
)
def test_bad_flag_values(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "--print", *argv)
    assert (code, out) == (1, "")
    assert err == f"sota_client: {message}\n"


# ---------------------------------------------------------------------------------------------
# Hostile config files: one error line and exit 1, at once, from the real entry point


def _hostile(kind: str, directory: Path) -> tuple[str, str]:
    """Make a hostile config in ``directory``: its path and the error after ``<path>: ``."""
    path = directory / "sota.toml"
    if kind == "/dev/zero":
        return "/dev/zero", "not a regular file"
    if kind == "fifo":
        os.mkfifo(path)
        return str(path), "not a regular file"
    if kind == "directory":
        path.mkdir()
        return str(path), "IO error: Is a directory (os error 21)"
    if kind == "2 MiB":
        path.write_bytes(b"#" * (2 << 20))
        return str(path), "larger than 1 MiB (1048576 bytes); is this the right file?"
    if kind == "500 nested arrays":
        path.write_text("a = " + "[" * 500 + "\n")
        return str(path), "Toml parser errors: arrays or tables nested too deeply"
    if kind == "invalid UTF-8":
        path.write_bytes(b'[device]\nvin = "\xff\xfe"\n')
        return str(path), "IO error: stream did not contain valid UTF-8"
    assert kind == "a dotted key of 1 MiB"
    path.write_text("a" + ".a" * ((1 << 20) // 2 - 8) + " = 1\n")
    assert path.stat().st_size <= 1 << 20
    return str(path), (
        "Toml parser errors: more than 4096 dots outside comments (dotted keys this long take "
        "the parser minutes); is this the right file?"
    )


@pytest.mark.parametrize(
    "kind",
    [
        "/dev/zero",
        "fifo",
        "directory",
        "2 MiB",
        "500 nested arrays",
        "invalid UTF-8",
        "a dotted key of 1 MiB",
    ],
)
@pytest.mark.parametrize("how", ["--config", "SOTA_CONFIG"])
def test_python_m_sota_client_with_a_hostile_config(kind: str, how: str, tmp_path: Path) -> None:
    path, problem = _hostile(kind, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOTA_LOG": "error"}
    env.pop("RUST_LOG", None)
    argv = ["--config", path] if how == "--config" else []
    if how == "SOTA_CONFIG":
        env["SOTA_CONFIG"] = path
    result = subprocess.run(
        [sys.executable, "-m", "sota_client", *argv],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,  # catches a hang (a FIFO, /dev/zero); the answer takes well under a second
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"sota_client: {path}: {problem}\n"


# ---------------------------------------------------------------------------------------------
# Every flag, config lookup, and the 2016 flag bugs


def test_every_key_has_a_flag_sample() -> None:
    flags = {a.dest for a in build_parser()._actions if a.option_strings and a.dest.count("-")}
    assert flags == {f"{section}-{key.replace('_', '-')}" for section, key in ALL_KEYS}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"--{s[0]}-{s[1]}")
def test_every_flag_sets_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sample: tuple[str, str, str, str, Any]
) -> None:
    section, key, _, text, _ = sample
    flag = f"--{section}-{key.replace('_', '-')}"
    config = printed(capsys, f"{flag}={text.format(tmp=tmp_path)}")
    assert getattr(getattr(config, section), key) == expected_value(sample, tmp_path)


@pytest.mark.parametrize(
    ("argv", "section", "key", "value"),
    [
        (["--core-polling-sec", "5"], "core", "polling_sec", 5),
        (["--core-polling", "false"], "core", "polling", False),
        (["--gateway-socket", "true"], "gateway", "socket", True),
        (["--device-system-info", ""], "device", "system_info", None),
        (["--device-package-manager", "RPM"], "device", "package_manager", "rpm"),
        (["--rvi-timeout", "-5"], "rvi", "timeout", -5),
        (["--network-socket-mode", "0o600"], "network", "socket_mode", 0o600),
        (["--device-max-download-size", "1"], "device", "max_download_size", 1),
        (["--device-max-concurrent-downloads", "16"], "device", "max_concurrent_downloads", 16),
    ],
)
def test_flags_take_a_separate_value_too(
    capsys: pytest.CaptureFixture[str], argv: list[str], section: str, key: str, value: Any
) -> None:
    actual = getattr(getattr(printed(capsys, *argv), section), key)
    assert (str(actual) if key == "package_manager" else actual) == value


def test_flags_beat_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    config = printed(
        capsys,
        f"--config={TOML_DIR / 'genivi.toml'}",
        "--core-polling=true",
        "--device-uuid=abc",
        "--rvi-timeout=7",
    )
    assert (config.core.polling, config.device.uuid, config.rvi) == (
        True,
        "abc",
        RviConfig(client="http://192.168.1.40:8901", storage_dir="/tmp", timeout=7),
    )


def test_system_info_flag_turns_it_off(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "--print",
        f"--config={shipped('default.toml', tmp_path)}",
        "--device-system-info",
        "",
    )
    assert code == 0
    assert 'system_info = ""\n' in out
    assert parse_config(out).device.system_info is None


@pytest.mark.parametrize(
    ("argv", "section", "expected"),
    [
        (["--auth-server=https://a.example"], "auth", AuthConfig(server="https://a.example")),
        (["--auth-client-secret=s"], "auth", AuthConfig(client_secret="s")),
        (["--dbus-name=org.example.X"], "dbus", DBusConfig(name="org.example.X")),
        (["--rvi-storage-dir=/srv"], "rvi", RviConfig(storage_dir="/srv")),
    ],
)
def test_a_flag_creates_a_missing_optional_section(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    section: str,
    expected: Any,
) -> None:  # 2016 item 8: these flags were ignored
    path = tmp_path / "sota.toml"
    path.write_text("[core]\npolling = false\n")
    config = printed(capsys, f"--config={path}", *argv)
    assert getattr(config, section) == expected
    assert config.core.polling is False


def test_credentials_file_flag_is_applied(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:  # 2016 item 7
    credentials = tmp_path / "elsewhere" / "credentials.toml"
    path = tmp_path / "sota.toml"
    path.write_text(
        '[auth]\nclient_id = "id"\nclient_secret = "secret"\n'
        f'credentials_file = "{tmp_path}/ignored.toml"\n'
    )
    config = printed(capsys, f"--config={path}", f"--auth-credentials-file={credentials}")
    assert config.auth == AuthConfig(
        client_id="id", client_secret="secret", credentials_file=str(credentials)
    )
    assert credentials.read_text() == '[auth]\nclient_id = "id"\nclient_secret = "secret"\n'
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert not (tmp_path / "ignored.toml").exists()


def test_client_flags_beat_the_credentials_file_but_are_not_saved(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text('[auth]\nclient_id = "A"\nclient_secret = "B"\n')
    code, out, _ = run(
        capsys, "--print", f"--auth-credentials-file={credentials}", "--auth-client-id=X"
    )
    assert code == 0
    # Read the text, not parse_config(out): loading it again would let the file win again.
    assert tomllib.loads(out)["auth"] == {
        "server": "http://127.0.0.1:9001",
        "client_id": "X",
        "client_secret": "B",
        "credentials_file": str(credentials),
    }
    assert credentials.read_text() == '[auth]\nclient_id = "A"\nclient_secret = "B"\n'


@pytest.mark.parametrize(
    "how",
    [
        lambda path: ["-c", path],
        lambda path: [f"-c{path}"],
        lambda path: ["--config", path],
        lambda path: [f"--config={path}"],
        None,  # SOTA_CONFIG
    ],
    ids=["-c PATH", "-cPATH", "--config PATH", "--config=PATH", "SOTA_CONFIG"],
)
def test_config_lookup(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: Callable[[str], list[str]] | None,
) -> None:
    path = str(TOML_DIR / "genivi.toml")
    if how is None:
        monkeypatch.setenv("SOTA_CONFIG", path)
    code, out, err = run(capsys, "--print", *(how(path) if how else []))
    assert code == 0
    assert parse_config(out) == load_config(path)
    assert f"INFO - Loading config file: {path}" in err


def test_the_flag_beats_sota_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOTA_CONFIG", "/nonexistent.toml")
    assert printed(capsys, "-c", str(TOML_DIR / "genivi.toml")).gateway.rvi is True


@pytest.mark.parametrize("sota_config", [None, ""])
def test_no_config_means_defaults_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sota_config: str | None
) -> None:
    if sota_config is not None:
        monkeypatch.setenv("SOTA_CONFIG", sota_config)
    code, out, err = run(capsys, "--print")
    assert (code, out) == (0, config_to_toml(default_config()))
    assert re.fullmatch(
        rf"{TIMESTAMP} \({re.escape(__version__)}\): "
        r"WARN - No config file given\. Falling back to defaults\.\n",
        err,
    )


# ---------------------------------------------------------------------------------------------
# Hand-over to the daemon, start-up checks, logging


def test_without_a_daemon_main_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sota_client._daemon", None)  # importing it fails
    code, out, err = run(capsys, "--core-polling=false")
    assert (code, out) == (1, "")
    assert error_line(err) == "sota_client: the daemon is not available in this build"


class _MissingDependency(importlib.abc.MetaPathFinder):
    """Makes ``import sota_client._daemon`` fail as if one of its dependencies were missing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "sota_client._daemon":
            raise ModuleNotFoundError("No module named 'jeepney'", name="jeepney")


def test_a_daemon_with_a_missing_dependency_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "sota_client._daemon", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_MissingDependency(), *sys.meta_path])
    code, _, err = run(capsys)
    assert code == 1
    assert error_line(err) == (
        "sota_client: the daemon is not available in this build: No module named 'jeepney'"
    )


def test_main_runs_the_daemon_with_the_resolved_config(
    capsys: pytest.CaptureFixture[str], fake_daemon: list[Config]
) -> None:
    code, out, _ = run(capsys, "--config", str(TOML_DIR / "genivi.toml"), "--core-polling-sec=3")
    assert (code, out) == (0, "")
    assert fake_daemon == [
        load_config(str(TOML_DIR / "genivi.toml"), overrides={("core", "polling_sec"): 3})
    ]


def test_main_returns_the_daemon_status(
    capsys: pytest.CaptureFixture[str], fake_daemon: list[Config]
) -> None:
    module = sys.modules["sota_client._daemon"]
    module.run = lambda config: 3  # type: ignore[attr-defined]
    assert run(capsys)[0] == 3


def test_print_does_not_start_the_daemon(
    capsys: pytest.CaptureFixture[str], fake_daemon: list[Config]
) -> None:
    assert run(capsys, "--print")[0] == 0
    assert fake_daemon == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gateway-dbus=true"], "dbus config required for dbus gateway"),
        (["--gateway-rvi=true", "--rvi-timeout=1"], "dbus config required for rvi gateway"),
        (["--gateway-rvi=true", "--dbus-timeout=1"], "rvi config required for rvi gateway"),
    ],
)
def test_gateways_need_their_sections(
    capsys: pytest.CaptureFixture[str], fake_daemon: list[Config], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert error_line(err) == f"sota_client: {message}"
    assert fake_daemon == []
    assert run(capsys, "--print", *argv)[0] == 0  # --print shows such a config anyway


@pytest.mark.parametrize(
    ("environ", "daemon_debug_shown", "warning_shown"),
    [
        ({}, False, True),
        ({"RUST_LOG": "debug"}, True, True),
        ({"SOTA_LOG": "trace"}, True, True),
        ({"RUST_LOG": "error"}, False, False),
        ({"RUST_LOG": "debug", "SOTA_LOG": "warn"}, False, True),
    ],
)
def test_log_level_and_format(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_daemon: list[Config],
    environ: dict[str, str],
    daemon_debug_shown: bool,
    warning_shown: bool,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code, _, err = run(capsys)
    assert code == 0
    prefix = rf"^{TIMESTAMP} \({re.escape(__version__)}\): "
    assert bool(re.search(prefix + r"DEBUG - daemon ran$", err, re.M)) is daemon_debug_shown
    assert bool(re.search(prefix + r"WARN - No config file given", err, re.M)) is warning_shown


@pytest.mark.parametrize(
    ("spec", "level"),
    [
        (None, logging.INFO),
        ("", logging.INFO),
        ("error", logging.ERROR),
        ("WARN", logging.WARNING),
        ("info", logging.INFO),
        ("debug", logging.DEBUG),
        ("trace", logging.DEBUG),
        ("off", logging.CRITICAL + 10),
        ("hyper=info,sota_client=debug", logging.DEBUG),
        ("debug,sota_client=error", logging.ERROR),
        ("hyper=debug", logging.INFO),
        ("chatty", logging.INFO),
    ],
)
def test_log_level_spec(spec: str | None, level: int) -> None:
    assert _log_level(spec) == level


def test_logging_is_configured_once_however_often_main_runs() -> None:
    _configure_logging({})
    _configure_logging({"SOTA_LOG": "debug"})
    root = logging.getLogger()
    ours = [h for h in root.handlers if type(h).__name__ == "_StderrHandler"]
    assert len(ours) == 1
    assert root.level == logging.DEBUG


DEFAULT_PRINT = """\
[core]
server = "http://127.0.0.1:8080"
polling = true
polling_sec = 10
timeout = 20.0

[device]
uuid = "123e4567-e89b-12d3-a456-426655440000"
vin = "V1234567890123456"
packages_dir = "/tmp/"
package_manager = "off"
certificates_path = "/tmp/sota_certificates"
system_info = "system_info.sh"
state_dir = "/var/lib/sota"
max_download_size = 4294967296
max_concurrent_downloads = 1
report_timeout = 86400.0
event_metadata = true

[gateway]
console = false
dbus = false
http = false
rvi = false
socket = false
websocket = false

[network]
http_server = "127.0.0.1:8888"
rvi_edge_server = "127.0.0.1:9080"
socket_commands_path = "/tmp/sota-commands.socket"
socket_events_path = "/tmp/sota-events.socket"
websocket_server = "127.0.0.1:3012"
socket_mode = 0o660
local_api_origins = []
"""


def test_print_of_the_defaults_golden_bytes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact text ``sota_client --print`` writes with no config file."""
    monkeypatch.delenv("SOTA_CONFIG", raising=False)
    assert main(["--print"]) == 0
    assert capsys.readouterr().out == DEFAULT_PRINT
