"""Every JSON example in docs/protocol.md decodes and re-encodes to exactly its bytes."""

import re
from pathlib import Path

import msgspec
import pytest

from swlm_sdk.protocol import (
    CommandRejected,
    DownloadComplete,
    Package,
    decode_envelope,
    decode_event,
    decode_reply,
    encode_envelope,
    encode_event,
)

DOC = Path(__file__).parents[3] / "docs" / "protocol.md"


def _json_lines(text: str | None = None) -> list[str]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text() if text is None else text, re.S)
    return [line for block in blocks for line in block.splitlines() if line]


def _error_lines() -> list[str]:
    text = DOC.read_text()
    block = text.split("### Replies", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line]


@pytest.mark.parametrize("line", _json_lines())
def test_json_examples_are_byte_exact(line: str) -> None:
    wire = line.encode()
    if line.startswith('{"version"'):
        event = decode_envelope(wire)
        assert encode_envelope(event) == wire  # type: ignore[arg-type]
    else:
        assert encode_event(decode_event(wire)) == wire


@pytest.mark.parametrize("line", _error_lines())
def test_error_examples_are_rejections(line: str) -> None:
    with pytest.raises(CommandRejected):
        decode_reply(line.encode())


def test_the_doc_has_examples() -> None:
    assert len(_json_lines()) == 26
    assert len(_error_lines()) == 10


def test_the_metadata_examples_are_one_event_with_and_without() -> None:
    section = DOC.read_text().split("## Update metadata in `DownloadComplete`", 1)[1]
    full, plain, unnamed, reply = (line.encode() for line in _json_lines(section))
    event = decode_envelope(full)
    assert isinstance(event, DownloadComplete)
    assert (event.size, event.package) == (1048576, Package("fw", "1.4.2"))
    assert event.sha256 is not None
    assert re.fullmatch("[0-9a-f]{64}", event.sha256)
    assert encode_envelope(event.without_metadata()) == plain
    # What a 0.1 reader takes from both: the same three fields, in the same order.
    for wire in (full, plain):
        data = msgspec.json.decode(wire)["data"]
        assert list(data)[:3] == ["update_id", "update_image", "signature"]
    assert msgspec.json.decode(plain)["data"] == {
        k: v
        for k, v in msgspec.json.decode(full)["data"].items()
        if k in ("update_id", "update_image", "signature")
    }
    unnamed_event = decode_envelope(unnamed)
    assert isinstance(unnamed_event, DownloadComplete)
    assert unnamed_event.package is None
    assert b'"package"' not in unnamed
    assert decode_event(reply) == DownloadComplete(
        "1", "/tmp/1", "", sha256=event.sha256, size=1048576, package=Package("fw", "1.4.2")
    )
