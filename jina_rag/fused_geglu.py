"""GEGLU's gated projection and its activation in one Triton kernel (CUDA, bf16/fp16, inference).

The feed-forward's first linear layer writes ``[T, 2I]`` (gate and up halves) and an elementwise
kernel then reads all of it back to write ``gelu(gate) * up``, ``[T, I]``: at 8192-token rows
that round trip is about 5% of the forward. Here each program computes one ``[BLOCK_M, BLOCK_N]``
tile of both halves (two accumulators over the same rows of ``x``) and writes only the product,
with the exact (erf) GELU of the published model.

Only for inference: the kernel has no backward, so anything that needs gradients (training)
takes the plain path. Runs as a ``torch.library`` custom op, one opaque node under
``torch.compile`` with the rest of the layer fused around it.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

FUSED_DTYPES = (torch.bfloat16, torch.float16)
# (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps), and the width from which descriptor (TMA) loads
# beat pointer loads: the fastest of benchmarks/geglu.py's sweep on an H200 (65,536 tokens, bf16;
# against cuBLAS + the compiled elementwise GEGLU: 768 -> 2 x 3072 TMA 1.05x, pointers 0.94x;
# 384 -> 2 x 1536 pointers 1.08x, TMA 0.96x).
DEFAULT_TILES = (128, 128, 64, 3, 8)
TMA_MIN_HIDDEN = 512
GROUP_M = 8
# Looked up once at import: torch.compile cannot trace the package lookup inside the forward.
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def geglu_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``gelu(gate) * up`` of ``x @ weight.T`` split into its gate and up halves (the unfused path)."""
    gate, up = F.linear(x, weight).split(weight.shape[0] // 2, dim=-1)
    return F.gelu(gate) * up


def fused_geglu_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernel runs for a model on ``device`` in ``dtype``: CUDA, bf16/fp16, Triton installed."""
    return device.type == "cuda" and dtype in FUSED_DTYPES and TRITON_INSTALLED


def fused_geglu_available(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`fused_geglu` can run on these inputs: supported, same dtype, no gradients needed."""
    if weight.dtype != x.dtype or not fused_geglu_supported(x.device, x.dtype):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if x.shape[-1] == 0 or x.shape[-1] % 8 or weight.shape[0] % 16:  # 16-byte aligned rows of x, weight and output
        return False
    return x.numel() < 1 << 31 and x.numel() // x.shape[-1] * weight.shape[0] < 1 << 31  # the kernel's int32 offsets


def _kernels():
    from jina_rag import fused_geglu_kernels

    return fused_geglu_kernels.geglu_kernel, fused_geglu_kernels.geglu_tma_kernel


def launch_fused_geglu(
    x: torch.Tensor, weight: torch.Tensor, tiles: tuple[int, int, int, int, int] = DEFAULT_TILES, *,
    tma: bool | None = None,
) -> torch.Tensor:
    """Run the kernel with explicit tiles ``(BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps)``.

    ``tma`` picks the loads: the tensor-memory engine's (descriptors) or plain pointer loads;
    ``None`` takes the faster for this width (:data:`TMA_MIN_HIDDEN`).
    """
    block_m, block_n, block_k, stages, warps = tiles
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1 or rows.data_ptr() % 16:  # both kernels read whole rows; TMA needs 16-byte alignment
        rows = rows.clone(memory_format=torch.contiguous_format)
    weight = weight.contiguous()
    total, width = rows.shape
    inner = weight.shape[0] // 2
    out = torch.empty(total, inner, device=x.device, dtype=x.dtype)
    if total == 0:
        return out.view(*x.shape[:-1], inner)
    grid = (-(-total // block_m) * -(-inner // block_n),)
    pointer_kernel, tma_kernel = _kernels()
    if tma is None:
        tma = width >= TMA_MIN_HIDDEN
    if tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        tma_kernel[grid](
            TensorDescriptor.from_tensor(rows, [block_m, block_k]),
            TensorDescriptor.from_tensor(weight[:inner], [block_n, block_k]),
            TensorDescriptor.from_tensor(weight[inner:], [block_n, block_k]),
            TensorDescriptor.from_tensor(out, [block_m, block_n]),
            total, inner, width, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP=GROUP_M,
            STAGES=stages, num_warps=warps,
        )
    else:
        pointer_kernel[grid](
            rows, weight, out, total, inner, width, rows.stride(0), weight.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP=GROUP_M, EVEN_K=width % block_k == 0,
            num_stages=stages, num_warps=warps,
        )
    return out.view(*x.shape[:-1], inner)


@torch.library.custom_op("jina_rag::fused_geglu", mutates_args=())
def fused_geglu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``gelu(x @ weight[:I].T) * (x @ weight[I:].T)`` for ``weight`` of ``[2I, H]``, in one kernel."""
    return launch_fused_geglu(x, weight)


@fused_geglu.register_fake
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2)
