"""The JinaBERT model against an independent, straightforward reference of the spec."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from jina_rag import CheckpointError, JinaBertConfig, JinaBertForMaskedLM, JinaBertModel, alibi_slopes, load_model
from jina_rag.loading import read_state_dict

from conftest import write_published_checkpoint

# From the spec: 8 heads: 2^-1 ... 2^-8; 12 heads: those, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
SPEC_SLOPES = {
    8: [2.0**-k for k in range(1, 9)],
    12: [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5],
}


def reference_forward(state: dict, config: dict, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The spec's forward pass written plainly: materialised bias, explicit softmax, fp64."""
    s = {k.removeprefix("bert."): v.double() for k, v in state.items()}
    heads, hidden, inter = config["num_attention_heads"], config["hidden_size"], config["intermediate_size"]
    eps = config["layer_norm_eps"]
    d = hidden // heads
    batch, length = input_ids.shape

    def ln(x, name):
        return F.layer_norm(x, (hidden,), s[f"{name}.weight"], s[f"{name}.bias"], eps)

    def linear(x, name, bias=True):
        y = x @ s[f"{name}.weight"].T
        return y + s[f"{name}.bias"] if bias else y

    x = s["embeddings.word_embeddings.weight"][input_ids] + s["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    slopes = torch.tensor(SPEC_SLOPES[heads], dtype=torch.float64)
    pos = torch.arange(length, dtype=torch.float64)
    alibi = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs()
    padding = torch.where(mask.bool(), 0.0, -1e30).double()[:, None, None, :]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (linear(x, f"{p}.attention.self.{n}").view(batch, length, heads, d).transpose(1, 2) for n in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + alibi + padding
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        x = ln(linear(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        g = linear(x, f"{p}.mlp.gated_layers", bias=False)
        h = F.gelu(g[..., :inter]) * g[..., inter:]
        x = ln(linear(h, f"{p}.mlp.wo") + x, f"{p}.mlp.layernorm")
    m = mask.double()[..., None]
    return (x * m).sum(1) / m.sum(1)


def batch_with_padding(lengths, vocab=30000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


@pytest.mark.parametrize("heads", [8, 12])
def test_slopes_follow_the_spec(heads):
    assert torch.allclose(alibi_slopes(heads), torch.tensor(SPEC_SLOPES[heads]))


@pytest.mark.parametrize("heads", [8, 12])
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
@pytest.mark.parametrize("prefix", ["", "bert."])
def test_published_checkpoint_matches_reference(tmp_path, heads, weights, prefix):
    folder = write_published_checkpoint(tmp_path / "m", heads=heads, weights=weights, prefix=prefix, hidden_size=96)
    config = json.loads((folder / "config.json").read_text())
    model = load_model(folder)
    ids, mask = batch_with_padding([37, 5, 20])
    with torch.no_grad():
        ours = model.pool(ids, mask)
    expected = reference_forward(read_state_dict(folder), config, ids, mask)
    assert (ours.double() - expected).abs().max().item() < 1e-5


def test_skipped_missing_wrong_shape_and_foreign_keys(tmp_path, caplog):
    folder = write_published_checkpoint(tmp_path / "m")
    with caplog.at_level("DEBUG", logger="jina_rag.loading"):
        load_model(folder)
    assert "pooler.dense.weight" in caplog.text and "embeddings.position_ids" in caplog.text

    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    missing = {k: v for k, v in state.items() if k != "encoder.layer.1.mlp.wo.bias"}
    save_file(missing, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="encoder.layer.1.mlp.wo.bias"):
        load_model(folder)

    wrong = dict(state, **{"encoder.layer.0.attention.self.query.weight": torch.zeros(64, 32)})
    save_file(wrong, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"encoder.layer.0.attention.self.query.weight.*\(64, 32\)"):
        load_model(folder)

    foreign = dict(state, **{"encoder.layer.0.attention.self.layer_norm_q.weight": torch.ones(64)})
    save_file(foreign, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="layer_norm_q"):
        load_model(folder)


def test_non_jina_config_is_refused(tmp_path):
    folder = write_published_checkpoint(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["position_embedding_type"] = "absolute"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a JinaBERT config"):
        load_model(folder)


def test_config_round_trip_keeps_published_keys():
    data = {"hidden_size": 96, "num_attention_heads": 12, "auto_map": {"AutoModel": "x"}, "transformers_version": "4.26.0"}
    config = JinaBertConfig.from_dict(data)
    out = config.to_dict()
    assert out["auto_map"] == {"AutoModel": "x"} and out["transformers_version"] == "4.26.0"
    assert out["model_type"] == "bert" and out["position_embedding_type"] == "alibi"
    assert out["feed_forward_type"] == "geglu" and out["emb_pooler"] == "mean"
    assert JinaBertConfig.from_dict(out).to_dict() == out


def test_block_size_and_padding_do_not_change_results(checkpoint):
    model = load_model(checkpoint)
    lengths = [61, 17, 40]
    ids, mask = batch_with_padding(lengths, seed=1)
    # Query blocks remain on packed rows only (padded batches read the bias as one view).
    packed = torch.cat([ids[i, :n] for i, n in enumerate(lengths)])
    sequence_ids = torch.tensor(sum(([i] * n for i, n in enumerate(lengths)), []))
    five_rows = load_model(checkpoint, attention_block_elements=8 * len(packed) * 5)  # five query rows per block
    with torch.no_grad():
        padded = model(ids, mask)
        alone = model(ids[1:2, :17], mask[1:2, :17])
        whole = model.forward_packed(packed, sequence_ids)
        blocked = five_rows.forward_packed(packed, sequence_ids)
    assert (whole - blocked).abs().max() < 1e-5
    assert (padded[1, :17] - alone[0]).abs().max() < 1e-5


@pytest.mark.parametrize("impl", ["blockwise", "sdpa"])
def test_eager_equals_the_sdpa_paths(checkpoint, impl):
    ids, mask = batch_with_padding([50, 33])
    eager = load_model(checkpoint, attn_implementation="eager")
    other = load_model(checkpoint, attn_implementation=impl)
    with torch.no_grad():
        assert (eager.pool(ids, mask) - other.pool(ids, mask)).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_fp32(checkpoint, dtype):
    ids, mask = batch_with_padding([300, 120], seed=2)
    with torch.no_grad():
        full = load_model(checkpoint).pool(ids, mask)
        half = load_model(checkpoint, dtype=dtype).pool(ids, mask)
    assert half.dtype == torch.float32  # pooling is done in fp32
    assert F.cosine_similarity(full, half).min() >= 0.999


class LargestOutput(TorchDispatchMode):
    """Records the largest memory any operator's output holds (its storage: a view allocates nothing)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.untyped_storage().nbytes())
        return out


def largest_allocation(model, length):
    ids, mask = batch_with_padding([length], seed=3)
    with torch.no_grad(), LargestOutput() as probe:
        model(ids, mask)
    return probe.largest


def test_attention_memory_is_linear_in_length(checkpoint):
    blockwise = load_model(checkpoint)
    growth = largest_allocation(blockwise, 4096) / largest_allocation(blockwise, 2048)
    assert growth <= 2.1, growth  # O(L): doubling the length at most doubles the largest tensor
    for impl in ("eager", "sdpa"):  # the references materialise the bias: O(L^2)
        reference = load_model(checkpoint, attn_implementation=impl)
        assert largest_allocation(reference, 4096) / largest_allocation(reference, 2048) >= 3.9, impl


def test_dropout_only_in_training(checkpoint):
    model = load_model(checkpoint)
    ids, mask = batch_with_padding([30])
    with torch.no_grad():
        assert torch.equal(model(ids, mask), model(ids, mask))
        model.train()
        assert not torch.allclose(model(ids, mask), model(ids, mask))


def test_masked_lm_head_is_tied_and_trains(tmp_path):
    folder = write_published_checkpoint(tmp_path / "m", with_head=True, prefix="bert.")
    mlm = load_model(folder, JinaBertForMaskedLM)
    assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    ids, mask = batch_with_padding([20, 12])
    labels = torch.full_like(ids, -100)
    labels[0, 3] = ids[0, 3]
    labels[1, 5] = ids[1, 5]
    mlm.train()
    loss, logits = mlm(ids, mask, labels=labels)
    assert logits.shape == (2, 30528) and loss.item() > 0
    loss.backward()
    assert mlm.bert.embeddings.word_embeddings.weight.grad is not None
    # The encoder alone loads from the same MLM checkpoint, skipping the head.
    encoder = load_model(folder, JinaBertModel)
    with torch.no_grad():
        assert torch.allclose(encoder(ids, mask), mlm.eval().bert(ids, mask), atol=1e-6)


def test_packed_row_equals_sequences_run_alone(checkpoint):
    model = load_model(checkpoint)
    lengths = [40, 7, 19]
    ids, mask = batch_with_padding(lengths, seed=4)
    packed = torch.cat([ids[i, :n] for i, n in enumerate(lengths)] + [torch.zeros(6, dtype=torch.long)])
    sequence_ids = torch.tensor(sum(([i] * n for i, n in enumerate(lengths)), []) + [3] * 6)
    with torch.no_grad():
        expected = model.pool(ids, mask)
        got = model.pool_packed(packed, sequence_ids, len(lengths))
    assert (expected - got).abs().max() < 1e-5


@pytest.mark.parametrize("lengths", [[40, 7, 19], [128, 128, 300], [1000, 5, 130, 127, 1], [2048]])
def test_packed_block_mask_equals_the_mask_evaluated_on_every_pair(lengths):
    from torch.nn.attention.flex_attention import create_block_mask

    from jina_rag.batching import pack_batch
    from jina_rag.attention.flex import packed_block_mask

    width = 2048 if sum(lengths) <= 2048 else 4096
    _, sequence_ids = pack_batch([[1] * n for n in lengths], width, 0)
    sequence_ids = torch.from_numpy(sequence_ids)

    def same_sequence(b, h, q_idx, kv_idx):
        return sequence_ids[q_idx] == sequence_ids[kv_idx]

    expected = create_block_mask(same_sequence, 1, None, width, width, device="cpu")
    got = packed_block_mask(sequence_ids)

    def blocks(num, indices):  # the set of (q block, kv block) pairs a BlockMask lists
        return {(q, int(indices[0, 0, q, k])) for q in range(num.shape[-1]) for k in range(int(num[0, 0, q]))}

    assert blocks(got.kv_num_blocks, got.kv_indices) == blocks(expected.kv_num_blocks, expected.kv_indices)
    assert blocks(got.full_kv_num_blocks, got.full_kv_indices) == blocks(
        expected.full_kv_num_blocks, expected.full_kv_indices
    )
    assert torch.equal(got.to_dense(), expected.to_dense())


def test_segment_mean_averages_each_sequence_and_drops_filler():
    from jina_rag.modeling import segment_mean

    hidden = torch.arange(12, dtype=torch.float32).view(6, 2)
    got = segment_mean(hidden, torch.tensor([0, 0, 1, 1, 1, 2]), 2)
    assert torch.equal(got, torch.tensor([[1.0, 2.0], [6.0, 7.0]]))


def test_flex_attention_needs_heads_of_sixteen_dimensions():
    from jina_rag.attention.flex import flex_attention_available

    # Decided from the device type and head size alone: no GPU needed to check the rule.
    assert not flex_attention_available(torch.device("cuda"), head_dim=8)
    assert not flex_attention_available(torch.device("cpu"), head_dim=64)
    tiny = JinaBertModel(JinaBertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64),
                         attn_implementation="flex")
    with pytest.raises(RuntimeError, match="at least 16 dimensions"):
        tiny(torch.tensor([[2, 5, 3]]), torch.ones(1, 3, dtype=torch.long))
