"""CPU: ``encode(texts, parallel=N)`` against one process, and the scaling curve over worker processes.

One corpus of mixed lengths (real English from the samples the repository ships, cut at 64 to
2,048 tokens), encoded by the shipped model in fp32:

- ``single``: one process, torch on every core (what ``encode(texts)`` does);
- ``parallel=N``: N worker processes sharing the cores (cores // N torch threads each), the
  library's default for ``parallel=N``; ratio to ``single``;
- the scaling curve: N workers of ONE torch thread each against N times one such worker
  (efficiency = tokens/s of N workers / (N x tokens/s of one)).

Worker start-up (spawn, import, model load) is timed apart: every row is the best of ``--rounds``
calls after a warm-up call on started workers.

    python benchmarks/parallel.py --workers 1,2            # this 2-core machine
    python benchmarks/parallel.py --workers 1,2,4,8,16     # the GPU machine's 16 cores
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from common import device_name  # noqa: E402

from jina_rag import JinaEncoder  # noqa: E402
from jina_rag.eval import load_beir  # noqa: E402


def corpus(encoder: JinaEncoder, texts: int, seed: int = 0) -> list[str]:
    """``texts`` pieces of the shipped samples' documents, 64 to 2,048 tokens each."""
    samples = ROOT / "training" / "data" / "samples"
    documents = [text for name in ("long", "short") for text in load_beir(samples / name).doc_texts]
    rng = random.Random(seed)
    words = " ".join(documents).split()
    pieces = []
    while len(pieces) < texts:
        length = int(2 ** rng.uniform(6, 11) * 0.75)  # words, about 64..2048 tokens
        start = rng.randrange(0, len(words) - length)
        pieces.append(" ".join(words[start : start + length]))
    return pieces


def best_rate(call, tokens: int, rounds: int) -> float:
    call()  # warm-up (and worker start-up, done before)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    cores = os.cpu_count() or 1

    encoder = JinaEncoder.from_pretrained(args.model, device="cpu", max_length=2048)
    texts = corpus(encoder, args.texts)
    tokens = sum(encoder.count_tokens(texts))
    print(f"{device_name(encoder.device)}; {cores} cores; {len(texts)} texts, {tokens:,} tokens; model {encoder.info()['model']}")
    rows = {"single": best_rate(lambda: encoder.encode(texts, show_progress=False), tokens, args.rounds)}
    single = rows["single"]
    print(f"| workers | threads each | tokens/s | vs single process ({cores} threads) | start-up s |\n|---:|---:|---:|---:|---:|")
    print(f"| single process | {cores} | {single:,.0f} | 1.00× | |", flush=True)
    curve = {}
    for threads_each in (None, 1):
        for count in counts:
            started = time.perf_counter()
            encoder.start_pool(count, threads=threads_each)
            encoder.encode(texts[: 2 * count], parallel=count)  # a shard for every worker: all started and loaded
            startup = time.perf_counter() - started
            rate = best_rate(lambda: encoder.encode(texts, parallel=count), tokens, args.rounds)
            encoder.close()
            threads = threads_each or max(1, cores // count)
            rows[f"parallel={count}, {threads} threads"] = rate
            if threads_each == 1:
                curve[count] = rate
            print(f"| {count} | {threads} | {rate:,.0f} | {rate / single:.2f}× | {startup:.1f} |", flush=True)
    if 1 in curve:
        print("\nScaling, workers of one thread: " + ", ".join(
            f"{n}: {rate / (n * curve[1]):.2f} of linear" for n, rate in curve.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cores": cores, "tokens": tokens, "rows": rows, "curve": curve}, indent=1) + "\n")


if __name__ == "__main__":
    main()
