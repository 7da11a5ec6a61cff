"""The CUDA path (FlexAttention, packed rows, bf16/fp16) against the fp32 reference path.

Marked ``gpu``: skipped in CI, run on the GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jina_rag import JinaEncoder, load_model

from conftest import write_published_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def base_like(tmp_path_factory):
    return write_published_checkpoint(
        tmp_path_factory.mktemp("gpu") / "m", heads=12, hidden_size=768, intermediate_size=3072, num_hidden_layers=2
    )


def random_batch(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1000, 30000, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


def _flash_or_skip():
    from jina_rag.attention.flash import flash_alibi_available

    if not flash_alibi_available(torch.device("cuda")):
        pytest.skip("needs flash-attn-4 on a Hopper or Blackwell GPU")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_flex_padded_matches_fp32_reference(base_like, dtype):
    ids, mask = random_batch([4096, 1000, 37])
    reference = load_model(base_like, attn_implementation="blockwise", device="cuda")
    flex = load_model(base_like, attn_implementation="flex", device="cuda", dtype=dtype)
    with torch.no_grad():
        expected = reference.pool(ids.cuda(), mask.cuda())
        got = flex.pool(ids.cuda(), mask.cuda())
    assert F.cosine_similarity(expected, got).min() >= 0.999
    if dtype == torch.float32:
        assert (expected - got).abs().max() < 1e-4


@pytest.mark.parametrize("impl", ["flex", "flash"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_packed_matches_fp32_reference(base_like, dtype, impl):
    if impl == "flash":
        _flash_or_skip()  # cu_seqlens found from the sequence ids
    lengths = [8192, 300, 5, 2000]
    reference = load_model(base_like, attn_implementation="blockwise", device="cuda")
    model = load_model(base_like, attn_implementation=impl, device="cuda", dtype=dtype)
    ids, mask = random_batch(lengths)
    packed = torch.cat([ids[i, :n] for i, n in enumerate(lengths)] + [torch.zeros(16384 - sum(lengths), dtype=torch.long)])
    sequence_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    sequence_ids = torch.cat([sequence_ids, len(lengths) + torch.arange(16384 - sum(lengths)) // 128])
    with torch.no_grad():
        expected = reference.pool(ids.cuda(), mask.cuda())
        got = model.pool_packed(packed.cuda(), sequence_ids.cuda(), len(lengths))
    assert F.cosine_similarity(expected, got).min() >= 0.999


def test_encoder_on_cuda_matches_cpu(base_like):
    texts = ["short text"] + [" ".join(["word"] * n) for n in (50, 700, 3000)]
    cpu = JinaEncoder.from_pretrained(base_like, device="cpu").encode(texts)
    gpu = JinaEncoder.from_pretrained(base_like, device="cuda", dtype="bf16").encode(texts, batch_tokens=4096)
    cosine = (cpu * gpu).sum(axis=1)
    assert np.all(cosine >= 0.999), cosine


def test_late_chunks_on_cuda_match_the_cpu_reference(base_like):
    from jina_rag import encode_late_chunks

    sentences = [f"Section {i} covers tidal turbines, harbour walls and the dredging schedule." for i in range(400)]
    texts = [" ".join(sentences), " ".join(sentences[:30]), "A short note about bread. It rises overnight."]
    cpu = JinaEncoder.from_pretrained(base_like, device="cpu", max_length=2048)
    # float32 on both sides: this checks the packed rows and windows, not bf16 rounding.
    cuda = JinaEncoder.from_pretrained(base_like, device="cuda", dtype="float32", max_length=2048)
    assert cuda.backend.packed
    # Sentence spans: this checks the packed rows, not the optional LangChain splitter.
    spans = [[(m.start(), m.end()) for m in re.finditer(r"[^.]+\.", text)] for text in texts]
    expected = encode_late_chunks(cpu, texts, spans=spans)
    got = encode_late_chunks(cuda, texts, spans=spans, batch_tokens=4096)
    assert len(expected[0].windows) > 1  # the long one is read in windows
    for reference, packed in zip(expected, got):
        assert packed.spans == reference.spans and packed.passage_windows == reference.passage_windows
        np.testing.assert_allclose(packed.vectors, reference.vectors, atol=1e-3)
        np.testing.assert_allclose(packed.document_vector, reference.document_vector, atol=1e-3)


def test_flex_gradients_under_bf16_autocast_match_fp32_reference(base_like):
    """Training runs FlexAttention's backward kernel with the same kernel options as inference."""
    ids, mask = random_batch([1000, 300, 37], seed=3)
    ids, mask = ids.cuda(), mask.cuda()
    grads = {}
    for impl in ("blockwise", "flex"):
        model = load_model(base_like, attn_implementation=impl, device="cuda").eval()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=impl == "flex"):
            loss = model.pool(ids, mask).square().sum()
        loss.backward()
        grads[impl] = torch.cat([p.grad.flatten() for p in model.encoder.layer[0].attention.parameters()])
    assert F.cosine_similarity(grads["blockwise"], grads["flex"], dim=0) >= 0.99


def test_flash_encoder_matches_cpu_and_compiles_once_per_width(base_like):
    from jina_rag.encoder import TorchBackend

    _flash_or_skip()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    encoder = JinaEncoder.from_pretrained(base_like, device="cpu")
    backend = TorchBackend(load_model(base_like, attn_implementation="flash", device="cuda", dtype=torch.bfloat16),
                           torch.device("cuda"))
    assert backend.packed
    batches = [[" ".join(["word"] * n) for n in lengths] for lengths in ([700, 50, 3], [900], [10] * 40)]
    for texts in batches:  # each packs into one 1024-token row, with 3, 1 and 40 sequences
        sequences = encoder.tokenizer(texts)["input_ids"]
        got = backend.embed(sequences).cpu().numpy()
        expected = encoder.encode(texts, normalize=False)
        cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert np.all(cosine >= 0.999), (texts, cosine)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1, dict(torch._dynamo.utils.counters["graph_break"])


