"""Cut the small samples the repository ships from a finished build: ``python -m training.data.samples --data data/``.

Only packages whose licence allows it unconditionally are sampled (``Source.sample_ok``): SQLite's
documentation (public domain) for the evaluation sets and the NarrativeQA-format example, and
Python's documentation (PSF licence) for the training files. Long texts are cut; the samples
show the formats, the full sets are built on demand.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from training.data.build import write_beir, write_jsonl
from training.data.narrativeqa import write_narrativeqa
from training.data.sources import SOURCES

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "training" / "data" / "samples"
NARRATIVEQA_SAMPLE = REPO / "examples" / "data" / "narrativeqa_sample"
SHARABLE = {s.package for s in SOURCES if s.sample_ok}
CUT_CHARS = 1500


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _read_beir(folder: Path) -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in list(open(folder / "qrels" / "test.tsv", encoding="utf-8"))[1:]:
        query_id, doc_id, score = line.rstrip("\n").split("\t")
        qrels[query_id][doc_id] = int(score)
    return _rows(folder / "corpus.jsonl"), _rows(folder / "queries.jsonl"), dict(qrels)


def _cut(text: str) -> str:
    return text if len(text) <= CUT_CHARS else text[:CUT_CHARS].rsplit(" ", 1)[0] + " …"


def narrativeqa_sample(data: Path, out: Path, max_bytes: int = 250_000, seed: int = 0) -> tuple[int, int]:
    """Whole long documents with their questions, from the sharable evaluation packages, up to ``max_bytes``."""
    corpus, queries, qrels = _read_beir(data / "long")
    asked = defaultdict(list)
    for query in queries:
        asked[next(iter(qrels[query["_id"]]))].append(query)
    candidates = [row for row in corpus if row["metadata"]["package"] in SHARABLE and asked[row["_id"]]]
    random.Random(seed).shuffle(candidates)
    chosen, size = [], 0
    for row in candidates:
        length = len(row["title"]) + len(row["text"]) + 2
        if size + length <= max_bytes:
            chosen.append(row)
            size += length
    chosen.sort(key=lambda row: row["_id"])
    chosen_queries = [q for row in chosen for q in asked[row["_id"]]]
    if out.exists():
        for file in sorted(out.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
    write_narrativeqa(out, chosen, chosen_queries, {q["_id"]: qrels[q["_id"]] for q in chosen_queries})
    (out / "README.md").write_text(
        "# A NarrativeQA-format sample built from SQLite's documentation\n\n"
        "Same files as the official NarrativeQA release (`documents.csv`, `qaps.csv`, stories in\n"
        "`tmp/<document_id>.content`), so `examples/narrativeqa_long_docs.py` and `jina-rag eval` read it\n"
        "the way they read the real data. Each story is a page of the SQLite documentation (public\n"
        f"domain, Debian package sqlite3-doc); {len(chosen_queries)} questions over {len(chosen)} stories. A question is a section\n"
        "heading removed from its page; its section starts after token 512, so reading only the first 512\n"
        "tokens cannot find it. The answers are the section's first sentence. Rebuild with\n"
        "`python -m training.data.build --out data/ && python -m training.data.samples --data data/`.\n",
        encoding="utf-8",
    )
    return len(chosen), len(chosen_queries)


def training_samples(data: Path, out: Path, seed: int = 0) -> None:
    """A few rows of every output, texts cut, from the sharable packages; plus the manifest."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    mlm = [r for r in _rows(data / "mlm" / "train.jsonl") if r["package"] in SHARABLE]
    write_jsonl(out / "mlm.jsonl", [{**r, "text": _cut(r["text"])} for r in rng.sample(mlm, min(10, len(mlm)))])
    by_kind = defaultdict(list)
    for row in _rows(data / "pairs" / "train.jsonl"):
        if row["package"] in SHARABLE:
            by_kind[row["kind"]].append(row)
    pairs = [{**r, "positive": _cut(r["positive"])} for kind in sorted(by_kind) for r in rng.sample(by_kind[kind], min(8, len(by_kind[kind])))]
    write_jsonl(out / "pairs.jsonl", pairs)
    for name, documents in (("long", 2), ("short", 3)):
        corpus, queries, qrels = _read_beir(data / name)
        judged = {doc_id for judgements in qrels.values() for doc_id in judgements}
        sources = sorted({row["_id"].split("#")[0] for row in corpus if row["metadata"]["package"] in SHARABLE and row["_id"] in judged})
        keep_sources = set(rng.sample(sources, min(documents, len(sources))))
        kept = [row for row in corpus if row["_id"].split("#")[0] in keep_sources]
        kept_ids = {row["_id"] for row in kept}
        kept_queries = [q for q in queries if set(qrels[q["_id"]]) <= kept_ids]
        write_beir(out / name, kept, kept_queries, {q["_id"]: qrels[q["_id"]] for q in kept_queries})
    (out / "manifest.json").write_text((data / "manifest.json").read_text(encoding="utf-8"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="a finished build (default: data/)")
    args = parser.parse_args(argv)
    if not (args.data / "manifest.json").is_file():
        print(f"samples: error: {args.data} holds no finished build: run python -m training.data.build --out {args.data}", file=sys.stderr)
        return 2
    stories, questions = narrativeqa_sample(args.data, NARRATIVEQA_SAMPLE)
    training_samples(args.data, SAMPLES)
    print(f"wrote {NARRATIVEQA_SAMPLE} ({stories} stories, {questions} questions) and {SAMPLES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
