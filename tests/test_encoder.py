"""``JinaEncoder``: batching, order, normalisation, long texts, bad input, loading, the CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from jina_rag import JinaEncoder, ModelNotFoundError, TextTooLongError, load_model, save_pretrained
from jina_rag.batching import pack_batch, plan_batches
from jina_rag.cli import main as cli_main
from jina_rag.encoder import tokenize, window_spans

from conftest import bert_tokenizer

WORDS = "retrieval augmented generation over long documents needs a long context encoder".split()


def text_of(n_words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


def raw_vector(checkpoint, text: str, max_tokens: int | None = None) -> np.ndarray:
    """The model's mean-pooled vector for one text in one pass, computed without the encoder."""
    tokenizer = bert_tokenizer()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[: max_tokens - 2]
    ids = torch.tensor([[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]])
    with torch.no_grad():
        return load_model(checkpoint).pool(ids).numpy()[0]


def test_token_budget_batches_cover_everything_and_respect_budget():
    lengths = [5, 300, 17, 17, 90, 1, 300, 64]
    batches = plan_batches(lengths, batch_tokens=320)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 320
    with pytest.raises(ValueError, match="batch_tokens"):
        plan_batches(lengths, 0)


def test_packed_row_lays_sequences_back_to_back_with_filler_ids_per_block():
    sequences = [[5, 6, 7], [8], [9, 10]]
    input_ids, sequence_ids = pack_batch(sequences, 300, pad_id=0)
    assert input_ids.dtype == sequence_ids.dtype == np.int64
    assert input_ids[:6].tolist() == [5, 6, 7, 8, 9, 10] and not input_ids[6:].any()
    assert sequence_ids[:6].tolist() == [0, 0, 0, 1, 2, 2]
    # Filler ids start after the last sequence's and change every 128 tokens of the row.
    assert sequence_ids[6:].tolist() == [3 + t // 128 for t in range(6, 300)]
    with pytest.raises(ValueError, match="do not fit"):
        pack_batch(sequences, 5, pad_id=0)


def test_order_preserved_across_batches_with_mixed_lengths(encoder):
    texts = [text_of(n, seed=n) for n in (3, 90, 7, 40, 1, 100, 12)]
    together = encoder.encode(texts, batch_tokens=150)
    alone = np.stack([encoder.encode(t) for t in texts])
    assert together.shape == (7, encoder.dim)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_normalisation_and_raw_vectors(encoder, checkpoint):
    text = text_of(30)
    normalized = encoder.encode([text])
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-6)
    raw = encoder.encode([text], normalize=False)[0]
    np.testing.assert_allclose(raw, raw_vector(checkpoint, text), atol=1e-5)
    as_torch = encoder.encode([text], convert_to="torch")
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == (1, encoder.dim)


def test_window_spans_overlap_and_cover():
    spans = window_spans(1000, span=300, overlap=50)
    assert spans[0] == (0, 300) and spans[-1][1] == 1000
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert b0 == a1 - 50
    assert window_spans(200, 300, 50) == [(0, 200)]


