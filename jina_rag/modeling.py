"""JinaBERT (Jina Embeddings v2): a BERT with symmetric ALiBi, GEGLU and post-LayerNorm.

One file for the model, in the spirit of Hugging Face's modeling files and nanoGPT's model.py:
the config, one module per block and an explicit forward. Weight names follow the published
``jinaai/jina-embeddings-v2-*`` checkpoints so their ``state_dict`` loads as it is.

How attention runs (the ALiBi bias, masks, packed rows, kernels) is the attention backend's
business (:mod:`jina_rag.attention`): the model builds one from ``attn_implementation``, asks it
to prepare each batch, and each layer's attention is one call into it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jina_rag import attention
from jina_rag.attention import Attend, AttentionBackend, AttentionConfig, Batch
from jina_rag.errors import InvalidInputError
from jina_rag.fused_geglu import fused_geglu, fused_geglu_available, geglu_reference

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

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim)

    def forward(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        # q, k, v stay in the projections' layout [batch, L, heads, head_dim]: each backend lays
        # out heads as its kernel wants (FlashAttention-4 takes this one, SDPA and flex transpose).
        return attend(self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x)))


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

    def forward(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        return self.output(self.self(x, attend), x)


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

    def forward(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        return self.mlp(self.attention(x, attend))


class JinaBertEncoder(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, attend)
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
        attn_implementation: str = "auto",
        attention_block_elements: int = 1 << 24,
        alibi_cutoff: float | None = None,
    ) -> None:
        """``attn_implementation`` names the attention backend (:func:`jina_rag.attention.create`);
        ``attention_block_elements`` and ``alibi_cutoff`` are its options (:class:`~jina_rag.attention.AttentionConfig`)."""
        super().__init__()
        self.config = config
        self.attention: AttentionBackend = attention.create(attn_implementation, AttentionConfig(
            config.num_attention_heads, config.head_dim, attention_block_elements, alibi_cutoff))
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.register_buffer("alibi_slopes", alibi_slopes(config.num_attention_heads), persistent=False)
        self.apply(self._init_weights)

    def _attend(self, x: torch.Tensor, **rows: torch.Tensor | None) -> Attend:
        """The batch's attention as each layer calls it, prepared once by the backend."""
        dropout = self.config.attention_probs_dropout_prob if self.training else 0.0
        context = self.attention.prepare(x, self.alibi_slopes, Batch(**rows, dropout=dropout))
        return functools.partial(self.attention.attend, context=context)

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
        return self.encoder(x, self._attend(x, attention_mask=attention_mask))

    def forward_packed(
        self, input_ids: torch.Tensor, sequence_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token states ``[T, H]`` of sequences packed back to back into one row of ``T`` tokens.

        ``sequence_ids[t]`` names the sequence token ``t`` belongs to and must not decrease along
        the row; a token attends only within its sequence, so no work is spent on padding
        (trailing filler gets ids of its own). ``cu_seqlens`` (int32, where each id's run starts,
        then ``T``: :func:`jina_rag.attention.packed_offsets` of the ids) runs the row through
        FlashAttention-4 under ``auto`` too (give it only where that kernel is installed);
        ``flash`` otherwise finds it from ``sequence_ids`` with one host sync.
        """
        x = self.embeddings(input_ids[None])
        return self.encoder(x, self._attend(x, sequence_ids=sequence_ids, cu_seqlens=cu_seqlens))[0]

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
