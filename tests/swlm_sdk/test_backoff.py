"""The one backoff rule: growing from initial_delay, capped, safe after any number of failures."""

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


def test_retry_waits_as_its_backoff_says() -> None:
    from swlm_sdk import Retry

    retry = Retry(attempts=5, initial_delay=0.5, max_delay=3.0, multiplier=3.0)
    assert list(retry.delays()) == [retry.backoff.delay(n) for n in range(1, 5)]
    assert list(retry.delays()) == [0.5, 1.5, 3.0, 3.0]


@pytest.mark.parametrize(
    ("initial", "cap", "multiplier"), [(-1.0, 1.0, 2.0), (2.0, 1.0, 2.0), (1.0, 2.0, 0.5)]
)
def test_nonsense_backoffs_are_refused(initial: float, cap: float, multiplier: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, cap, multiplier)


def test_a_multiplier_of_one_waits_the_same_every_time() -> None:
    assert [Backoff(2.0, 10.0, 1.0).delay(n) for n in (1, 5, 10**9)] == [2.0, 2.0, 2.0]


def test_the_repr_shows_the_delays_not_the_sleep_hook() -> None:
    assert repr(Backoff(1.0, 5.0)) == "Backoff(initial_delay=1.0, max_delay=5.0, multiplier=2.0)"
