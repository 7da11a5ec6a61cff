"""Whole-story retrieval at growing max_length: the long-document experiment of the Jina v2 paper.

Each question must find its whole story among all stories. Every story is embedded once per
max_length, cut after that many tokens, so the curve shows what reading further buys.

    python examples/narrativeqa_long_docs.py                       # the shipped sample, default model
    python examples/narrativeqa_long_docs.py --model ./my-model    # a model folder
    python examples/narrativeqa_long_docs.py --narrativeqa-dir ~/narrativeqa   # the real data set

The shipped sample (examples/data/narrativeqa_sample/) is in NarrativeQA's layout but built from
SQLite's documentation (public domain): questions are section headings, removed from the page,
whose sections start after token 512. The real data needs the official repository's
documents.csv and qaps.csv, and the stories its download_stories.sh fetches into tmp/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jina_rag import JinaEncoder, ModelNotFoundError
from jina_rag.eval import BM25Retriever, DenseRetriever, evaluate, format_table, load_narrativeqa

SAMPLE = Path(__file__).resolve().parent / "data" / "narrativeqa_sample"


def plot(lengths: list[int], results: list, bm25, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for metric, marker in (("ndcg@10", "o"), ("recall@10", "s"), ("mrr@10", "^")):
        axes.plot(lengths, [r.metrics[metric] for r in results], marker=marker, label=metric)
    if bm25 is not None:
        axes.axhline(bm25.metrics["ndcg@10"], color="grey", linestyle="--", label="BM25 nDCG@10")
    axes.set_xscale("log", base=2)
    axes.set_xticks(lengths, [str(n) for n in lengths])
    axes.set_xlabel("max_length (tokens read per story)")
    axes.set_ylabel("score")
    axes.set_ylim(0, 1)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--narrativeqa-dir", type=Path, default=SAMPLE, help="folder with documents.csv and qaps.csv (default: the shipped sample)")
    parser.add_argument("--stories-dir", type=Path, default=None, help="folder of <document_id>.content stories (default: NARRATIVEQA_DIR/tmp)")
    parser.add_argument("--split", default="test", help="NarrativeQA set: train, valid or test (default: test)")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: $JINA_RAG_MODEL or the shipped model)")
    parser.add_argument("--max-lengths", default="512,2048,8192", help="comma-separated (default: 512,2048,8192)")
    parser.add_argument("--max-queries", type=int, default=None, help="a reproducible sample of the questions (the real test split has 10,557)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--no-bm25", action="store_true", help="skip the BM25 reference line")
    parser.add_argument("--output-dir", type=Path, default=Path("narrativeqa_results"), help="where the PNG and JSON go")
    args = parser.parse_args(argv)
    lengths = sorted(int(n) for n in args.max_lengths.split(","))

    data = load_narrativeqa(args.narrativeqa_dir, split=args.split, stories_dir=args.stories_dir)
    if args.max_queries:
        data = data.subset(args.max_queries)
    print(f"{data.name}: {len(data.doc_ids)} stories, {len(data.query_ids)} questions")
    try:
        encoders = [JinaEncoder.from_pretrained(args.model, device=args.device, max_length=n, long_text="truncate") for n in lengths]
    except ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {encoders[0].info()['model']}")
    results = []
    for n, encoder in zip(lengths, encoders):
        results.append(evaluate(data, DenseRetriever(f"max_length={n}", encoder), show_progress=sys.stderr.isatty()))
        print(f"  max_length={n}: nDCG@10 {results[-1].metrics['ndcg@10']:.4f}")
    bm25 = None if args.no_bm25 else evaluate(data, BM25Retriever())
    print()
    print(format_table(results + ([bm25] if bm25 else [])))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    png = args.output_dir / "narrativeqa_max_length.png"
    plot(lengths, results, bm25, png, f"{data.name}: {len(data.query_ids)} questions, {len(data.doc_ids)} stories")
    rows = [{"system": r.system, "metrics": r.metrics, "seconds": r.seconds} for r in results + ([bm25] if bm25 else [])]
    (args.output_dir / "narrativeqa_max_length.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {png} and {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
