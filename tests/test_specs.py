import csv

import pytest

from simulator.errors import SpecError
from simulator.specs.catalog import hardware_ids, load_hardware, load_model, model_ids
from simulator.specs.hardware import read_hardware
from simulator.specs.model import model_from_hf_config

from .conftest import DATA, ROOT

REQUIRED_HW = ["h100-sxm", "h100-pcie", "h800-sxm", "h200-sxm", "h20", "l20", "l40s", "a100-sxm", "b200-sxm",
               "b300-sxm", "gb200", "mi300x", "mi325x", "gaudi3", "ascend-910b", "decode-asic"]
REQUIRED_MODELS = ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-2-70b", "mixtral-8x7b", "mixtral-8x22b",
                   "dbrx", "ernie-4.5-300b-a47b", "ernie-4.5-21b-a3b", "deepseek-v3", "qwen3-235b-a22b",
                   "qwen3-30b-a3b", "qwen3-32b", "step-3", "grok-1", "kimi-k2", "doubao-class-moe",
                   "step-2-class-1t"]


def test_required_catalogue_entries_exist_and_load():
    assert set(REQUIRED_HW) <= set(hardware_ids())
    assert set(REQUIRED_MODELS) <= set(model_ids())
    for h in hardware_ids():
        load_hardware(h)
    for m in model_ids():
        load_model(m)


def test_hypothetical_entries_are_labelled():
    assert load_hardware("decode-asic").hypothetical
    assert load_model("doubao-class-moe").hypothetical
    assert load_model("step-2-class-1t").hypothetical
    assert not load_hardware("h100-sxm").hypothetical


def test_every_sourced_value_names_a_declared_source():
    # the reader enforces it; this checks that every file actually went through that check
    for h in hardware_ids():
        hw = load_hardware(h)
        assert hw.sources
        assert all(src for src in hw.efficiency.sources.values())


def test_h100_dense_peaks_are_half_the_sparse_datasheet():
    hw = load_hardware("h100-sxm")
    assert hw.peak("bf16") == pytest.approx(1979e12 / 2, rel=1e-3)
    assert hw.peak("fp8") == pytest.approx(3958e12 / 2, rel=1e-3)
    assert hw.hbm_bytes == 81559 * 2**20 and hw.hbm_bytes_per_s == 3.35e12  # as nvidia-smi reports '80 GB'


def _reference():
    with open(DATA / "reference_params.csv") as f:
        return list(csv.DictReader(row for row in f if not row.startswith("#")))


@pytest.mark.parametrize("row", _reference(), ids=lambda r: r["id"])
def test_parameter_counts_match_the_recount_and_published(row):
    m = load_model(row["id"])
    assert m.total_params / 1e9 == pytest.approx(float(row["recount_total_b"]), rel=0.005)
    assert m.active_params / 1e9 == pytest.approx(float(row["recount_active_b"]), rel=0.005)
    # published figures are rounded ("A3B" for 3.35B, "1T"): totals agree to the leading digits, active counts
    # within the one-billion step of the names; xAI published Grok-1's only as "25% of the weights" (a fraction)
    assert m.total_params / 1e9 == pytest.approx(float(row["published_total_b"]), rel=0.05)
    if row["id"] == "grok-1":
        assert round(m.active_params / m.total_params * 20) / 20 == 0.25  # about a quarter, to the nearest 5%
    else:
        assert abs(m.active_params / 1e9 - float(row["published_active_b"])) < 1.0


def test_doubao_class_active_is_about_a_seventh_of_dense_equivalent():
    m = load_model("doubao-class-moe")
    assert m.active_params / m.total_params < 0.1  # highly sparse
    assert 150e9 <= 7 * m.active_params <= 170e9  # equal-quality dense model ~7x the active params


def test_step2_class_is_about_a_trillion_parameters():
    assert 0.95e12 < load_model("step-2-class-1t").total_params < 1.1e12


def test_kv_bytes_per_token_gqa_and_mla():
    # GQA: 2 (K,V) x kv_heads x head_dim x bytes x layers
    assert load_model("llama-3.1-70b").kv_bytes_per_token(2.0) == 2 * 8 * 128 * 2 * 80
    # MLA: (kv_lora_rank + rope dim) x bytes x layers
    assert load_model("deepseek-v3").kv_bytes_per_token(2.0) == (512 + 64) * 2 * 61


@pytest.mark.parametrize("fixture,model", [("mixtral.json", "mixtral-8x7b"), ("dbrx.json", "dbrx"),
                                           ("deepseek_v3.json", "deepseek-v3"),
                                           ("qwen3_moe.json", "qwen3-30b-a3b"), ("llama.json", "llama-3.1-8b")])
