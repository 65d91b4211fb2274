"""docs/migration.md and docs/index.md stay true: configs parse, flags are accepted, links resolve.

Every TOML block of migration.md goes through the daemon's own parser (the credentials file
moved into ``tmp_path``: parsing may read or create it); the flags it shows as accepted go
through the daemon's command line; every relative link of both pages leads to a file, and to a
heading of it when it names one.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from sota_client._cli import build_parser, main
from sota_client._config import Config, PackageManager, parse_config
from tests.test_docs import anchors

REPO = Path(__file__).parents[1]
MIGRATION = REPO / "docs" / "migration.md"
INDEX = REPO / "docs" / "index.md"
FLAGS_MARK = "<!-- flags: accepted -->"
IGNORED_MARK = "<!-- toml: ignored-keys -->"
#: The 2016 client's flags that take a value, besides ``--config`` (reference-client.md, 1.7).
FLAGS_2016 = {
    *(f"--auth-{key}" for key in ("server", "client-id", "client-secret", "credentials-file")),
    *(f"--core-{key}" for key in ("server", "polling", "polling-sec")),
    *(
        f"--dbus-{key}"
        for key in (
            "name",
            "path",
            "interface",
            "software-manager",
            "software-manager-path",
            "timeout",
        )
    ),
    *(
        f"--device-{key}"
        for key in (
            "uuid",
            "vin",
            "packages-dir",
            "package-manager",
            "certificates-path",
            "system-info",
        )
    ),
    *(f"--gateway-{key}" for key in ("console", "dbus", "http", "rvi", "socket", "websocket")),
    *(
        f"--network-{key}"
        for key in (
            "http-server",
            "rvi-edge-server",
            "socket-commands-path",
            "socket-events-path",
            "websocket-server",
        )
    ),
    *(f"--rvi-{key}" for key in ("client", "storage-dir", "timeout")),
}
#: The sections whose keys have a ``--<section>-<key>`` flag.
SECTIONS = ("auth", "core", "dbus", "device", "gateway", "network", "rvi")


def migration_text() -> str:
    return MIGRATION.read_text()


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", migration_text(), flags=re.DOTALL)


def block_after(mark: str, language: str) -> str:
    match = re.search(re.escape(mark) + rf"\n```{language}\n(.*?)```", migration_text(), re.DOTALL)
    assert match is not None, f"no {language} block after {mark} in {MIGRATION.name}"
    return match[1]


def in_tmp(block: str, tmp_path: Path) -> str:
    return re.sub(r'credentials_file = "[^"]*"', f'credentials_file = "{tmp_path}/c.toml"', block)


def accepted_flags() -> list[str]:
    """The command line of the marked block, without the program's name."""
    words = shlex.split(block_after(FLAGS_MARK, "sh").replace("\\\n", " "))
    assert words[0] == "sota_client"
    return words[1:]


def test_the_migration_doc_has_its_examples() -> None:
    assert len(toml_blocks()) >= 5
    assert block_after(FLAGS_MARK, "sh")
    assert block_after(IGNORED_MARK, "toml")


@pytest.mark.parametrize("block", toml_blocks())
def test_every_toml_block_of_the_migration_doc_parses(block: str, tmp_path: Path) -> None:
    assert isinstance(parse_config(in_tmp(block, tmp_path), "migration.md"), Config)


def test_the_2016_config_loads_unchanged(tmp_path: Path) -> None:
    """The first block is a 2016 config, unedited: the legacy key still means what it meant."""
    config = parse_config(in_tmp(toml_blocks()[0], tmp_path), "migration.md")
    assert config.core.polling
    assert config.core.polling_sec == 10  # from device.polling_interval
    assert config.gateway.socket
    assert config.device.package_manager == PackageManager("off")
    assert config.network.socket_events_path == "/tmp/sota-events.socket"
    # Credentials given in the config and a missing file: written, as the 2016 client did.
    assert "client_secret" in (tmp_path / "c.toml").read_text()


