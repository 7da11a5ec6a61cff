"""What every attention backend shares: the protocol, what a backend is built from, and the batch it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

# One layer's attention for the batch at hand: q, k, v ``[batch, L, heads, head_dim]`` in,
# ``[batch, L, heads * head_dim]`` out.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionConfig:
    """What a backend is built from: the heads' shape and the options backends may use."""

    num_heads: int
    head_dim: int
    # blockwise over packed rows: at most this many scores per query block.
    block_elements: int = 1 << 24
    # flex over packed rows: skip key tiles whose ALiBi penalty is at least this many logits
    # (flex.ALIBI_CUTOFF); None computes every tile (exact).
    alibi_cutoff: float | None = None

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim


@dataclass
class Batch:
    """One forward's batch as attention sees it: a padded batch or one packed row (batch 1)."""

    attention_mask: torch.Tensor | None = None  # a padded batch: [batch, L], 0 for padding
    sequence_ids: torch.Tensor | None = None  # a packed row: [L], the sequence of each token, non-decreasing
    cu_seqlens: torch.Tensor | None = None  # a packed row: packed_offsets of its ids, where the caller found them
    dropout: float = 0.0  # the attention dropout probability (0 outside training)


def packed_offsets(sequence_ids: np.ndarray) -> np.ndarray:
    """``cu_seqlens`` (int32) of a packed row: where each run of equal sequence ids starts, then its width.

    The ids are :func:`jina_rag.batching.pack_batch`'s, so filler splits into the same small
    blocks as under FlexAttention's document mask.
    """
    starts = np.flatnonzero(np.diff(sequence_ids)) + 1
    return np.concatenate([[0], starts, [sequence_ids.shape[0]]]).astype(np.int32)


@dataclass(frozen=True)
class Batching:
    """How an encoder feeds a backend on one device and dtype."""

    name: str  # what runs the batches, as ``describe()`` reports it
    packed: bool = False  # packed rows (``forward_packed``: cost = tokens) rather than padded batches
    alibi_cutoff: float | None = None  # the ALiBi tile cutoff packed rows run with
    # A packed row holding a sequence of at least this many tokens runs FlashAttention-4: it gets cu_seqlens.
    flash_min_tokens: int | None = None

    def cu_seqlens(self, sequence_ids: np.ndarray) -> np.ndarray | None:
        """``cu_seqlens`` to pass with a packed row, found on the host (no device sync), or None."""
        if self.flash_min_tokens is None:
            return None
        offsets = packed_offsets(sequence_ids)
        return offsets if np.diff(offsets).max() >= self.flash_min_tokens else None


class AttentionBackend(Protocol):
    """One way to run JinaBERT's attention."""

    name: str

    def batching(self, device: torch.device, dtype: torch.dtype) -> Batching:
        """How batches on ``device`` in ``dtype`` should come; a RuntimeError where this backend cannot run there."""
        ...

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> Any:
        """What every layer needs for ``batch``, built once per forward; ``x`` is the layers' input
        ``[batch, L, hidden]`` (its device and dtype count), ``slopes`` the ALiBi slopes per head."""
        ...

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: Any) -> torch.Tensor:
        """One layer's attention: q, k, v ``[batch, L, heads, head_dim]`` -> ``[batch, L, heads * head_dim]``."""
        ...
