"""Probe (GPU): cuDNN's fused attention for JinaBERT's symmetric ALiBi, against our FlexAttention kernel.

cuDNN's SDPA takes ALiBi only with a causal mask (keys j <= i). Symmetric ALiBi is the union of
that and its mirror (keys j >= i, which is the causal pass over the reversed sequence), so two
causal passes, merged by their log-sum-exp statistics (the diagonal key counted once), give the
exact bidirectional attention for the same work as one full pass: each pass skips its masked half.

The other way in is cuDNN's score modifier: the penalty ``slope_h * |i - j|`` written as pointwise
operations on the score tile (gen_index, sub, abs, mul), one full pass, but without cuDNN's padding
mask (the two exclude each other), so it serves only batches of equal lengths.

Prints, for bf16 (and fp16) at 2 x 1024 and 8 x 8192 tokens, 12 heads of 64: the attention kernels
alone in ms and attention TFLOP/s (4 * L^2 * head_dim * heads per sequence; the two causal passes
together do that work once): FlexAttention with the ALiBi score_mod (the model's kernel options),
cuDNN without ALiBi (the kernel's ceiling), one causal ALiBi pass, the merged pair, the score
modifier, and a causal pass over packed rows (THD layout with ragged offsets); and correctness
against an fp64 reference (at 1024) or FlexAttention (at 8192). Run on the GPU machine with the
cuDNN frontend wheel installed (``--bf16``: bf16 only):

    pip install nvidia_cudnn_frontend-*.whl && PYTHONPATH=. python3 benchmarks/cudnn_alibi.py
"""

from __future__ import annotations

import math
import sys
import traceback

import torch

from jina_rag.attention.flex import flex_kernel_options, packed_block_mask
from jina_rag.modeling import alibi_slopes

HEADS, HEAD_DIM = 12, 64


