import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.units import GB, GiB, UnitError, format_si, parse_quantity


def test_decimal_and_binary_prefixes_differ():
    assert parse_quantity("80 GB", "bytes") == 80e9
    assert parse_quantity("80 GiB", "bytes") == 80 * 2**30
    assert GiB / GB == pytest.approx(1.073741824)


@pytest.mark.parametrize("text,dim,expected", [
    ("3.35 TB/s", "bytes_per_s", 3.35e12),
    ("400 Gb/s", "bytes_per_s", 50e9),
    ("989.4 TFLOPS", "flop_per_s", 989.4e12),
    ("1978.9 TOPS", "flop_per_s", 1978.9e12),
    ("3 us", "s", 3e-6),
    ("2.5 USD/h", "usd_per_s", 2.5 / 3600),
    ("700 W", "W", 700.0),
])
def test_parse(text, dim, expected):
    assert parse_quantity(text, dim) == pytest.approx(expected)


@pytest.mark.parametrize("value,dim", [("3.35 TB", "bytes_per_s"), (3.35, "bytes"), ("fast", "s"),
                                       ("10 GB/s", "flop_per_s")])
def test_wrong_dimension_is_rejected(value, dim):
    with pytest.raises(UnitError):
        parse_quantity(value, dim)


def test_format_si():
    assert format_si(3.35e12, "B/s") == "3.35 TB/s"


def test_rates_have_a_floor_and_its_message_says_why():
    from simulator.units import MIN_RATE_PER_S, UnitError, parse_rate_per_s

    assert parse_rate_per_s(MIN_RATE_PER_S) == MIN_RATE_PER_S
    assert parse_rate_per_s("0.0036/h") == pytest.approx(1e-6)
    for bad in (1e-300, 0, -5, "1e-7/s", "0/min"):
        with pytest.raises(UnitError, match=r"at least 1e-6/s \(one request in 11.6 days"):
            parse_rate_per_s(bad)


def test_every_example_in_an_error_message_parses():
    from simulator.units import DIMENSION_EXAMPLES, described

    for dim, example in DIMENSION_EXAMPLES.items():
        assert parse_quantity(example, dim) > 0
        assert example in described(dim) and "_per_s" not in described(dim)


def test_format_ms_keeps_small_latencies_readable():
    from simulator.units import format_ms

    assert format_ms(0.0487) == "48.7 ms" and format_ms(0.04) == "40.0 ms"  # (as before from 1 ms up)
    assert format_ms(1e-6) == "0.001 ms" and format_ms(2.5e-4) == "0.25 ms" and format_ms(0) == "0 ms"


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_a_duration_the_tool_writes_reads_back_to_the_same_float(seconds):
    from simulator.units import format_duration_arg, parse_duration_s

    text = format_duration_arg(seconds)
    assert parse_duration_s(text) == seconds and text.endswith("s")


def test_a_duration_the_tool_writes_is_short_and_in_ms():
    from simulator.units import format_duration_arg

    assert [format_duration_arg(x) for x in (0.5, 0.005, 2.5, 2.5e-4)] == ["500ms", "5ms", "2500ms", "0.25ms"]


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -0.001])
def test_a_duration_the_tool_cannot_write_is_refused(bad):
    """Only a finite duration >= 0 has a spelling the parsers read back; anything else is an error, not 'infms'."""
    from simulator.units import format_duration_arg

    with pytest.raises(UnitError, match="finite duration >= 0"):
        format_duration_arg(bad)
