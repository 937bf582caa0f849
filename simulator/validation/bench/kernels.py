"""One closure per measurement row: the kernel the simulator models for that op.

Unsupported combinations (e.g. fp8 on a CPU) raise ``Unsupported`` and the row is skipped with
its reason; nothing is silently substituted.
"""

from __future__ import annotations

import math


class Unsupported(Exception):
    pass


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _dt(torch, name: str):
    if name not in DTYPES:
        raise Unsupported(f"dtype {name} is not measured by the harness on this device")
    return getattr(torch, DTYPES[name])


def _i(x) -> int:
    return int(float(x))


def gemm(torch, row, device):
    m, n, k = _i(row.m), _i(row.n), _i(row.k)
    if row.dtype == "fp8":
        if not device.startswith("cuda") or torch.cuda.get_device_capability()[0] < 9 and \
                torch.cuda.get_device_capability() < (8, 9):
            raise Unsupported("fp8 GEMM needs a CUDA device with fp8 tensor cores")
        if n % 16 or k % 16:  # cuBLASLt's fp8 path: "mat2 shape ... must be divisible by 16"
            raise Unsupported("fp8 GEMM through torch._scaled_mm needs n and k divisible by 16")
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()  # column-major operand
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    dt = _dt(torch, row.dtype)
    a = torch.randn(m, k, device=device, dtype=dt)
    b = torch.randn(k, n, device=device, dtype=dt)
    return lambda: torch.matmul(a, b)


def _sdpa(torch):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention


def attn_prefill(torch, row, device):
    b, s, L = _i(row.batch), _i(row.q_len), _i(row.kv_len)
    h, kvh, d = _i(row.num_heads), _i(row.num_kv_heads), _i(row.head_dim)
    if s > L:
        raise Unsupported("prefill attention with q_len > kv_len")
    if row.kv_dtype not in ("", row.dtype):
        raise Unsupported("prefill attention with a KV dtype different from the compute dtype")
    dt = _dt(torch, row.dtype)
    q = torch.randn(b, h, s, d, device=device, dtype=dt)
    k = torch.randn(b, kvh, L, d, device=device, dtype=dt)
    v = torch.randn(b, kvh, L, d, device=device, dtype=dt)
    sdpa = _sdpa(torch)
    if s == L:  # a fresh prompt
        return lambda: sdpa(q, k, v, is_causal=True, enable_gqa=kvh != h)
    # a chunk after L - s cached tokens: causal with the diagonal aligned to the bottom right
    from torch.nn.attention.bias import causal_lower_right

    mask = causal_lower_right(s, L)
    return lambda: sdpa(q, k, v, attn_mask=mask, enable_gqa=kvh != h)


def attn_decode(torch, row, device):
    b, L = _i(row.batch), _i(row.kv_len)
    h, kvh, d = _i(row.num_heads), _i(row.num_kv_heads), _i(row.head_dim)
    if row.kv_dtype not in ("", row.dtype):
        raise Unsupported(f"decode attention over a {row.kv_dtype} KV cache needs a fused kernel the harness "
                          "does not ship")
    dt = _dt(torch, row.dtype)
    q = torch.randn(b, h, 1, d, device=device, dtype=dt)
    k = torch.randn(b, kvh, L, d, device=device, dtype=dt)
    v = torch.randn(b, kvh, L, d, device=device, dtype=dt)
    sdpa = _sdpa(torch)
    return lambda: sdpa(q, k, v, enable_gqa=kvh != h)


def moe(torch, row, device):
    """Routed experts of one MoE layer with balanced top-k routing: the T*k token-expert pairs are
    spread evenly over min(E, T*k) experts, run as one batched GEMM per projection (gate+up, down)."""
    t, hdim, inter, e, k = _i(row.tokens), _i(row.hidden), _i(row.intermediate), _i(row.num_experts), _i(row.top_k)
    dt = _dt(torch, row.dtype)
    hit = min(e, t * k)
    per = math.ceil(t * k / hit)
    x = torch.randn(hit, per, hdim, device=device, dtype=dt)
    w_gu = torch.randn(hit, hdim, 2 * inter, device=device, dtype=dt) * 0.02
    w_d = torch.randn(hit, inter, hdim, device=device, dtype=dt) * 0.02
    silu = torch.nn.functional.silu

    def run():
        gu = torch.bmm(x, w_gu)
        g, u = gu[..., :inter], gu[..., inter:]
        return torch.bmm(silu(g) * u, w_d)

    return run


def memcpy(torch, row, device):
    n = max(_i(row.bytes) // 4, 1)
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def collective(torch, row, device):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        raise Unsupported("collectives need several ranks: launch with torchrun --nproc-per-node N")
    world = dist.get_world_size()
    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32  # (gloo on a CPU: float32)
    size = torch.empty((), dtype=dt).element_size()
    n = max(_i(row.bytes) // size, world)  # the row's bytes in the dtype actually sent
    n -= n % world
    buf = torch.ones(n, dtype=dt, device=device)
    if row.op == "all_reduce":
        return lambda: dist.all_reduce(buf)
    if row.op == "all_gather":
        out = torch.empty(n, dtype=dt, device=device)
        shard = buf[: n // world]
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # newer torch renamed it
        return lambda: gather(out, shard)
    out = torch.empty_like(buf)
    return lambda: dist.all_to_all_single(out, buf)


BUILDERS = {"gemm": gemm, "attn_prefill": attn_prefill, "attn_decode": attn_decode, "moe": moe, "memcpy": memcpy,
            "all_reduce": collective, "all_gather": collective, "all_to_all": collective}
