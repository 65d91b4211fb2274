"""The 2016 text grammar: reference tests (section 10.3), the parser table (2.2) and errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swlm_sdk.protocol import (
    Authenticate,
    ClientCredentials,
    Command,
    CommandSyntaxError,
    GetUpdateRequests,
    InstalledSoftware,
    ListInstalledPackages,
    ListSystemInfo,
    OperationResult,
    Package,
    ProtocolError,
    ResultCode,
    SendInstalledPackages,
    SendInstalledSoftware,
    SendInstallProgress,
    SendRebootNeeded,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
    UpdateReport,
    format_command,
    parse_command,
)

ALL_2016 = (
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
)


def report(update_id: str, code: ResultCode, text: str = "") -> SendUpdateReport:
    return SendUpdateReport(UpdateReport.single(update_id, code, text))


# Section 10.3: the reference's own full-parsing tests.
ACCEPTED = [
    ("Authenticate", Authenticate()),
    ("auth", Authenticate()),
    ("auth user pass", Authenticate(ClientCredentials("user", "pass"))),
    ("GetUpdateRequests", GetUpdateRequests()),
    ("getreq", GetUpdateRequests()),
    ("ListInstalledPackages", ListInstalledPackages()),
    ("ls", ListInstalledPackages()),
    ("ListSystemInfo", ListSystemInfo()),
    ("info", ListSystemInfo()),
    (
        "SendInstalledPackages myname myversion",
        SendInstalledPackages((Package("myname", "myversion"),)),
    ),
    ("sendpack n1 v1 n2 v2", SendInstalledPackages((Package("n1", "v1"), Package("n2", "v2")))),
    ("SendSystemInfo", SendSystemInfo()),
    ("sendinfo", SendSystemInfo()),
    ("SendUpdateReport myid OK", report("myid", ResultCode.OK)),
    ("sendup myid 19", report("myid", ResultCode.GENERAL_ERROR)),
    ("Shutdown", Shutdown()),
    ("shutdown", Shutdown()),
    ("StartDownload this", StartDownload("this")),
    ("dl that", StartDownload("that")),
    ("StartInstall 123", StartInstall("123")),
    ("inst this", StartInstall("this")),
    # Derived grammar cases (section 10.3) and the parser table (section 2.2).
    ("ls ", ListInstalledPackages()),
    ("ls  ", ListInstalledPackages()),
    (" ls", ListInstalledPackages()),
    ("\tls", ListInstalledPackages()),
    ("ls\n", ListInstalledPackages()),
    ("ls;", ListInstalledPackages()),
    ("ls\r", ListInstalledPackages()),
    ("ls\r\n", ListInstalledPackages()),
    ("ls;\n", ListInstalledPackages()),
    ("ls;garbage", ListInstalledPackages()),
    ("dl 1 \n", StartDownload("1")),
    ("dl  1  ", StartDownload("1")),
    ("dl\t1", StartDownload("1")),
    ("dl 1\r\n", StartDownload("1")),
    ("dl 1;dl 2", StartDownload("1")),
    ("dl é", StartDownload("é")),
    ("sendup myid ok", report("myid", ResultCode.OK)),
    ("sendup myid Ok", report("myid", ResultCode.OK)),
    ("sendup u1 INSTALL_FAILED", report("u1", ResultCode.INSTALL_FAILED)),
    # Deliberate differences (docs/compatibility.md): 2016 rejected these.
    ("ls \n", ListInstalledPackages()),
    ("ls ;", ListInstalledPackages()),
    # The result-text extension announced in the guide's TIP.
    ("sendup u1 4 dpkg: error", report("u1", ResultCode.INSTALL_FAILED, "dpkg: error")),
    (
        "sendup u1 4   two  spaces\tkept  \n",
        report("u1", ResultCode.INSTALL_FAILED, "two  spaces\tkept"),
    ),
    ("SendUpdateReport u1 0 done; ignored", report("u1", ResultCode.OK, "done")),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted(text: str, expected: Command) -> None:
    assert parse_command(text) == expected
    assert parse_command(text.encode()) == expected


# (input, the 2016 inner message; the peer sees it after "Unknown Command: ").
REJECTED = [
    ("auth one", "usage: auth <client-id> <client-secret>"),
    ("auth one two three", 'unexpected Authenticate args: ["one", "two", "three"]'),
    ("getreq now", 'unexpected GetUpdateRequests args: ["now"]'),
    ("ls some", 'unexpected ListInstalledPackages args: ["some"]'),
    ("ListSystemInfo 1 2", 'unexpected ListSystemInfo args: ["1", "2"]'),
    ("info please", 'unexpected ListSystemInfo args: ["please"]'),
    ("SendInstalledPackages some", "usage: sendpack (<name> <version> )+"),
    ("SendInstalledPackages", "usage: sendpack (<name> <version> )+"),
    ("sendpack 1 2 3", "SendInstalledPackages expects an even number of 'name version' pairs"),
    ("SendInstalledSoftware", "unexpected SendInstalledSoftware args: []"),
    ("sendinst x", 'unexpected SendInstalledSoftware args: ["x"]'),
    ("sendsoft some", "bad command: sendsoft some"),
    ("SendSystemInfo 1 2", 'unexpected SendSystemInfo args: ["1", "2"]'),
    ("sendinfo please", 'unexpected SendSystemInfo args: ["please"]'),
    ("sendup myid 20", "couldn't parse 2nd argument as an UpdateResultCode"),
    ("sendup x 00", "couldn't parse 2nd argument as an UpdateResultCode"),
    ("sendup x +1", "couldn't parse 2nd argument as an UpdateResultCode"),
    ("sendup x -1", "couldn't parse 2nd argument as an UpdateResultCode"),
    ("sendup", "usage: sendup <update-id> <result-code>"),
    ("sendup only-id", "usage: sendup <update-id> <result-code>"),
    ("Shutdown 1 2", 'unexpected Shutdown args: ["1", "2"]'),
    ("shutdown now", 'unexpected Shutdown args: ["now"]'),
    ("StartDownload this and that", 'unexpected StartDownload args: ["this", "and", "that"]'),
    ("dl", "usage: dl <id>"),
    ("dl ;1", "usage: dl <id>"),
    ("StartInstall", "usage: inst <id>"),
    ("inst more than one", 'unexpected StartInstall args: ["more", "than", "one"]'),
    ("", "bad command: "),
    (" ", "bad command:  "),
    ("\n", "bad command: \n"),
    ("au", "bad command: au"),
    ("Auth", "bad command: Auth"),
    ("foo", "bad command: foo"),
    ("foo\n", "bad command: foo\n"),
    # Deliberate differences: 2016 matched names as byte prefixes.
    ("dlx", "bad command: dlx"),
    ("installer", "bad command: installer"),
    ("StartDownloadX", "bad command: StartDownloadX"),
    ("lsx", "bad command: lsx"),
    ("getreqs", "bad command: getreqs"),
    ("authenticate", "bad command: authenticate"),
    ('dl "a" b\\', 'unexpected StartDownload args: ["\\"a\\"", "b\\\\"]'),
]


@pytest.mark.parametrize(("text", "message"), REJECTED)
def test_rejected_with_the_2016_message(text: str, message: str) -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(text)
    assert info.value.message == message
    assert info.value.reply == f"Unknown Command: {message}"
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b"sendup u1 4 dpkg  failed\nignored",
            'unexpected SendUpdateReport args: ["u1", "4", "dpkg", "failed"]',
        ),
        ('SendUpdateReport u1 0 "q"', 'unexpected SendUpdateReport args: ["u1", "0", "\\"q\\""]'),
        ("sendup u1 20 text", "couldn't parse 2nd argument as an UpdateResultCode"),
    ],
)
def test_without_result_text_a_text_gets_the_2016_message(text: str | bytes, message: str) -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(text, extensions=False)
    assert info.value.reply == f"Unknown Command: {message}"


@pytest.mark.parametrize("text", ["sendup u1 4", "SendUpdateReport u1 4 ;text", "sendup u1 4 \t"])
def test_without_result_text_a_bare_report_is_accepted(text: str) -> None:
    assert parse_command(text, extensions=False) == report("u1", ResultCode.INSTALL_FAILED)


# -- the SendInstallProgress extension ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SendInstallProgress u1 40", SendInstallProgress("u1", 40)),
        ("progress u1 0", SendInstallProgress("u1", 0)),
        ("progress u1 100 done", SendInstallProgress("u1", 100, "done")),
        (
            b"progress u1 7  writing slot b \nignored",
            SendInstallProgress("u1", 7, "writing slot b"),
        ),
        ("progress\tu1\t55;more", SendInstallProgress("u1", 55)),
    ],
)
def test_install_progress_is_parsed(text: str | bytes, expected: SendInstallProgress) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("progress", "usage: progress <update-id> <percent> [<text>]"),
        ("progress u1", "usage: progress <update-id> <percent> [<text>]"),
        ("progress u1 101", "couldn't parse 2nd argument as a percentage from 0 to 100"),
        ("progress u1 -1", "couldn't parse 2nd argument as a percentage from 0 to 100"),
        ("progress u1 007", "couldn't parse 2nd argument as a percentage from 0 to 100"),
        ("progress u1 4.5", "couldn't parse 2nd argument as a percentage from 0 to 100"),
        (
            "progress u1 \uff15",  # a digit, but not an ASCII one
            "couldn't parse 2nd argument as a percentage from 0 to 100",
        ),
    ],
)
def test_bad_install_progress_is_refused(text: str, message: str) -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(text)
    assert info.value.reply == f"Unknown Command: {message}"


@pytest.mark.parametrize(
    "text",
    [
        "SendInstallProgress u1 40",
        "progress u1 40 writing",
        "rebootneeded u1",
        "SendRebootNeeded u1 slot b",
    ],
)
def test_a_2016_daemon_answers_the_extensions_bad_command(text: str) -> None:
    """What the 2016 client answered: its prefix match finds no command in either name."""
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(text, extensions=False)
    assert info.value.reply == f"Unknown Command: bad command: {text}"


def test_no_2016_name_or_alias_is_a_prefix_of_the_extension() -> None:
    """The 2016 client matched names by prefix (``dlx`` was ``dl x``)."""
    legacy = [w for cls in ALL_2016 for w in (cls.name, cls.alias)]
    for word in (
        SendInstallProgress.name,
        SendInstallProgress.alias,
        SendRebootNeeded.name,
        SendRebootNeeded.alias,
    ):
        assert [w for w in legacy if word.startswith(w)] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SendRebootNeeded u1", SendRebootNeeded("u1")),
        ("rebootneeded u1  slot b flashed \n", SendRebootNeeded("u1", "slot b flashed")),
        ("rebootneeded u1;slot b", SendRebootNeeded("u1")),
    ],
)
def test_reboot_needed_is_parsed(text: str, expected: SendRebootNeeded) -> None:
    assert parse_command(text) == expected


def test_reboot_needed_needs_an_update_id() -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command("rebootneeded")
    assert info.value.reply == "Unknown Command: usage: rebootneeded <update-id> [<text>]"


def test_reboot_needed_golden_text() -> None:
    command = SendRebootNeeded("u1", "slot b flashed")
    assert format_command(command) == "SendRebootNeeded u1 slot b flashed"
    assert format_command(SendRebootNeeded("u1"), alias=True) == "rebootneeded u1"


def test_install_progress_golden_text() -> None:
    assert format_command(SendInstallProgress("u1", 40, "writing slot b")) == (
        "SendInstallProgress u1 40 writing slot b"
    )
    assert format_command(SendInstallProgress("u1", 100), alias=True) == "progress u1 100"
    for bad in (SendInstallProgress("u1", 101), SendInstallProgress("u1", 5, "a;b")):
        with pytest.raises(ProtocolError):
            format_command(bad)


def test_invalid_utf8_gets_the_2016_io_error() -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(b"dl \xff")
    assert info.value.reply == "IO error: stream did not contain valid UTF-8"


def test_syntax_errors_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        parse_command("nope")


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (Authenticate(), "Authenticate"),
        (Authenticate(ClientCredentials("id", "secret")), "Authenticate id secret"),
        (StartDownload("u1"), "StartDownload u1"),
        (report("u1", ResultCode.OK), "SendUpdateReport u1 0"),
        (
            report("u1", ResultCode.INSTALL_FAILED, "dpkg  failed"),
            "SendUpdateReport u1 4 dpkg  failed",
        ),
        (
            SendInstalledPackages((Package("a", "1"), Package("b", "2"))),
            "SendInstalledPackages a 1 b 2",
        ),
    ],
)
def test_format_golden(command: Command, text: str) -> None:
    assert format_command(command) == text


def test_format_with_aliases() -> None:
    assert format_command(report("u1", ResultCode.OK), alias=True) == "sendup u1 0"
    assert format_command(ListInstalledPackages(), alias=True) == "ls"


@pytest.mark.parametrize(
    "command",
    [
        StartDownload("has space"),
        StartDownload(""),
        StartInstall("semi;colon"),
        SendInstalledPackages(()),
        SendInstalledPackages((Package("a", "1 2"),)),
        SendInstalledSoftware(InstalledSoftware()),
        report("u1", ResultCode.OK, "line\nbreak"),
        report("u1", ResultCode.OK, " leading"),
        SendUpdateReport(UpdateReport("u1", ())),
        SendUpdateReport(UpdateReport("u1", (OperationResult("other", ResultCode.OK),))),
    ],
)
def test_format_refuses_what_the_grammar_cannot_carry(command: Command) -> None:
    with pytest.raises(ProtocolError):
        format_command(command)


token = st.text(st.characters(exclude_characters=" \t\r\n;", exclude_categories=["Cs"]), min_size=1)
result_text = st.lists(token, max_size=4).map(" ".join)
commands = st.one_of(
    st.just(Authenticate()),
    st.builds(Authenticate, st.builds(ClientCredentials, token, token)),
    st.sampled_from(
        [
            Shutdown(),
            GetUpdateRequests(),
            ListInstalledPackages(),
            ListSystemInfo(),
            SendSystemInfo(),
        ]
    ),
    st.builds(StartDownload, token),
    st.builds(StartInstall, token),
    st.builds(
        SendInstalledPackages, st.lists(st.builds(Package, token, token), min_size=1).map(tuple)
    ),
    st.builds(
        lambda uid, code, text: report(uid, code, text),
        token,
        st.sampled_from(ResultCode),
        result_text,
    ),
    st.builds(SendInstallProgress, token, st.integers(0, 100), result_text),
    st.builds(SendRebootNeeded, token, result_text),
)


@given(commands, st.booleans())
def test_parse_inverts_format(command: Command, alias: bool) -> None:
    assert parse_command(format_command(command, alias=alias)) == command


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    try:
        parse_command(data)
    except ProtocolError:
        pass


@given(st.text(max_size=200))
def test_arbitrary_text_parse_or_raise_the_protocol_error(text: str) -> None:
    outcome: Command | str
    try:
        outcome = parse_command(text)
    except CommandSyntaxError as exc:
        outcome = exc.reply
    if isinstance(outcome, str):
        assert outcome.startswith("Unknown Command: ")
    else:
        assert isinstance(outcome, Command)
