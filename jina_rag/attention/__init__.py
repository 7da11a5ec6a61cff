"""How JinaBERT's attention runs: one backend protocol (:mod:`.base`) and a registry of backends.

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

from jina_rag.attention import auto, cpu, flash, flex
from jina_rag.attention.auto import resolve
from jina_rag.attention.base import Attend, AttentionBackend, AttentionConfig, Batch, Batching, packed_offsets
from jina_rag.errors import InvalidInputError

Factory = Callable[[AttentionConfig], AttentionBackend]

_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make ``attn_implementation=name`` build its backend as ``factory(config)``."""
    _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
    """The registered backends' names."""
    return tuple(_FACTORIES)


def create(name: str, config: AttentionConfig) -> AttentionBackend:
    """The backend registered as ``name``, built for ``config``."""
    if name not in _FACTORIES:
        raise InvalidInputError(f"unknown attn_implementation {name!r}: use one of {', '.join(names())}")
    return _FACTORIES[name](config)


register("auto", auto.AutoAttention)
register("blockwise", cpu.BlockwiseAttention)
register("eager", cpu.EagerAttention)
register("sdpa", cpu.SdpaAttention)
register("flex", flex.FlexAttention)
register("flash", flash.FlashAttention)

__all__ = [
    "Attend", "AttentionBackend", "AttentionConfig", "Batch", "Batching", "Factory", "create", "names",
    "packed_offsets", "register", "resolve",
]
