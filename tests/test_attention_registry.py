"""Attention backends are registered by name: a new one is one class and one ``register`` line.

The toy backend here materialises the whole ALiBi bias and runs a plain softmax in float64; a model
loaded with it gives the default CPU path's vectors, through the model and through the encoder's
backend, which asks it how to batch.
"""

from __future__ import annotations

import math

import pytest
import torch

from jina_rag import attention, load_model
from jina_rag.attention import AttentionConfig, Batch, Batching
from jina_rag.encoder import JinaEncoder, TorchBackend
from jina_rag.errors import InvalidInputError


class Float64Attention:
    """Softmax attention with the whole ``[batch, heads, L, L]`` bias, in float64."""

    name = "float64"

    def __init__(self, config: AttentionConfig) -> None:
        self.hidden_size = config.hidden_size

    def batching(self, device: torch.device, dtype: torch.dtype) -> Batching:
        return Batching(self.name)

    def prepare(self, x: torch.Tensor, slopes: torch.Tensor, batch: Batch) -> torch.Tensor:
        positions = torch.arange(x.shape[1], dtype=torch.float64)
        bias = -slopes.double()[:, None, None] * (positions[:, None] - positions[None, :]).abs()
        if batch.sequence_ids is None:
            keys = batch.attention_mask.bool()[:, None, None, :]
        else:
            keys = (batch.sequence_ids[:, None] == batch.sequence_ids[None, :])[None, None]
        return bias.masked_fill(~keys, -math.inf)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, length, heads, head_dim = q.shape
        q, k, v = (t.transpose(1, 2).double() for t in (q, k, v))
        out = (q @ k.transpose(-1, -2) / math.sqrt(head_dim) + context).softmax(-1) @ v
        return out.transpose(1, 2).reshape(batch, length, self.hidden_size).to(torch.float32)


attention.register("float64", Float64Attention)


def test_a_registered_backend_gives_the_default_paths_vectors(checkpoint):
    default, toy = load_model(checkpoint), load_model(checkpoint, attn_implementation="float64")
    generator = torch.Generator().manual_seed(0)
    lengths = [70, 3, 41]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1000, 30000, (n,), generator=generator)
        mask[row, :n] = 1
    packed = torch.cat([ids[row, :n] for row, n in enumerate(lengths)])
    sequence_ids = torch.cat([torch.full((n,), row) for row, n in enumerate(lengths)])
    with torch.no_grad():
        expected = default.pool(ids, mask)
        assert (toy.pool(ids, mask) - expected).abs().max() < 1e-5
        assert (toy.pool_packed(packed, sequence_ids, len(lengths)) - expected).abs().max() < 1e-5

    backend = TorchBackend(toy, torch.device("cpu"))
    assert not backend.packed and backend.describe()["attention"] == "float64"
    encoder = JinaEncoder(checkpoint, device="cpu")
    sequences = encoder.tokenizer(["a short text", "a somewhat longer text about ALiBi attention"])["input_ids"]
    got, want = backend.embed(sequences), encoder.backend.embed(sequences)
    assert (got - want).abs().max() < 1e-5


def test_names_resolve_and_unknown_ones_are_refused(checkpoint):
    assert {"auto", "blockwise", "eager", "sdpa", "flex", "flash"} <= set(attention.names())
    config = AttentionConfig(num_heads=8, head_dim=8)
    assert attention.resolve("auto", torch.device("cpu"), config) == "blockwise"
    assert attention.resolve("auto", torch.device("cuda"), config) == "blockwise"  # 8-dimensional heads: no flex
    assert attention.resolve("eager", torch.device("cpu"), config) == "eager"
    assert JinaEncoder(checkpoint, device="cpu").backend.describe()["attention"] == "blockwise"
    with pytest.raises(InvalidInputError, match="unknown attn_implementation 'nope'.*blockwise"):
        load_model(checkpoint, attn_implementation="nope")