def test_long_text_windows_average_weighted_by_tokens(encoder, checkpoint):
    long_text = text_of(400, seed=7)  # about 400 tokens, max_length is 128
    tokenizer = bert_tokenizer()
    ids = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    span = 126
    expected = np.zeros(encoder.dim)
    total = 0
    for start, stop in window_spans(len(ids), span, encoder.window_overlap):
        window = torch.tensor([[tokenizer.cls_token_id, *ids[start:stop], tokenizer.sep_token_id]])
        with torch.no_grad():
            vector = load_model(checkpoint).pool(window).numpy()[0]
        expected += vector * window.shape[1]
        total += window.shape[1]
    expected /= total
    got = encoder.encode(long_text, normalize=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_long_text_truncate_warns_and_error_raises(encoder, checkpoint, caplog):
    long_text = text_of(400, seed=8)
    with caplog.at_level(logging.WARNING, logger="jina_rag.encoder"):
        got = encoder.encode([long_text, "short"], normalize=False, long_text="truncate")
    assert "1 of 2 texts were truncated" in caplog.text
    np.testing.assert_allclose(got[0], raw_vector(checkpoint, long_text, max_tokens=128), atol=1e-5)
    with pytest.raises(TextTooLongError, match=r"texts\[1\] has \d+ tokens, over max_length=128"):
        encoder.encode(["short", long_text], long_text="error")


@pytest.mark.parametrize(
    "texts, error, message",
    [
        (["ok", None], TypeError, r"texts\[1\] is NoneType"),
        (["ok", 3], TypeError, r"texts\[1\] is int"),
        (["", "ok"], ValueError, r"texts\[0\] is empty"),
        (["ok", "  \n\t"], ValueError, r"texts\[1\] is empty or whitespace"),
    ],
)
def test_bad_texts_name_the_index(encoder, texts, error, message):
    with pytest.raises(error, match=message):
        encoder.encode(texts)


def test_empty_list_gives_empty_result(encoder):
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_bad_arguments(checkpoint):
    with pytest.raises(ValueError, match="long_text must be one of"):
        JinaEncoder(checkpoint, long_text="drop")
    with pytest.raises(ValueError, match="exceeds the model's limit of 8192"):
        JinaEncoder.from_pretrained(checkpoint, max_length=10000)
    with pytest.raises(ValueError, match="unknown dtype"):
        JinaEncoder(checkpoint, dtype="float8")


def test_unknown_and_unreachable_models_say_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model 'not-a-model'"):
        JinaEncoder.from_pretrained("not-a-model")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        JinaEncoder.from_pretrained(tmp_path / "missing-folder")
    with pytest.raises(ModelNotFoundError) as info:
        JinaEncoder.from_pretrained("jina-embeddings-v2-small-en")
    message = str(info.value)
    assert "jinaai/jina-embeddings-v2-small-en" in message and "cache" in message and "JINA_RAG_MODEL" in message
    assert "the package ships (jina-rag-small-en, offline)" in message  # not "no weights are available offline"
    with pytest.raises(ValueError, match="not supported yet"):
        JinaEncoder.from_pretrained("jinaai/jina-embeddings-v2-base-code")


def test_default_model_comes_from_the_environment(checkpoint, monkeypatch):
    monkeypatch.setenv("JINA_RAG_MODEL", str(checkpoint))
    encoder = JinaEncoder(max_length=128)
    assert encoder.encode("hello").shape == (encoder.dim,)
    assert encoder.info()["model"] == str(checkpoint)


def test_adapters_share_one_loaded_model(checkpoint):
    a = JinaEncoder.from_pretrained(checkpoint, max_length=128)
    b = JinaEncoder.from_pretrained(checkpoint, max_length=64, long_text="truncate")
    assert a.backend is b.backend


def test_count_tokens_includes_special_tokens(encoder):
    assert encoder.count_tokens(["hello world", "a"]) == [4, 3]


def test_encoding_token_ids_gives_the_vectors_of_the_texts(encoder):
    texts = [text_of(n, seed=n) for n in (3, 400, 40)]  # 400 words: several windows
    token_ids = tokenize(encoder.tokenizer, texts)
    np.testing.assert_allclose(encoder.encode_tokenized(token_ids, batch_tokens=200), encoder.encode(texts), atol=1e-6)
    assert encoder.encode_tokenized([]).shape == (0, encoder.dim)
    with pytest.raises(TextTooLongError, match=r"texts\[1\] has \d+ tokens"):
        encoder.encode_tokenized(token_ids, long_text="error")


def test_save_pretrained_round_trip(checkpoint, tmp_path, encoder):
    saved = save_pretrained(load_model(checkpoint), tmp_path / "copy", bert_tokenizer())
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (saved / name).is_file(), name
    config = json.loads((saved / "config.json").read_text())
    original = json.loads((checkpoint / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "torch_dtype"} | {"transformers_version": None} == (
        {k: v for k, v in original.items() if k != "torch_dtype"} | {"transformers_version": None}
    )
    pooling = json.loads((saved / "1_Pooling/config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == 64
    texts = [text_of(20), text_of(200, seed=3)]
    copy = JinaEncoder.from_pretrained(saved, max_length=128)
    np.testing.assert_array_equal(copy.encode(texts), encoder.encode(texts))


def test_cli_embed_and_info(checkpoint, tmp_path, capsys):
    out = tmp_path / "v.npy"
    doc = tmp_path / "doc.txt"
    doc.write_text(text_of(50))
    args = ["--model", str(checkpoint), "--max-length", "128", "--no-progress"]
    assert cli_main(["embed", "first text", "--file", str(doc), "-o", str(out), *args]) == 0
    vectors = np.load(out)
    assert vectors.shape == (2, 64)
    assert capsys.readouterr().out == f"wrote 2 vectors of dimension 64 to {out}\n"
    assert cli_main(["embed", "first text", *args]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    np.testing.assert_allclose(line["embedding"], vectors[0], atol=1e-6)
    assert cli_main(["info", *args, "-v"]) == 0  # -v after the command is taken too
    assert "hidden_size" in capsys.readouterr().out
    assert cli_main(["embed", "  ", *args]) == 2
    assert "texts[0] is empty" in capsys.readouterr().err
    assert cli_main(["embed", "x", "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["embed", "x", "--alibi-cutoff", "0", *args]) == 2
    assert "alibi_cutoff must be positive" in capsys.readouterr().err
    # The cutoff is for CUDA's FlexAttention path: on the CPU attention stays exact.
    assert cli_main(["embed", "first text", "--alibi-cutoff", "64", *args]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    np.testing.assert_allclose(line["embedding"], vectors[0], atol=1e-6)


def test_describe_says_how_the_torch_backend_runs(encoder):
    info = encoder.backend.describe()
    assert info["backend"] == "torch" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["feed_forward"] == "GEGLU"  # the fused kernel runs on CUDA in bf16/fp16 only
