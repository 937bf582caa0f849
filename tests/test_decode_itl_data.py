"""The published saturated-batch rows (reports/validation/decode-itl/*.csv) cite a pinned source, carry the figures
they quote, follow the source's own run filter, and resolve to catalogue specs."""

import json
from pathlib import Path

import pandas as pd

from simulator.specs.catalog import load_hardware, load_model

DATA = Path(__file__).resolve().parents[1] / "reports/validation/decode-itl"
ROWS = pd.concat([pd.read_csv(p) for p in sorted(DATA.glob("*.csv"))], ignore_index=True)


def test_every_row_cites_a_pinned_source_and_quotes_it():
    assert ROWS.id.is_unique
    # a URL at a 40-hex-digit commit: the figures cannot move under the row
    assert ROWS.source_url.str.match(r"^https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/").all()
    assert ROWS.trust.str.match(r"^exact table").all()


def test_the_columns_are_the_quoted_figures():
    for r in ROWS.itertuples():
        q = json.loads("{" + r.quoted + "}")
        assert q["median_itl_ms"] == r.median_itl_ms and q["p90_itl_ms"] == r.p90_itl_ms
        assert q["avg_batch_size"] == r.avg_batch_size and q["avg_output_len"] == r.avg_output_len
        assert q["output_throughput_tokens_per_sec"] == r.output_tok_s
        assert q["max_num_seqs"] == r.max_seqs and q["num_gpus"] == r.devices
        assert (q["weight_precision"] == "fp8") == (r.precision == "fp8")
        # an FP8 checkpoint says so in its name, but for DeepSeek, whose released weights are FP8
        assert (r.precision == "fp8") == (r.model.endswith("-FP8") or r.model.startswith("deepseek-ai/"))
        assert q["gpu_model"] == r.gpu and r.hardware == {"H100": "h100-sxm", "B200": "b200-sxm"}[r.gpu]
        # the leaderboard prints expert_parallel = the GPU count when a config enables expert parallelism; its
        # tensor_parallel is a placeholder (1), the runner's --tensor-parallel-size is the GPU count (README)
        assert q["tensor_parallel"] == 1 and r.tp == r.devices
        assert r.ep == (r.devices if q["expert_parallel"] > 1 else 1)


def test_every_row_has_the_launch_the_readme_states():
    # vLLM 0.11.1 with the stored configs' 8192-token step budget (README), the catalogue models kept per task
    assert ROWS.task.value_counts().to_dict() == {"lm-arena-chat": 206, "gpqa": 75}
    assert (ROWS.source_url.str.rsplit("/", n=1).str[1] == ROWS.task + ".json").all()  # each row cites its task's file
    assert (ROWS.engine == "vllm").all() and (ROWS.engine_version.astype(str) == "0.11.1").all()
    assert (ROWS.max_batch_tokens == 8192).all()
    assert set(ROWS.model.str.split("/").str[0]) == {"Qwen", "meta-llama", "deepseek-ai"}


def test_rows_meet_the_sources_steady_batch_filter():
    # the leaderboard drops a run whose steady-state batch is under 85% of --max-num-seqs (README): a row that
    # breaks it was not read from the published file
    assert (ROWS.avg_batch_size >= 0.85 * ROWS.max_seqs).all()
    assert (ROWS.avg_batch_size <= ROWS.max_seqs).all()
    assert (ROWS.median_itl_ms <= ROWS.p90_itl_ms).all()


def test_rows_resolve_to_catalogue_specs_of_their_kind():
    """Every row's model and GPU are in the catalogue, and a row run with expert parallelism is an MoE model there
    (the leaderboard prints expert_parallel > 1 only for configs that enable it)."""
    for r in ROWS.drop_duplicates(["model_id", "hardware", "ep"]).itertuples():
        model = load_model(r.model_id)
        load_hardware(r.hardware)
        assert model.num_layers > 0 and (r.ep == 1 or model.is_moe), r.id


def test_rows_set_aside_say_why_and_their_peers_show_it():
    """A row the README sets aside (``excluded``) carries its reason, and the reason holds in the data: each excluded
    single-B200 GPQA row's ITL is well above its chat peer's (same GPU, GPU count and batch cap), which no other pair
    of tasks on the same model family shows on H100."""
    ex = ROWS[ROWS.excluded.fillna("") != ""]
    assert len(ex) == 12 and (ex.task == "gpqa").all() and ex.excluded.str.contains("README").all()
    chat = ROWS[ROWS.task == "lm-arena-chat"]
    for r in ex.itertuples():
        family = r.model.split("-Thinking")[0].split("-Instruct")[0]
        peer = chat[chat.model.str.startswith(family) & (chat.gpu == r.gpu) & (chat.devices == r.devices)
                    & (chat.max_seqs == r.max_seqs)]
        if len(peer):
            assert r.median_itl_ms > 1.5 * peer.median_itl_ms.iloc[0], r.id
