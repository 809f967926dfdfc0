"""Sizes and durations: one grammar to read them, one base (1024) to print them."""

from __future__ import annotations

import math

import pytest

from jupyter_compute.units import format_duration, format_size, parse_duration, parse_size

from conftest import Project

GiB = 1024 ** 3


@pytest.mark.parametrize("text", ["4g", "4G", "4gb", "4GB", "4GiB", "4 g", " 4g ", 4 * GiB])
def test_every_spelling_of_a_size_is_the_same_bytes(text: str | int) -> None:
    assert parse_size(text) == 4 * GiB


def test_sizes_use_powers_of_1024_both_ways() -> None:
    assert parse_size("512MiB") == parse_size("512m") == 512 * 1024 ** 2
    assert parse_size("1.5GB") == int(1.5 * GiB)
    assert parse_size("2k") == 2048 and parse_size("100") == 100 and parse_size("3b") == 3
    assert format_size(parse_size("1.5g")) == "1.5 GiB"
    assert format_size(2187) == "2.1 KiB" and format_size(999) == "999 B"
    assert format_size(3 * 1024 ** 2) == "3.0 MiB" and format_size(2 * 1024 ** 4) == "2.0 TiB"


@pytest.mark.parametrize("text", ["", "g", "4 q", "-1g", "1e3", "four", "nan", math.nan, -1])
def test_a_bad_size_is_a_value_error_naming_it(text: object) -> None:
    with pytest.raises(ValueError, match="invalid size") as exc:
        parse_size(text)  # type: ignore[arg-type]
    assert repr(text) in str(exc.value)


def test_durations_read_seconds_minutes_and_hours() -> None:
    assert parse_duration("90s") == parse_duration("90") == parse_duration(90) == 90.0
    assert parse_duration("5m") == 300.0 and parse_duration("2.5h") == 9000.0
    assert parse_duration("1h30m") == parse_duration("1h 30m") == 5400.0
    assert parse_duration("1m30s") == 90.0 and parse_duration(0) == 0.0


@pytest.mark.parametrize("text", ["", "x", "h", "-5", "1h30", "5 minutes", math.nan, -5,
                                  math.inf])
def test_a_bad_duration_is_a_value_error(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_durations_print_as_the_widgets_and_the_cli_show_them() -> None:
    assert format_duration(4.25) == "4.2s" and format_duration(59.9) == "59.9s"
    assert format_duration(125) == "2m05s" and format_duration(3725) == "1h02m"
    assert format_duration(-3) == "0.0s"


def test_the_cli_reads_a_run_duration_in_the_same_grammar(project: Project) -> None:
    project.write("slow.py", "import time\ntime.sleep(30)\n")
    out = project.cli("submit", "slow.py", "--max-duration", "1h30")
    assert out.returncode != 0 and "end the seconds with s, e.g. 1m30s" in out.stderr
    out = project.cli("submit", "slow.py", "--max-duration", "0m1s", "--wait")
    assert "TimedOut" in out.stdout
