"""Where the GPU time goes in our packed path, and FlexAttention kernel options for ALiBi.

    python benchmarks/profile_gpu.py
Prints (1) the top CUDA kernels of one packed forward (base shape, bf16) at L=512 and L=8192,
with attention's share; (2) the ALiBi FlexAttention kernel alone under a few kernel options,
with its attention-only MFU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, matmul_peak_tflops, timed  # noqa: E402

from jina_rag import JinaBertConfig, JinaBertModel, alibi_slopes  # noqa: E402
from jina_rag.batching import pack_batch  # noqa: E402

ROW = 65536


def packed_inputs(length: int):
    sequences = [[1000 + (i % 20000)] * length for i in range(ROW // length)]
    ids, sids = pack_batch(sequences, ROW, 0)
    return torch.from_numpy(ids).cuda(), torch.from_numpy(sids).cuda()


def kernel_profile(model, length: int) -> None:
    ids, sids = packed_inputs(length)
    forward = torch.compile(model.forward_packed, dynamic=False)
    with torch.inference_mode():
        for _ in range(3):
            forward(ids, sids)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            forward(ids, sids)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    attention = sum(e.device_time_total for e in events if "flex" in e.key.lower() or "attention" in e.key.lower())
    print(f"\n## L={length}: {total / 1e3:.1f} ms of kernels per 65,536-token row; attention {attention / total:.0%}")
    print("| kernel | ms | share |\n|---|---|---|")
    for e in sorted(events, key=lambda e: -e.device_time_total)[:12]:
        print(f"| {e.key[:90]} | {e.device_time_total / 1e3:.2f} | {e.device_time_total / total:.0%} |")


def attention_sweep(length: int, peak: float) -> None:
    heads, dim = 12, 64
    q, k, v = (torch.randn(1, heads, ROW, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    _, sids = packed_inputs(length)
    slopes = alibi_slopes(heads).cuda()

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    def same(b, h, q_idx, kv_idx):
        return sids[q_idx] == sids[kv_idx]

    mask = create_block_mask(same, 1, None, ROW, ROW, device="cuda")
    flops = 4 * ROW * length * heads * dim  # QK^T and PV over each sequence's own keys
    print(f"\n## FlexAttention alone, packed L={length}\n| kernel options | ms | attention MFU |\n|---|---|---|")
    for options in [None, {"BLOCK_M": 128, "BLOCK_N": 64}, {"BLOCK_M": 128, "BLOCK_N": 128},
                    {"BLOCK_M": 64, "BLOCK_N": 128}, {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8}]:
        try:
            fn = torch.compile(lambda q, k, v: flex_attention(q, k, v, score_mod=alibi, block_mask=mask,
                                                              kernel_options=options), dynamic=False)
            seconds = timed(lambda: fn(q, k, v), torch.device("cuda"), min_seconds=0.5)
            print(f"| {options} | {seconds * 1e3:.2f} | {flops / seconds / (peak * 1e12):.0%} |")
        except Exception as error:  # an option the kernel rejects
            print(f"| {options} | failed: {type(error).__name__} | |")
        torch._dynamo.reset()


def main() -> None:
    peak = matmul_peak_tflops(torch.device("cuda"))
    print(f"bf16 matmul peak {peak:.0f} TFLOP/s")
    model = JinaBertModel(JinaBertConfig(**SHAPES["base"])).cuda().to(torch.bfloat16).eval()
    for length in (512, 8192):
        kernel_profile(model, length)
    for length in (512, 8192):
        attention_sweep(length, peak)


if __name__ == "__main__":
    main()
