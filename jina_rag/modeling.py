"""JinaBERT (Jina Embeddings v2): a BERT with symmetric ALiBi, GEGLU and post-LayerNorm.

One file for the model, in the spirit of Hugging Face's modeling files and nanoGPT's model.py:
the config, one module per block and an explicit forward. Weight names follow the published
``jinaai/jina-embeddings-v2-*`` checkpoints so their ``state_dict`` loads as it is.

Attention never stores a ``[batch, heads, L, L]`` bias: the ALiBi penalty is data-independent,
so on CPU scaled-dot-product attention reads it as a zero-copy view over keys in reverse order
(per query block over packed rows), and on CUDA FlexAttention computes it inside the kernel.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from jina_rag.fused_geglu import fused_geglu, fused_geglu_available, geglu_reference
from jina_rag.errors import InvalidInputError

logger = logging.getLogger(__name__)

# auto: flex on CUDA, else blockwise (SDPA reading the bias as a zero-copy view), and a packed row given
# its cu_seqlens runs FlashAttention-4 (the caller passes them where that kernel is faster and installed);
# flash: FlashAttention-4's varlen kernel over every packed row (jina_rag.flash_alibi; padded batches then
# run flex); the references
# materialise the whole [batch, heads, L, L] bias: eager (explicit softmax) and sdpa (one SDPA call,
# as the published remote code runs).
AttentionImpl = Literal["auto", "blockwise", "flex", "flash", "eager", "sdpa"]

# Keys the published config.json carries; written back so our folders look like the published ones.
_PUBLISHED_CONFIG_DEFAULTS: dict[str, Any] = {
    "architectures": ["JinaBertForMaskedLM"],
    "auto_map": {
        "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
        "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
        "AutoModelForMaskedLM": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForMaskedLM",
    },
    "model_type": "bert",
    "position_embedding_type": "alibi",
    "feed_forward_type": "geglu",
    "emb_pooler": "mean",
    "hidden_act": "gelu",
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "initializer_range": 0.02,
    "model_max_length": 8192,
    "torch_dtype": "float32",
    "use_cache": True,
}


@dataclass
class JinaBertConfig:
    """Hyper-parameters of a JinaBERT encoder, read from and written to ``config.json``."""

    vocab_size: int = 30528
    hidden_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 8192
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # Keys of the published config we do not interpret, kept so a round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for setting in fields(self):
            value = getattr(self, setting.name)
            if setting.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidInputError(f"{setting.name} must be an integer, got {value!r}")
            if setting.type in ("float", float) and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise InvalidInputError(f"{setting.name} must be a number, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise InvalidInputError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JinaBertConfig:
        """Build a config from a published ``config.json`` dict; refuses other architectures."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"config.json holds a JSON {type(data).__name__}, not an object of settings")
        position = data.get("position_embedding_type", "alibi")
        feed_forward = data.get("feed_forward_type", "geglu")
        if position != "alibi" or not str(feed_forward).startswith("geglu"):
            raise InvalidInputError(
                "not a JinaBERT config: expected position_embedding_type='alibi' and "
                f"feed_forward_type='geglu', got {position!r} and {feed_forward!r}"
            )
        if data.get("hidden_act", "gelu") != "gelu":
            raise InvalidInputError(f"unsupported hidden_act {data['hidden_act']!r}: JinaBERT uses 'gelu'")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> JinaBertConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        data = {**_PUBLISHED_CONFIG_DEFAULTS, **self.extra}
        data.update({k: v for k, v in asdict(self).items() if k != "extra"})
        return dict(sorted(data.items()))

    def to_json_file(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    def num_parameters(self, *, with_embeddings: bool = True) -> int:
        """Parameter count of the encoder, computed from the shapes."""
        h, i = self.hidden_size, self.intermediate_size
        per_layer = 4 * (h * h + h) + 2 * h + 2 * i * h + (i * h + h) + 2 * h
        embeddings = (self.vocab_size + self.type_vocab_size) * h + 2 * h
        return per_layer * self.num_hidden_layers + (embeddings if with_embeddings else 0)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per real token: 2·(4H² + 3·I·H)·layers + 4·L·H·layers."""
        h, i, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        return 2 * (4 * h * h + 3 * i * h) * n + 4 * seq_len * h * n


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi slopes: 2^(-8k/n) for a power of two n, else the interleaved extension."""

    def power_of_two_slopes(n: int) -> list[float]:
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two_slopes(closest)
    if closest != num_heads:
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


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


# FlexAttention's kernels need at least this many dimensions per head.
FLEX_MIN_HEAD_DIM = 16


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


@dataclass
class AttentionContext:
    """What every layer's attention needs for one batch, built once per forward."""

    impl: str
    bias: AlibiBias | None = None  # eager, and blockwise over packed rows
    reversed_keys: ReversedKeyAlibi | None = None  # blockwise over padded rows
    block_mask: Any = None  # flex
    score_mod: Callable[..., torch.Tensor] | None = None  # flex
    cu_seqlens: torch.Tensor | None = None  # flash: int32 [sequences + 1] offsets into the packed row


# Queries and keys per block-mask tile: FlexAttention's sparse block size.
FLEX_BLOCK = 128


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


def _flex_context(slopes: torch.Tensor, block_mask: Any) -> AttentionContext:
    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    return AttentionContext("flex", block_mask=block_mask, score_mod=alibi)


def padded_block_mask(lengths: torch.Tensor, length: int) -> Any:
    """FlexAttention block mask of a right-padded batch: each query sees its row's real keys."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]

    return create_block_mask(mask_mod, lengths.shape[0], None, length, length, device=lengths.device, _compile=True)


# ALiBi tile skipping: between a query tile and a key tile of FLEX_BLOCK tokens, |i - j| is at
# least dmin = max(0, |qb - kb| * FLEX_BLOCK - (FLEX_BLOCK - 1)). Every query still sees its own
# (diagonal) key, so where slope_h * dmin >= ALIBI_CUTOFF each key of that tile has softmax weight
# <= exp(s_ij - s_ii - ALIBI_CUTOFF) relative to the diagonal key: at 64 logits (e^-64 ~ 1.6e-28,
# far below bf16's and even fp32's resolution for any realistic score spread) the tile is skipped
# for that head. At L = 8192 with 12 heads about 35% of the tiles remain.
ALIBI_CUTOFF = 64.0


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


class JinaBertEmbeddings(nn.Module):
    """Word and token-type embeddings, LayerNorm and dropout; ALiBi replaces positions."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class JinaBertSelfAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        if context.impl == "flash":
            from jina_rag.flash_alibi import flash_alibi_attention

            # One packed row: [T, heads, head_dim] is the linear layers' own layout, no transposes.
            _, length, hidden = x.shape
            q, k, v = (proj(x).view(length, self.num_heads, self.head_dim) for proj in (self.query, self.key, self.value))
            return flash_alibi_attention(q, k, v, context.cu_seqlens).view(1, length, hidden)
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        dropout = self.dropout_prob if self.training else 0.0
        if context.impl == "flex":
            out = _compiled_flex_attention()(
                q, k, v, score_mod=context.score_mod, block_mask=context.block_mask,
                kernel_options=flex_kernel_options(q.dtype),
            )
        elif context.impl == "eager":
            # The reference path: one block holding the whole bias, explicit softmax.
            ((_, _, bias),) = context.bias.blocks()
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
            out = F.dropout(scores.softmax(-1), dropout, self.training) @ v
        elif context.reversed_keys is not None:
            out = context.reversed_keys.attend(q, k, v, dropout)
        else:
            out = torch.empty_like(q)
            for start, stop, bias in context.bias.blocks():
                out[:, :, start:stop] = F.scaled_dot_product_attention(
                    q[:, :, start:stop], k, v, attn_mask=bias, dropout_p=dropout
                )
        batch, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)