def test_warm_up_compiles_every_width_so_later_batches_compile_nothing(base_like):
    encoder = JinaEncoder.from_pretrained(base_like, device="cuda", max_length=8192, attention="flex")
    assert encoder.warm_up(batch_tokens=16384) > 0
    torch._dynamo.utils.counters.clear()
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(3, 8000, 40)]
    vectors = encoder.encode_tokenized([[1000 + i % 500 for i in range(n)] for n in lengths], batch_tokens=16384)
    assert np.isfinite(vectors).all()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0, dict(torch._dynamo.utils.counters["stats"])


def test_auto_runs_flash_only_for_rows_with_a_long_sequence(base_like):
    from torch.profiler import ProfilerActivity, profile

    from jina_rag.attention.auto import FLASH_MIN_TOKENS

    _flash_or_skip()
    cpu = JinaEncoder.from_pretrained(base_like, device="cpu")
    gpu = JinaEncoder.from_pretrained(base_like, device="cuda", dtype="bf16")
    assert gpu.backend.describe()["attention"] == f"flex; flash for rows with a sequence of >= {FLASH_MIN_TOKENS} tokens"
    for lengths, flash_expected in (([FLASH_MIN_TOKENS - 100, 50], False), ([FLASH_MIN_TOKENS + 200, 50], True)):
        texts = [" ".join(["word"] * n) for n in lengths]
        gpu.encode(texts, show_progress=False)  # compiles outside the profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            got = gpu.encode(texts, normalize=False, show_progress=False)
            torch.cuda.synchronize()
        kernels = " ".join(event.key for event in prof.key_averages()).lower()
        assert ("flashattentionforward" in kernels) == flash_expected, (lengths, kernels[:2000])
        expected = cpu.encode(texts, normalize=False)
        cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert np.all(cosine >= 0.999), (lengths, cosine)


@pytest.mark.parametrize("tma", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens, hidden, inner", [(1000, 768, 3072), (777, 200, 1000), (3, 384, 1536)])
def test_fused_geglu_matches_fp32_reference(dtype, tokens, hidden, inner, tma):
    """Both load paths, on rows, columns and inner dimensions off the kernel's tiles (200 is no multiple of 64)."""
    from jina_rag.fused_geglu import TMA_MIN_HIDDEN, fused_geglu, fused_geglu_available, geglu_reference, launch_fused_geglu

    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(tokens, hidden, device="cuda", dtype=dtype, generator=generator)
    weight = torch.randn(2 * inner, hidden, device="cuda", dtype=dtype, generator=generator) / hidden**0.5
    assert fused_geglu_available(x, weight)
    exact = geglu_reference(x.float(), weight.float())
    fused, unfused = launch_fused_geglu(x, weight, tma=tma), geglu_reference(x, weight)
    assert fused.shape == (tokens, inner) and fused.dtype == dtype
    fused_error = (fused.float() - exact).abs().max()
    assert fused_error <= (unfused.float() - exact).abs().max() * 1.5  # no worse than the unfused bf16/fp16 path
    assert F.cosine_similarity(fused.double(), exact.double(), dim=-1).min() >= 0.9999
    torch.testing.assert_close(fused_geglu(x, weight), launch_fused_geglu(x, weight, tma=hidden >= TMA_MIN_HIDDEN), rtol=0, atol=0)


def test_fused_geglu_runs_in_the_compiled_forward_and_only_without_gradients(base_like):
    from torch.profiler import ProfilerActivity, profile

    from jina_rag.fused_geglu import fused_geglu_available
    from jina_rag.modeling import JinaBertGLUMLP

    model = load_model(base_like, device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(1000, 30000, (4096,), device="cuda")
    sequence_ids = torch.arange(4096, device="cuda") // 1000
    forward = torch.compile(model.forward_packed, dynamic=False)
    outputs, kernels = {}, {}
    for fused in (True, False):
        for module in model.modules():
            if isinstance(module, JinaBertGLUMLP):
                module.fused = fused
        with torch.inference_mode():
            forward(ids, sequence_ids)  # compiles outside the profile
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                outputs[fused] = forward(ids, sequence_ids).float()
                torch.cuda.synchronize()
        kernels[fused] = " ".join(event.key for event in prof.key_averages())
    assert "geglu" in kernels[True] and "geglu" not in kernels[False], kernels
    assert F.cosine_similarity(outputs[True], outputs[False], dim=-1).min() >= 0.999
    weight = model.encoder.layer[0].mlp.gated_layers.weight
    x = torch.randn(8, weight.shape[1], device="cuda", dtype=torch.bfloat16)
    assert fused_geglu_available(x, weight.detach())
    assert not fused_geglu_available(x, weight)  # training: the weight needs its gradient
    with torch.no_grad():
        assert fused_geglu_available(x, weight)


def test_flash_runs_bf16_and_fp16_only_and_auto_keeps_fp32_on_flex(base_like):
    from jina_rag.attention.flash import require_flash_alibi

    _flash_or_skip()
    with pytest.raises(RuntimeError, match="bf16 or fp16"):
        require_flash_alibi(torch.device("cuda"), torch.float32)
    assert JinaEncoder.from_pretrained(base_like, device="cuda", dtype="float32").backend.describe()["attention"] == "flex"
