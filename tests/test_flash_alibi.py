"""The FlashAttention-4 path's host side: packed-row offsets and clear errors where it cannot run.

The kernel itself is tested against the fp32 reference on the GPU machine (tests/test_gpu.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jina_rag import load_model
from jina_rag.batching import pack_batch
from jina_rag.attention import packed_offsets
from jina_rag.attention.flash import flash_alibi_available


@pytest.mark.parametrize("lengths,width,expected", [
    ([5, 300, 2], 1024, [0, 5, 305, 307, 384, 512, 640, 768, 896, 1024]),  # filler in 128-token blocks
    ([1024], 1024, [0, 1024]),
    ([128, 128], 1024, [0, 128, 256, 384, 512, 640, 768, 896, 1024]),
    ([1000, 3], 2048, [0, 1000, 1003, 1024, 1152, 1280, 1408, 1536, 1664, 1792, 1920, 2048]),
])
def test_offsets_are_where_each_packed_sequence_and_filler_block_starts(lengths, width, expected):
    _, sequence_ids = pack_batch([[7] * n for n in lengths], width, pad_id=0)
    offsets = packed_offsets(sequence_ids)
    assert offsets.dtype == np.int32
    assert offsets.tolist() == expected


def test_flash_needs_a_hopper_gpu_and_says_so(tmp_path):
    from conftest import write_published_checkpoint

    assert not flash_alibi_available(torch.device("cpu"))
    model = load_model(write_published_checkpoint(tmp_path / "m"), attn_implementation="flash")
    ids = torch.tensor([101, 2000, 102])
    with pytest.raises(RuntimeError, match="needs CUDA"):
        model.forward_packed(ids, torch.zeros(3, dtype=torch.long))


def test_encoder_asks_for_flash_explicitly_and_fails_clearly_without_it(tmp_path):
    from conftest import write_published_checkpoint

    from jina_rag import JinaEncoder

    folder = write_published_checkpoint(tmp_path / "m")
    with pytest.raises(ValueError, match="'auto' or 'flash'"):
        JinaEncoder(folder, attention="flex")
    with pytest.raises(ValueError, match="exact attention"):
        JinaEncoder(folder, attention="flash", alibi_cutoff=64)
    with pytest.raises(RuntimeError, match="pip install flash-attn-4"):
        JinaEncoder.from_pretrained(folder, device="cpu", attention="flash")


def test_flash_refuses_rows_too_long_for_its_float_positions():
    from jina_rag.attention.flash import flash_alibi_attention

    q = torch.zeros(1 << 23, 1, 1)
    with pytest.raises(ValueError, match="at most 8,388,607 tokens"):
        flash_alibi_attention(q, q, q, torch.tensor([0, 1 << 23], dtype=torch.int32))


def test_flash_is_never_available_for_fp32():
    assert not flash_alibi_available(torch.device("cuda"), torch.float32)
    assert not flash_alibi_available(torch.device("cuda"), torch.float64)
