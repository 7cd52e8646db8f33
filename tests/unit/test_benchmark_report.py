"""The benchmark's table (``benchmarks/report.py``): a ratio next to its target shows enough
digits to tell which side of it the run landed on."""

from __future__ import annotations

from benchmarks.report import X, number, times


def test_a_ratio_just_under_its_target_is_not_shown_as_the_target() -> None:
    assert times(0.7998, 0.8) == "0.7998" + X  # not "0.80" beside "no"
    assert times(0.80003, 0.8) == "0.80003" + X  # met, by less than 0.001
    assert times(0.8, 0.8) == "0.80" + X  # exactly the target
    assert times(0.85, 0.8) == "0.85" + X  # clear of the target: two decimals


def test_numbers_without_a_target_keep_their_digits() -> None:
    assert times(1.14) == "1.14" + X
    assert number(19.96, 1, 20) == "19.96"
    assert number(19.2, 1, 20) == "19.2"
    assert times(float("nan"), 0.8) == "n/a"