def test_hf_import_matches_catalogue(fixture, model):
    imported = model_from_hf_config(DATA / "hf" / fixture, "x")
    ref = load_model(model)
    assert imported.total_params == ref.total_params
    assert imported.active_params == ref.active_params
    assert imported.kv_bytes_per_token() == ref.kv_bytes_per_token()


# ---- bad input: one-line errors naming file and key --------------------------------------------

def _one_line(err: SpecError) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_unknown_key_is_rejected(h100_yaml, write_hw):
    h100_yaml["memory"]["bandwith"] = h100_yaml["memory"]["bandwidth"]
    path = write_hw(h100_yaml)
    with pytest.raises(SpecError) as e:
        read_hardware(path)
    msg = _one_line(e.value)
    assert str(path) in msg and "memory.bandwith" in msg and "unknown key" in msg


def test_bad_unit_is_rejected(h100_yaml, write_hw):
    h100_yaml["memory"]["bandwidth"]["value"] = "3.35 TB"
    path = write_hw(h100_yaml)
    with pytest.raises(SpecError) as e:
        read_hardware(path)
    msg = _one_line(e.value)
    assert "memory.bandwidth.value" in msg and "not a unit of bandwidth" in msg


@pytest.mark.parametrize("section,key,words", [
    ("compute", "bf16", "a compute rate > 0 such as '989 TFLOPS'"),
    ("memory", "bandwidth", "a bandwidth > 0 such as '3.35 TB/s'"),
    ("memory", "capacity", "a size > 0 such as '80 GB'"),
    ("price", "per_device_hour", "a price per hour > 0 such as '2.5 USD/h'"),
])
@pytest.mark.parametrize("sign", ["-", ""])
def test_a_datasheet_figure_states_its_one_range_in_human_units(h100_yaml, write_hw, section, key, words, sign):
    """0 and negative figures get the same message (no ">= 0" for a negative one when 0 is refused too), in words
    and with an example that parses, not internal dimension names (flop_per_s, bytes_per_s, usd_per_s)."""
    from simulator.units import parse_quantity

    unit = words.split("'")[1].split(" ", 1)[1]
    h100_yaml[section][key]["value"] = f"{sign}1 {unit}" if sign else f"0 {unit}"
    with pytest.raises(SpecError) as e:
        read_hardware(write_hw(h100_yaml))
    msg = _one_line(e.value)
    assert f"{section}.{key}.value: expected {words}, got" in msg and "_per_s" not in msg and ">= 0" not in msg
    dim = {"compute": "flop_per_s", "bandwidth": "bytes_per_s", "capacity": "bytes", "price": "usd_per_s"}
    assert parse_quantity(words.split("'")[1], dim.get(section, dim.get(key))) > 0


@pytest.mark.parametrize("value", [-0.5, 0, 1.5])
def test_an_efficiency_fraction_states_its_one_range_at_one_key(h100_yaml, write_hw, value):
    h100_yaml["efficiency"]["kernels"]["default"]["compute_fraction"]["value"] = value
    with pytest.raises(SpecError) as e:
        read_hardware(write_hw(h100_yaml))
    assert "efficiency.kernels.default.compute_fraction.value: expected a fraction in (0, 1], got" in str(e.value)


def test_missing_source_is_rejected(h100_yaml, write_hw):
    del h100_yaml["compute"]["bf16"]["source"]
    path = write_hw(h100_yaml)
    with pytest.raises(SpecError) as e:
        read_hardware(path)
    assert "compute.bf16.source" in _one_line(e.value)


def test_undeclared_source_is_rejected(h100_yaml, write_hw):
    h100_yaml["compute"]["bf16"]["source"] = "MY-BLOG"
    with pytest.raises(SpecError, match="unknown source id 'MY-BLOG'"):
        read_hardware(write_hw(h100_yaml))


def test_wrong_schema_version(h100_yaml, write_hw):
    h100_yaml["schema_version"] = 7
    with pytest.raises(SpecError, match="schema_version"):
        read_hardware(write_hw(h100_yaml))


