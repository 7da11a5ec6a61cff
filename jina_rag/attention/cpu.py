"""Attention through PyTorch's scaled-dot-product attention (SDPA): the CPU path and the references.

``blockwise`` never stores a ``[batch, heads, L, L]`` bias: a padded batch reads the ALiBi bias as
a zero-copy view over keys in reverse order (:class:`ReversedKeyAlibi`), a packed row gets it one
query block at a time (:class:`AlibiBias`). The references materialise the whole bias: ``sdpa``
(one SDPA call, as the published remote code runs) and ``eager`` (explicit softmax; the ONNX
export traces it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jina_rag.attention.base import AttentionConfig, Batch, Batching


class AlibiBias:
    """The symmetric ALiBi bias plus masking, handed out one query block at a time.

    Masking is either key padding (``attention_mask``, a padded batch) or sequence membership
    (``sequence_ids``, several sequences packed into one row: a token sees only its own
    sequence; within it, distances in the row are distances in the sequence). Block size is
    chosen so one block holds at most ``block_elements`` scores; when the whole bias fits that
    budget it is built once and shared by every layer.
    """

    def __init__(
        self,
        slopes: torch.Tensor,
        attention_mask: torch.Tensor,
        dtype: torch.dtype,
        block_elements: int,
        sequence_ids: torch.Tensor | None = None,
    ) -> None:
        batch, length = attention_mask.shape
        heads = slopes.numel()
        self.length = length
        self.dtype = dtype
        self.device = attention_mask.device
        self.neg_slopes = (-slopes).to(self.device, torch.float32).view(1, heads, 1, 1)
        self.sequence_ids = sequence_ids
        # Masked keys get the most negative finite value: -inf would give NaN on rows that see
        # no key at all (padded queries), and pooling drops those rows anyway.
        self.masked = torch.finfo(dtype).min
        self.key_padding = torch.zeros(batch, 1, 1, length, device=self.device, dtype=torch.float32)
        self.key_padding.masked_fill_(~attention_mask.bool().view(batch, 1, 1, length), self.masked)
        rows = max(1, block_elements // max(1, batch * heads * length))
        self.block_rows = min(length, rows)
        self._cached = self._block(0, length) if self.block_rows == length else None

    def _block(self, start: int, stop: int) -> torch.Tensor:
        positions = torch.arange(self.length, device=self.device, dtype=torch.float32)
        distance = (positions[start:stop, None] - positions[None, :]).abs()
        bias = self.neg_slopes * distance + self.key_padding
        if self.sequence_ids is not None:
            other = self.sequence_ids[start:stop, None] != self.sequence_ids[None, :]
            bias = bias.masked_fill(other, self.masked)
        return bias.to(self.dtype)

    def blocks(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(start, stop, bias)`` over query rows."""
        if self._cached is not None:
            yield 0, self.length, self._cached
            return
        for start in range(0, self.length, self.block_rows):
            stop = min(self.length, start + self.block_rows)
            yield start, stop, self._block(start, stop)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
        """SDPA of ``[batch, heads, L, head_dim]`` inputs, one query block at a time."""
        out = torch.empty_like(q)
        for start, stop, bias in self.blocks():
            out[:, :, start:stop] = F.scaled_dot_product_attention(
                q[:, :, start:stop], k, v, attn_mask=bias, dropout_p=dropout
            )
        return out


