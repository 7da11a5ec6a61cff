"""``auto``: FlexAttention where it runs (CUDA), else the blockwise SDPA path; on CUDA, FlashAttention-4
for packed rows holding a long sequence, where it is installed and faster."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from jina_rag.attention import AttentionBackend, AttentionOptions, Batch, Batching, resolve
from jina_rag.attention.cpu import BlockwiseAttention
from jina_rag.attention.flash import flash_alibi_available
from jina_rag.attention.flex import FlexAttention

if TYPE_CHECKING:
    from jina_rag.modeling import JinaBertConfig

# The shortest longest-sequence of a packed row that runs FlashAttention-4 under auto, where it beats
# FlexAttention (H200 encoder: 1.03x at 1024 tokens, 1.17x at 8192, 0.95x at 512).
FLASH_MIN_TOKENS = 1024


class AutoAttention:
    """``auto``: picks ``flex`` or ``blockwise`` per batch from its device (:func:`jina_rag.attention.resolve`)."""

    name = "auto"

    def __init__(self, config: JinaBertConfig, options: AttentionOptions) -> None:
        self.config = config
        self.alibi_cutoff = options.alibi_cutoff
        self.backends: dict[str, AttentionBackend] = {
            "flex": FlexAttention(config, options), "blockwise": BlockwiseAttention(config, options),
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
        backend = self.backends[resolve(self.name, x.device, self.config, dropout=batch.dropout)]
        return backend, backend.prepare(x, slopes, batch)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: tuple[AttentionBackend, Any]
    ) -> torch.Tensor:
        backend, inner = context
        return backend.attend(q, k, v, inner)
