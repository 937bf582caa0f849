"""Hand-transcribed public kernel figures (beyond the reference table), each with its exact source.

``NEW_ROWS()`` returns dicts with contract columns plus id/source/trust/derived/causal/notes. Latencies are
either published times or computed from a published rate with the formula stated in ``derived``; any
inferred shape parameter says so in ``derived`` or ``notes``. SOURCES.md describes every source.
"""

from __future__ import annotations


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x < 1e4 else f"{x:.0f}"


def _gemm(rid, hw, dtype, m, n, k, tflops, src, trust, notes):
    return dict(op="gemm", hardware=hw, dtype=dtype, m=m, n=n, k=k,
                latency_us=_fmt(2 * m * n * k / (tflops * 1e12) * 1e6), id=rid, source=src, trust=trust,
                derived=f"latency = 2*m*n*k / {tflops:g}e12 FLOP/s (published TFLOPS)", notes=notes)


def _attn_fwd(rid, hw, dtype, b, s, h, d, causal, tflops, src, trust, notes, kvh=None):
    flop = 4 * b * s * s * h * d / (2 if causal else 1)
    return dict(op="attn_prefill", hardware=hw, dtype=dtype, kv_dtype=dtype, batch=b, q_len=s, kv_len=s,
                num_heads=h, num_kv_heads=kvh or h, head_dim=d, latency_us=_fmt(flop / (tflops * 1e12) * 1e6),
                id=rid, source=src, trust=trust, causal=int(causal),
                derived=f"latency = 4*b*s^2*h*d{'/2' if causal else ''} / {tflops:g}e12 FLOP/s (FlashAttention FLOP "
                        "convention: causal counts half)",
                notes=("NON-CAUSAL; " if not causal else "") + notes)


def _decode(rid, hw, dtype, b, kv_len, h, kvh, d, us, src, trust, notes, derived="latency = published time"):
    return dict(op="attn_decode", hardware=hw, dtype=dtype, kv_dtype=dtype, batch=b, q_len=1, kv_len=kv_len,
                num_heads=h, num_kv_heads=kvh, head_dim=d, latency_us=_fmt(us), id=rid, source=src, trust=trust,
                causal=1, derived=derived, notes=notes)


def _moe(rid, hw, dtype, tokens, hidden, inter, e, topk, us, src, trust, notes):
    return dict(op="moe", hardware=hw, dtype=dtype, tokens=tokens, hidden=hidden, intermediate=inter, num_experts=e,
                top_k=topk, latency_us=_fmt(us), id=rid, source=src, trust=trust,
                derived="latency = published kernel time", notes=notes)


def _coll(rid, op, hw, nbytes, world, us, src, trust, notes, dtype=""):
    return dict(op=op, hardware=hw, dtype=dtype, bytes=nbytes, world=world, latency_us=_fmt(us), id=rid, source=src,
                trust=trust, derived="latency = published time (nccl-tests 'time' column, out-of-place, us)",
                notes=notes)


# --------------------------------------------------------------------------------------------------------------
# 1. Maximum Achievable Matmul FLOPS (torch.mm -> cuBLAS/hipBLASLt), ml-engineering
MAMF_V2 = ("stas00/ml-engineering compute/accelerator/README.md, 'Maximum Achievable Matmul FLOPS comparison table' "
           "(v2 table, mean of 100 iters after 50 warmup); stored copy of a 2025-26 revision (107k chars) that "
           "holds the B200/GB200/H200 rows; A100/H100 rows also at @b9e2972")
MAMF_NOTE = ("MAMF = best shape of a brute-force shape search (selection bias: an upper envelope, not a typical "
             "shape); torch.mm, cuBLAS; ")


