"""``flex``: FlexAttention on CUDA, the ALiBi bias computed inside the kernel (``score_mod``).

Padded batches mask each row's padded keys; one packed row gets a block mask built from the
sequence ids at each tile's ends (:func:`packed_block_mask`), optionally dropping the tiles whose
ALiBi penalty alone rules them out (:data:`ALIBI_CUTOFF`). A packed row that comes with
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from jina_rag.attention.base import AttentionConfig, Batch, Batching
from jina_rag.errors import InvalidInputError

# FlexAttention's kernels need at least this many dimensions per head.
FLEX_MIN_HEAD_DIM = 16

# Queries and keys per block-mask tile: FlexAttention's sparse block size.
FLEX_BLOCK = 128

# ALiBi tile skipping: between a query tile and a key tile of FLEX_BLOCK tokens, |i - j| is at
# least dmin = max(0, |qb - kb| * FLEX_BLOCK - (FLEX_BLOCK - 1)). Every query still sees its own
# (diagonal) key, so where slope_h * dmin >= ALIBI_CUTOFF each key of that tile has softmax weight
# <= exp(s_ij - s_ii - ALIBI_CUTOFF) relative to the diagonal key: at 64 logits (e^-64 ~ 1.6e-28,
# far below bf16's and even fp32's resolution for any realistic score spread) the tile is skipped
# for that head. At L = 8192 with 12 heads about 35% of the tiles remain.
ALIBI_CUTOFF = 64.0


def flex_attention_available(device: torch.device, head_dim: int | None = None) -> bool:
    """FlexAttention runs compiled on CUDA (torch >= 2.5), for heads of at least 16 dimensions."""
    if device.type != "cuda" or (head_dim is not None and head_dim < FLEX_MIN_HEAD_DIM):
        return False
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    # Uncompiled, flex_attention materialises the scores; compiled once, it is a fused kernel.
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_kernel_options(dtype: torch.dtype) -> dict[str, Any] | None:
    """FlexAttention kernel options for the ALiBi kernel at head_dim 64 (H100, benchmarks/profile_gpu.py).

    For 16-bit inputs, 128x64 tiles ran the forward kernel 1.7x faster than the defaults, and
    loading K and V through the Hopper tensor-memory accelerator (TMA) about 8% faster again
    (FlexAttention drops TMA where the GPU or layout can't use it). TMA is asked for the forward
    only: with it in the backward kernels too, an MLM training step ran 12% slower. fp32 keeps
    the defaults (shared memory).
    """
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    return {"BLOCK_M": 128, "BLOCK_N": 64, "fwd_USE_TMA": True}


def padded_block_mask(lengths: torch.Tensor, length: int) -> Any:
    """FlexAttention block mask of a right-padded batch: each query sees its row's real keys."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]

    return create_block_mask(mask_mod, lengths.shape[0], None, length, length, device=lengths.device, _compile=True)


def alibi_tile_keep(num_tiles: int, slopes: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``[heads, tiles, tiles]``: whether a (query tile, key tile) pair is within the ALiBi cutoff per head."""
    tiles = torch.arange(num_tiles, device=slopes.device)
    dmin = ((tiles[:, None] - tiles[None, :]).abs() * FLEX_BLOCK - (FLEX_BLOCK - 1)).clamp(min=0)
    return slopes.to(torch.float32).view(-1, 1, 1) * dmin.to(torch.float32)[None] < cutoff


def packed_block_mask(
    sequence_ids: torch.Tensor, slopes: torch.Tensor | None = None, cutoff: float | None = None
) -> Any:
    """FlexAttention block mask of one packed row, built from the sequence ids of each tile's ends.

    ``sequence_ids`` must not decrease along the row (sequences back to back, as
    :func:`jina_rag.batching.pack_batch` lays them out); then a tile holds the ids from its
    first token's to its last token's, so which query and key tiles meet, and which meet
    whole (one sequence on both sides: no mask to evaluate), follows from those two ids per
    tile: a few hundred comparisons instead of the mask evaluated on every pair of tokens.

    With ``slopes`` and ``cutoff`` the mask gets a head dimension and drops, per head, the tiles
    whose nearest pair of tokens already carries an ALiBi penalty of ``cutoff`` logits or more
    (see :data:`ALIBI_CUTOFF`); the tiles kept are the same "whole" or "partial" tiles as without.
    """
    from torch.nn.attention.flex_attention import BlockMask

    if (slopes is None) != (cutoff is None):
        raise InvalidInputError("packed_block_mask needs both slopes and cutoff, or neither")
    if cutoff is not None and not cutoff > 0:
        raise InvalidInputError(f"the ALiBi cutoff must be positive (the diagonal tile is always kept), got {cutoff}")
    length = sequence_ids.shape[0]
    starts = torch.arange(0, length, FLEX_BLOCK, device=sequence_ids.device)
    first = sequence_ids[starts]
    last = sequence_ids[(starts + FLEX_BLOCK - 1).clamp(max=length - 1)]
    meets = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    single = first == last
    whole = single[:, None] & single[None, :] & (first[:, None] == first[None, :])
    partial = meets & ~whole
    if cutoff is None:
        partial, whole = partial[None], whole[None]  # head dimension 1: broadcast over heads
    else:
        keep = alibi_tile_keep(starts.shape[0], slopes.to(sequence_ids.device), cutoff)
        partial, whole = partial[None] & keep, whole[None] & keep

    def as_indices(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = blocks.sum(dim=-1, dtype=torch.int32)
        indices = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
        return counts[None], indices[None]

    def mask_mod(b, h, q_idx, kv_idx):
        return sequence_ids[q_idx] == sequence_ids[kv_idx]

    kv_num_blocks, kv_indices = as_indices(partial)
    full_num_blocks, full_indices = as_indices(whole)
    return BlockMask.from_kv_blocks(
        kv_num_blocks, kv_indices, full_num_blocks, full_indices,
        BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod, seq_lengths=(length, length),
    )


@dataclass
class FlexContext:
    """A batch's block mask and ALiBi ``score_mod``."""

    block_mask: Any
    score_mod: Callable[..., torch.Tensor]


def _flex_context(slopes: torch.Tensor, block_mask: Any) -> FlexContext:
    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    return FlexContext(block_mask, alibi)


class FlexAttention:
    """``flex``: FlexAttention for padded batches and packed rows (attention dropout is not applied)."""

    name = "flex"

    def __init__(self, config: AttentionConfig) -> None:
        self.head_dim = config.head_dim
        self.hidden_size = config.hidden_size
        self.alibi_cutoff = config.alibi_cutoff

    def require(self, device: torch.device) -> None:
        """Raise a RuntimeError that says why unless FlexAttention runs on ``device`` for these heads."""
        if not flex_attention_available(device, self.head_dim):
            raise RuntimeError(
                f"attn_implementation={self.name!r} needs CUDA, torch.nn.attention.flex_attention and heads of at least "
                f"{FLEX_MIN_HEAD_DIM} dimensions (this model: {self.head_dim} on {device}); use 'auto' or 'blockwise'"
            )

    def batching(self, device: torch.device, dtype: torch.dtype) -> Batching:
        self.require(device)
        return Batching(self.name, packed=True, alibi_cutoff=self.alibi_cutoff)

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> FlexContext:
        self.require(x.device)
        if batch.sequence_ids is None:
            return self._padded(slopes, batch.attention_mask)
        cutoff = self.alibi_cutoff
        return _flex_context(slopes, packed_block_mask(batch.sequence_ids, None if cutoff is None else slopes, cutoff))

    def _padded(self, slopes: torch.Tensor, attention_mask: torch.Tensor) -> FlexContext:
        return _flex_context(slopes, padded_block_mask(attention_mask.sum(dim=1), attention_mask.shape[1]))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: FlexContext) -> torch.Tensor:
        batch, length, _, _ = q.shape
        out = _compiled_flex_attention()(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), score_mod=context.score_mod,
            block_mask=context.block_mask, kernel_options=flex_kernel_options(q.dtype),
        )
        return out.transpose(1, 2).reshape(batch, length, self.hidden_size)
