"""The D-Bus gateway reads arguments as peers really send them: typed, or in variants."""

from __future__ import annotations

from typing import Any

import pytest

from sota_client.gateways._dbus_args import (
    MAX_RESULTS,
    ArgumentError,
    installed_software,
    operation_results,
    split_signature,
    string_argument,
)
from swlm_sdk.protocol import InstalledFirmware, InstalledPackage, ResultCode

OP = "0c24f1ca-2a9e-4c0f-a730-fd29f759db89"


@pytest.mark.parametrize(
    ("signature", "types"),
    [
        ("saa{sv}", ["s", "aa{sv}"]),
        ("vv", ["v", "v"]),
        ("sssb", ["s", "s", "s", "b"]),
        ("a(si)a{s(ii)}", ["a(si)", "a{s(ii)}"]),
        ("", []),
    ],
)
def test_signatures_split_into_complete_types(signature: str, types: list[str]) -> None:
    assert split_signature(signature) == types


@pytest.mark.parametrize("signature", ["a", "(s", "a{s", "z", "s)"])
def test_a_malformed_signature_is_an_argument_error(signature: str) -> None:
    with pytest.raises(ArgumentError, match="malformed"):
        split_signature(signature)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (("i", 4), ResultCode.INSTALL_FAILED),
        (("y", 4), ResultCode.INSTALL_FAILED),
        (("n", 0), ResultCode.OK),
        (("q", 13), ResultCode.USER_DECLINED),
        (("u", 19), ResultCode.GENERAL_ERROR),
        (("x", 1), ResultCode.ALREADY_PROCESSED),
        (("t", 2), ResultCode.DEPENDENCY_FAILURE),
        (("s", "INSTALL_FAILED"), ResultCode.INSTALL_FAILED),
        (("s", "ok"), ResultCode.OK),
        (("s", "4"), ResultCode.INSTALL_FAILED),
        (("v", ("i", 4)), ResultCode.INSTALL_FAILED),  # a variant in the variant
    ],
)
def test_a_result_code_of_any_integer_type_or_a_name(code: Any, expected: ResultCode) -> None:
    (result,) = operation_results("aa{sv}", [{"id": ("s", OP), "result_code": code}], "u1")
    assert result.result_code is expected
    assert result.id == OP
    assert result.result_text == ""


def test_the_results_may_come_whole_in_a_variant_or_as_variants() -> None:
    entry = {"id": ("s", OP), "result_code": ("i", 4), "result_text": ("s", "failed")}
    wrapped = operation_results("v", ("aa{sv}", [entry]), "u1")
    assert operation_results("av", [("a{sv}", entry)], "u1") == wrapped
    assert [(r.id, r.result_code, r.result_text) for r in wrapped] == [(OP, 4, "failed")]


def test_a_typed_dict_of_strings_works_too() -> None:
    (result,) = operation_results("aa{ss}", [{"result_code": "OK"}], "u1")
    assert (result.id, result.result_code) == ("u1", ResultCode.OK)  # no id: the update's


@pytest.mark.parametrize(
    ("signature", "value", "words"),
    [
        ("aa{sv}", [{"id": ("s", OP)}], "has no result_code"),
        ("aa{sv}", [{"result_code": ("b", True)}], "must be an integer or a name"),
        ("aa{sv}", [{"result_code": ("d", 4.0)}], "not a value of type 'd'"),
        ("aa{sv}", [{"result_code": ("i", 20)}], "expected a number from 0 to 19"),
        ("aa{sv}", [{"result_code": ("i", 0), "id": ("i", 3)}], "must be a string"),
        ("s", "text", "must be an array of dicts"),
        ("as", ["x"], "must be a dict with string keys"),
        ("aa{sv}", [{"result_code": ("i", 0)}] * (MAX_RESULTS + 1), "more than 256"),
    ],
)
def test_bad_results_say_what_is_wrong(signature: str, value: Any, words: str) -> None:
    with pytest.raises(ArgumentError, match=words) as caught:
        operation_results(signature, value, "u1")
    assert caught.value.missing == (words == "has no result_code")


def test_a_long_text_is_cut() -> None:
    (result,) = operation_results(
        "aa{sv}", [{"result_code": ("i", 0), "result_text": ("s", "x" * 9999)}], "u1"
    )
    assert len(result.result_text) == 4096


def test_string_arguments_plain_or_in_a_variant() -> None:
    assert string_argument("s", "u1", "the id") == "u1"
    assert string_argument("v", ("s", "u1"), "the id") == "u1"
    with pytest.raises(ArgumentError, match="the id must be a string"):
        string_argument("v", ("i", 1), "the id")


def test_installed_software_from_genivis_names() -> None:
    software = installed_software("as", (["bluez_driver", "bluez_apps"],))
    assert software.packages == (
        InstalledPackage("bluez_driver", "bluez_driver", "", 0),
        InstalledPackage("bluez_apps", "bluez_apps", "", 0),
    )
    assert software.firmwares == ()


def test_installed_software_from_the_2016_pair() -> None:
    packages = [
        {
            "package_id": ("s", "p1"),
            "name": ("s", "bluez"),
            "description": ("s", "BT"),
            "last_modified": ("t", 7),
        }
    ]
    firmwares = [
        {"module": ("s", "ecu1"), "firmware_id": ("s", "1.2.3"), "last_modified": ("u", 9)}
    ]
    software = installed_software("aa{sv}aa{sv}", (packages, firmwares))
    assert software.packages == (InstalledPackage("p1", "bluez", "BT", 7),)
    assert software.firmwares == (InstalledFirmware("ecu1", "1.2.3", 9),)


@pytest.mark.parametrize(
    ("signature", "body", "words"),
    [
        ("i", (3,), "expected 'as'"),
        ("as", (["ok", ""],), "a package name is empty"),
        ("aa{sv}aa{sv}", ([{"last_modified": ("s", "x")}], []), "must be an integer"),
    ],
)
def test_unusable_installed_software_says_why(signature: str, body: Any, words: str) -> None:
    with pytest.raises(ArgumentError, match=words):
        installed_software(signature, body)