def timed(fn, repeats: int = 20) -> float:
    """Median milliseconds of ``fn()`` on the GPU, after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """fp64 symmetric-ALiBi attention, ``[B, H, S, D]``."""
    q, k, v = q.double(), k.double(), v.double()
    length = q.shape[2]
    pos = torch.arange(length, device=q.device)
    bias = -slopes.double().view(-1, 1, 1) * (pos[:, None] - pos[None, :]).abs()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    return scores.softmax(-1) @ v


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(0, -2), b.double().flatten(0, -2)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()


class CudnnAttention:
    """One built cuDNN SDPA graph with its log-sum-exp statistics: causal ALiBi by default, no mask,
    or (``slopes``) symmetric ALiBi as a score modifier; padded [B, H, S, D] views or packed rows."""

    def __init__(self, cudnn, handle, q, k, v, *, alibi: bool = True, causal: bool = True, ragged=None, slopes=None):
        self.handle = handle
        io = cudnn.data_type.BFLOAT16 if q.dtype == torch.bfloat16 else cudnn.data_type.HALF
        graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                              compute_data_type=cudnn.data_type.FLOAT)
        if ragged is None:
            batch, heads, length, dim = q.shape
            tq, tk, tv = graph.tensor_like(q), graph.tensor_like(k), graph.tensor_like(v)
            extra = {}
        else:
            # q: [T, H, D] packed; ragged = (seq_len [B,1,1,1] int32, offsets [B+1,1,1,1] int64, max_len)
            seq_len, offsets, length = ragged
            batch = seq_len.shape[0]
            total, heads, dim = q.shape
            dims = (batch, heads, length, dim)
            strides = (length * heads * dim, dim, heads * dim, 1)
            tq, tk, tv = (graph.tensor(dim=dims, stride=strides, data_type=io) for _ in range(3))
            self.t_len_q, self.t_len_kv = graph.tensor_like(seq_len), graph.tensor_like(seq_len)
            self.t_off = [graph.tensor_like(offsets) for _ in range(5)]
            for t, off in zip((tq, tk, tv), self.t_off):
                t.set_ragged_offset(off)
            extra = dict(use_padding_mask=True, seq_len_q=self.t_len_q, seq_len_kv=self.t_len_kv)
        if causal:
            extra.update(diagonal_band_right_bound=0, diagonal_alignment=cudnn.diagonal_alignment.TOP_LEFT)
        self.slopes = slopes
        if slopes is not None:
            # Symmetric ALiBi in one pass: score - slope[h] * |col - row|, built from cuDNN pointwise ops.
            self.t_slopes = graph.tensor(dim=[1, heads, 1, 1], stride=[heads, 1, 1, 1], data_type=cudnn.data_type.FLOAT)
            fp32 = cudnn.data_type.FLOAT

            def symmetric_alibi(g, score):
                row = g.gen_index(score, 2, compute_data_type=fp32)
                row.set_data_type(fp32)
                col = g.gen_index(score, 3, compute_data_type=fp32)
                col.set_data_type(fp32)
                distance = g.abs(g.sub(col, row, compute_data_type=fp32), compute_data_type=fp32)
                penalty = g.mul(distance, self.t_slopes, compute_data_type=fp32)
                return g.sub(score, penalty, compute_data_type=fp32)

            extra["score_mod"] = symmetric_alibi
            if ragged is not None:
                del extra["use_padding_mask"]
        o, stats = graph.sdpa(name="sdpa", q=tq, k=tk, v=tv, generate_stats=True,
                              attn_scale=1.0 / math.sqrt(dim), use_alibi_mask=alibi, **extra)
        if ragged is None:
            o.set_output(True).set_dim(q.shape).set_stride(q.stride())
            stats.set_output(True).set_data_type(cudnn.data_type.FLOAT).set_dim((batch, heads, length, 1)) \
                .set_stride((heads * length, length, 1, 1))
        else:
            o.set_output(True).set_dim(dims).set_stride(strides).set_ragged_offset(self.t_off[3])
            stats.set_output(True).set_data_type(cudnn.data_type.FLOAT).set_dim((batch, heads, length, 1)) \
                .set_stride((length * heads, 1, heads, 1)).set_ragged_offset(self.t_off[4])
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph, self.tensors = graph, (tq, tk, tv, o, stats)
        self.workspace = torch.empty(graph.get_workspace_size(), device=q.device, dtype=torch.uint8)

    def __call__(self, q, k, v, o, stats, ragged_values=None):
        tq, tk, tv, to, ts = self.tensors
        pack = {tq: q, tk: k, tv: v, to: o, ts: stats}
        if self.slopes is not None:
            pack[self.t_slopes] = self.slopes
        if ragged_values is not None:
            seq_len, offsets, stats_offsets = ragged_values
            pack.update({self.t_len_q: seq_len, self.t_len_kv: seq_len})
            for t in self.t_off[:4]:
                pack[t] = offsets
            pack[self.t_off[4]] = stats_offsets
        self.graph.execute(pack, self.workspace, handle=self.handle)


def merge(o_a, lse_a, o_b, lse_b, q, k, v):
    """The two causal halves as one softmax: weights e^lse each, the diagonal key (in both) once."""
    diagonal = (q.float() * k.float()).sum(-1, keepdim=True) / math.sqrt(q.shape[-1])
    top = torch.maximum(lse_a, lse_b)
    w_a, w_b, w_d = (lse_a - top).exp(), (lse_b - top).exp(), (diagonal - top).exp()
    return ((w_a * o_a.float() + w_b * o_b.float() - w_d * v.float()) / (w_a + w_b - w_d)).to(v.dtype)


merge_compiled = torch.compile(merge, dynamic=False)


def main() -> None:
    import cudnn

    print(f"torch {torch.__version__}, cuDNN backend {cudnn.backend_version()}, frontend {cudnn.__version__}, "
          f"{torch.cuda.get_device_name()}", flush=True)
    handle = cudnn.create_handle()
    cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    slopes = alibi_slopes(HEADS).cuda()

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    for dtype in (torch.bfloat16,) if "--bf16" in sys.argv else (torch.bfloat16, torch.float16):
        for batch, length in ((2, 1024), (8, 8192)):
            print(f"\n== {dtype}, {batch} x {length}", flush=True)
            gen = torch.Generator(device="cuda").manual_seed(0)
            # [B, S, H, D] storage, as the model's linear layers write it; BHSD views.
            q, k, v = (torch.randn(batch, length, HEADS, HEAD_DIM, device="cuda", dtype=dtype, generator=gen)
                       for _ in range(3))
            qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
            flops = 4 * length * length * HEAD_DIM * HEADS * batch
            ref = reference(qh, kh, vh, slopes) if length <= 1024 else None
            results = {}
            try:
                out_flex = flex(qh, kh, vh, score_mod=alibi, kernel_options=flex_kernel_options(dtype))
                results["flex ALiBi (full rows)"] = timed(
                    lambda: flex(qh, kh, vh, score_mod=alibi, kernel_options=flex_kernel_options(dtype)))
                sequence_ids = torch.arange(batch, device="cuda").repeat_interleave(length)
                block_mask = packed_block_mask(sequence_ids)
                qp, kp, vp = (t.reshape(1, batch * length, HEADS, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
                results["flex ALiBi (packed row, the model's path)"] = timed(
                    lambda: flex(qp, kp, vp, score_mod=alibi, block_mask=block_mask,
                                 kernel_options=flex_kernel_options(dtype)))
            except Exception:
                traceback.print_exc()
                out_flex = None
            try:
                plain = CudnnAttention(cudnn, handle, qh, kh, vh, alibi=False, causal=False)
                o_plain = torch.empty_like(q).transpose(1, 2)
                s_plain = torch.empty(batch, HEADS, length, 1, device="cuda", dtype=torch.float32)
                results["cuDNN, no ALiBi, full (ceiling)"] = timed(lambda: plain(qh, kh, vh, o_plain, s_plain))
            except Exception:
                traceback.print_exc()
            try:
                causal = CudnnAttention(cudnn, handle, qh, kh, vh)
                o_a = torch.empty_like(q).transpose(1, 2)
                o_b = torch.empty_like(q).transpose(1, 2)
                lse_a = torch.empty(batch, HEADS, length, 1, device="cuda", dtype=torch.float32)
                lse_b = torch.empty_like(lse_a)
                results["cuDNN causal ALiBi, one pass"] = timed(lambda: causal(qh, kh, vh, o_a, lse_a))

                def symmetric():
                    causal(qh, kh, vh, o_a, lse_a)
                    qr, kr, vr = (t.flip(1).transpose(1, 2) for t in (q, k, v))
                    causal(qr, kr, vr, o_b, lse_b)
                    return merge_compiled(o_a, lse_a, o_b.flip(2), lse_b.flip(2), qh, kh, vh)

                out_cudnn = symmetric()
                results["cuDNN symmetric ALiBi (2 causal passes + flips + merge)"] = timed(symmetric)
                if ref is not None:
                    lse_ref = torch.logsumexp(
                        (qh.double() @ kh.double().transpose(-1, -2)) / math.sqrt(HEAD_DIM)
                        - slopes.double().view(-1, 1, 1) * (torch.arange(length, device="cuda")[:, None]
                                                            - torch.arange(length, device="cuda")[None, :]).double()
                        + torch.triu(torch.full((length, length), float("-inf"), device="cuda", dtype=torch.float64), 1),
                        dim=-1, keepdim=True)
                    print(f"  stats vs causal-ALiBi logsumexp: max |diff| natural log {(lse_a.double() - lse_ref).abs().max():.3e}, "
                          f"log2 {(lse_a.double() - lse_ref / math.log(2)).abs().max():.3e}")
                    print(f"  cuDNN symmetric vs fp64: min cos {cosine(out_cudnn, ref):.6f}, "
                          f"max |diff| {(out_cudnn.double() - ref).abs().max():.3e}")
                    if out_flex is not None:
                        print(f"  flex vs fp64:            min cos {cosine(out_flex, ref):.6f}, "
                              f"max |diff| {(out_flex.double() - ref).abs().max():.3e}")
                elif out_flex is not None:
                    print(f"  cuDNN symmetric vs flex: min cos {cosine(out_cudnn, out_flex):.6f}")
            except Exception:
                traceback.print_exc()
            try:
                scored = CudnnAttention(cudnn, handle, qh, kh, vh, alibi=False, causal=False,
                                     slopes=slopes.view(1, HEADS, 1, 1).contiguous())
                o_s = torch.empty_like(q).transpose(1, 2)
                s_s = torch.empty(batch, HEADS, length, 1, device="cuda", dtype=torch.float32)
                scored(qh, kh, vh, o_s, s_s)
                results["cuDNN symmetric ALiBi via score_mod, one full pass"] = timed(lambda: scored(qh, kh, vh, o_s, s_s))
                if ref is not None:
                    print(f"  cuDNN score_mod vs fp64: min cos {cosine(o_s, ref):.6f}, max |diff| {(o_s.double() - ref).abs().max():.3e}")
                elif out_flex is not None:
                    print(f"  cuDNN score_mod vs flex: min cos {cosine(o_s, out_flex):.6f}")
            except Exception:
                traceback.print_exc()
            try:
                # Packed rows (THD with ragged offsets): the same tokens as one row of sequences.
                total = batch * length
                qt, kt, vt = (t.reshape(total, HEADS, HEAD_DIM) for t in (q, k, v))
                lens = torch.full((batch, 1, 1, 1), length, device="cuda", dtype=torch.int32)
                starts = torch.cat([torch.zeros(1, 1, 1, 1, device="cuda", dtype=torch.int64), lens.cumsum(0)])
                offsets, stats_offsets = starts * HEADS * HEAD_DIM, starts * HEADS
                thd = CudnnAttention(cudnn, handle, qt, kt, vt, ragged=(lens, offsets, length))
                o_t = torch.empty_like(qt)
                s_t = torch.empty(total, HEADS, 1, device="cuda", dtype=torch.float32)
                results["cuDNN causal ALiBi, one pass, THD ragged"] = timed(
                    lambda: thd(qt, kt, vt, o_t, s_t, (lens, offsets, stats_offsets)))
                if length <= 1024:
                    o_ref = o_a.transpose(1, 2).reshape(total, HEADS, HEAD_DIM)
                    print(f"  THD vs BHSD causal pass: max |diff| {(o_t.float() - o_ref.float()).abs().max():.3e}, "
                          f"stats {(s_t.view(batch, length, HEADS) - lse_a.view(batch, HEADS, length).transpose(1, 2)).abs().max():.3e}")
            except Exception:
                traceback.print_exc()
            for name, ms in results.items():
                work = flops / 2 if "one pass" in name else flops
                print(f"  {name:60s} {ms:8.3f} ms  {work / ms / 1e9:7.1f} TFLOP/s (of the full symmetric work: "
                      f"{flops / ms / 1e9:7.1f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
