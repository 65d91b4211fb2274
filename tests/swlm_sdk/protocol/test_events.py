"""Event JSON and the events-socket envelope, byte for byte as the 2016 client wrote them."""

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swlm_sdk.protocol import (
    AlreadyAuthenticated,
    Authenticated,
    AwaitingReboot,
    CommandRejected,
    DownloadComplete,
    DownloadFailed,
    DownloadingUpdate,
    ErrorEvent,
    Event,
    FoundInstalledPackages,
    FoundSystemInfo,
    InstallComplete,
    InstalledPackagesSent,
    InstalledSoftwareNeeded,
    InstalledSoftwareSent,
    InstallFailed,
    InstallingUpdate,
    InstallProgress,
    NotAuthenticated,
    NoUpdateRequests,
    Package,
    ProtocolError,
    ResultCode,
    SystemInfoSent,
    UnknownEvent,
    UpdateAvailable,
    UpdateReport,
    UpdateReportSent,
    UpdateRequest,
    UpdateRequestStatus,
    UpdatesReceived,
    decode_envelope,
    decode_event,
    decode_reply,
    encode_envelope,
    encode_event,
)

# Every example of reference-client.md section 3.3, as (event, exact bytes).
GOLDEN: list[tuple[Event, bytes]] = [
    (Authenticated(), b'"Authenticated"'),
    (NotAuthenticated(), b'"NotAuthenticated"'),
    (AlreadyAuthenticated(), b'"AlreadyAuthenticated"'),
    (NoUpdateRequests(), b'"NoUpdateRequests"'),
    (UpdateReportSent(), b'"UpdateReportSent"'),
    (InstalledPackagesSent(), b'"InstalledPackagesSent"'),
    (SystemInfoSent(), b'"SystemInfoSent"'),
    (InstalledSoftwareSent(), b'"InstalledSoftwareSent"'),
    (InstalledSoftwareNeeded(), b'"InstalledSoftwareNeeded"'),
    (
        ErrorEvent("HTTP client error: Response Code: 404 Not Found"),
        b'{"variant":"Error","fields":["HTTP client error: Response Code: 404 Not Found"]}',
    ),
    (
        UpdatesReceived(
            (
                UpdateRequest(
                    "someid",
                    UpdateRequestStatus.PENDING,
                    Package("fake-pkg", "0.1.1"),
                    0,
                    "2010-01-01",
                ),
            )
        ),
        b'{"variant":"UpdatesReceived","fields":[[{"requestId":"someid","status":"Pending",'
        b'"packageId":{"name":"fake-pkg","version":"0.1.1"},"installPos":0,'
        b'"createdAt":"2010-01-01"}]]}',
    ),
    (
        FoundInstalledPackages((Package("a", "1.0"),)),
        b'{"variant":"FoundInstalledPackages","fields":[[{"name":"a","version":"1.0"}]]}',
    ),
    (
        FoundSystemInfo('{"id":"host","class":"system"}\n'),
        b'{"variant":"FoundSystemInfo","fields":["{\\"id\\":\\"host\\",\\"class\\":\\"system\\"}\\n"]}',
    ),
    (DownloadingUpdate("1"), b'{"variant":"DownloadingUpdate","fields":["1"]}'),
    (
        DownloadComplete("1", "/tmp/1", ""),
        b'{"variant":"DownloadComplete","fields":[{"update_id":"1","update_image":"/tmp/1",'
        b'"signature":""}]}',
    ),
    (
        DownloadFailed("1", "IO error: ..."),
        b'{"variant":"DownloadFailed","fields":["1","IO error: ..."]}',
    ),
    (InstallingUpdate("1"), b'{"variant":"InstallingUpdate","fields":["1"]}'),
    (
        InstallComplete(UpdateReport.single("1", ResultCode.OK)),
        b'{"variant":"InstallComplete","fields":[{"update_id":"1","operation_results":'
        b'[{"id":"1","result_code":0,"result_text":""}]}]}',
    ),
    (
        InstallFailed(UpdateReport.single("1", ResultCode.INSTALL_FAILED, "failed")),
        b'{"variant":"InstallFailed","fields":[{"update_id":"1","operation_results":'
        b'[{"id":"1","result_code":4,"result_text":"failed"}]}]}',
    ),
    (
        UpdateAvailable("u", "s", "d", False, 123),
        b'{"variant":"UpdateAvailable","fields":[{"update_id":"u","signature":"s",'
        b'"description":"d","request_confirmation":false,"size":123}]}',
    ),
]


