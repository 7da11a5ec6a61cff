"""How JinaBERT's attention runs: one backend protocol and a registry of backends.

Every backend computes the same thing, softmax attention with the symmetric ALiBi bias
``-slope_h * |i - j|`` over a padded batch (keys masked by ``attention_mask``) or over one packed
row (a token sees only its own sequence), and none stores a ``[batch, heads, L, L]`` bias unless
it is a reference. The model builds its backend once, from ``attn_implementation``; per batch it
calls :meth:`AttentionBackend.prepare` and each layer calls :meth:`AttentionBackend.attend`. The
encoder asks the same backend how to batch on its device (:meth:`AttentionBackend.batching`).

Built in: ``auto`` (FlexAttention on CUDA, else blockwise; :mod:`.auto`), ``blockwise`` and the
references ``eager`` and ``sdpa`` (:mod:`.cpu`), ``flex`` (:mod:`.flex`) and ``flash``
(FlashAttention-4, :mod:`.flash`). Adding a backend is one module and one :func:`register` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from jina_rag.errors import InvalidInputError

if TYPE_CHECKING:
    from jina_rag.modeling import JinaBertConfig

# One layer's attention for the batch at hand: q, k, v ``[batch, L, heads, head_dim]`` in,
# ``[batch, L, heads * head_dim]`` out.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionOptions:
    """Settings a backend may use; each takes the ones it understands."""

    # blockwise over packed rows: at most this many scores per query block.
    block_elements: int = 1 << 24
    # flex over packed rows: skip key tiles whose ALiBi penalty is at least this many logits
    # (flex.ALIBI_CUTOFF); None computes every tile (exact).
    alibi_cutoff: float | None = None


@dataclass
class Batch:
    """One forward's batch as attention sees it: a padded batch or one packed row (batch 1)."""

    attention_mask: torch.Tensor | None = None  # a padded batch: [batch, L], 0 for padding
    sequence_ids: torch.Tensor | None = None  # a packed row: [L], the sequence of each token, non-decreasing
    cu_seqlens: torch.Tensor | None = None  # a packed row: int32 offsets of each run of ids, where the caller found them
    dropout: float = 0.0  # the attention dropout probability (0 outside training)


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
        offsets = flash.packed_offsets(sequence_ids)
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


Factory = Callable[["JinaBertConfig", AttentionOptions], AttentionBackend]

_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make ``attn_implementation=name`` build its backend as ``factory(config, options)``."""
    _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
    """The registered backends' names."""
    return tuple(_FACTORIES)


def create(name: str, config: JinaBertConfig, options: AttentionOptions | None = None) -> AttentionBackend:
    """The backend registered as ``name``, for a model of ``config``."""
    if name not in _FACTORIES:
        raise InvalidInputError(f"unknown attn_implementation {name!r}: use one of {', '.join(names())}")
    return _FACTORIES[name](config, options or AttentionOptions())


def resolve(requested: str, device: torch.device, config: JinaBertConfig, *, dropout: float = 0.0) -> str:
    """The backend that runs ``requested`` on ``device``.

    ``auto`` is ``flex`` where FlexAttention runs (CUDA, heads of at least 16 dimensions) and no
    attention dropout is asked for (FlexAttention has none; published configs set it to 0), else
    ``blockwise``; any other name stands for itself.
    """
    if requested != "auto":
        return requested
    return "flex" if flex.flex_attention_available(device, config.head_dim) and not dropout else "blockwise"


# The built-in backends import the names above, so they come last.
from jina_rag.attention import auto, cpu, flash, flex  # noqa: E402

register("auto", auto.AutoAttention)
register("blockwise", cpu.BlockwiseAttention)
register("eager", cpu.EagerAttention)
register("sdpa", cpu.SdpaAttention)
register("flex", flex.FlexAttention)
register("flash", flash.FlashAttention)