def mamf_rows() -> list[dict]:
    bf16 = [("a100-sxm", 271.2, (1024, 10240, 5120), "2.6.0+cu126"),
            ("h100-sxm", 794.5, (2048, 2048, 13312), "2.7.0+cu126"),
            ("b200-sxm", 1745.0, (1792, 16128, 3072), "2.7.1+cu128"),
            ("gb200", 1822.0, (4096, 9728, 2048), "2.10.0.dev20250916+cu130"),
            ("mi325x", 784.9, (13312, 10240, 8192), "2.6.0+6.2.4, PYTORCH_TUNABLEOP_ENABLED=1, 1000W"),
            ("mi300x", 668.4, (10240, 15360, 8192), "2.5.1+6.3.42131, PYTORCH_TUNABLEOP_ENABLED=1")]
    fp8 = [("b200-sxm", 3432.5, (15360, 4096, 3072), "2.7.1+cu128"),
           ("h200-sxm", 1453.4, (1280, 4096, 12032), "2.7.1+cu128"),
           ("gb200", 3615.6, (19456, 5120, 1536), "2.10.0.dev20250916+cu130"),
           ("h100-sxm", 1402.6, (1024, 9216, 14336), "2.7.0+cu126")]
    rows = []
    for dt, table in (("bf16", bf16), ("fp8", fp8)):
        for hw, tf, (m, n, k), ver in table:
            rows.append(_gemm(f"MAMF-{hw}-{dt}", hw, dt, m, n, k, tf, MAMF_V2, "B",
                              MAMF_NOTE + f"torch {ver}; best shape MxNxK as printed" +
                              ("; FP8 = float8_e4m3fn torch._scaled_mm" if dt == "fp8" else "")))
    src = ("mag-/gpu_benchmark README.md @2218e0a 'Stats' table (community-submitted mamf-finder results, Optuna "
           "shape search)")
    for rid, hw, tf, (m, n, k) in (("MAGB-l40s-bf16", "l40s", 252.0, (4416, 3776, 3072)),
                                   ("MAGB-h100-pcie-bf16", "h100-pcie", 499.5, (6912, 16384, 2048))):
        rows.append(_gemm(rid, hw, "bf16", m, n, k, tf, src, "C",
                          MAMF_NOTE + "community submission, dtype from mamf-finder default (bf16); software "
                                      "versions not stated"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# 2. vLLM / SGLang fused-MoE kernel benchmarks (benchmark_moe.py: topk softmax + align + 2 grouped GEMMs + act)
def moe_rows() -> list[dict]:
    rows = []
    src = ("vllm-project/vllm PR #24700 (mgoin, 2025-09-11) 'Benchmarks on H100', Mixtral BF16 "
           "benchmark_moe.py --model=mistralai/Mixtral-8x7B-Instruct-v0.1 -tp=2, '# Tuned Config' block")
    mix = [(1, 144.03), (2, 229.28), (4, 351.10), (8, 434.98), (16, 471.49), (24, 478.27), (32, 487.35),
           (48, 487.85), (64, 483.14), (96, 494.42), (128, 491.39), (256, 536.77), (512, 662.33), (1024, 833.72),
           (1536, 1122.93)]
    for t, us in mix:
        rows.append(_moe(f"VLLM24700-mixtral-tp2-b{t}", "h100-sxm", "bf16", t, 4096, 7168, 8, 2, us, src, "B",
                         "vLLM fused_moe Triton (tuned config E=8,N=7168,NVIDIA_H100_80GB_HBM3); Mixtral-8x7B, "
                         "TP2 shard: intermediate 14336/2 = 7168 per device, all 8 experts local; whole routed-expert "
                         "op (routing softmax, align, w13 GEMM, SiLU*mul, w2 GEMM, reduce); CUDA-graph timing"))
    src = ("vllm-project/vllm PR #24700 (mgoin, 2025-09-11) 'Benchmarks on H100', Qwen3 MoE FP8 "
           "benchmark_moe.py --model=Qwen/Qwen3-30B-A3B -tp=1 --dtype=fp8_w8a8, '# PR' block")
    qw = [(1, 40.44), (2, 56.15), (4, 78.10), (8, 118.64), (16, 164.64), (24, 193.48), (32, 210.07), (48, 230.59),
          (64, 237.26), (96, 244.33), (128, 247.67), (256, 262.38), (512, 286.24)]
    for t, us in qw:
        rows.append(_moe(f"VLLM24700-qwen3-30b-fp8-b{t}", "h100-sxm", "fp8", t, 2048, 768, 128, 8, us, src, "B",
                         "vLLM fused_moe Triton, FP8 w8a8 per-tensor (base model has no block quant config), "
                         "default-config heuristics of that PR; Qwen3-30B-A3B (hidden 2048, moe_intermediate 768, "
                         "128 experts, top-8); the PR block is cut after batch 512 in the stored copy"))
    src = ("sgl-project/sglang PR #11730 (pdasgup) tuning_fused_moe_triton.py --model "
           "Qwen/Qwen3-235B-A22B-Instruct-2507 --tp-size 8 --dtype fp8_w8a8, '# Without tuned kernel' block, H200")
    sg = [(1, 31.70), (2, 36.56), (4, 49.67), (8, 66.87), (16, 92.36), (24, 117.38), (32, 124.99)]
    for t, us in sg:
        rows.append(_moe(f"SGL11730-qwen3-235b-tp8-b{t}", "h200-sxm", "fp8", t, 4096, 192, 128, 8, us, src, "C",
                         "SGLang fused_moe Triton with the DEFAULT (untuned) config BLOCK 64x128x128; Qwen3-235B-A22B "
                         "(hidden 4096, moe_intermediate 1536 -> 192 per device at TP8, 128 experts, top-8); "
                         "H200 from the PR title"))
    src = ("vllm-project/vllm PR #53710 (nicholaskh-ai, 2026-08-25) 'Tune fused_moe FP8 config for Qwen3-VL on L40S', "
           "'Per-M kernel time comparison on NVIDIA L40S (Triton 3.6.0)' table, Tuned column")
    l40 = [(2, 37.79), (4, 190.41), (8, 347.98), (16, 552.82), (32, 742.22), (64, 839.49), (128, 870.36),
           (256, 897.68), (512, 948.74), (1024, 1052.11), (2048, 1286.40), (4096, 1846.43), (8192, 3195.68)]
    for t, us in l40:
        rows.append(_moe(f"VLLM53710-l40s-qwen3vl-fp8-m{t}", "l40s", "fp8", t, 2048, 768, 128, 8, us, src, "B",
                         "vLLM fused_moe Triton, FP8 w8a8, tuned config E=128,N=768 (M=8192 keeps the default); "
                         "Qwen3-VL-30B-A3B text MoE (hidden 2048, moe_intermediate 768, 128 experts, top-8; hidden and "
                         "top-k from the model config, not printed in the PR), TP1, no EP"))
    src = ("vllm-project/vllm PR #40542 (varjoranta, 2026-04-21) 'Add A100 tuned config for E=64,N=1408', 'Benchmark "
           "(bf16, hidden=2048, top_k=6, 1xA100 80GB SXM4)' table, tuned column")
    for t, us in ((1, 183.5), (4, 266.2), (16, 523.3), (64, 677.6), (256, 717.0), (1024, 929.9), (4096, 2636.6)):
        rows.append(_moe(f"VLLM40542-a100-e64-m{t}", "a100-sxm", "bf16", t, 2048, 1408, 64, 6, us, src, "B",
                         "vLLM fused_moe Triton kernel, tuned config; Kimi-VL-A3B / GLM-4.5-Air-like shape (64 experts "
                         "of width 1408, top-6, hidden 2048) as stated in the PR; standalone tuner with the "
                         "benchmark_moe.py search space"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# 3. Attention: FA4 on Blackwell, paged decode on H100/B200
def attn_rows() -> list[dict]:
    rows = []
    src = ("Dao-AILab/flash-attention PR #2280 '[Cute,Sm100,Bwd] Fix and enable 2CTA path for hdim 128 backward' "
           "(jayhshah, 2026-02-27), description log 'FA Python fwd'")
    for causal, tf in ((False, 1534.8), (True, 1418.1)):
        rows.append(_attn_fwd(f"FA2280-b200-hd128-s8192-{'c' if causal else 'nc'}", "b200-sxm", "bf16", 4, 8192, 16,
                              128, causal, tf, src, "C",
                              "FlashAttention-4 (CuTe DSL, SM100) forward, batch 4, nheads 16, MHA; GPU named only "
                              "'Sm100' (B200 assumed; could be GB200); log also prints ms (1.433 / 0.775) which "
                              "agrees with the TFLOPS"))
    src = ("microsoft/onnxruntime PR #21414 '[CUDA] Page Attention' (cloudhan, 2024-08-27 comment), 'batch decode / "
           "H100 SMX / llama3 70B (GQA8) page_size=16' nvbench table, GPU Time column")
    for s, us in ((32, 15.060), (64, 17.903), (128, 25.363), (256, 39.474), (512, 61.917)):
        rows.append(_decode(f"ORT21414-h100-p16-s{s}", "h100-sxm", "fp16", 64, s, 64, 8, 128, us, src, "B",
                            "FlashAttention-2 paged decode kernel as integrated in onnxruntime, page 16, GQA 64/8, "
                            "head 128, 64 sequences; fp16 inferred from the Read column (2-byte KV); nvbench GPU "
                            "time"))
    src = ("Dao-AILab/flash-attention issue #1572 (TheRainstorm comment, 2025-04-11): flash_attention_benchmark.py on "
           "H100, 'FA3 time w CUDA Graph'")
    for s, us in ((128, 27.6), (2000, 292.0), (4000, 567.2)):
        rows.append(_decode(f"FA1572-h100-s{s}", "h100-sxm", "bf16", 16, s, 32, 32, 128, us, src, "C",
                            "FlashAttention-3 paged decode (page 8, num_splits=0 auto), MHA 32/32, head 128, batch 16;"
                            " user-reported; dtype not printed (bf16 assumed; 2-byte KV either way); H100 variant not "
                            "stated (SXM assumed: reported 1.8 TB/s effective)"))
    src = ("flashinfer-ai/flashinfer PR #1415 'benchmark: trtllm-gen mha with sink' (yyihuang, 2025-08-08), "
           "'[b200] Benchmark results' of benchmarks/bench_trtllm_fmha.py")
    for b, s, ms in ((4, 1024, 0.008246400207281113), (4, 4096, 0.011433599889278412),
                     (4, 8192, 0.015436799824237823), (4, 16384, 0.03059200048446655),
                     (128, 1024, 0.05228480100631714), (128, 4096, 0.17578879594802857)):
        rows.append(_decode(f"FI1415-b200-b{b}-s{s}", "b200-sxm", "bf16", b, s, 64, 8, 64, ms * 1e3, src, "C",
                            "TRT-LLM-gen decode kernel via FlashInfer, attention sinks on (gpt-oss shape: 64 q / 8 kv "
                            "heads, head 64), page 16; q_len=1 decode assumed from the benchmark name and its "
                            "memory-bandwidth metric; bf16 KV assumed (the printed GB/s match 2-byte KV); the b128 "
                            "s8192/s16384 points of the same log (1.68 / 5.44 ms, ~1.2 TB/s) are anomalous, left out",
                            derived="latency = printed execution time (ms) x 1000"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# 4. Collectives (nccl-tests logs)
def coll_rows() -> list[dict]:
    rows = []
    src = ("NVIDIA/nccl-tests issue #194 (chinthysl, 2024-01-27) 'all_reduce_perf between NVLINK connected H100 PCIe "
           "GPUs lower than A100 SXM4 GPUs', H100 PCIe log of all_reduce_perf -b 1G -e 8G -f 2 -g 2")
    for nbytes, us in ((1073741824, 9306.7), (2147483648, 18535), (4294967296, 36943)):
        rows.append(_coll(f"NCCLT194-h100pcie-{nbytes >> 30}G", "all_reduce", "h100-pcie", nbytes, 2, us, src, "B",
                          "2x H100 PCIe joined by an NVLink bridge (P2P/direct pointer), float32 sum, ~116 GB/s "
                          "busbw; single process with 2 GPUs", dtype="fp32"))
    src = ("lessizzmore/create-a3mega-ztan-fork @02dd8f4 file ztan-NCCL-test-result: all_reduce_perf -b 8 -e 8G "
           "-f 2 -g 1, 16 ranks on 2 nodes x 8 H100 80GB HBM3 (GCP A3 Mega)")
    a3 = [(8, 135.8), (1024, 147.1), (65536, 159.4), (1048576, 203.2), (4194304, 364.6), (16777216, 977.6),
          (67108864, 1261.6), (268435456, 2360.9), (1073741824, 6759.0), (4294967296, 24361), (8589934592, 47535)]
    for nbytes, us in a3:
        rows.append(_coll(f"A3MEGA-ar16-{nbytes}", "all_reduce", "h100-sxm", nbytes, 16, us, src, "B",
                          "TWO NODES (16 ranks > one 8-GPU NVLink domain): intra-node NVLink/NVSwitch + GCP A3 Mega "
                          "GPUDirect-TCPXO network (8 x 200 Gb/s NICs per VM per GCP docs, not stated in the file); "
                          "float32 sum, NCCL default algorithm; peak busbw 339 GB/s at 8 GB", dtype="fp32"))
    src = ("coreweave/nccl-tests PR #43 'feat(slurm): Add a GB200 NVL72 example' (NavarrePratt, 2025-02-20), "
           "'Example output for a full nvl72 rack run' (all_reduce_perf, 72 ranks)")
    for nbytes, us in ((536870912, 1806.7), (1073741824, 3108.8), (2147483648, 5589.1), (4294967296, 10094),
                       (8589934592, 20299)):
        rows.append(_coll(f"CW43-gb200-nvl72-ar-{nbytes >> 20}M", "all_reduce", "gb200", nbytes, 72, us, src, "B",
                          "72 GB200 GPUs in one NVL72 NVLink domain, float32 sum, NCCL default algorithm; busbw "
                          "586-839 GB/s; GPU shows as 'NVIDIA Graphics Device' in the log", dtype="fp32"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# 5. HBM copy-like kernels (BabelStream 'mul' b[i] = s * c[i]: one read + one write stream, nvbench GPU time)
def memcpy_rows() -> list[dict]:
    rows = []
    runs = (("h200-sxm", "NVIDIA/cccl PR #2086 'Add cub::DeviceTransform' (bernhardmgruber, 2024), 'CUB babelstream "
             "fallbackfor vs. ublkcp on H200', table '# mul', T=I8 OffsetT=I32, Cmp Time (ublkcp kernel)",
             ((16, 4.846), (20, 5.610), (24, 14.292), (28, 134.831))),
            ("b200-sxm", "NVIDIA/cccl PR #3825 'Refactor CUB transfrom' (bernhardmgruber comment, 2025-02-19), "
             "cub.bench.transform.babelstream1.base, '# mul / NVIDIA B200', T=I8 OffsetT=I32, Cmp Time",
             ((16, 6.157), (20, 6.925), (24, 14.321), (28, 113.191))))
    for hw, src, pts in runs:
        for e, us in pts:
            n = 2 ** e
            rows.append(dict(op="memcpy", hardware=hw, dtype="", bytes=n, latency_us=_fmt(us),
                             id=f"CCCL-{hw}-mul-2^{e}", source=src, trust="B",
                             derived="latency = published nvbench GPU time; bytes = 2^e int8 elements (one stream); "
                                     "HBM traffic = read + write = 2 x bytes, as the contract's memcpy assumes",
                             notes="NOT cudaMemcpy: cub::DeviceTransform scale kernel (BabelStream mul, 1 load + 1 "
                                   "store per element), int8 elements (may under-saturate HBM vs wider types); nvbench "
                                   "(L2 flushed between samples by default); 2^24 B = 16.8 MB may still be partly "
                                   "L2-resident; the small sizes give the launch/latency floor"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# 6. Blackwell small-size collectives and small kernels (B200 / GB200): the latency regime of decode
_KIB, _MIB = 1024, 2**20


def _bw_coll(rid, hw, nbytes, world, us, src, trust, derived, notes, dtype="bf16", op="all_reduce"):
    return dict(op=op, hardware=hw, dtype=dtype, bytes=int(nbytes), world=world, latency_us=_fmt(us), id=rid,
                source=src, trust=trust, derived=derived, notes=notes)


def blackwell_coll_rows() -> list[dict]:
    rows = []
    # NCCL symmetric-memory kernels (NCCL 2.27+), nccl-tests all_reduce_perf, best small-message time on 8 x B200
    src = ("NVIDIA/nccl issue #1940 '[Question]: Inter-GPU Latency on B200 Higher Than on Hopper' (cugbls, "
           "2025-12-12): 'With an 8-byte workload, the best latency I can achieve is around 3 us' on 8 x B200")
    rows.append(_bw_coll("NCCL1940-b200-ar-8g-8B", "b200-sxm", 8, 8, 3.0, src, "C",
                         "latency = the quoted 'around 3 us' (table itself is an image)",
                         "nccl-tests all_reduce_perf, 8 B, float (2 elements), NCCL 2.27 symmetric-memory kernels, "
                         "user-tuned best case (CUDA-graph launch and NCCL env tuning implied, not listed in text); "
                         "the same tuning gives about 2.3 us on 8 x H800 / 8 x H200 (same post): Blackwell is NOT "
                         "faster than Hopper at the smallest message", dtype="fp32"))
    src = ("NVIDIA/nccl-tests issue #333 'How to run nccl-test to benchmark symmetric memory' (kiskra-nvidia, NVIDIA, "
           "2025-10-01 comment on Alice1069's B200x8 data): 'that would be just over 3 microseconds in your case'")
    rows.append(_bw_coll("NCCLT333-b200-ar-8g-min", "b200-sxm", 8, 8, 3.1, src, "C",
                         "latency = maintainer's reading 'just over 3 microseconds' of a table posted as an image; "
                         "3.1 us recorded; bytes = smallest nccl-tests size (8 B) assumed",
                         "8 x B200, nccl-tests all_reduce_perf with symmetric buffer registration (-R 2) and "
                         "CUDA-graph launch (-G) as recommended in the thread; NCCL 2.27/2.28; the 'fixed cost' of "
                         "the linear time = latency + size/bandwidth model in the maintainer's words", dtype="fp32"))
    src = ("NVIDIA/nccl-tests issue #333 (GindaChen, 2025-07-19): 'for small message all-reduce operations on B200s, "
           "the 2 GPU latency with symmetric memory is around 9us, and 4 GPU will jump to 22us'")
    for g, us in ((2, 9.0), (4, 22.0)):
        rows.append(_bw_coll(f"NCCLT333-b200-ar-{g}g-small", "b200-sxm", 8, g, us, src, "C",
                             "latency = the quoted round figure; bytes = smallest size of the -b 8 sweep assumed",
                             f"{g} of the 8 B200 of one HGX node, NCCL v2.27_sym_memory branch, all_reduce_perf -R 2 "
                             f"-g {g} from ONE process without CUDA graphs: the maintainer (AddyLaddy) attributes the "
                             "high figure to the single-process launch overhead; an upper envelope, not the "
                             "engine-path cost", dtype="fp32"))
    # vLLM benchmark_device_communicators.py: CUDA graph of 10 all-reduces, wall time / 10 (see the script)
    src = ("vllm-project/vllm PR #42324 '[Core] Support tuned symmetric memory two-shot fallback' (mmangkad, "
           "2026-05-11), '### SM 10.0 / B200', 'World Size = 2' table of benchmark_device_communicators.py")
    for kib, t_nccl, t_mm, t_2s in ((512, 0.013, 0.016, 0.017), (1024, 0.017, 0.021, 0.020),
                                    (1536, 0.019, 0.025, 0.021)):
        for impl, ms in (("pynccl", t_nccl), ("symm-mem-multimem", t_mm), ("symm-mem-two-shot", t_2s)):
            rows.append(_bw_coll(f"VLLM42324-b200-ws2-{impl}-{kib}K", "b200-sxm", kib * _KIB, 2, ms * 1e3, src, "B",
                                 "latency = table ms x 1000 (printed to 1 us)",
                                 f"vLLM {impl} all-reduce, bf16, 2 x B200 of an 8-GPU node; the benchmark captures 10 "
                                 "all-reduces in one CUDA graph and divides the replay wall time by 10 (graph launch "
                                 "amortised, no per-op CPU launch); only the World Size = 2 block of the B200 section "
                                 "was retrievable (4/6/8 are in the PR but not in the stored copy)"))
    src = ("sgl-project/sglang PR #7621 '[b200] support trt-llm allreduce fuse rms_norm_add kernel' (BBuf, "
           "2025-06-28): profile of DeepSeek-R1-FP4 --tp 8 decode on B200, '13.5us->8.7us'")
    for rid, us, what in (("SGL7621-b200-ar-tp8-fused", 8.7, "FlashInfer/TRT-LLM one-shot all-reduce FUSED with "
                           "residual add + RMSNorm (one kernel)"),
                          ("SGL7621-b200-ar-tp8-unfused", 13.5, "the path it replaced (SGLang custom all-reduce, as "
                           "profiled before the PR)")):
        rows.append(_bw_coll(rid, "b200-sxm", 7168 * 2, 8, us, src, "C",
                             "latency = kernel time quoted from an Nsight-style profile screenshot",
                             f"{what}; 8 x B200, CUDA graphs, EAGLE speculative decoding at concurrency 1; bytes = ONE "
                             "token of hidden 7168 in bf16 assumed (the verify step may carry a few tokens; all such "
                             "sizes are in the latency regime)"))
    # GB200
    src = ("NVIDIA/nccl-tests issue #333 (kiskra-nvidia, NVIDIA, 2025-07-22): 'I routinely get under 8us with "
           "all_reduce_perf for messages sizes up to 1KB, on a single-node GB200 (4 GPUs)' ... 'the best I could find "
           "was 5.18us' (experimental branch, 10 iterations)")
    rows.append(_bw_coll("NCCLT333-gb200-ar-4g-1K", "gb200", 1024, 4, 8.0, src, "C",
                         "latency = the quoted upper bound 'under 8us' (up to 1 KB)",
                         "4 GB200 of one compute tray (same NVL72 NVLink domain), nccl-tests all_reduce_perf, NCCL "
                         "2.27 symmetric kernels; an upper bound of the routine figure", dtype="fp32"))
    rows.append(_bw_coll("NCCLT333-gb200-ar-4g-best", "gb200", 8, 4, 5.18, src, "C",
                         "latency = quoted best figure",
                         "best of the maintainer's logs, 'highly experimental branch not yet merged into 2.28', 10 "
                         "iterations; bytes = smallest size assumed", dtype="fp32"))
    src = ("lightseekorg/tokenspeed PR #860 'perf(comm): MNNVL fused all-reduce (one-shot + two-shot) for cross-node "
           "TP' (nperrin-fr, 2026-07-31), 'AR performance vs NCCL' table, fused column")
    for tok, us in ((1, 10.9), (8, 10.9), (64, 19.1), (128, 29.4), (256, 55.8), (512, 103.2), (1024, 196.5),
                    (2048, 380.2)):
        rows.append(_bw_coll(f"TOKSP860-gb200-ar8-fused-t{tok}", "gb200", tok * 7168 * 2, 8, us, src, "C",
                             "latency = published median us (5 x 50 iterations); bytes = tokens x 7168 x 2",
                             "GB200, world 8 = 2 compute trays x 4 GPUs joined by multi-node NVLink (one NVL72 "
                             "domain), hidden 7168 bf16, NCCL 2.30.7 installed; custom MNNVL all-reduce FUSED with "
                             "RMSNorm: one-shot (NVLS multicast) up to 128 tokens, two-shot above; the unfused "
                             "dist.all_reduce + RMSNorm column (260-270 us up to 1024 tokens) is left out: far above "
                             "every other NVLink figure, not explained in the PR"))
    src = ("NVIDIA/TensorRT-LLM PR #14534 '[None][perf] add CuTe bf16 allreduce RMSNorm' (samnordmann comment, "
           "2026-06-09), 'median CUDA event us' table, TRT ONESHOT / TRT TWOSHOT columns")
    for shape, nb, impl, us in (("1x8192", 8192 * 2, "oneshot", 38.771),
                                ("128x8192", 128 * 8192 * 2, "oneshot", 37.951),
                                ("512x8192", 512 * 8192 * 2, "twoshot", 47.155),
                                ("1024x16384", 1024 * 16384 * 2, "twoshot", 152.115),
                                ("2048x16384", 2048 * 16384 * 2, "twoshot", 278.491)):
        rows.append(_bw_coll(f"TRTLLM14534-gb200-4r-{impl}-{shape}", "gb200", nb, 4, us, src, "C",
                             "latency = published median CUDA-event time (us)",
                             f"TRT-LLM custom {impl.upper()} all-reduce FUSED with residual + RMSNorm, bf16 {shape}, "
                             "GB200 4 ranks; CUDA-event timing of single calls (per-call overhead included); the "
                             "small-size figures (~38 us) are 4-7x the NCCL maintainer's <8 us on the same system "
                             "class and the PR's own 'raw' kernel (25.9 us): read as an upper envelope"))
    return rows


def blackwell_kernel_rows() -> list[dict]:
    rows = []
    kinds = {"F.linear": "torch, cuBLAS with bias epilogue",
             "tinygemm": "FlashInfer TRT-LLM tinygemm, a hand-written small-M kernel"}
    src = ("sgl-project/sglang PR #20848 '[Perf] Support Flashinfer trtllm tinygemm router gemm for GPT-OSS' "
           "(elvischenv, 2026-03-18), 'Kernel: GPU: NVIDIA B200' table")
    for m, us, impl in ((1, 5.7, "F.linear"), (16, 6.1, "F.linear"), (128, 6.1, "F.linear"), (1, 3.4, "tinygemm"),
                        (128, 3.6, "tinygemm")):
        rows.append(dict(op="gemm", hardware="b200-sxm", dtype="bf16", m=m, n=128, k=2880, latency_us=_fmt(us),
                         id=f"SGL20848-b200-router-{impl.replace('.', '')}-m{m}", source=src, trust="C",
                         derived="latency = printed value x 1000: the column says (us) but prints 0.0057-style "
                                 "numbers, i.e. milliseconds",
                         notes=f"{impl} ({kinds[impl]}); gpt-oss-120b router: hidden 2880, 128 experts, bias; the "
                               "timing method is not stated; the H100 PCIe column of the same table (6.6 / 3.7 us) "
                               "is not used (different profile)"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# 7. Cross-node small-message collectives (nccl-tests logs on 2+ nodes): the scale-out latency of the profiles.
#    reports/scripts/scale_out_latency.py reads the rows whose id starts with one of XNODE_PREFIXES and fits the
#    profiles' scale_out.latency per device family and fabric class (reports/validation/scale-out-latency.md).
XNODE_PREFIXES = ("NCCLT309-", "NCCL1469-", "A3U-", "OKE-A100-", "EFA-", "A3MEGA-")


def _log(prefix: str, op: str, hw: str, world: int, points, src: str, trust: str, notes: str) -> list[dict]:
    """One row per (message bytes, time us) point of one published nccl-tests log (float32 runs)."""
    return [_coll(f"{prefix}-{nbytes}", op, hw, nbytes, world, us, src, trust, notes, dtype="fp32")
            for nbytes, us in points]


def xnode_rows() -> list[dict]:
    rows = []
    # nccl-tests issue #309: bare-metal Dell XE9680 HGX H100, 8 x ConnectX-7 400G InfiniBand per node
    src = ("NVIDIA/nccl-tests issue #309 'Acceptable performance of nccl-test on 2 or 4 HGX hosts?' (qoofyk, "
           "2025-05-21): all_reduce_perf_mpi -b 8 -e 16g -f 2 -g 1, NCCL 2.26.2, mpirun --np 16 -H bm-h100-01:8,"
           "bm-h100-02:8 (opening post)")
    rows += _log("NCCLT309-h100-ib-2x8", "all_reduce", "h100-sxm", 16,
                 ((16, 24.96), (128, 25.68), (1024, 29.75), (8192, 32.12), (65536, 33.84), (1048576, 71.93)), src,
                 "B", "TWO NODES x 8 H100 (16 ranks, one process per GPU): Dell XE9680 HGX H100 bare metal, 8 x "
                 "ConnectX-7 400 Gb/s InfiniBand per node (GPUDirect RDMA measured at 396 Gb/s), NCCL default "
                 "algorithm (NVLSTree per the maintainer); float32 sum; 20 iterations. The 8 B (68.5 us) and 256 B "
                 "(94.4 us) out-of-place rows are first-call / one-off outliers (in-place 24.7 / 25.9 us) and are "
                 "left out")
    src = ("NVIDIA/nccl-tests issue #309 (qoofyk comment, 2025-05-23): all_reduce_perf_mpi -b 8 -e 16g -f 2 -g 1 on 4 "
           "hosts, mpirun --np 32 -H spt01:8,spt02:8,pt01:8,pt02:8 with NCCL_TOPO_FILE=vm_topo_mod.xml, NCCL 2.26.2")
    rows += _log("NCCLT309-h100-ib-4x8", "all_reduce", "h100-sxm", 32,
                 ((16, 34.82), (128, 35.70), (1024, 39.79), (8192, 46.84), (65536, 50.83), (1048576, 82.17)), src,
                 "C", "FOUR NODES x 8 H100 (32 ranks): the same HCA set (8 x ConnectX-7 400 Gb/s InfiniBand) as the "
                 "2-node run, but the hosts are VMs with GPU/HCA passthrough (hand-written NCCL topology file), which "
                 "may add latency; float32 sum; 20 iterations; the 8 B / 256 B / 512 B out-of-place rows are one-off "
                 "outliers (in-place 34.8 / 35.8 / 36.7 us) and are left out")
    # NVIDIA/nccl issue #1469: 16 H100 nodes, NCCL 2.20.5 (fabric not stated)
    src = ("NVIDIA/nccl issue #1469 'Unstable busbw for data size 67108864B in nccl test' (szhengac, 2024-10-03): "
           "all_reduce_perf log 'On 16 H100 nodes', NCCL 2.20.5")
    rows += _log("NCCL1469-h100-16x8", "all_reduce", "h100-sxm", 128,
                 ((16, 62.15), (128, 62.38), (1024, 73.73), (4096, 76.61)), src, "C",
                 "SIXTEEN NODES of H100; 8 GPUs per node and one rank per GPU assumed (world 128); the inter-node "
                 "fabric is not stated in the issue; float32 sum. A check of the log2(nodes) growth, not a DGX-class "
                 "figure")
    # GCP A3 Ultra (H200, 8 x ConnectX-7 400G RoCE, GPUDirect RDMA through the gIB NCCL plugin): all_gather
    src_sky = ("skypilot-org/skypilot examples/gcp_gpu_direct_tcpx/README.md (stored revision, 'GPUDirect-RDMA on "
               "A3-ultragpu-8g (H200)'): nccl_rdma_gke_h200.yaml run, all_gather (redop none), -b 1K, 100 iterations")
    src_gke = ("skypilot-org/skypilot examples/gcp_gpu_direct_tcpx/README.md (stored revision), 'Comparing with raw "
               "NCCL test pods from GCP documentation': run_nccl_tests.sh -t all_gather -b 1K -e 8G on "
               "nccl-test-host-1/2, NCCL 2.26.6, 50 warm-up + 100 iterations")
    sky = ((1024, 28.39), (4096, 28.85), (65536, 40.62), (1048576, 58.46))
    gke = ((1024, 28.70), (4096, 28.39), (65536, 34.77), (1048576, 54.70))
    for tag, src, pts in (("sky", src_sky, sky), ("gke", src_gke, gke)):
        rows += _log(f"A3U-h200-roce-2x8-ag-{tag}", "all_gather", "h200-sxm", 16, pts, src, "B",
                     "TWO NODES x 8 H200 (16 ranks): GCP a3-ultragpu-8g on GKE, 8 x ConnectX-7 400 Gb/s RoCE per "
                     "node with GPUDirect RDMA (gIB NCCL plugin); ALL-GATHER, float32; bytes = the nccl-tests size "
                     "(the gathered output buffer, 16 x the per-rank part)")
    # OCI BM.GPU4.8 (A100 40GB, RoCE v2 cluster network): oci-hpc-oke README example
    src = ("oracle-quickstart/oci-hpc-oke README.md (stored revision): example output of the nccl-allreduce-job0 "
           "MPIJob, all_reduce_perf -b 8 -e 8G -f 2 -g 1, 16 ranks on nccl-allreduce-job0-mpiworker-0/1")
    rows += _log("OKE-A100-roce-2x8", "all_reduce", "a100-sxm", 16,
                 ((8, 36.47), (128, 38.85), (1024, 41.97), (8192, 48.16), (65536, 51.69), (1048576, 85.58)), src,
                 "B", "TWO NODES x 8 A100-SXM4-40GB (16 ranks, one process per GPU) on OCI Kubernetes (OKE), RDMA over "
                 "OCI's RoCE v2 cluster network (BM.GPU4.8 shape per the device names; NIC model and speed not in the "
                 "file); float32 sum; 20 iterations; NCCL version not shown")
    # AWS EFA (SRD over Ethernet, libfabric plugin): a different fabric class, kept apart from InfiniBand/RoCE
    src = ("aws/aws-k8s-tester PR #585 (mselim00 comment, 2025-02-19): 'Tested on p5.48xlarge', --nodes=2 --efa, "
           "TestMPIJobPytorchTraining/multi-node all_reduce_perf results")
    rows += _log("EFA-p5-h100-2x8", "all_reduce", "h100-sxm", 16, ((16, 69.29), (128, 68.37)), src, "C",
                 "TWO NODES of AWS p5.48xlarge (8 H100 each; 16 ranks assumed from the 2-node MPIJob), AWS EFA (SRD) "
                 "through the aws-ofi-nccl plugin; float32 sum; the 8 B out-of-place row (136 us, in-place 70.9) is a "
                 "first-call outlier and is left out")
    src = ("dstackai/dstack PR #3961 'Support AWS p6 instances' (r4victor, 2026-06-12): 'NCCL tests on 2x p6-200' "
           "(p6-b200) all_reduce_perf table")
    rows += _log("EFA-p6-b200-2x8", "all_reduce", "b200-sxm", 16, ((8, 50.58), (16, 54.55), (128, 56.27)), src, "C",
                 "TWO NODES of AWS p6-b200 (8 B200 each; 16 ranks assumed: dstack runs one rank per GPU), AWS EFA "
                 "(SRD) through the aws-ofi-nccl plugin; float32 sum")
    return rows


def NEW_ROWS() -> list[dict]:  # noqa: N802
    return (mamf_rows() + moe_rows() + attn_rows() + coll_rows() + memcpy_rows() + blackwell_coll_rows()
            + blackwell_kernel_rows() + xnode_rows())
