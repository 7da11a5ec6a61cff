"""Hybrid mode: one point per document with dense, late-chunk passage and BM25 vectors, fused in the store.

Runs on qdrant-client (:memory:, the server code path) and on Qdrant Edge (a folder). The model has
random weights, so dense retrieval finds nothing on purpose; BM25's rare words do.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from jina_rag.index import CollectionMismatchError, DocumentIndex, Fusion, open_store
from jina_rag.sparse import BM25SparseEncoder

DOCS = {
    "tides.md": "The moon pulls the oceans. Spring tides follow the new moon. "
                "A tide gauge at the harbour wall records the water level every minute.",
    "bread.md": "Knead the dough and let the yeast rise overnight. Bake it in a hot oven until the crust is brown.",
    "chess.md": "Open with the king's pawn and develop knights before bishops. Castle early to keep the king safe.",
    "volcano.md": "Magma rises through the crust. The volcano erupts basaltic lava from its vent near the summit.",
    "taxes.md": "File the annual return before April and keep receipts for every deductible expense you claim.",
}
RARE = {"tides.md": "gauge", "bread.md": "yeast", "chess.md": "bishops", "volcano.md": "basaltic", "taxes.md": "receipts"}


def records(metadata: bool = True) -> list[dict]:
    return [{"id": doc_id, "text": text, "metadata": {"kind": "nature" if doc_id in ("tides.md", "volcano.md") else "other"}}
            for doc_id, text in DOCS.items()]


@pytest.fixture(params=["qdrant-memory", "qdrant-edge"])
def location(request, tmp_path) -> str:
    return ":memory:" if request.param == "qdrant-memory" else str(tmp_path / "edge")


def open_index(location: str, encoder, collection: str, **options) -> DocumentIndex:
    return DocumentIndex(open_store("qdrant", location, collection), encoder, chunk_tokens=16, **options)


def test_hybrid_finds_rare_words_and_names_the_passage(location, encoder):
    with open_index(location, encoder, "docs", mode="hybrid") as index:
        report = index.index(records())
        assert sorted(report.indexed) == sorted(DOCS) and index.count() == len(DOCS)
        assert index.store.layout() == "hybrid"
        for doc_id, word in RARE.items():
            hit = index.search(f"{word} question", limit=3)[0]
            assert hit.id == doc_id
            assert hit.passage is not None and hit.text[hit.passage.start : hit.passage.end] == hit.passage.text
        # The passage named is the one holding the word only when it is the dense best; it is always a real span.
        bm25_only = Fusion(weights={"bm25": 1.0})
        assert [h.id for h in index.search("yeast oven", limit=1, fusion=bm25_only)] == ["bread.md"]
        # Unchanged documents are skipped; hybrid's hash covers the BM25 settings.
        assert index.index(records()).skipped == list(DOCS)


def test_bm25_settings_change_reindexes(location, encoder):
    with open_index(location, encoder, "docs", mode="hybrid") as index:
        index.index(records())
        changed = DocumentIndex(index.store, encoder, mode="hybrid", chunk_tokens=16, bm25=BM25SparseEncoder(avg_len=999))
        assert sorted(changed.index(records()).indexed) == sorted(DOCS)
        assert index.count() == len(DOCS)


def test_fusion_weights_and_methods_are_applied_in_the_store(location, encoder):
    with open_index(location, encoder, "docs", mode="hybrid") as index:
        index.index(records())
        query = "gauge"
        dense = [h.id for h in index.search(query, limit=5, mode="document")]
        only_dense = [h.id for h in index.search(query, limit=5, fusion=Fusion(weights={"document": 1.0}))]
        assert only_dense == dense  # a fusion of one ranking keeps its order
        only_bm25 = index.search(query, limit=5, fusion=Fusion(weights={"bm25": 1.0}))
        assert only_bm25[0].id == "tides.md"
        # Qdrant's weighted RRF scores rank r (from 1) of a list of weight w as 1 / (r / w + k - 1).
        weighted = index.search(query, limit=1, fusion=Fusion("rrf", weights={"bm25": 3.0}, k=10))[0]
        unweighted = index.search(query, limit=1, fusion=Fusion("rrf", weights={"bm25": 1.0}, k=10))[0]
        assert unweighted.score == pytest.approx(1 / 10, rel=1e-4)
        assert weighted.score == pytest.approx(1 / (1 / 3 + 9), rel=1e-4)
        assert index.search(query, limit=2, fusion=Fusion(method="dbsf"))[0].id in DOCS
        # Filters hold inside every prefetch.
        hits = index.search("gauge yeast basaltic", limit=5, filter={"kind": "other"})
        assert hits and all(hit.metadata["kind"] == "other" for hit in hits)


def test_modes_and_layouts_agree(location, encoder):
    collection = f"c-{uuid.uuid4().hex[:8]}"
    with open_index(location, encoder, collection, mode="late-chunks") as index:
        index.index(records())
        with pytest.raises(ValueError, match="search mode 'hybrid' needs a BM25 sparse vector"):
            index.search("gauge", mode="hybrid")
        with pytest.raises(CollectionMismatchError, match="holds the 'passages' layout"):
            DocumentIndex(index.store, encoder, mode="hybrid").index(records())
        assert index.count() == len(DOCS)
    with open_index(location, encoder, f"{collection}-h", mode="hybrid") as index:
        index.index(records())
        following = DocumentIndex(index.store, encoder)
        assert following.resolved_mode() == "hybrid"
        for mode in ("document", "late-chunks", "both", "hybrid"):
            assert len(following.search(DOCS["chess.md"], limit=2, mode=mode)) == 2


def test_fusion_settings_are_checked():
    with pytest.raises(ValueError, match="unknown representations"):
        Fusion(weights={"title": 1.0})
    with pytest.raises(ValueError, match="at least one above 0"):
        Fusion(weights={"bm25": 0.0})
    with pytest.raises(ValueError, match="unknown fusion method"):
        Fusion(method="max")


def test_chroma_refuses_hybrid_and_writes_nothing(tmp_path, encoder):
    chromadb = pytest.importorskip("chromadb")
    index = DocumentIndex(open_store("chroma", str(tmp_path / "chroma"), "docs"), encoder, mode="hybrid")
    with index, pytest.raises(ValueError, match="Chroma runs only distributed or hosted.*Qdrant Edge"):
        index.index(records())
    assert chromadb.PersistentClient(str(tmp_path / "chroma")).list_collections() == []


def test_bm25_vectors_carry_term_frequency_not_idf():
    bm25 = BM25SparseEncoder(word_pairs=False)
    once, twice = bm25.embed_documents(["glacier valley", "glacier glacier valley"])
    assert set(once.indices) == set(twice.indices) and len(once) == 2
    weight = dict(zip(twice.indices.tolist(), twice.values.tolist()))
    single = dict(zip(once.indices.tolist(), once.values.tolist()))
    glacier = bm25.embed_query("glaciers").indices[0]  # stemmed: the same word
    assert weight[glacier] > single[glacier]
    assert np.all(bm25.embed_query("glacier valley glacier").values == 1.0)
    with pytest.raises(ValueError, match="avg_len"):
        BM25SparseEncoder(avg_len=0)


def test_word_pairs_add_to_qdrants_own_word_dimensions():
    text = "The scalar function callback runs once per row; a scalar function returns one value. Callbacks: none."
    words_only, with_pairs = BM25SparseEncoder(word_pairs=False), BM25SparseEncoder()
    (edge,), (ours,) = words_only.embed_documents([text]), with_pairs.embed_documents([text])
    ours_weights = dict(zip(ours.indices.tolist(), ours.values.tolist()))
    # Every word dimension and weight is Qdrant Edge's own; the rest are the pairs.
    for index, value in zip(edge.indices.tolist(), edge.values.tolist()):
        assert ours_weights[index] == pytest.approx(value, rel=1e-6)
    assert len(ours) > len(edge) and list(ours.indices) == sorted(ours.indices)
    query_words, query = words_only.embed_query("scalar function callback"), with_pairs.embed_query("scalar function callback")
    assert set(query_words.indices) < set(query.indices) and len(query) == 3 + 2 and np.all(query.values == 1.0)
    # The pair is ordered ("function scalar" is another pair) and skips stop words ("function of scalar").
    assert with_pairs.embed_query("function scalar").indices.tolist() != with_pairs.embed_query("scalar function").indices.tolist()
    assert with_pairs.embed_query("function of scalar").indices.tolist() == with_pairs.embed_query("function scalar").indices.tolist()
    assert with_pairs.settings != words_only.settings


def test_word_pairs_rank_the_phrase_first_in_the_store(location, encoder):
    # The same words once each; the shorter document wins on words alone (BM25's length norm).
    phrase = {"id": "phrase.md", "text": "Register a scalar function callback. Tables hold many rows and many columns."}
    apart = {"id": "apart.md", "text": "Register a callback. Tables hold scalar rows and function columns."}
    bm25_only = Fusion(weights={"bm25": 1.0})
    for bm25, winner in ((BM25SparseEncoder(word_pairs=False), "apart.md"), (BM25SparseEncoder(), "phrase.md")):
        with open_index(location, encoder, f"pairs-{bm25.word_pairs}", mode="hybrid", bm25=bm25) as index:
            index.index([phrase, apart])
            assert index.search("scalar function callback", limit=1, fusion=bm25_only)[0].id == winner


def test_prepared_queries_search_like_texts(location, encoder):
    with open_index(location, encoder, "docs", mode="hybrid") as index:
        index.index(records())
        texts = ["gauge at the harbour", "yeast", "king's pawn opening"]
        prepared = index.prepare_queries(texts)
        for text, query in zip(texts, prepared):
            for mode in ("hybrid", "late-chunks"):
                assert [h.id for h in index.search(query, limit=3, mode=mode)] == [h.id for h in index.search(text, limit=3, mode=mode)]
        dense_only = index.prepare_queries(texts, mode="document")[0]
        with pytest.raises(ValueError, match="prepared without its BM25 vector"):
            index.search(dense_only, mode="hybrid")
