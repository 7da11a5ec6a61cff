"""``flash``: FlashAttention-4's CuTe DSL kernels (Hopper, Blackwell) for packed rows, symmetric ALiBi inside.

FlashAttention's varlen kernels take sequences packed back to back (``cu_seqlens``) with no
mask tensor, and a ``score_mod`` compiled into the kernel: here ``score - slope_h * |i - j|``
with the slope computed from the head index (the standard ALiBi slopes, as
:func:`jina_rag.modeling.alibi_slopes`), so the kernel reads no bias and no table. Needs the
``flash-attn-4`` package (``flash_attn.cute``) and a GPU of compute capability 9 or 10; the
first call JIT-compiles the kernel (tens of seconds), later shapes reuse it. Padded batches run
FlexAttention (:mod:`jina_rag.attention.flex`); ``auto`` sends packed rows here where the caller
passes their ``cu_seqlens`` (:mod:`jina_rag.attention.auto`).

The kernel runs as a ``torch.library`` custom op so ``torch.compile`` keeps it as one opaque
node and fuses the rest of the layer around it; ``cu_seqlens`` is marked dynamic by the caller,
so rows with different numbers of sequences share one compiled graph per width.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jina_rag.attention.base import Batch, Batching
from jina_rag.attention.flex import FlexAttention, FlexContext
from jina_rag.errors import InvalidInputError

FLASH_DTYPES = (torch.bfloat16, torch.float16)


def flash_alibi_available(device: torch.device, dtype: torch.dtype | None = None) -> bool:
    """Whether FlashAttention-4 (``flash_attn.cute``) can run here: CUDA, compute capability 9.x or 10.x,
    and (where ``dtype`` is given) bf16 or fp16, the only types its kernels take."""
    if dtype is not None and dtype not in FLASH_DTYPES:
        return False
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability(device)[0] not in (9, 10):
        return False
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:
        return False


def require_flash_alibi(device: torch.device, dtype: torch.dtype | None = None) -> None:
    """Raise a RuntimeError that says what to install or change unless :func:`flash_alibi_available`."""
    if not flash_alibi_available(device):
        raise RuntimeError(
            "attn_implementation='flash' needs FlashAttention-4 (pip install flash-attn-4) on a GPU of "
            f"compute capability 9.x or 10.x ({device}); use 'auto' for FlexAttention"
        )
    if dtype is not None and dtype not in FLASH_DTYPES:
        raise RuntimeError(f"attn_implementation='flash' runs in bf16 or fp16, not {dtype}: pass dtype='bf16' or use 'auto'")


def head_slopes(h_idx, like, num_heads: int):
    """Inside a CuTe ``score_mod``: each lane's ALiBi slope, from its head index, as float32 shaped like ``like``.

    slope_h = 2^(-8(h+1)/p) for h < p, 2^(-(8(h-p)+4)/p) above (p: the power of two <= heads),
    equal to :func:`jina_rag.modeling.alibi_slopes`.
    """
    import operator

    import cutlass
    import cutlass.cute as cute

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    low = (h_idx + cute.full_like(h_idx, 1)) * cute.full_like(h_idx, -8)
    high = (h_idx - cute.full_like(h_idx, closest)) * cute.full_like(h_idx, -8) - cute.full_like(h_idx, 4)
    numerator = cute.where(operator.lt(h_idx, cute.full_like(h_idx, closest)), low, high)
    return cute.math.exp2(numerator.to(cutlass.Float32) * cute.full_like(like, 1.0 / closest))


@functools.cache
def _score_mod(num_heads: int):
    import cutlass
    import cutlass.cute as cute
    from cutlass._mlir.dialects import math as mlir_math

    @cute.jit
    def symmetric_alibi(tSrS_ssa, b_idx, h_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
        # slope * |i - j| as |slope * i - slope * j|: the products are per row and per column, so a
        # score costs one subtraction and one multiply-add with FA4's scaling (at head_dim 64 the
        # float pipes, not the tensor cores, bound the kernel). float32 rounding of slope * i stays
        # below 2^-24 relative: under 5e-4 logits at 8192 tokens, well inside bf16's own error.
        slope = head_slopes(h_idx, tSrS_ssa, num_heads)
        diff = q_idx.to(cutlass.Float32) * slope - kv_idx.to(cutlass.Float32) * slope
        return tSrS_ssa - cute.TensorSSA(mlir_math.absf(diff), diff.shape, diff.dtype)

    return symmetric_alibi


@torch.library.custom_op("jina_rag::flash_alibi_attention", mutates_args=())
def flash_alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Symmetric-ALiBi attention of packed rows ``[T, heads, head_dim]`` within each ``cu_seqlens`` range."""
    if q.shape[0] >= 1 << 23:  # the score_mod's float32 positions would round ALiBi's distances
        raise InvalidInputError(f"a packed row holds at most 8,388,607 tokens for flash attention, got {q.shape[0]:,}: pack fewer")
    from flash_attn.cute import flash_attn_varlen_func

    out = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, score_mod=_score_mod(q.shape[1])
    )
    return (out[0] if isinstance(out, tuple) else out).contiguous()


@flash_alibi_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(q)


@dataclass
class FlashContext:
    """A packed row's ``cu_seqlens``: int32 offsets of its sequences, then its width."""

    cu_seqlens: torch.Tensor


class FlashAttention(FlexAttention):
    """``flash``: FlashAttention-4 for every packed row (exact, no attention dropout); padded batches run flex."""

    name = "flash"

    def batching(self, device: torch.device, dtype: torch.dtype) -> Batching:
        require_flash_alibi(device, dtype)
        self.require(device)
        return Batching(self.name, packed=True, flash_min_tokens=0)

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> FlexContext | FlashContext:
        self.require(x.device)
        # Checked in eager calls; a compiled forward is checked by its caller (batching()), since
        # the package lookup would break the traced graph.
        if not torch.compiler.is_compiling():
            require_flash_alibi(x.device)
        if batch.dropout:
            raise RuntimeError("attn_implementation='flash' has no attention dropout: train with 'auto'")
        if batch.sequence_ids is None:
            return self._padded(slopes, batch.attention_mask)
        cu_seqlens = batch.cu_seqlens
        if cu_seqlens is None:  # found on the device: one host sync (callers in a hot loop pass it)
            counts = torch.unique_consecutive(batch.sequence_ids, return_counts=True)[1]
            cu_seqlens = F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)
        return FlashContext(cu_seqlens)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: FlexContext | FlashContext
    ) -> torch.Tensor:
        if not isinstance(context, FlashContext):
            return super().attend(q, k, v, context)
        # One packed row: [T, heads, head_dim] is the linear layers' own layout, no transposes.
        length = q.shape[1]
        return flash_alibi_attention(q[0], k[0], v[0], context.cu_seqlens).view(1, length, self.hidden_size)