class ReversedKeyAlibi:
    """The ALiBi bias of a padded batch as a zero-copy view, for keys taken in reverse order.

    With key ``j`` stored at ``j' = L - 1 - j``, the bias ``-slope * |i - j|`` depends on ``i + j'``
    alone: it is ``u[i + j']`` with ``u[t] = -slope * |t - (L - 1)|``, a Hankel matrix that is a
    strided view of one ``[heads, 2L - 1]`` vector. Scaled-dot-product attention reads it tile by
    tile, so no ``[L, L]`` block is ever written, and every layer shares it. Padded keys are masked
    through one extra head dimension (query 1, key 0 or the most negative value), since a padding
    mask cannot be added to the view without materialising it.
    """

    def __init__(self, slopes: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype) -> None:
        batch, length = attention_mask.shape
        device = attention_mask.device
        heads = slopes.numel()
        offsets = torch.arange(2 * length - 1, device=device, dtype=torch.float32) - (length - 1)
        line = (-slopes.to(device, torch.float32).view(heads, 1) * offsets.abs()).to(dtype)
        self.bias = line.as_strided((1, heads, length, length), (0, line.stride(0), 1, 1))
        self.key_flag: torch.Tensor | None = None
        if not bool(attention_mask.all()):
            padded = ~attention_mask.bool().flip(1)
            flag = torch.zeros(batch, 1, length, 1, device=device, dtype=dtype)
            self.key_flag = flag.masked_fill_(padded.view(batch, 1, length, 1), torch.finfo(dtype).min)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
        """SDPA of ``[batch, heads, L, head_dim]`` inputs over the reversed keys."""
        head_dim = q.shape[-1]
        k, v = k.flip(2), v.flip(2)
        if self.key_flag is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias, dropout_p=dropout)
        heads = q.shape[1]
        q = torch.cat([q, q.new_ones(*q.shape[:-1], 1)], dim=-1)
        k = torch.cat([k, self.key_flag.expand(-1, heads, -1, -1)], dim=-1)
        v = torch.cat([v, v.new_zeros(*v.shape[:-1], 1)], dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias, dropout_p=dropout, scale=head_dim**-0.5)
        return out[..., :head_dim]


@dataclass
class BiasContext:
    """A batch's ALiBi bias and the attention dropout probability."""

    bias: AlibiBias | ReversedKeyAlibi
    dropout: float


class BlockwiseAttention:
    """``blockwise``: SDPA reading the bias as a view (padded batches) or per query block (packed rows)."""

    name = "blockwise"

    def __init__(self, config: AttentionConfig) -> None:
        self.hidden_size = config.hidden_size
        self.block_elements = config.block_elements

    def batching(self, device: torch.device, dtype: torch.dtype) -> Batching:
        return Batching(self.name)

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> BiasContext:
        if batch.sequence_ids is None:
            return BiasContext(ReversedKeyAlibi(slopes, batch.attention_mask, x.dtype), batch.dropout)
        return BiasContext(self._bias(x, slopes, batch), batch.dropout)

    def _bias(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> AlibiBias:
        """The bias of a padded batch or, every key real, of a packed row."""
        mask = batch.attention_mask if batch.sequence_ids is None else torch.ones_like(batch.sequence_ids)[None]
        return AlibiBias(slopes, mask, x.dtype, self.block_elements, batch.sequence_ids)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: BiasContext) -> torch.Tensor:
        out = context.bias.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), context.dropout)
        return self._merge_heads(out)

    def _merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """``[batch, heads, L, head_dim]`` -> ``[batch, L, hidden]``."""
        batch, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(batch, length, self.hidden_size)


class SdpaAttention(BlockwiseAttention):
    """``sdpa``, a reference: the whole ``[batch, heads, L, L]`` bias in one block, one SDPA call."""

    name = "sdpa"

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__(config)
        self.block_elements = 1 << 62

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> BiasContext:
        return BiasContext(self._bias(x, slopes, batch), batch.dropout)


class EagerAttention(SdpaAttention):
    """``eager``, a reference: the whole bias and an explicit softmax (what the ONNX export traces)."""

    name = "eager"

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__(config)
        self.head_dim = config.head_dim

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: BiasContext) -> torch.Tensor:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        ((_, _, bias),) = context.bias.blocks()
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        probs = scores.softmax(-1)
        if context.dropout:
            probs = F.dropout(probs, context.dropout)
        return self._merge_heads(probs @ v)
