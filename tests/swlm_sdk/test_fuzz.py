"""Fuzzing what the SDK decodes from outside: its journal file and the events socket.

The sans-IO decoders are fuzzed in ``protocol/test_events.py``; here the same kind of input goes
through the real paths: ``Journal.open`` on a file, and an ``EventListener`` on a socket.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swlm_sdk import (
    DownloadComplete,
    DownloadFailed,
    EventListener,
    ProtocolError,
    ResultCode,
    TransportError,
)
from swlm_sdk._journal import REPORTABLE_ID
from swlm_sdk._wire import push
from swlm_sdk.app import Journal
from swlm_sdk.protocol import (
    Event,
    SendUpdateReport,
    UpdateReport,
    decode_envelope,
    encode_envelope,
    format_command,
    parse_command,
)

pytestmark = pytest.mark.anyio

# Bounded so that the whole module stays around a second per backend.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_MORE = settings(FUZZ, max_examples=250)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records of logger ``name`` (caplog is function-scoped: no good with @given)."""
    logger = logging.getLogger(name)
    handler = Records()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# -- the journal file --------------------------------------------------------------------


def _damaged(data: bytes, damage: tuple[str, int] | None) -> bytes:
    """``data`` intact, cut short, or with one byte changed."""
    if damage is None or not data:
        return data
    how, at = damage
    at %= len(data)
    if how == "cut":
        return data[:at]
    return data[:at] + bytes([(data[at] + 1 + at) % 256]) + data[at + 1 :]


_damage = st.one_of(
    st.none(), st.none(), st.none(), st.tuples(st.sampled_from(["cut", "flip"]), st.integers())
)

# Mostly what the SDK writes, so that loading is fuzzed as much as rejecting; then (usually)
# one entry that is one step off: a bad id, or one field changed or missing; then (sometimes)
# damaged bytes.
_good_ids = st.text(
    st.characters(exclude_characters=" \t\r\n;", exclude_categories=["Cs"]),
    min_size=1,
    max_size=10,
)
_bad_ids = st.sampled_from(["", "x" * 1025, "u1\n", "u 1", "u;1", "\t"]) | st.builds(
    "{}{}{}".format, _good_ids | st.just(""), st.sampled_from(" \t\r\n;"), _good_ids | st.just("")
)
_installing = st.fixed_dictionaries(
    {"state": st.just("installing")}, optional={"seq": st.integers(0, 10**6)}
)
_reported = st.fixed_dictionaries(
    {"state": st.sampled_from(["pending", "sent"]), "code": st.integers(0, 19)},
    optional={"text": st.text(max_size=20), "seq": st.integers(-(2**70), 2**70)},
)
_good_entries = _installing | _reported
_MISSING = object()
_changes = st.sampled_from(
    [
        ("code", _MISSING),
        ("code", None),
        ("code", -1),
        ("code", 20),
        ("code", True),
        ("code", "0"),
        ("code", 1.0),
        ("state", _MISSING),
        ("state", "bogus"),
        ("text", None),
        ("seq", 0.5),
    ]
) | st.tuples(
    st.sampled_from(["state", "code", "text", "seq", "other"]),
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.floats(),
)


def _changed(entry: dict[str, Any], change: tuple[str, object]) -> dict[str, Any]:
    key, value = change
    changed = dict(entry)
    if value is _MISSING:
        changed.pop(key, None)
    else:
        changed[key] = value
    return changed


_odd_entries = st.tuples(_bad_ids, _good_entries) | st.tuples(
    _good_ids, st.builds(_changed, _reported, _changes)
)


def _journal_file(
    updates: dict[str, Any], odd: tuple[str, Any] | None, version: object, damage: Any
) -> bytes:
    document: dict[str, Any] = {"updates": dict(updates)}
    if odd is not None:
        document["updates"][odd[0]] = odd[1]
    if version is not None:
        document["version"] = version
    # json.dumps writes a lone surrogate as a \ud800 escape, which is invalid for msgspec too.
    return _damaged(json.dumps(document).encode(), damage)


