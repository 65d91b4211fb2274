"""Every JSON example in docs/protocol.md decodes and re-encodes to exactly its bytes."""

import re
from pathlib import Path

import pytest

from swlm_sdk.protocol import (
    CommandRejected,
    decode_envelope,
    decode_event,
    decode_reply,
    encode_envelope,
    encode_event,
)

DOC = Path(__file__).parents[3] / "docs" / "protocol.md"


def _json_lines() -> list[str]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S)
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
    assert len(_json_lines()) == 22
    assert len(_error_lines()) == 10
