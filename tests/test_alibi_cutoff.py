"""ALiBi tile skipping in the packed FlexAttention path: which tiles go, and what dropping them costs.

A (query tile, key tile) pair of FLEX_BLOCK tokens is dropped for head h when the ALiBi penalty of
its nearest pair of tokens, slope_h * dmin, is at least the cutoff; tiles that stay are the same
"whole" or "partial" tiles as without a cutoff.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import write_published_checkpoint

from jina_rag import InvalidInputError, JinaEncoder, alibi_slopes, load_model
from jina_rag.batching import pack_batch
from jina_rag.attention.flex import ALIBI_CUTOFF, FLEX_BLOCK, packed_block_mask


def packed_ids(lengths, width):
    _, sequence_ids = pack_batch([[1] * n for n in lengths], width, 0)
    return torch.from_numpy(sequence_ids)


def brute_force_tiles(sequence_ids, slopes, cutoff):
    """Per head, the (kept, whole) tile pairs, from every pair of tokens and plain interval distances."""
    length = sequence_ids.shape[0]
    tiles = math.ceil(length / FLEX_BLOCK)
    same = sequence_ids[:, None] == sequence_ids[None, :]
    kept = torch.zeros(len(slopes), tiles, tiles, dtype=torch.bool)
    whole = torch.zeros_like(kept)
    for q in range(tiles):
        q0, q1 = q * FLEX_BLOCK, min(length, (q + 1) * FLEX_BLOCK)
        for k in range(tiles):
            k0, k1 = k * FLEX_BLOCK, min(length, (k + 1) * FLEX_BLOCK)
            block = same[q0:q1, k0:k1]
            nearest = max(0, max(q0, k0) - (min(q1, k1) - 1))  # smallest |i - j| between the two tiles
            near = torch.tensor([float(s) * nearest < cutoff for s in slopes]) if cutoff else torch.ones(len(slopes), dtype=torch.bool)
            kept[:, q, k] = bool(block.any()) & near
            whole[:, q, k] = bool(block.all()) & near
    return kept, whole


def block_sets(num, indices, head):
    return {(q, int(indices[0, head, q, k])) for q in range(num.shape[-1]) for k in range(int(num[0, head, q]))}


@pytest.mark.parametrize("lengths,width", [([2048], 2048), ([1000, 5, 130, 127, 1], 2048), ([8192], 8192), ([3000, 900, 37], 4096)])
@pytest.mark.parametrize("heads,cutoff", [(12, ALIBI_CUTOFF), (8, ALIBI_CUTOFF), (12, 8.0)])
def test_kept_tiles_are_doc_overlap_within_the_cutoff(lengths, width, heads, cutoff):
    sequence_ids = packed_ids(lengths, width)
    slopes = alibi_slopes(heads)
    got = packed_block_mask(sequence_ids, slopes, cutoff)
    kept, whole = brute_force_tiles(sequence_ids, slopes.tolist(), cutoff)
    dense = got.to_dense()
    assert dense.shape == (1, heads, width // FLEX_BLOCK, width // FLEX_BLOCK)
    for h in range(heads):
        assert torch.equal(dense[0, h].bool(), kept[h]), h
        full = block_sets(got.full_kv_num_blocks, got.full_kv_indices, h)
        assert full == {tuple(p) for p in whole[h].nonzero().tolist()}, h
        assert block_sets(got.kv_num_blocks, got.kv_indices, h) == {
            tuple(p) for p in (kept[h] & ~whole[h]).nonzero().tolist()
        }, h
    # Something is skipped at these lengths, and the diagonal tile always stays.
    assert kept.sum() < kept[0].numel() * heads
    assert kept.diagonal(dim1=1, dim2=2).all()


@pytest.mark.parametrize("lengths,width", [([2048], 2048), ([1000, 5, 130, 127, 1], 2048)])
def test_without_cutoff_the_mask_is_unchanged(lengths, width):
    sequence_ids = packed_ids(lengths, width)
    got = packed_block_mask(sequence_ids)
    kept, whole = brute_force_tiles(sequence_ids, [1.0], None)
    assert got.kv_num_blocks.shape == (1, 1, width // FLEX_BLOCK)  # one head, broadcast
    assert torch.equal(got.to_dense()[0, 0].bool(), kept[0])
    assert block_sets(got.full_kv_num_blocks, got.full_kv_indices, 0) == {tuple(p) for p in whole[0].nonzero().tolist()}
    # A cutoff no tile reaches keeps every tile, per head.
    huge = packed_block_mask(sequence_ids, alibi_slopes(12), 1e9)
    assert torch.equal(huge.to_dense(), got.to_dense().expand(1, 12, -1, -1))


def test_slopes_and_cutoff_come_together():
    sequence_ids = packed_ids([300], 1024)
    with pytest.raises(ValueError, match="both"):
        packed_block_mask(sequence_ids, alibi_slopes(8))
    with pytest.raises(ValueError, match="positive"):
        packed_block_mask(sequence_ids, alibi_slopes(8), 0.0)


def attention_fp64(q, k, v, slopes, allowed):
    """Explicit softmax attention with the ALiBi bias; ``allowed`` [heads, L, L] marks the keys each query sees."""
    length = q.shape[1]
    positions = torch.arange(length, dtype=torch.float64)
    distance = (positions[:, None] - positions[None, :]).abs()
    out = torch.empty_like(q)
    for h in range(q.shape[0]):  # one head at a time: 2048^2 fp64 scores are 32 MB
        scores = q[h] @ k[h].T / math.sqrt(q.shape[-1]) - float(slopes[h]) * distance
        out[h] = scores.masked_fill(~allowed[h], -math.inf).softmax(-1) @ v[h]
    return out


@pytest.mark.parametrize("lengths", [[2048], [1300, 600, 148]])
def test_dropped_tiles_change_attention_by_less_than_1e_6(lengths):
    length, heads, head_dim = 2048, 12, 64
    sequence_ids = packed_ids(lengths, length)
    slopes = alibi_slopes(heads).double()
    generator = torch.Generator().manual_seed(0)
    # Realistic score scales: q.k / sqrt(d) with a spread of 3 logits (peaks near 15).
    q = 3.0 * torch.randn(heads, length, head_dim, generator=generator, dtype=torch.float64)
    k = torch.randn(heads, length, head_dim, generator=generator, dtype=torch.float64)
    v = torch.randn(heads, length, head_dim, generator=generator, dtype=torch.float64)
    same = sequence_ids[:, None] == sequence_ids[None, :]

    def allowed(cutoff):
        tiles = packed_block_mask(sequence_ids, slopes.float(), cutoff).to_dense()[0].bool()
        tokens = tiles.repeat_interleave(FLEX_BLOCK, dim=1).repeat_interleave(FLEX_BLOCK, dim=2)
        return tokens & same

    exact = attention_fp64(q, k, v, slopes, same.expand(heads, -1, -1))
    skipped = allowed(ALIBI_CUTOFF)
    assert skipped.sum() < 0.8 * same.sum() * heads  # a real share of the work is dropped
    assert (attention_fp64(q, k, v, slopes, skipped) - exact).abs().max() < 1e-6
    # The comparison can fail: a cutoff of 2 logits drops keys that matter.
    assert (attention_fp64(q, k, v, slopes, allowed(2.0)) - exact).abs().max() > 1e-3


def test_encoder_uses_the_cutoff_only_on_cuda(checkpoint):
    assert JinaEncoder(checkpoint, device="cpu").alibi_cutoff is None
    if torch.cuda.is_available():
        assert JinaEncoder(checkpoint, device="cuda").alibi_cutoff is None  # exact by default
        assert JinaEncoder(checkpoint, device="cuda", alibi_cutoff=ALIBI_CUTOFF).alibi_cutoff == ALIBI_CUTOFF  # not loaded
    else:  # asking for CUDA where there is none is refused when the encoder is made
        with pytest.raises(InvalidInputError, match="device 'cuda' is not available"):
            JinaEncoder(checkpoint, device="cuda", alibi_cutoff=ALIBI_CUTOFF)
    assert JinaEncoder(checkpoint, device="cpu", alibi_cutoff=ALIBI_CUTOFF).alibi_cutoff is None
    with pytest.raises(ValueError, match="alibi_cutoff"):
        JinaEncoder(checkpoint, alibi_cutoff=-1.0)
    assert load_model(checkpoint, alibi_cutoff=32.0).attention.alibi_cutoff == 32.0
    assert load_model(checkpoint).attention.alibi_cutoff is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cutoff_on_cuda_keeps_packed_embeddings(tmp_path):
    folder = write_published_checkpoint(
        tmp_path / "m", heads=12, hidden_size=768, intermediate_size=3072, num_hidden_layers=2
    )
    lengths, width = [8192, 4000, 2500, 1000, 37], 16384
    generator = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(1000, 30000, (n,), generator=generator) for n in lengths])
    ids = torch.cat([ids, torch.zeros(width - sum(lengths), dtype=torch.long)]).cuda()
    sequence_ids = packed_ids(lengths, width).cuda()
    pooled = {}
    for cutoff in (None, ALIBI_CUTOFF):
        model = load_model(folder, attn_implementation="flex", device="cuda", dtype=torch.bfloat16, alibi_cutoff=cutoff)
        with torch.no_grad():
            pooled[cutoff] = model.pool_packed(ids, sequence_ids, len(lengths))
    assert packed_block_mask(sequence_ids, alibi_slopes(12).cuda(), ALIBI_CUTOFF).to_dense().float().mean() < 0.5 * (
        packed_block_mask(sequence_ids).to_dense().float().mean()
    )
    cosine = F.cosine_similarity(pooled[None], pooled[ALIBI_CUTOFF])
    assert cosine.min() >= 0.9999, cosine