_journal_files = st.builds(
    _journal_file,
    st.dictionaries(_good_ids, _good_entries, max_size=3),
    st.one_of(st.none(), st.none(), _odd_entries, _odd_entries),
    st.sampled_from([None, 1, 2, "1"]),
    _damage,
)
journal_bytes = st.one_of(_journal_files, _journal_files, _journal_files, st.binary(max_size=300))


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def exists(path: str) -> bool:
    return os.path.lexists(path)


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


@FUZZ_MORE
@given(journal_bytes)
async def test_a_journal_file_loads_or_is_moved_aside(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory, captured("swlm_sdk.app") as records:
        path = os.path.join(directory, "swlm-journal.json")
        write(path, data)
        journal = Journal(directory)
        await journal.open()  # never raises for what the file holds
        errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
        if not errors:
            assert read(path) == data  # loading never rewrites it
            loaded = journal.entries()
            for update_id, entry in loaded.items():
                # What loads is what the App can use: a report it can always send.
                assert REPORTABLE_ID.fullmatch(update_id)
                if entry.state != "installing":
                    assert entry.code is not None
                    report = UpdateReport.single(update_id, ResultCode(entry.code))
                    format_command(SendUpdateReport(report))
            await journal.record("fuzz", ResultCode.OK, "")  # and it can be written back
            again = Journal(directory)
            await again.open()
            assert sorted(again.entries()) == sorted({*loaded, "fuzz"})
        else:
            assert journal.entries() == {}
            assert read(f"{path}.corrupt") == data
            assert not exists(path)
            [error] = errors
            assert "is unreadable" in error


# -- the events socket -------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_texts = st.text(max_size=12)
_events = st.builds(DownloadComplete, _texts, _texts, _texts) | st.builds(
    DownloadFailed, _texts, _texts
)


def _reshaped(envelope: bytes, key: str, value: Any, damage: Any) -> bytes:
    """A real envelope with one key of it, or of its data, replaced (or removed: None)."""
    document = json.loads(envelope)
    where = document["data"] if key in document["data"] else document
    if value is None:
        where.pop(key, None)
    else:
        where[key] = value
    return _damaged(json.dumps(document).encode(), damage)


_keys = st.sampled_from(
    ["version", "event", "data", "update_id", "update_image", "signature", "reason", "new"]
)
event_bytes = (
    st.binary(max_size=300)
    | _events.map(encode_envelope)
    | st.builds(
        _reshaped,
        _events.map(encode_envelope),
        _keys,
        st.none() | _json | st.sampled_from(["0.1", "0.2", "DownloadComplete", "New"]),
        _damage,
    )
)

MAX_EVENT = 256  # smaller than some examples: the oversize path is fuzzed too
SENTINEL = DownloadComplete("sentinel", "/img")


@FUZZ
@given(event_bytes, st.booleans())
async def test_the_listener_yields_exactly_what_decodes(data: bytes, filtered: bool) -> None:
    expected: list[Event] = [SENTINEL]
    kinds = [DownloadComplete] if filtered else None
    with tempfile.TemporaryDirectory(prefix="sota-f-") as directory:
        path = os.path.join(directory, "ev.sock")
        async with EventListener(path, kinds=kinds, max_size=MAX_EVENT) as listener:
            if len(data) <= MAX_EVENT:
                try:
                    event = decode_envelope(data)
                except ProtocolError:
                    pass
                else:
                    if listener.wants(event):
                        expected.append(event)
            try:
                await push(path, data, time_limit=30, hint="")
            except TransportError:
                assert len(data) > MAX_EVENT  # the listener hung up on an oversized event
            await push(path, encode_envelope(SENTINEL), time_limit=30, hint="")
            # Each delivery has its own connection, handled concurrently: order may vary.
            with anyio.fail_after(30):
                got = [await anext(listener) for _ in expected]
    assert sorted(map(repr, got)) == sorted(map(repr, expected))


# -- update ids --------------------------------------------------------------------------


@given(st.text(max_size=30) | st.sampled_from([" ", "\t", "\r", "\n", ";", "\x0b", "\x00"]))
def test_an_id_the_app_accepts_can_always_be_reported(update_id: str) -> None:
    # The App ignores any other id; one it accepted and could not report would be retried forever.
    if REPORTABLE_ID.fullmatch(update_id):
        command = SendUpdateReport(UpdateReport.single(update_id, ResultCode.OK))
        assert parse_command(format_command(command).encode()) == command