def test_yaml_syntax_error(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("id: [unclosed\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        read_hardware(p)


def test_catalogue_files_sit_at_repo_top_level():
    assert (ROOT / "hardware" / "h100-sxm.yaml").exists()
    assert (ROOT / "workloads" / "models" / "dbrx.yaml").exists()


@pytest.mark.parametrize("name,expected", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b"),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),  # an alias: the same architecture
    ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "qwen3-235b-a22b"),
    ("deepseek-ai/DeepSeek-R1-0528", "deepseek-v3"),
    ("nvidia/DeepSeek-R1-0528-FP4-v2", "deepseek-v3"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ("QWEN3_32B", "qwen3-32b"),
])
def test_models_are_found_by_their_hugging_face_names(name, expected):
    assert load_model(name).id == expected


@pytest.mark.parametrize("name,expected", [("H100", "h100-sxm"), ("NVIDIA H100 80GB HBM3", "h100-sxm"),
                                           ("NVIDIA A100-SXM4-80GB", "a100-sxm"), ("h200", "h200-sxm"),
                                           ("B200", "b200-sxm"), ("NVIDIA H20", "h20")])
def test_hardware_is_found_by_the_names_it_goes_by(name, expected):
    assert load_hardware(name).id == expected


def test_catalogue_aliases_name_one_spec_each_and_unknown_names_fail_clearly():
    from simulator.specs.catalog import _norm

    for ids, load in ((model_ids(), load_model), (hardware_ids(), load_hardware)):
        seen = {}
        for spec_id in ids:
            for name in (spec_id, *load(spec_id).aliases):
                assert seen.setdefault(_norm(name), spec_id) == spec_id, f"{name} names {seen[_norm(name)]} too"
    with pytest.raises(SpecError, match="no model id or alias matches") as e:
        load_model("someone/Not-A-Model-7B")
    assert "\n" not in str(e.value) and "llama-3.1-8b" in str(e.value)


def test_bad_aliases_are_named(tmp_path):
    from simulator.specs.model import read_model

    src = (ROOT / "workloads/models/llama-3.1-8b.yaml").read_text()
    bad = tmp_path / "m.yaml"
    bad.write_text(src.replace('aliases: ["Meta-Llama-3.1-8B"]', "aliases: Meta-Llama"))
    with pytest.raises(SpecError, match="aliases"):
        read_model(bad)


def _profile_sources(path):
    """(declared source ids, the source lists the values cite) of a hardware profile."""
    import re

    import yaml

    doc = yaml.safe_load(path.read_text())
    declared = set(doc["sources"])
    cited = [[p.strip() for p in m.split(";")] for m in re.findall(r"source: ([^}\n]+)", path.read_text())]
    return declared, cited


@pytest.mark.parametrize("path", sorted((ROOT / "hardware").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_shipped_profile_cites_what_it_declares_and_nothing_from_aiconfigurator(path):
    """Every declared source backs some value (a stale one reads as support that is not there), and none is NVIDIA
    aiconfigurator's: the yardstick stays independent, so its performance data, samples and system files are not
    sources here, even where a datasheet agrees with them."""
    declared, cited = _profile_sources(path)
    used = {p for parts in cited for p in parts}
    assert declared <= used, f"declared but cited by no value: {sorted(declared - used)}"
    assert "aiconfigurator" not in path.read_text().lower()


def test_a_flag_with_a_source_is_checked_like_a_value(tmp_path):
    import yaml

    doc = yaml.safe_load((ROOT / "hardware" / "h100-sxm.yaml").read_text())
    assert doc["scale_up"]["nvls"] == {"value": True, "source": "NVLS-DOC"}
    assert load_hardware("h100-sxm").scale_up.nvls
    doc["scale_up"]["nvls"]["source"] = "NOPE"
    (tmp_path / "h100-sxm.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"scale_up\.nvls\.source: unknown source id 'NOPE'"):
        read_hardware(tmp_path / "h100-sxm.yaml")
    doc["scale_up"]["nvls"] = False  # a bare flag still reads
    (tmp_path / "h100-sxm.yaml").write_text(yaml.safe_dump(doc))
    assert not read_hardware(tmp_path / "h100-sxm.yaml").scale_up.nvls


def test_the_readme_counts_the_hardware_catalogue():
    """The README's `quadrant hw list` line says how many profiles the catalogue ships: real accelerators plus the
    hypothetical ones it names (an illustrative decode ASIC, a CPU reference); a profile added or removed shows here."""
    import re
    from pathlib import Path

    from simulator.specs.catalog import hardware_ids, load_hardware

    line = next(x for x in (Path(__file__).parents[1] / "README.md").read_text().splitlines()
                if x.startswith("quadrant hw list"))
    n = int(re.search(r"# (\d+) accelerators \+ an illustrative decode ASIC \+ a CPU reference", line).group(1))
    specs = [load_hardware(h) for h in hardware_ids()]
    assert n == sum(not s.hypothetical for s in specs)
    assert sorted(s.id for s in specs if s.hypothetical) == ["cpu-host", "decode-asic"]
