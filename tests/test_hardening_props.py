"""Property tests (hypothesis) over the validation layer: numeric flag parsers and the CLI flags built on them,
and the spec readers fed mutated or random files. The contract: a value is accepted exactly when it is in
range, and a bad file raises SpecError (one line, naming the file) and nothing else."""

import copy
import math

import pytest
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simulator.cli import app
from simulator.cli._params import MAX_COUNT, count, duration, rate, real
from simulator.errors import SpecError
from simulator.specs.hardware import read_hardware
from simulator.specs.traffic import read_traffic

from .conftest import ROOT

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
runner = CliRunner()


def accepts(parser, text) -> bool:
    try:
        parser(text)
        return True
    except typer.BadParameter:
        return False


@FAST
@given(st.integers(-10**12, 10**12), st.integers(0, 3))
def test_count_accepts_exactly_integers_in_range(n, lo):
    assert accepts(count(lo), str(n)) == (lo <= n <= MAX_COUNT)


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not float(x).is_integer()))
def test_count_refuses_non_integers(x):
    assert not accepts(count(0), repr(x))


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_real_accepts_exactly_finite_values_in_range(x):
    assert accepts(real(0, 1), repr(x)) == (math.isfinite(x) and 0 <= x <= 1)
    assert accepts(real(0, lo_open=True), repr(x)) == (math.isfinite(x) and x > 0)


@FAST
@given(st.floats(1e-9, 1e6), st.sampled_from([("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("min", 60.0)]))
def test_durations_carry_their_unit(x, unit):
    name, factor = unit
    assert duration()(f"{x!r}{name}") == pytest.approx(x * factor, rel=1e-12)
    assert not accepts(duration(), f"-{x!r}{name}")


@FAST
@given(st.floats(1e-2, 1e6), st.sampled_from([("/s", 1.0), ("/min", 1 / 60), ("/h", 1 / 3600)]))
def test_rates_carry_their_unit(x, unit):
    name, factor = unit
    assert rate()(f"{x!r}{name}") == pytest.approx(x * factor, rel=1e-12)
    assert not accepts(rate(), f"-{x!r}{name}") and not accepts(rate(), f"0{name}")
    # below the floor (one request in 11.6 days) float seconds cannot time a run: refused, not computed
    assert not accepts(rate(), f"{x * 1e-13!r}{name}")


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["--batch", "--isl", "--osl", "--devices", "--prefill-batch", "--kv-scale-tokens"]),
       st.one_of(st.integers(-5, 0).map(str), st.sampled_from(["nan", "inf", "-inf", "1e999", "2.5", "x", "0x10"])))
def test_whatif_count_flags_refuse_bad_values_with_one_line(flag, value):
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "1", flag, value])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error:") and flag in err and "\n" not in err


# -- spec readers -----------------------------------------------------------------------------------------------

H100 = yaml.safe_load((ROOT / "hardware" / "h100-sxm.yaml").read_text())


def _leaves(node, path=()):
    """Paths of the numeric `value:` leaves and plain numbers of a spec document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    elif isinstance(node, (int, float, str)) and not isinstance(node, bool) and path[-1] in ("value",):
        yield path


LEAVES = list(_leaves(H100))


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(LEAVES), st.sampled_from([".nan", ".inf", "-.inf", "-1", "-3 TB/s", "-80 GB", "1e999 GB"]))
def test_hardware_reader_refuses_nan_inf_and_negative_values(tmp_path, leaf, bad):
    doc = copy.deepcopy(H100)
    _set(doc, leaf, "__BAD__")
    text = yaml.safe_dump(doc, sort_keys=False).replace("'__BAD__'", bad).replace("__BAD__", bad)
    p = tmp_path / "h100-sxm.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        read_hardware(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    assert any(str(part) in msg for part in leaf if isinstance(part, str) and part != "value"), (leaf, msg)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(LEAVES))
def test_duplicate_keys_are_refused(tmp_path, leaf):
    text = yaml.safe_dump(H100, sort_keys=False)
    key = str(leaf[0])
    text = text + f"{key}: {{}}\n"  # the same top-level key a second time
    p = tmp_path / "h100-sxm.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match="duplicate key"):
        read_hardware(p)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_traffic_reader(tmp_path, data):
    p = tmp_path / "t.yaml"
    p.write_bytes(data)
    try:
        read_traffic(p)
    except SpecError as e:
        assert "\n" not in str(e) and str(p) in str(e)


TRAFFIC = yaml.safe_load((ROOT / "workloads" / "traffic" / "chat.yaml").read_text())
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=8),
                       lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=8), ch, max_size=3),
                       max_leaves=8)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(list(_leaves(TRAFFIC)) + [("arrivals", "rate_per_s"), ("requests",), ("seed",),
                                                 ("slo", "ttft"), ("prompt_tokens", "median"), ("arrivals", "cv")]),
       JSONISH)
def test_mutated_traffic_is_read_or_refused_with_a_spec_error(tmp_path, path, value):
    doc = copy.deepcopy(TRAFFIC)
    try:
        _set(doc, path, value)
    except (KeyError, TypeError):
        return
    p = tmp_path / "chat.yaml"
    p.write_text(yaml.safe_dump(doc))
    try:
        t = read_traffic(p)
    except SpecError as e:
        assert "\n" not in str(e)
        return
    assert t.requests >= 1 and (t.arrival in ("closed", "trace") or (math.isfinite(t.rate_per_s) and t.rate_per_s > 0))
    assert math.isfinite(t.prompt.mean) and t.prompt.mean >= 1 and t.slo.ttft_s > 0