@pytest.mark.parametrize(("event", "wire"), GOLDEN, ids=[e.name for e, _ in GOLDEN])
def test_golden_bytes(event: Event, wire: bytes) -> None:
    assert encode_event(event) == wire
    assert decode_event(wire) == event
    assert decode_reply(wire) == event


def test_every_2016_event_has_a_golden_test() -> None:
    assert len({type(e) for e, _ in GOLDEN}) == 20


def test_strings_are_escaped_as_rustc_serialize_did() -> None:
    assert encode_event(ErrorEvent('q" b\\ \x01 \x7f é')) == (
        b'{"variant":"Error","fields":["q\\" b\\\\ \\u0001 \\u007f \xc3\xa9"]}'
    )


# Section 4.4: the envelope, and the reference's socket test of section 4.6.
ENVELOPES: list[tuple[DownloadComplete | DownloadFailed, bytes]] = [
    (
        DownloadComplete("1", "/foo/bar", "abc"),
        b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"1",'
        b'"update_image":"/foo/bar","signature":"abc"}}',
    ),
    (
        DownloadFailed("7", "boom"),
        b'{"version":"0.1","event":"DownloadFailed","data":{"update_id":"7","reason":"boom"}}',
    ),
]


@pytest.mark.parametrize(("event", "wire"), ENVELOPES, ids=["complete", "failed"])
def test_envelope_golden_bytes(event: DownloadComplete | DownloadFailed, wire: bytes) -> None:
    assert encode_envelope(event) == wire
    assert decode_envelope(wire) == event


# The update metadata (an addition): after the three 0.1 fields, only those that are set.
SHA = "8f990ba0b577b51cf009ea049368c16bbda1b21e1b93be07a824758bb253c39b"
WITH_METADATA = DownloadComplete(
    "1", "/foo/bar", "abc", sha256=SHA, size=1048576, package=Package("fw", "1.4.2")
)
ENVELOPE_0_1 = (
    b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"1",'
    b'"update_image":"/foo/bar","signature":"abc"}}'
)
ENVELOPE_WITH_METADATA = (
    b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"1",'
    b'"update_image":"/foo/bar","signature":"abc","sha256":"' + SHA.encode() + b'",'
    b'"size":1048576,"package":{"name":"fw","version":"1.4.2"}}}'
)


def test_envelope_with_metadata_golden_bytes() -> None:
    assert encode_envelope(WITH_METADATA) == ENVELOPE_WITH_METADATA
    assert decode_envelope(ENVELOPE_WITH_METADATA) == WITH_METADATA
    assert WITH_METADATA.has_metadata


def test_without_metadata_the_envelope_is_the_0_1_bytes() -> None:
    plain = WITH_METADATA.without_metadata()
    assert plain == DownloadComplete("1", "/foo/bar", "abc")
    assert not plain.has_metadata
    assert encode_envelope(plain) == ENVELOPE_0_1
    assert ENVELOPE_WITH_METADATA.startswith(ENVELOPE_0_1[:-2])  # 0.1's fields, then the new


def test_event_form_with_metadata_golden_bytes() -> None:
    wire = (
        b'{"variant":"DownloadComplete","fields":[{"update_id":"1","update_image":"/foo/bar",'
        b'"signature":"abc","sha256":"' + SHA.encode() + b'","size":1048576,'
        b'"package":{"name":"fw","version":"1.4.2"}}]}'
    )
    assert encode_event(WITH_METADATA) == wire
    assert decode_event(wire) == WITH_METADATA


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (
            DownloadComplete("1", "/i", "", sha256=SHA),
            b'{"update_id":"1","update_image":"/i","signature":"","sha256":"'
            + SHA.encode()
            + b'"}',
        ),
        (
            DownloadComplete("1", "/i", "", size=0),
            b'{"update_id":"1","update_image":"/i","signature":"","size":0}',
        ),
        (
            DownloadComplete("1", "/i", "", package=Package("p", "2")),
            b'{"update_id":"1","update_image":"/i","signature":"",'
            b'"package":{"name":"p","version":"2"}}',
        ),
    ],
    ids=["sha256-only", "size-0", "package-only"],
)
def test_an_unknown_field_is_left_out_not_null(event: DownloadComplete, data: bytes) -> None:
    wire = b'{"version":"0.1","event":"DownloadComplete","data":' + data + b"}"
    assert encode_envelope(event) == wire
    assert b"null" not in wire
    assert decode_envelope(wire) == event