class JinaBertSelfOutput(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context_layer: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context_layer)) + residual)


class JinaBertAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.self = JinaBertSelfAttention(config)
        self.output = JinaBertSelfOutput(config)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        return self.output(self.self(x, context), x)


class JinaBertGLUMLP(nn.Module):
    """GEGLU feed-forward: ``wo(gelu(gate) * up) + x``, then LayerNorm.

    ``fused`` (default True) runs the gated projection and its activation as one Triton kernel
    where :func:`jina_rag.fused_geglu.fused_geglu_available` says it can (CUDA inference in
    bf16/fp16); elsewhere, and with ``fused = False``, the plain layers run.
    """

    fused: bool = True

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.gated_layers.weight
        hidden = fused_geglu(x, weight) if self.fused and fused_geglu_available(x, weight) else geglu_reference(x, weight)
        return self.layernorm(self.dropout(self.wo(hidden)) + x)


class JinaBertLayer(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.attention = JinaBertAttention(config)
        self.mlp = JinaBertGLUMLP(config)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        return self.mlp(self.attention(x, context))


class JinaBertEncoder(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, context)
        return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real tokens ([CLS] and [SEP] included), in fp32."""
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1.0)


def segment_mean(hidden: torch.Tensor, sequence_ids: torch.Tensor, num_sequences: int) -> torch.Tensor:
    """Mean of packed token states ``[T, H]`` per sequence id, in fp32; ids >= num_sequences are filler."""
    ids = sequence_ids.clamp(max=num_sequences)
    sums = hidden.new_zeros(num_sequences + 1, hidden.shape[-1], dtype=torch.float32)
    sums.index_add_(0, ids, hidden.to(torch.float32))
    # Counted with index_add_ too: torch.bincount would wait for the device (it reads the max id).
    counts = hidden.new_zeros(num_sequences + 1, dtype=torch.float32)
    counts.index_add_(0, ids, hidden.new_ones(ids.shape[0], dtype=torch.float32))
    return (sums / counts.clamp(min=1.0)[:, None])[:num_sequences]


class JinaBertPreTrainedModel(nn.Module):
    config: JinaBertConfig

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class JinaBertModel(JinaBertPreTrainedModel):
    """The encoder: token ids in, token states out (``pool`` gives the mean-pooled embedding)."""

    def __init__(
        self,
        config: JinaBertConfig,
        *,
        attn_implementation: AttentionImpl = "auto",
        attention_block_elements: int = 1 << 24,
        alibi_cutoff: float | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.attn_implementation = attn_implementation
        self.attention_block_elements = attention_block_elements
        # FlexAttention over packed rows only: skip key tiles whose ALiBi penalty is at least this
        # many logits (ALIBI_CUTOFF); None computes every tile (exact).
        self.alibi_cutoff = alibi_cutoff
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.register_buffer("alibi_slopes", alibi_slopes(config.num_attention_heads), persistent=False)
        self.apply(self._init_weights)

    def _attention_impl(self, device: torch.device) -> str:
        impl = self.attn_implementation
        # FlexAttention has no attention dropout; published configs set it to 0.
        needs_dropout = self.training and self.config.attention_probs_dropout_prob > 0
        head_dim = self.config.head_dim
        if impl == "auto":
            return "flex" if flex_attention_available(device, head_dim) and not needs_dropout else "blockwise"
        if impl in ("flex", "flash") and not flex_attention_available(device, head_dim):
            raise RuntimeError(
                f"attn_implementation={impl!r} needs CUDA, torch.nn.attention.flex_attention and heads of at least "
                f"{FLEX_MIN_HEAD_DIM} dimensions (this model: {head_dim} on {device}); use 'auto' or 'blockwise'"
            )
        if impl == "flash":
            # Checked in eager calls; a compiled forward is checked by its caller (TorchBackend), since
            # the package lookup would break the traced graph.
            if not torch.compiler.is_compiling():
                from jina_rag.flash_alibi import require_flash_alibi

                require_flash_alibi(device)
            if needs_dropout:
                raise RuntimeError("attn_implementation='flash' has no attention dropout: train with 'auto'")
        return impl

    def _context(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor,
        sequence_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> AttentionContext:
        impl = self._attention_impl(x.device)
        slopes = self.alibi_slopes.to(x.device)
        length = attention_mask.shape[1]
        if sequence_ids is not None and (impl == "flash" or (impl == "flex" and cu_seqlens is not None)):
            if cu_seqlens is None:  # found on the device: one host sync (callers in a hot loop pass it)
                counts = torch.unique_consecutive(sequence_ids, return_counts=True)[1]
                cu_seqlens = F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)
            return AttentionContext("flash", cu_seqlens=cu_seqlens)
        if impl in ("flex", "flash"):
            if sequence_ids is not None:
                cutoff = self.alibi_cutoff
                return _flex_context(slopes, packed_block_mask(sequence_ids, None if cutoff is None else slopes, cutoff))
            return _flex_context(slopes, padded_block_mask(attention_mask.sum(dim=1), length))
        if impl == "blockwise" and sequence_ids is None:
            return AttentionContext(impl, reversed_keys=ReversedKeyAlibi(slopes, attention_mask, x.dtype))
        block_elements = self.attention_block_elements if impl == "blockwise" else 1 << 62  # references: one block
        return AttentionContext(impl, bias=AlibiBias(slopes, attention_mask, x.dtype, block_elements, sequence_ids))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token states ``[batch, L, H]`` of a right-padded batch."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        return self.encoder(x, self._context(x, attention_mask))

    def forward_packed(
        self, input_ids: torch.Tensor, sequence_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token states ``[T, H]`` of sequences packed back to back into one row of ``T`` tokens.

        ``sequence_ids[t]`` names the sequence token ``t`` belongs to and must not decrease along
        the row; a token attends only within its sequence, so no work is spent on padding
        (trailing filler gets ids of its own). ``cu_seqlens`` (int32, where each id's run starts,
        then ``T``: :func:`jina_rag.flash_alibi.packed_offsets` of the ids) runs the row through
        FlashAttention-4 under ``auto`` and ``flex`` too (give it only where that kernel is
        installed); ``flash`` otherwise finds it from ``sequence_ids`` with one host sync.
        """
        x = self.embeddings(input_ids[None])
        context = self._context(x, torch.ones_like(input_ids)[None], sequence_ids, cu_seqlens)
        return self.encoder(x, context)[0]

    def pool(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean-pooled sentence embeddings ``[batch, H]`` in fp32 (not normalised)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return mean_pool(self(input_ids, attention_mask, token_type_ids), attention_mask)

    def pool_packed(self, input_ids: torch.Tensor, sequence_ids: torch.Tensor, num_sequences: int) -> torch.Tensor:
        """Mean-pooled embeddings ``[num_sequences, H]`` (fp32) of a packed row; ids >= num_sequences are filler."""
        return segment_mean(self.forward_packed(input_ids, sequence_ids), sequence_ids, num_sequences)


class JinaBertPredictionHead(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform.LayerNorm(F.gelu(self.transform.dense(x)))
        return self.decoder(x) + self.bias


class JinaBertForMaskedLM(JinaBertPreTrainedModel):
    """The encoder with BERT's MLM head; the decoder is tied to the word embeddings."""

    def __init__(self, config: JinaBertConfig, **model_kwargs: Any) -> None:
        super().__init__()
        self.config = config
        self.bert = JinaBertModel(config, **model_kwargs)
        self.cls = nn.Module()
        self.cls.predictions = JinaBertPredictionHead(config)
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Return ``(loss, logits)``; the loss (labels of -100 ignored) is None without labels.

        With labels, logits are computed for the labelled positions only ``[n_masked, vocab]``,
        which saves the vocabulary projection of every unmasked token. ``masked_positions`` (flat
        indices into the batch's tokens, as ``training.mlm.masked_batch`` gives them; entries whose
        label is -100 are filler) names those positions ahead of time: then every shape is known
        without reading the labels back to the host, so a compiled model is one graph and the GPU
        never waits for the CPU. Without it they are found from ``labels`` (one host sync).
        """
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        if labels is None:
            return None, self.cls.predictions(hidden)
        if masked_positions is None:
            masked_positions = (labels.flatten() != -100).nonzero().squeeze(1)
        logits = self.cls.predictions(hidden.flatten(0, 1)[masked_positions])
        loss = F.cross_entropy(logits.float(), labels.flatten()[masked_positions], ignore_index=-100)
        return loss, logits
