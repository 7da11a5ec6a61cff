"""``auto``: FlexAttention where it runs (CUDA), else the blockwise SDPA path; on CUDA, FlashAttention-4
for packed rows holding a long sequence, where it is installed and faster."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from jina_rag.attention.base import AttentionBackend, AttentionConfig, Batch, Batching
from jina_rag.attention.cpu import BlockwiseAttention
from jina_rag.attention.flash import FlashAttention, flash_alibi_available
from jina_rag.attention.flex import FlexAttention, flex_attention_available

# The shortest longest-sequence of a packed row that runs FlashAttention-4 under auto, where it beats
# FlexAttention (H200 encoder: 1.03x at 1024 tokens, 1.17x at 8192, 0.95x at 512).
FLASH_MIN_TOKENS = 1024


def resolve(requested: str, device: torch.device, config: AttentionConfig, *, dropout: float = 0.0) -> str:
    """The backend that runs ``requested`` on ``device``.

    ``auto`` is ``flex`` where FlexAttention runs (CUDA, heads of at least 16 dimensions) and no
    attention dropout is asked for (FlexAttention has none; published configs set it to 0), else
    ``blockwise``; any other name stands for itself.
    """
    if requested != "auto":
        return requested
    return "flex" if flex_attention_available(device, config.head_dim) and not dropout else "blockwise"


class AutoAttention:
    """``auto``: ``flex`` or ``blockwise`` per batch, as :func:`resolve` picks from its device; on CUDA a packed
    row that comes with ``cu_seqlens`` runs ``flash`` (callers pass them where that kernel is faster and installed)."""

    name = "auto"

    def __init__(self, config: AttentionConfig) -> None:
        self.config = config
        self.alibi_cutoff = config.alibi_cutoff
        self.backends: dict[str, AttentionBackend] = {
            "flex": FlexAttention(config), "blockwise": BlockwiseAttention(config), "flash": FlashAttention(config),
        }

    def batching(self, device: torch.device, dtype: torch.dtype) -> Batching:
        name = resolve(self.name, device, self.config)
        batching = self.backends[name].batching(device, dtype)
        # FlashAttention-4 is exact and takes 16-bit inputs only: fp32 and tile skipping stay on FlexAttention.
        if name == "flex" and self.alibi_cutoff is None and flash_alibi_available(device, dtype):
            return dataclasses.replace(batching, flash_min_tokens=FLASH_MIN_TOKENS,
                                       name=f"flex; flash for rows with a sequence of >= {FLASH_MIN_TOKENS} tokens")
        return batching

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> tuple[AttentionBackend, Any]:
        name = resolve(self.name, x.device, self.config, dropout=batch.dropout)
        if name == "flex" and batch.cu_seqlens is not None:
            name = "flash"
        backend = self.backends[name]
        return backend, backend.prepare(x, slopes, batch)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: tuple[AttentionBackend, Any]
    ) -> torch.Tensor:
        backend, inner = context
        return backend.attend(q, k, v, inner)
