"""ResultCode: the guide's table and the 2016 parsing rules."""

import pytest

from swlm_sdk.protocol import ProtocolError, ResultCode

GUIDE_TABLE = [
    (0, "OK", "Operation executed successfully"),
    (1, "ALREADY_PROCESSED", "Operation has already been processed"),
    (2, "DEPENDENCY_FAILURE", "Dependency failure during package install, upgrade, or removal"),
    (3, "VALIDATION_FAILED", "Update image integrity has been compromised"),
    (4, "INSTALL_FAILED", "Package installation failed"),
    (5, "UPGRADE_FAILED", "Package upgrade failed"),
    (6, "REMOVAL_FAILED", "Package removal failed"),
    (7, "FLASH_FAILED", "The module loader could not flash its managed module"),
    (8, "CREATE_PARTITION_FAILED", "Partition creation failed"),
    (9, "DELETE_PARTITION_FAILED", "Partition deletion failed"),
    (10, "RESIZE_PARTITION_FAILED", "Partition resize failed"),
    (11, "WRITE_PARTITION_FAILED", "Partition write failed"),
    (12, "PATCH_PARTITION_FAILED", "Partition patching failed"),
    (13, "USER_DECLINED", "User declined the update"),
    (14, "SOFTWARE_BLACKLISTED", "Software was blacklisted"),
    (15, "DISK_FULL", "Ran out of disk space"),
    (16, "NOT_FOUND", "Software package not found"),
    (17, "OLD_VERSION", "Tried to downgrade to older version"),
    (18, "INTERNAL_ERROR", "SWM Internal integrity error"),
    (19, "GENERAL_ERROR", "Other error"),
]


def test_the_enum_is_exactly_the_guide_table() -> None:
    assert [(c.value, c.name, c.description) for c in ResultCode] == GUIDE_TABLE


@pytest.mark.parametrize(("number", "name", "description"), GUIDE_TABLE)
def test_parse_number_name_and_any_case(number: int, name: str, description: str) -> None:
    code = ResultCode(number)
    assert ResultCode.parse(number) is code
    assert ResultCode.parse(str(number)) is code
    assert ResultCode.parse(name) is code
    assert ResultCode.parse(name.lower()) is code
    assert ResultCode.parse(name.title()) is code
    assert ResultCode.parse(code) is code


@pytest.mark.parametrize("text", ["ok", "Ok", "OK", "oK"])
def test_ok_in_any_case(text: str) -> None:
    assert ResultCode.parse(text) is ResultCode.OK


@pytest.mark.parametrize(
    "value",
    ["20", "-1", "+1", "00", "", " 1", "1 ", "OK ", "0x1", "\u0661", 20, -1, True, 1.0, None],
)
def test_rejected_with_a_clear_error(value: object) -> None:
    with pytest.raises(ProtocolError, match="result code"):
        ResultCode.parse(value)  # type: ignore[arg-type]


def test_success_is_what_core_counts_as_finished() -> None:
    assert {c for c in ResultCode if c.is_success} == {ResultCode.OK, ResultCode.ALREADY_PROCESSED}