def test_the_ignored_keys_are_accepted_with_a_warning_for_the_unknown_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sota_client.config"):
        config = parse_config(block_after(IGNORED_MARK, "toml"), "/etc/sota.toml")
    assert config.device.vin == "V1234567890123456"
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["/etc/sota.toml:3: [device] auto_download: unknown key ignored"]
    # The doc quotes that warning.
    assert warnings[0] in block_after(IGNORED_MARK, "toml")


def test_the_packaged_unit_config_has_no_tmp_paths(tmp_path: Path) -> None:
    """The block that moves the paths for the packaged unit moves all of them out of /tmp."""
    [block] = [b for b in toml_blocks() if "was /tmp/" in b]
    config = parse_config(in_tmp(block, tmp_path), "migration.md")
    paths = (
        config.device.packages_dir,
        config.device.certificates_path,
        config.device.state_dir,
        config.network.socket_commands_path,
        config.network.socket_events_path,
    )
    assert not [path for path in paths if path.startswith("/tmp")]
    assert config.device.packages_dir.startswith("/var/lib/sota/")
    assert config.network.socket_group == "sota"


def test_the_flags_shown_as_accepted_are_accepted() -> None:
    args = build_parser().parse_args(accepted_flags())
    assert args.free == []  # none was taken for a free argument
    # Every flag the 2016 client took with a value is there (reference-client.md, 1.7).
    given = {word for word in accepted_flags() if word.startswith("--")}
    assert given == {"--config", *FLAGS_2016}


@pytest.fixture
def root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No outside config or log level; main() configures the root logger, so put it back."""
    for name in ("SOTA_CONFIG", "SOTA_LOG", "RUST_LOG"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logger")
def test_the_accepted_flags_make_a_valid_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = accepted_flags()
    for i, word in enumerate(words):
        if word == "--config":
            words[i + 1] = str(tmp_path / "sota.toml")
        if word == "--auth-credentials-file":
            words[i + 1] = str(tmp_path / "c.toml")
    (tmp_path / "sota.toml").write_text("")
    assert main(["--print", *words]) == 0
    config = parse_config(capsys.readouterr().out)
    assert config.core.polling_sec == 300
    assert config.device.system_info is None  # --device-system-info "" turns it off
    assert config.gateway.socket
    assert config.rvi is not None
    assert config.rvi.storage_dir == "/var/lib/sota/rvi"


def test_every_section_flag_the_doc_names_exists() -> None:
    """Any ``--<section>-<key>`` in the page's text is a flag of the daemon."""
    pattern = rf"--(?:{'|'.join(SECTIONS)})-[a-z-]*[a-z]"
    named = sorted(set(re.findall(pattern, migration_text())))
    assert "--device-report-timeout" in named
    parser = build_parser()
    for flag in named:
        args = parser.parse_args([flag, "x"])
        assert args.free == [], flag


@pytest.mark.parametrize("doc", [INDEX, MIGRATION], ids=lambda doc: doc.name)
def test_relative_links_resolve(doc: Path) -> None:
    links = re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", doc.read_text())
    assert links
    for target, anchor in links:
        if "://" in target:
            continue
        path = (doc.parent / target) if target else doc
        assert path.exists(), f"{doc.name} links to missing {target}"
        if anchor:
            assert path.suffix == ".md", f"{doc.name}: an anchor into {target}"
            assert anchor in anchors(path), f"{doc.name} links to missing {target}#{anchor}"


def test_the_index_shows_both_diagrams() -> None:
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", INDEX.read_text())
    assert "diagrams/update-journey.svg" in images
    assert "diagrams/update-states.svg" in images


def test_the_index_links_every_doc() -> None:
    text = INDEX.read_text()
    for doc in sorted((REPO / "docs").glob("*.md")):
        if doc != INDEX:
            assert f"]({doc.name}" in text, f"index.md does not lead to {doc.name}"
    for readme in sorted((REPO / "examples").glob("*/README.md")):
        assert f"](../{readme.relative_to(REPO)}" in text
