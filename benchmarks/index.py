"""End-to-end whole-document indexing throughput vs raw encoding throughput, side by side.

One run, one table: tokens/s of ``JinaEncoder.encode`` over the corpus (in one call, and in the
same calls indexing makes, which isolates what the store path adds), and of
``DocumentIndex.index`` (validation, hashing, stored-hash lookup, token counting, encoding, upserts)
into Qdrant ``:memory:`` and embedded Chroma, each as a ratio to raw encoding; plus the time a
re-run over the unchanged corpus takes (everything skipped, nothing encoded). Modes are
interleaved (in rotating order) over the repeats so machine load hits all alike; the table shows medians. On a shared
machine wall-clock ratios are noisy, so the table also gives process CPU time, and each indexing
run times its own ``encode`` calls: the share of its time spent outside them is the indexing
overhead, measured within one run.

Random weights of a realistic shape (throughput only, never quality).

    python benchmarks/index.py                       # CPU, small shape (4 layers, 512 hidden)
    python benchmarks/index.py --docs 256 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, device_name, lognormal_lengths, random_model_folder, texts_of_lengths  # noqa: E402

from jina_rag import Document, DocumentIndex, JinaEncoder  # noqa: E402
from jina_rag.index import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--docs", type=int, default=64, help="documents in the corpus")
    parser.add_argument("--median-tokens", type=int, default=512, help="median document length (lognormal)")
    parser.add_argument("--batch-docs", type=int, default=16, help="documents per write batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jina-rag-index-bench-"))
    encoder = JinaEncoder.from_pretrained(random_model_folder(args.shape, work / "model"), device=args.device)
    lengths = lognormal_lengths(args.docs, median=args.median_tokens, high=encoder.max_length)
    documents = [Document(f"doc-{i:05d}.md", text, {"n": i}) for i, text in enumerate(texts_of_lengths(lengths))]
    texts = [doc.text for doc in documents]
    tokens = sum(encoder.count_tokens(texts))
    encoder.encode(texts[:4])  # warm-up

    # The same encode calls indexing makes (longest first, batch_docs texts per call), without a store.
    by_length = sorted(texts, key=len, reverse=True)
    same_batches = [by_length[i : i + args.batch_docs] for i in range(0, len(by_length), args.batch_docs)]

    def raw(batches: list[list[str]]) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            encoder.encode(batch, show_progress=False)
        return time.perf_counter() - started, time.process_time() - cpu

    encoding_seconds = [0.0]
    encode = encoder.encode

    def timed_encode(*args_, **kwargs):
        started = time.perf_counter()
        try:
            return encode(*args_, **kwargs)
        finally:
            encoding_seconds[0] += time.perf_counter() - started

    def index_into(kind: str, location: str, collection: str) -> tuple[float, float, float, float]:
        with DocumentIndex(open_store(kind, location, collection), encoder) as index:
            encoder.encode, encoding_seconds[0] = timed_encode, 0.0
            started, cpu = time.perf_counter(), time.process_time()
            report = index.index(documents, batch_docs=args.batch_docs, show_progress=False)
            first, cpu = time.perf_counter() - started, time.process_time() - cpu
            encoder.encode = encode
            assert len(report.indexed) == len(documents) and index.count() == len(documents)
            started = time.perf_counter()
            again = index.index(documents, batch_docs=args.batch_docs, show_progress=False)
            assert len(again.skipped) == len(documents)
            return first, cpu, 1 - encoding_seconds[0] / first, time.perf_counter() - started

    seconds: dict[str, list[float]] = {"raw": [], "batched": [], "qdrant": [], "chroma": [], "qdrant rerun": [], "chroma rerun": []}
    cpu_seconds: dict[str, list[float]] = {"raw": [], "batched": [], "qdrant": [], "chroma": []}
    overhead: dict[str, list[float]] = {"qdrant": [], "chroma": []}
    modes = ["raw", "batched", "qdrant", "chroma"]
    for repeat in range(args.repeats):
        shift = repeat % len(modes)
        for mode in modes[shift:] + modes[:shift]:  # rotated, so no mode always runs first
            if mode in ("raw", "batched"):
                wall, cpu = raw([texts] if mode == "raw" else same_batches)
                seconds[mode].append(wall)
                cpu_seconds[mode].append(cpu)
                continue
            location = ":memory:" if mode == "qdrant" else str(work / f"chroma-{repeat}")
            first, cpu, outside, rerun = index_into(mode, location, f"bench-{uuid.uuid4().hex[:8]}")
            seconds[mode].append(first)
            cpu_seconds[mode].append(cpu)
            overhead[mode].append(outside)
            seconds[f"{mode} rerun"].append(rerun)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), file=sys.stderr)

    median = {k: statistics.median(v) for k, v in seconds.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_seconds.items()}
    print(
        f"# index benchmark: {args.shape} shape {SHAPES[args.shape]} (random weights: throughput only), "
        f"{device_name(torch.device(args.device))}, {str(encoder.dtype).removeprefix('torch.')}"
    )
    print(
        f"corpus: {len(documents)} documents, {tokens:,} tokens (median {statistics.median(lengths):.0f}, "
        f"max {max(lengths)} per document), write batches of {args.batch_docs}; medians of {args.repeats} interleaved runs\n"
    )
    print("| path | seconds | tokens/s | ratio to raw encode | CPU seconds | ratio by CPU time | time outside `encode` |")
    print("|---|---|---|---|---|---|---|")
    print(f"| raw `encode`, whole corpus in one call | {median['raw']:.2f} | {tokens / median['raw']:,.0f} | 1.00 | {cpu['raw']:.2f} | 1.00 | |")
    print(
        f"| raw `encode`, indexing's calls ({args.batch_docs} texts each, longest first) | {median['batched']:.2f} | "
        f"{tokens / median['batched']:,.0f} | {median['raw'] / median['batched']:.2f} | {cpu['batched']:.2f} | "
        f"{cpu['raw'] / cpu['batched']:.2f} | |"
    )
    for kind in ("qdrant", "chroma"):
        print(
            f"| index into {kind} | {median[kind]:.2f} | {tokens / median[kind]:,.0f} | {median['raw'] / median[kind]:.2f} | "
            f"{cpu[kind]:.2f} | {cpu['raw'] / cpu[kind]:.2f} | {100 * statistics.median(overhead[kind]):.1f}% |"
        )
    for kind in ("qdrant", "chroma"):
        rerun = median[f"{kind} rerun"]
        print(f"| re-index unchanged ({kind}, all skipped) | {rerun:.3f} | | | | | |")


if __name__ == "__main__":
    main()
