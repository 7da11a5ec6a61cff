"""Where the GPU time goes in our packed path, and FlexAttention kernel options for ALiBi.

    python benchmarks/profile_gpu.py [--cases 512,8192,mixed] [--sections profile,encoder,sweep]

``profile``: the top CUDA kernels of one compiled packed forward (base shape, bf16, one
65,536-token row of sequences of one length, or of the mixed-length corpus), the kernels' sum
against the wall time per forward (the gap is host time the GPU waits for), and attention's
share. ``encoder``: the same for the encoder's own loop over four rows (packing, copies, the
forward, pooling), with the attention it chooses. ``sweep``: the ALiBi FlexAttention kernel alone under several kernel options, with its
attention-only MFU, and the block mask built by evaluating the mask on every pair of tokens
(``create_block_mask``) against building it from the tiles' sequence ids (``packed_block_mask``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, lognormal_lengths, matmul_peak_tflops, random_model_folder, timed  # noqa: E402

from jina_rag import JinaBertConfig, JinaBertModel, JinaEncoder, alibi_slopes  # noqa: E402
from jina_rag.batching import pack_batch, plan_batches  # noqa: E402

ROW = 65536
LOG2E = 1.4426950408889634


def row_lengths(case: str) -> list[int]:
    """Sequence lengths filling one packed row: all ``case`` tokens long, or the mixed corpus's first documents."""
    if case != "mixed":
        return [int(case)] * (ROW // int(case))
    lengths, total = [], 0
    for n in lognormal_lengths(3000):
        if total + n > ROW:
            break
        lengths.append(n)
        total += n
    return lengths


def packed_inputs(case: str):
    sequences = [[1000 + (i % 20000)] * n for i, n in enumerate(row_lengths(case))]
    ids, sids = pack_batch(sequences, ROW, 0)
    return torch.from_numpy(ids).cuda(), torch.from_numpy(sids).cuda()


def attention_flops(case: str, heads: int = 12, dim: int = 64) -> float:
    return float(sum(4 * n * n * heads * dim for n in row_lengths(case)))  # QK^T and PV within each sequence


def kernel_profile(model, case: str) -> None:
    ids, sids = packed_inputs(case)
    forward = torch.compile(model.forward_packed, dynamic=False)
    with torch.inference_mode():
        wall = timed(lambda: forward(ids, sids), torch.device("cuda"), min_seconds=1.0, max_runs=20)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            forward(ids, sids)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    attention = sum(e.device_time_total for e in events if "flex" in e.key.lower() or "attention" in e.key.lower())
    print(f"\n## {case}: {total / 1e3:.1f} ms of kernels per 65,536-token row, wall {wall * 1e3:.1f} ms per forward "
          f"(kernels {total / 1e3 / (wall * 1e3):.0%} of it); attention {attention / total:.0%} of kernels")
    print("| kernel | calls | ms | share |\n|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.device_time_total)[:14]:
        print(f"| {e.key[:90]} | {e.count} | {e.device_time_total / 1e3:.2f} | {e.device_time_total / total:.0%} |")


def encoder_profile(case: str, rows: int = 4) -> None:
    """The encoder's own loop (``TorchBackend.embed`` per packed batch, as ``gpu.py``'s (a)) over
    ``rows`` rows of ``case``: kernels against the wall time, and the top kernels (pooling included)."""
    folder = random_model_folder("base", Path(tempfile.mkdtemp()) / "base")
    backend = JinaEncoder.from_pretrained(folder, device="cuda", dtype="bf16").backend
    lengths = row_lengths(case) * rows
    sequences = [[1000 + i % 20000] * n for i, n in enumerate(lengths)]
    batches = plan_batches(lengths, ROW, packed=True)

    def run():
        torch.cat([backend.embed([sequences[i] for i in batch]) for batch in batches]).cpu()

    cuda = torch.device("cuda")
    wall = timed(run, cuda, min_seconds=2.0, max_runs=10)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    print(f"\n## encoder loop, {case}: {len(batches)} packed batches, {backend.describe()}; {total / 1e3:.1f} ms of kernels, "
          f"wall {wall * 1e3:.1f} ms per pass (kernels {total / 1e3 / (wall * 1e3):.0%} of it), "
          f"{sum(lengths) / wall:,.0f} tok/s")
    print("| kernel | calls | ms | share |\n|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.device_time_total)[:16]:
        print(f"| {e.key[:90]} | {e.count} | {e.device_time_total / 1e3:.2f} | {e.device_time_total / total:.0%} |")


# ROWS_GUARANTEED_SAFE is measured on one-length rows only: with document masks a row's first
# tile can be fully masked, which gives NaN, so the model does not set it. PRESCALE_QK hands
# score_mod base-2 scores (hence ``alibi_base2``).
SWEEP = [
    {"BLOCK_M": 128, "BLOCK_N": 64},
    {"BLOCK_M": 128, "BLOCK_N": 64, "PRESCALE_QK": True},
    {"BLOCK_M": 128, "BLOCK_N": 64, "PRESCALE_QK": True, "ROWS_GUARANTEED_SAFE": True},
    {"BLOCK_M": 128, "BLOCK_N": 64, "PRESCALE_QK": True, "ROWS_GUARANTEED_SAFE": True, "USE_TMA": True},
    {"BLOCK_M": 128, "BLOCK_N": 64, "PRESCALE_QK": True, "ROWS_GUARANTEED_SAFE": True, "num_warps": 8},
    {"BLOCK_M": 128, "BLOCK_N": 128, "PRESCALE_QK": True, "ROWS_GUARANTEED_SAFE": True, "num_warps": 8},
]


def attention_sweep(case: str, peak: float, configs) -> None:
    heads, dim = 12, 64
    q, k, v = (torch.randn(1, heads, ROW, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    _, sids = packed_inputs(case)
    slopes = alibi_slopes(heads).cuda()
    base2_slopes = slopes * LOG2E

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    def alibi_base2(score, b, h, q_idx, kv_idx):  # PRESCALE_QK hands score_mod base-2 scores
        return score - base2_slopes[h] * (q_idx - kv_idx).abs()

    def same(b, h, q_idx, kv_idx):
        return sids[q_idx] == sids[kv_idx]

    cuda = torch.device("cuda")
    print(f"\n## FlexAttention alone, packed {case}")
    by_pairs = timed(lambda: create_block_mask(same, 1, None, ROW, ROW, device="cuda", _compile=True), cuda, min_seconds=0.3)
    print(f"block mask, mask evaluated on every pair (create_block_mask, compiled): {by_pairs * 1e3:.2f} ms")
    try:
        from jina_rag.attention.flex import packed_block_mask

        from_tiles = timed(lambda: packed_block_mask(sids), cuda, min_seconds=0.3)
        print(f"block mask from the tiles' sequence ids (packed_block_mask, eager): {from_tiles * 1e3:.2f} ms")
        mask = packed_block_mask(sids)
    except ImportError:
        mask = create_block_mask(same, 1, None, ROW, ROW, device="cuda")
    reference = None
    print("| kernel options | ms | attention MFU | max abs diff vs first |\n|---|---|---|---|")
    for options in configs:
        score_mod = alibi_base2 if options.get("PRESCALE_QK") else alibi
        try:
            fn = torch.compile(lambda q, k, v: flex_attention(q, k, v, score_mod=score_mod, block_mask=mask,
                                                              kernel_options=options), dynamic=False)
            out = fn(q, k, v)
            reference = out if reference is None else reference
            seconds = timed(lambda: fn(q, k, v), cuda, min_seconds=0.5)
            diff = (out.float() - reference.float()).abs().max().item()
            print(f"| {options} | {seconds * 1e3:.2f} | {attention_flops(case) / seconds / (peak * 1e12):.0%} | {diff:.4f} |",
                  flush=True)
        except Exception as error:  # an option the kernel rejects
            print(f"| {options} | failed: {type(error).__name__}: {str(error).splitlines()[0][:80]} | | |", flush=True)
        torch._dynamo.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="512,8192,mixed")
    parser.add_argument("--sections", default="profile,sweep", help="comma list of profile,encoder,sweep")
    parser.add_argument("--sweep-cases", default="8192,512")
    args = parser.parse_args()
    peak = matmul_peak_tflops(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 matmul peak {peak:.0f} TFLOP/s")
    sections = args.sections.split(",")
    if "profile" in sections:
        model = JinaBertModel(JinaBertConfig(**SHAPES["base"])).cuda().to(torch.bfloat16).eval()
        for case in args.cases.split(","):
            kernel_profile(model, case)
    if "encoder" in sections:
        for case in args.cases.split(","):
            encoder_profile(case)
    if "sweep" in sections:
        for index, case in enumerate(args.sweep_cases.split(",")):
            attention_sweep(case, peak, SWEEP if index == 0 else [SWEEP[0], SWEEP[2]])


if __name__ == "__main__":
    main()
