"""Probe (GPU): FlashAttention-4's varlen kernel with JinaBERT's ALiBi ``score_mod`` vs our FlexAttention path.

The kernel is :func:`jina_rag.attention.flash.flash_alibi_attention` (packed rows, ``cu_seqlens``, the
slope computed from the head index inside the kernel); FlexAttention runs as the model runs it
(one packed row, the document block mask, the model's kernel options). Prints, for bf16 and fp16:
correctness at 2 x 1024 against an fp64 reference and on a row of mixed lengths against
FlexAttention, then milliseconds and attention TFLOP/s (4 * L^2 * head_dim * heads per sequence)
at 8 x 8192, 32 x 2048 and 128 x 512 tokens. With ``--sweep``, bf16 only: the ``score_mod``
against one that converts each score's integer distance to a float, and the Hopper kernel's tile
settings (tile_m x tile_n, P from registers, intra-warpgroup overlap) at 8 x 8192 and 128 x 512;
also the second version's score_mod (positions as floats by their bits) and none at all (what the
bias costs); ``--score-mods`` leaves the tile settings out. Run on the GPU machine with flash-attn-4 installed:

    PYTHONPATH=. python3 benchmarks/flash_alibi.py [--sweep [--score-mods]]
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cudnn_alibi import HEAD_DIM, HEADS, cosine, reference, timed  # noqa: E402

from jina_rag.attention import packed_offsets  # noqa: E402
from jina_rag.attention.flash import flash_alibi_attention, head_slopes  # noqa: E402
from jina_rag.attention.flex import flex_kernel_options, packed_block_mask  # noqa: E402
from jina_rag.modeling import alibi_slopes  # noqa: E402


def packed(lengths: list[int], dtype: torch.dtype, seed: int = 0):
    """q, k, v ``[T, H, D]`` of sequences packed back to back, their sequence ids and cu_seqlens."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    total = sum(lengths)
    q, k, v = (torch.randn(total, HEADS, HEAD_DIM, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
    sequence_ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    cu_seqlens = torch.from_numpy(packed_offsets(sequence_ids.numpy())).cuda()
    return q, k, v, sequence_ids.cuda(), cu_seqlens


# Bits of the float 2^23: OR-ing an integer 0 <= n < 2^23 into them gives the float 2^23 + n.
FLOAT_TWO_POW_23_BITS = 0x4B000000


def integer_distance_score_mod(num_heads: int):
    """The first version of the library's ``score_mod``: ``|i - j|`` converted from an integer per score."""
    import cutlass
    import cutlass.cute as cute
    from cutlass._mlir.dialects import math as mlir_math

    @cute.jit
    def symmetric_alibi(tSrS_ssa, b_idx, h_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
        diff = q_idx - kv_idx
        distance = cute.TensorSSA(mlir_math.absi(diff), diff.shape, diff.dtype).to(cutlass.Float32)
        return tSrS_ssa - head_slopes(h_idx, tSrS_ssa, num_heads) * distance

    return symmetric_alibi


def float_bits_score_mod(num_heads: int):
    """The second version: both positions become the floats ``2^23 + n`` by their bits, one exact
    subtraction gives ``|i - j|``, then the slope multiplies it (a subtraction and two multiplies a score)."""
    import cutlass
    import cutlass.cute as cute
    from cutlass._mlir.dialects import math as mlir_math

    @cute.jit
    def symmetric_alibi(tSrS_ssa, b_idx, h_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
        magic = cute.full_like(q_idx, FLOAT_TWO_POW_23_BITS)
        diff = (q_idx | magic).bitcast(cutlass.Float32) - (kv_idx | magic).bitcast(cutlass.Float32)
        distance = cute.TensorSSA(mlir_math.absf(diff), diff.shape, diff.dtype)
        return tSrS_ssa - head_slopes(h_idx, tSrS_ssa, num_heads) * distance

    return symmetric_alibi


def sweep() -> None:
    """Score_mod variants and Hopper tile settings, bf16, 8 x 8192 and 128 x 512."""
    from flash_attn.cute.interface import _flash_attn_fwd

    from jina_rag.attention.flash import _score_mod

    variants = [("library score_mod, default tiles", _score_mod(HEADS), {}),
                ("integer-distance score_mod, default tiles", integer_distance_score_mod(HEADS), {}),
                ("float-bits positions score_mod (before), default tiles", float_bits_score_mod(HEADS), {}),
                ("no score_mod (plain softmax, not ALiBi), default tiles", None, {})]
    tiles = () if "--score-mods" in sys.argv[1:] else (
        (128, 128, True, True), (192, 128, False, True), (192, 128, True, False),
        (192, 160, True, True), (192, 192, True, True), (128, 192, True, True), (128, 256, True, True))
    for tile_m, tile_n, rs, overlap in tiles:
        variants.append((f"library score_mod, {tile_m} x {tile_n}, rs={rs}, overlap={overlap}", _score_mod(HEADS),
                         dict(tile_mn=(tile_m, tile_n), mma_pv_is_rs=rs, intra_wg_overlap=overlap)))
    for batch, length in ((8, 8192), (128, 512)):
        q, k, v, _, cu = packed([length] * batch, torch.bfloat16)
        flops = 4 * length * length * HEAD_DIM * HEADS * batch
        print(f"\n== sweep, bf16, {batch} x {length}", flush=True)
        reference_out = None
        for name, score_mod, options in variants:
            def run():
                return _flash_attn_fwd(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, score_mod=score_mod, **options)[0]
            try:
                started = time.perf_counter()
                out = run()
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - started
                reference_out = out if reference_out is None else reference_out
                ms = timed(run)
                max_diff = (out.float() - reference_out.float()).abs().max().item()
            except Exception as error:  # a tile setting the kernel does not support
                print(f"  {name:62s} failed: {type(error).__name__}: {str(error)[:160]}", flush=True)
                continue
            print(f"  {name:62s} {ms:8.3f} ms {flops / ms / 1e9:7.1f} TFLOP/s  min cos to the first "
                  f"{cosine(out, reference_out):.6f}, max |diff| {max_diff:.1e}  (first call {compile_s:.0f} s)", flush=True)


def main() -> None:
    import flash_attn.cute  # noqa: F401  (fails here, not inside the first timing, when it is missing)

    if "--sweep" in sys.argv[1:]:
        return sweep()

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    slopes = alibi_slopes(HEADS).cuda()

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    def run_flex(q, k, v, block_mask):
        out = flex(*(t[None].transpose(1, 2) for t in (q, k, v)), score_mod=alibi, block_mask=block_mask,
                   kernel_options=flex_kernel_options(q.dtype))
        return out.transpose(1, 2)[0]

    for dtype in (torch.bfloat16, torch.float16):
        print(f"\n== {dtype}", flush=True)
        try:
            started = time.perf_counter()
            q, k, v, _, cu = packed([1024, 1024], dtype)
            out = flash_alibi_attention(q, k, v, cu)
            torch.cuda.synchronize()
            print(f"  first call (JIT compile) {time.perf_counter() - started:.1f} s", flush=True)
            ref = torch.cat([reference(*(t[s:s + 1024][None].transpose(1, 2) for t in (q, k, v)), slopes)[0].transpose(0, 1)
                             for s in (0, 1024)])
            print(f"  flash vs fp64 (2 x 1024): min cos {cosine(out, ref):.6f}, max |diff| {(out.double() - ref).abs().max():.3e}")
            lengths = [3, 17, 128, 129, 700, 2048, 5000, 1]
            q, k, v, ids, cu = packed(lengths, dtype, seed=1)
            out, out_flex = flash_alibi_attention(q, k, v, cu), run_flex(q, k, v, packed_block_mask(ids))
            print(f"  flash vs flex (mixed lengths {lengths}): min cos {cosine(out, out_flex):.6f}", flush=True)
        except Exception:
            traceback.print_exc()
            continue
        for batch, length in ((8, 8192), (32, 2048), (128, 512)):
            q, k, v, ids, cu = packed([length] * batch, dtype)
            flops = 4 * length * length * HEAD_DIM * HEADS * batch
            block_mask = packed_block_mask(ids)
            results = {}
            try:
                results["flex, packed row (the model's path)"] = timed(lambda: run_flex(q, k, v, block_mask))
                results["flash-attn-4 varlen, ALiBi score_mod"] = timed(lambda: flash_alibi_attention(q, k, v, cu))
            except Exception:
                traceback.print_exc()
            print(f"  {batch} x {length}:", flush=True)
            for name, ms in results.items():
                print(f"    {name:45s} {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s", flush=True)
            if len(results) == 2:
                flex_ms, flash_ms = results.values()
                print(f"    flash / flex speed: {flex_ms / flash_ms:.2f}x", flush=True)


if __name__ == "__main__":
    sys.exit(main())