def test_an_envelope_with_unknown_extra_fields_decodes() -> None:
    """A newer daemon may add more: the known fields are read, the others ignored."""
    wire = (
        b'{"version":"0.1","event":"DownloadComplete","extra":{"a":1},"data":{"update_id":"1",'
        b'"update_image":"/foo/bar","signature":"abc","sha256":"' + SHA.encode() + b'",'
        b'"size":1048576,"package":{"name":"fw","version":"1.4.2","arch":"arm64"},'
        b'"sha512":"00","install_hint":[1,2,{"x":null}]}}'
    )
    assert decode_envelope(wire) == WITH_METADATA


def test_a_0_1_envelope_decodes_without_metadata() -> None:
    event = decode_envelope(ENVELOPE_0_1)
    assert isinstance(event, DownloadComplete)
    assert (event.sha256, event.size, event.package) == (None, None, None)


def test_envelope_only_for_the_two_socket_events() -> None:
    with pytest.raises(TypeError):
        encode_envelope(InstallingUpdate("1"))  # type: ignore[arg-type]


def test_unknown_envelope_event_is_passed_through() -> None:
    event = decode_envelope(b'{"version":"0.2","event":"InstallPaused","data":{"pct":5}}')
    assert event == UnknownEvent(event="InstallPaused", data={"pct": 5}, version="0.2")


def test_known_event_without_an_envelope_form_is_generic() -> None:
    event = decode_envelope(b'{"version":"0.1","event":"Authenticated","data":null}')
    assert isinstance(event, UnknownEvent)


def test_unknown_reply_variant_is_passed_through_and_reencoded() -> None:
    wire = b'{"variant":"InstallPaused","fields":["u1",50]}'
    event = decode_event(wire)
    assert event == UnknownEvent(event="InstallPaused", data=["u1", 50])
    assert encode_event(event) == wire
    assert decode_event(b'"SomethingNew"') == UnknownEvent(event="SomethingNew")
    assert encode_event(UnknownEvent(event="SomethingNew")) == b'"SomethingNew"'


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # The 2016 decoder read result codes only as names; peers may send either.
        (
            b'{"variant":"InstallComplete","fields":[{"update_id":"1","operation_results":'
            b'[{"id":"1","result_code":"ALREADY_PROCESSED","result_text":""}]}]}',
            InstallComplete(UpdateReport.single("1", ResultCode.ALREADY_PROCESSED)),
        ),
        # A unit variant in object form, and extra keys, are accepted as rustc-serialize did.
        (b'{"variant":"Authenticated","fields":[]}', Authenticated()),
        (
            b'{"variant":"DownloadComplete","extra":1,"fields":[{"update_id":"1",'
            b'"update_image":"/i","signature":"","more":true}]}',
            DownloadComplete("1", "/i", ""),
        ),
        # Core's extra updatedAt field is ignored.
        (
            b'{"variant":"UpdatesReceived","fields":[[{"requestId":"r","status":"InFlight",'
            b'"packageId":{"name":"n","version":"v"},"installPos":3,"createdAt":"c",'
            b'"updatedAt":"u"}]]}',
            UpdatesReceived(
                (UpdateRequest("r", UpdateRequestStatus.IN_FLIGHT, Package("n", "v"), 3, "c"),)
            ),
        ),
    ],
)
def test_lenient_decoding(wire: bytes, expected: Event) -> None:
    assert decode_event(wire) == expected


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"42", "JSON string or object"),
        (b'{"fields":[]}', '"variant"'),
        (b'{"variant":"DownloadFailed","fields":"x"}', '"fields" must be a list'),
        (b'{"variant":"DownloadFailed","fields":["1"]}', "takes 2 fields, got 1"),
        (b'{"variant":"Authenticated","fields":[1]}', "takes no fields"),
        (b'"DownloadComplete"', "needs fields"),
        (
            b'{"variant":"DownloadComplete","fields":[{"update_id":1,"update_image":"/i"}]}',
            "Expected `str`, got `int` - at `$.update_id`",
        ),
        (
            b'{"variant":"InstallFailed","fields":[{"update_id":"1","operation_results":'
            b'[{"id":"1","result_code":20,"result_text":""}]}]}',
            "Invalid enum value 20",
        ),
        (
            b'{"variant":"InstallFailed","fields":[{"update_id":"1","operation_results":'
            b'[{"id":"1","result_code":"NOPE","result_text":""}]}]}',
            "unknown result code 'NOPE'",
        ),
    ],
)
def test_malformed_events_raise_a_protocol_error_naming_the_problem(
    wire: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_event(wire)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"[]", "must be a JSON object"),
        (b'{"event":"DownloadComplete","data":{}}', '"version"'),
        (b'{"version":"0.1","data":{}}', '"event"'),
        (b'{"version":"0.1","event":"DownloadComplete"}', '"data"'),
        (
            b'{"version":"0.1","event":"DownloadComplete","data":{"update_id":"1"}}',
            "missing required field `update_image`",
        ),
    ],
)
def test_malformed_envelopes(wire: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_envelope(wire)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "reply",
    [
        b"Unknown Command: usage: dl <id>",
        b"IO error: stream did not contain valid UTF-8",
        b"Unix Domain Socket error: internal receiver error",
    ],
)
def test_error_text_replies_become_command_rejected(reply: bytes) -> None:
    with pytest.raises(CommandRejected) as info:
        decode_reply(reply)
    assert info.value.reply == reply.decode()


