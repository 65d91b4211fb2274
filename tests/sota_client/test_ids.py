"""The one update-id rule: safe single file names, short enough for any Core URL."""

import pytest

from sota_client._errors import InvalidIdError
from sota_client._ids import check_update_id


@pytest.mark.parametrize(
    ("update_id", "problem"),
    [
        ("", "it is empty"),
        ("..", "it starts with '.'"),
        ("../x", "it starts with '.'"),
        ("/etc/passwd", "it contains '/'"),
        ("a\0b", "it contains a control character"),
        ("x" * 251, "it is longer than 250 bytes"),
        ("u1.part", "it ends with '.part', the suffix of partial downloads"),
    ],
)
def test_unsafe_id_messages(update_id: str, problem: str) -> None:
    with pytest.raises(InvalidIdError) as caught:
        check_update_id(update_id)
    assert str(caught.value).endswith(": " + problem)


@pytest.mark.parametrize(
    "update_id",
    ["1", "u1", "fake-pkg_1.0", "123e4567-e89b-12d3-a456-426655440000", "x" * 250, "a b", "ü"],
)
def test_ordinary_ids_are_allowed(update_id: str) -> None:
    assert check_update_id(update_id) == update_id


def test_long_ids_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidIdError) as caught:
        check_update_id("/" * 10_000)
    assert len(str(caught.value)) < 120
