"""The one backoff rule: doubling from ``base``, capped, and safe after any number of failures."""

import pytest

from swlm_sdk import Backoff


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (7, 320.0), (8, 600.0)]
)
def test_doubles_from_base_up_to_the_cap(failures: int, delay: float) -> None:
    assert Backoff(initial_delay=5.0, max_delay=600.0).delay(failures) == delay


@pytest.mark.parametrize("failures", [1024, 1025, 10**9])
def test_days_of_failures_never_overflow(failures: int) -> None:
    # 2.0 ** 1024 raises OverflowError: a report or event retried for a week reaches that.
    assert Backoff(initial_delay=5.0, max_delay=600.0).delay(failures) == 600.0
