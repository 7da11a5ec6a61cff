"""Probe (GPU): the fused GEGLU kernel (``jina_rag.fused_geglu``) against cuBLAS + the compiled elementwise GEGLU.

    PYTHONPATH=. python3 benchmarks/geglu.py [--sections correct,sweep,qkv,model] [--lengths 8192,512] [--attention flex,flash]

``correct``: the kernel against an fp32 reference (bf16, fp16; shapes whose rows, columns and
inner dimension are not multiples of the tiles), next to the unfused bf16 path's own error.
``sweep``: milliseconds and TFLOP/s at 65,536 tokens for the base (768 -> 2 x 3072) and small
(384 -> 2 x 1536) feed-forward: the gated GEMM alone (cuBLAS), GEMM + compiled GEGLU (the
unfused path), and the kernel under several tile settings. ``qkv``: three 768-wide projections
against one of the concatenated weight. ``model``: the compiled packed forward (base, random
weights, bf16, one 65,536-token row of 8 x 8192 or 128 x 512 tokens) with the fused kernel and
without, under FlexAttention and (where flash-attn-4 is installed) FlashAttention-4; MFU by
issue 6's formula against the bf16 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, matmul_peak_tflops  # noqa: E402
from cudnn_alibi import timed  # noqa: E402

from jina_rag import JinaBertConfig, JinaBertModel  # noqa: E402
from jina_rag.attention import packed_offsets  # noqa: E402
from jina_rag.attention.flash import flash_alibi_available  # noqa: E402
from jina_rag.fused_geglu import DEFAULT_TILES, fused_geglu, geglu_reference, launch_fused_geglu  # noqa: E402
from jina_rag.modeling import JinaBertGLUMLP  # noqa: E402

TILES = [DEFAULT_TILES, (128, 128, 64, 4, 8), (256, 64, 64, 3, 8), (128, 64, 64, 4, 8)]
TMA_TILES = [DEFAULT_TILES, (128, 128, 64, 4, 8), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (256, 128, 64, 3, 8)]
ROW = 65536


def inputs(tokens: int, hidden: int, inner: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, hidden, device="cuda", dtype=dtype, generator=gen)
    weight = torch.randn(2 * inner, hidden, device="cuda", dtype=dtype, generator=gen) / hidden**0.5
    return x, weight


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.double(), b.double(), dim=-1).min().item()


def correct() -> None:
    for dtype in (torch.bfloat16, torch.float16):
        for tokens, hidden, inner in ((1000, 768, 3072), (777, 200, 1000), (5, 384, 1536)):
            x, weight = inputs(tokens, hidden, inner, dtype)
            exact = geglu_reference(x.float(), weight.float())
            fused, unfused = fused_geglu(x, weight), geglu_reference(x, weight)
            scale = exact.abs().max().item()
            print(f"  {str(dtype):15s} {tokens} x {hidden} -> {inner}: fused max |err| / max {(fused.float() - exact).abs().max().item() / scale:.2e}"
                  f" (min row cos {row_cosine(fused, exact):.6f}); unfused {(unfused.float() - exact).abs().max().item() / scale:.2e}"
                  f" ({row_cosine(unfused, exact):.6f})", flush=True)


def sweep() -> None:
    for name, hidden, inner in (("base", 768, 3072), ("small/v4", 384, 1536)):
        x, weight = inputs(ROW, hidden, inner, torch.bfloat16)
        flops = 2 * ROW * hidden * 2 * inner
        unfused = torch.compile(geglu_reference, dynamic=False)
        rows = {"gated GEMM alone (cuBLAS)": lambda: F.linear(x, weight),
                "GEMM + compiled GEGLU (unfused)": lambda: unfused(x, weight)}
        for tiles in TILES:
            rows[f"fused, pointers, {tiles}"] = lambda tiles=tiles: launch_fused_geglu(x, weight, tiles, tma=False)
        for tiles in TMA_TILES:
            rows[f"fused, TMA, {tiles}"] = lambda tiles=tiles: launch_fused_geglu(x, weight, tiles, tma=True)
        print(f"\n== {name}: {ROW} x {hidden} -> 2 x {inner}, bf16", flush=True)
        baseline = None
        for label, fn in rows.items():
            try:
                ms = timed(fn)
            except Exception as error:
                print(f"  {label:60s} failed: {type(error).__name__}: {str(error)[:200]}", flush=True)
                continue
            baseline = ms if label.startswith("GEMM +") else baseline
            ratio = f"  {baseline / ms:.2f}x the unfused path" if baseline and not label.startswith("gated") else ""
            print(f"  {label:60s} {ms:7.3f} ms {flops / ms / 1e9:6.1f} TFLOP/s{ratio}", flush=True)


def qkv() -> None:
    hidden = 768
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(ROW, hidden, device="cuda", dtype=torch.bfloat16, generator=gen)
    weights = [torch.randn(hidden, hidden, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3)]
    biases = [torch.randn(hidden, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3)]
    separate = torch.compile(lambda x: [F.linear(x, w, b) for w, b in zip(weights, biases)], dynamic=False)
    joined = torch.compile(lambda x: F.linear(x, torch.cat(weights), torch.cat(biases)).split(hidden, -1), dynamic=False)
    flops = 2 * ROW * hidden * 3 * hidden
    print(f"\n== q, k, v projections: {ROW} x {hidden} -> 3 x {hidden}, bf16", flush=True)
    for label, fn in (("three linears", separate), ("one linear of the concatenated weights", joined)):
        ms = timed(lambda: fn(x))
        print(f"  {label:60s} {ms:7.3f} ms {flops / ms / 1e9:6.1f} TFLOP/s", flush=True)


def model(lengths=(8192, 512), attentions=("flex", "flash")) -> None:
    peak = matmul_peak_tflops(torch.device("cuda"))
    print(f"\n== compiled packed forward, base, random weights, bf16; matmul peak in this run {peak:.0f} TFLOP/s", flush=True)
    torch.manual_seed(0)
    config = JinaBertConfig(**SHAPES["base"])
    net = JinaBertModel(config).cuda().to(torch.bfloat16).eval()
    forward = torch.compile(net.forward_packed, dynamic=False)
    if not flash_alibi_available(torch.device("cuda")):
        attentions = [a for a in attentions if a != "flash"]
    for length in lengths:
        count = ROW // length
        ids = torch.randint(1000, 20000, (ROW,), device="cuda")
        sequence_ids = torch.arange(count, device="cuda").repeat_interleave(length)
        cu_seqlens = torch.from_numpy(packed_offsets(sequence_ids.cpu().numpy())).cuda()
        flops = ROW * config.flops_per_token(length)
        outputs = {}
        for attention in attentions:
            args = (ids, sequence_ids) + ((cu_seqlens,) if attention == "flash" else ())
            for fused in (False, True):
                for module in net.modules():
                    if isinstance(module, JinaBertGLUMLP):
                        module.fused = fused
                try:
                    with torch.inference_mode():
                        outputs[attention, fused] = forward(*args).float()
                        ms = timed(lambda: forward(*args))
                except Exception:
                    traceback.print_exc()
                    continue
                print(f"  {count} x {length}, {attention:5s}, fused GEGLU {str(fused):5s}: {ms:7.2f} ms, "
                      f"{ROW / ms * 1e3:10,.0f} tok/s, MFU {flops / ms / 1e9 / peak:.1%}", flush=True)
            if (attention, False) in outputs and (attention, True) in outputs:
                print(f"    token states fused vs unfused: min cos {row_cosine(outputs[attention, True], outputs[attention, False]):.6f}",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="correct,sweep,qkv,model")
    parser.add_argument("--lengths", default="8192,512", help="model section: sequence lengths")
    parser.add_argument("--attention", default="flex,flash", help="model section: attention kernels")
    args = parser.parse_args()
    sections = args.sections.split(",")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    for section in ("correct", "sweep", "qkv", "model"):
        if section in sections:
            print(f"\n# {section}", flush=True)
            try:
                if section == "model":
                    model(tuple(map(int, args.lengths.split(","))), tuple(args.attention.split(",")))
                else:
                    globals()[section]()
            except Exception:
                traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