@pytest.mark.parametrize("reply", [b"", b"   ", b"\xff\xfe"])
def test_empty_or_binary_replies(reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_reply(reply)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    )


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_the_protocol_error(data: bytes) -> None:
    for decode in (decode_event, decode_envelope):
        try:
            decode(data)
        except ProtocolError:
            pass
    try:
        decode_reply(data)
    except (ProtocolError, CommandRejected):
        pass


@given(
    st.sampled_from(["Error", "DownloadComplete", "DownloadFailed", "InstallFailed", "X"]),
    _json_values(),
)
def test_arbitrary_json_shapes_decode_or_raise_the_protocol_error(name: str, data: Any) -> None:
    for wire in (
        msgspec.json.encode({"variant": name, "fields": data}),
        msgspec.json.encode({"variant": name, "fields": [data]}),
        msgspec.json.encode({"version": "0.1", "event": name, "data": data}),
    ):
        for decode in (decode_event, decode_envelope):
            try:
                decode(wire)
            except ProtocolError:
                pass


@given(
    st.builds(DownloadComplete, st.text(max_size=20), st.text(max_size=40), st.text(max_size=20))
    | st.builds(
        DownloadComplete,
        st.text(max_size=20),
        st.text(max_size=40),
        st.text(max_size=20),
        sha256=st.none() | st.text(max_size=70),
        size=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
        package=st.none() | st.builds(Package, st.text(max_size=10), st.text(max_size=10)),
    )
    | st.builds(DownloadFailed, st.text(max_size=20), st.text(max_size=40))
)
def test_envelope_round_trip(event: DownloadComplete | DownloadFailed) -> None:
    assert decode_envelope(encode_envelope(event)) == event
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deeply_nested_json_is_a_protocol_error(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    for wire in (
        b'{"variant":"DownloadComplete","fields":[' + nested + b"]}",
        b'{"version":"0.1","event":"DownloadComplete","data":' + nested + b"}",
    ):
        for decode in (decode_event, decode_envelope):
            with pytest.raises(ProtocolError):
                decode(wire)


def test_install_progress_golden_bytes() -> None:
    wire = b'{"variant":"InstallProgress","fields":["u1",40,"writing slot b"]}'
    assert encode_event(InstallProgress("u1", 40, "writing slot b")) == wire
    assert decode_event(wire) == InstallProgress("u1", 40, "writing slot b")
    assert (
        encode_event(InstallProgress("u1", 100))
        == b'{"variant":"InstallProgress","fields":["u1",100,""]}'
    )


def test_awaiting_reboot_golden_bytes() -> None:
    wire = b'{"variant":"AwaitingReboot","fields":["u1","slot b flashed"]}'
    assert encode_event(AwaitingReboot("u1", "slot b flashed")) == wire
    assert decode_event(wire) == AwaitingReboot("u1", "slot b flashed")
    assert encode_event(AwaitingReboot("u1")) == b'{"variant":"AwaitingReboot","fields":["u1",""]}'
