"""``python -m training.mine``: add mined hard negatives to a pairs file.

    python -m training.mine --model runs/pairs --corpus corpus.jsonl --pairs pairs.jsonl \
        --out hard.jsonl --skip-top 3 --num-negatives 7

``--model`` takes any jina_rag model: a published-layout folder, a hub id, or a training run's
output_dir (its latest checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from jina_rag.cli import add_encoder_arguments, encoder_from_args
from training.checkpoint import resolve_init_folder
from training.data import expand_paths, read_documents
from training.hard_negatives import mine_hard_negatives
from training.pairs import read_pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.mine", description="mine hard negatives for (query, positive) pairs")
    parser.add_argument("--pairs", required=True, nargs="+", help="JSONL files of {query, positive}")
    parser.add_argument("--corpus", nargs="*", default=[], help="candidate texts: JSONL {text} or text files (blank-line separated); the positives are always candidates")
    parser.add_argument("--out", required=True, help="JSONL to write {query, positive, negatives}")
    parser.add_argument("--num-negatives", type=int, default=7, help="negatives per query (default: 7)")
    parser.add_argument("--skip-top", type=int, default=0, help="skip this many most similar non-positives, likely unlabelled positives (default: 0)")
    add_encoder_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.model is not None and Path(args.model).is_dir():
            args.model = str(resolve_init_folder(args.model))
        pairs = [(e.query, e.positive) for e in read_pairs(expand_paths(args.pairs, "--pairs"))]
        corpus = list(read_documents(expand_paths(args.corpus, "--corpus"))) if args.corpus else []
        encoder = encoder_from_args(args)
        rows = mine_hard_negatives(
            encoder, pairs, corpus, num_negatives=args.num_negatives, skip_top=args.skip_top,
            batch_tokens=encoder.settings.batch_tokens, show_progress=False if args.no_progress else None,
        )
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"training.mine: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows with up to {args.num_negatives} negatives each to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
