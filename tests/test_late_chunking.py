"""Late chunking in the core: passage vectors are span means of the document's token states.

Checked against the model's own token output (``JinaBertModel.forward``), on the tiny random model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jina_rag import JinaEncoder
from jina_rag.late_chunking import encode_late_chunks

PARAGRAPHS = [
    "Telescopes collect light from distant galaxies and nebulae.",
    "Astronomers measure the redshift of each galaxy to estimate its distance.",
    "The survey mapped a million galaxies across the southern sky.",
]
TEXT = " ".join(PARAGRAPHS)


def spans_of(text: str, parts: list[str]) -> list[tuple[int, int]]:
    spans, cursor = [], 0
    for part in parts:
        start = text.index(part, cursor)
        spans.append((start, start + len(part)))
        cursor = start + len(part)
    return spans


def token_states(encoder: JinaEncoder, ids: list[int]) -> torch.Tensor:
    """The model's token states for one sequence: ``[L, H]``."""
    with torch.no_grad():
        return encoder.backend.model(torch.tensor([ids]))[0]


def unit(vector: torch.Tensor | np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def test_passage_vector_is_the_mean_of_the_documents_token_states_over_its_span(encoder):
    chunks = encode_late_chunks(encoder, TEXT, spans=spans_of(TEXT, PARAGRAPHS))
    prefix, suffix = encoder.special_tokens
    ids = encoder.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    states = token_states(encoder, prefix + ids + suffix)
    assert chunks.windows == ((0, len(ids)),) and chunks.vectors.shape == (3, encoder.dim)
    for number, (passage, (first, stop)) in enumerate(zip(PARAGRAPHS, chunks.token_spans)):
        # The token span is exactly the passage's own tokens...
        assert ids[first:stop] == encoder.tokenizer(passage, add_special_tokens=False)["input_ids"]
        # ...and its vector the mean of the whole document's states there.
        expected = unit(states[len(prefix) + first : len(prefix) + stop].mean(0))
        np.testing.assert_allclose(chunks.vectors[number], expected, atol=1e-5)
        # Encoded alone, the passage sees none of its document: another vector.
        alone = encoder.encode(passage)
        assert float(alone @ chunks.vectors[number]) < 0.999
    np.testing.assert_allclose(chunks.document_vector, encoder.encode(TEXT), atol=1e-5)
    raw = encode_late_chunks(encoder, TEXT, spans=spans_of(TEXT, PARAGRAPHS), normalize=False)
    first, stop = raw.token_spans[1]
    np.testing.assert_allclose(raw.vectors[1], states[len(prefix) + first : len(prefix) + stop].mean(0), atol=1e-5)


def test_spans_round_trip_from_every_kind_of_splitter(encoder):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    text = "\n\n".join(PARAGRAPHS * 4) + "\n"
    default = encode_late_chunks(encoder, text, chunk_tokens=20)
    overlapping = RecursiveCharacterTextSplitter(chunk_size=90, chunk_overlap=30, add_start_index=True)
    one_paragraph = " ".join(PARAGRAPHS * 2)  # cut at words, where LangChain overlaps chunks
    from_langchain = encode_late_chunks(encoder, one_paragraph, splitter=overlapping)
    by_sentence = encode_late_chunks(encoder, text, splitter=lambda t: spans_of(t, [p for p in t.split("\n") if p]))
    for chunks in (default, from_langchain, by_sentence):
        assert len(chunks.spans) == len(chunks.vectors) == len(chunks.token_spans) > 3
        for (start, end), passage in zip(chunks.spans, chunks.passages):
            assert chunks.text[start:end] == passage and passage.strip() == passage
    assert by_sentence.passages == PARAGRAPHS * 4
    # The default passages tile the text: nothing but whitespace lies outside them, nothing twice.
    assert " ".join(default.passages).split() == text.split()
    assert all(a[1] <= b[0] for a, b in zip(default.spans, default.spans[1:]))
    # LangChain's overlapping chunks keep their overlap.
    assert any(a[1] > b[0] for a, b in zip(from_langchain.spans, from_langchain.spans[1:]))
    assert from_langchain.passages == overlapping.split_text(one_paragraph)


def test_documents_longer_than_max_length_read_in_overlapping_windows_one_vector_per_passage(encoder):
    sentences = [f"Section {i} covers tidal turbines, harbour walls and the dredging schedule." for i in range(30)]
    text = " ".join(sentences)
    prefix, suffix = encoder.special_tokens
    ids = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3 * encoder.max_length
    chunks = encode_late_chunks(encoder, text, spans=spans_of(text, sentences))
    windows = chunks.windows
    width = encoder.max_length - len(prefix) - len(suffix)
    assert windows[0][0] == 0 and windows[-1][1] == len(ids) and len(windows) > 3
    assert all(stop - start <= width for start, stop in windows)
    assert all(previous[1] > following[0] for previous, following in zip(windows, windows[1:]))  # they overlap
    assert chunks.vectors.shape == (len(sentences), encoder.dim) and len(chunks.passage_windows) == len(sentences)
    states = [token_states(encoder, prefix + ids[start:stop] + suffix) for start, stop in windows]
    for number, ((first, stop), window) in enumerate(zip(chunks.token_spans, chunks.passage_windows)):
        start, end = windows[window]
        assert start <= first and stop <= end
        # No other window holds the passage with more context on its tighter side.
        margin = min(first - start, end - stop)
        assert all(min(first - a, b - stop) <= margin for a, b in windows if a <= first and stop <= b)
        offset = len(prefix) - start
        np.testing.assert_allclose(chunks.vectors[number], unit(states[window][first + offset : stop + offset].mean(0)), atol=1e-5)
    # Passages in two windows take the more central one: some come from later windows.
    assert sorted(set(chunks.passage_windows)) == list(range(len(windows)))
    # These passages fit the encoder's own overlap, so the document vector is the encoder's.
    assert max(stop - first for first, stop in chunks.token_spans) <= encoder.window_overlap + 1
    np.testing.assert_allclose(chunks.document_vector, encoder.encode(text), atol=1e-5)


def test_passages_longer_than_the_overlap_widen_it_so_each_fits_one_window(encoder):
    sentences = [" ".join(["a long sentence about sediment transport in estuaries"] * 3) + f" number {i}." for i in range(12)]
    text = " ".join(sentences)
    chunks = encode_late_chunks(encoder, text, spans=spans_of(text, sentences))
    longest = max(stop - first for first, stop in chunks.token_spans)
    assert longest > encoder.window_overlap + 1
    for (first, stop), window in zip(chunks.token_spans, chunks.passage_windows):
        start, end = chunks.windows[window]
        assert start <= first and stop <= end


def test_many_documents_batched_give_the_same_vectors_as_one_at_a_time(encoder):
    texts = [TEXT, "A short note about bread.", " ".join(PARAGRAPHS[::-1] * 6)]
    together = encode_late_chunks(encoder, texts, chunk_tokens=16, batch_tokens=300)
    for text, chunks in zip(texts, together):
        alone = encode_late_chunks(encoder, text, chunk_tokens=16)
        assert chunks.spans == alone.spans and chunks.text == text
        np.testing.assert_allclose(chunks.vectors, alone.vectors, atol=1e-5)
        np.testing.assert_allclose(chunks.document_vector, alone.document_vector, atol=1e-5)
    spans = [spans_of(t, [t.split()[0]]) for t in texts]
    assert [c.passages for c in encode_late_chunks(encoder, texts, spans=spans)] == [[t.split()[0]] for t in texts]


def test_bad_spans_and_splitters_are_clear_errors(encoder):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    with pytest.raises(ValueError, match=r"span 1 \(20, 999\) is not a non-empty range"):
        encode_late_chunks(encoder, TEXT, spans=[(0, 10), (20, 999)])
    with pytest.raises(ValueError, match="span 0 .* is not a non-empty range"):
        encode_late_chunks(encoder, TEXT, spans=[(5, 5)])
    with pytest.raises(ValueError, match="whitespace only"):
        encode_late_chunks(encoder, "one  two", spans=[(3, 5)])
    with pytest.raises(ValueError, match="no passages"):
        encode_late_chunks(encoder, TEXT, spans=[])
    with pytest.raises(ValueError, match="one list of spans per document"):
        encode_late_chunks(encoder, [TEXT, TEXT], spans=[[(0, 5)]])
    with pytest.raises(ValueError, match="not both"):
        encode_late_chunks(encoder, TEXT, spans=[(0, 5)], splitter=lambda t: [(0, 5)])
    with pytest.raises(ValueError, match="add_start_index=True"):
        encode_late_chunks(encoder, TEXT, splitter=RecursiveCharacterTextSplitter(chunk_size=40, chunk_overlap=0))
    long_passage = "word " * 300
    with pytest.raises(ValueError, match=r"passage of \d+ tokens, more than one window of max_length=128"):
        encode_late_chunks(encoder, long_passage, spans=[(0, len(long_passage) - 1)])
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        encode_late_chunks(encoder, [TEXT, "  "])
