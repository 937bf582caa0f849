"""Which steps replay CUDA graphs for the engine's unlisted kernels.

vLLM's default FULL_AND_PIECEWISE mode replays piecewise graphs (attention eager) for prefill and mixed
steps up to its largest capture size in tokens; SGLang and TensorRT-LLM (defaults) capture decode
batches only, so every prefill or mixed step launches the unlisted kernels from the host."""

import pytest

from simulator.serving.overheads import OverheadStepCost
from simulator.serving.profiles import ENGINES, engine_profile
from simulator.serving.stepcost import ConstantStepCost

LAYERS = 32


def _oc(engine: str) -> OverheadStepCost:
    return OverheadStepCost(ConstantStepCost(1e-3), engine_profile(engine), num_layers=LAYERS, moe=False)


def _launch_penalty(engine: str) -> float:
    p = engine_profile(engine)
    return p.kernels_per_layer * LAYERS * (max(p.kernel_floor_s, p.kernel_launch_s) - p.kernel_floor_s)


def test_vllm_small_prefill_replays_piecewise_graphs():
    oc, p = _oc("vllm"), engine_profile("vllm")
    assert 0 < p.prefill_graph_max_tokens
    # one 256-token prompt costs the same engine overhead as one decoding sequence in a full graph
    assert oc.overhead_s(1, 256, 0) == pytest.approx(oc.overhead_s(0, 0, 1))
    # one prompt past the captured token sizes runs eagerly: every unlisted kernel pays its launch
    big = p.prefill_graph_max_tokens + 1
    assert oc.overhead_s(1, big, 0) - oc.overhead_s(1, 256, 0) == pytest.approx(_launch_penalty("vllm"))
    assert _launch_penalty("vllm") > 0


def test_vllm_mixed_steps_count_decode_tokens_against_the_graph_sizes():
    oc, p = _oc("vllm"), engine_profile("vllm")
    n = p.prefill_graph_max_tokens
    fits = oc.overhead_s(1, n // 2, n // 4, n // 4)
    spills = oc.overhead_s(1, n // 2, n // 4, n // 2 + 1)  # speculative decodes carry several tokens each
    assert spills - fits == pytest.approx(_launch_penalty("vllm"))
    # through cost(): decode_len multiplies the decode tokens
    assert (oc.cost(1, n // 2, 0, n // 8, 5, 1000).time_s - oc.cost(1, n // 2, 0, n // 8, 1, 1000).time_s
            == pytest.approx(_launch_penalty("vllm")))


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "vllm"])
def test_decode_only_graph_engines_run_every_prefill_eagerly(engine):
    oc = _oc(engine)
    assert engine_profile(engine).prefill_graph_max_tokens == 0
    assert oc.overhead_s(1, 8, 0) - oc.overhead_s(0, 0, 1) == pytest.approx(_launch_penalty(engine))
