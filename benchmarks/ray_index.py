"""Indexing throughput on Ray Data (1, 2, ... workers) against the single-process path, in one run.

Every path reads the same text files and writes into the same kind of store, each run a new
collection (so everything is encoded): a ``chroma run`` server on 127.0.0.1 (``--store chroma``,
the default), or a local Qdrant folder (``--store qdrant``: one writer at a time, so Ray runs one
worker; for machines without chromadb, like the GPU machine). (a) the single-process path,
``read_documents`` + ``DocumentIndex.index`` with torch using every core; (b) ``index_with_ray``
with N workers. On CPUs the cores are split between the workers (``cpus_per_worker`` = cores / N),
so every path encodes on the same cores; on CUDA each worker takes one GPU. Ray starts once,
before the timed runs; each job still starts its workers (loading the model and compiling it for
every batch shape), which is counted: that is what a job costs. The table also shows the
time until every worker was ready (Ray placing it, opening the store, loading and compiling the
model) and the steady-state rate (all tokens over the time after that) beside the single
process's (its encoder warmed up before it is timed). A table of
where the workers' time went (reading, tokenising, encoding, writing, summed over tasks and
workers) follows.

Random weights of a realistic shape (throughput only, never quality).

    python benchmarks/ray_index.py                            # CPU: 1 and 2 workers
    python benchmarks/ray_index.py --device cuda --workers 1 2 4 8 --docs 20000 --median-tokens 2048
    python benchmarks/ray_index.py --device cuda --store qdrant --workers 1   # one GPU, no chromadb
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import SHAPES, device_name, lognormal_lengths, random_model_folder, texts_of_lengths  # noqa: E402
from jina_rag import DocumentIndex, EncoderSettings, JinaEncoder, read_documents  # noqa: E402
from jina_rag.index import open_store  # noqa: E402
from jina_rag.index.ray_data import STAGES, index_with_ray  # noqa: E402


def label(workers: int) -> str:
    return f"ray, {workers} worker{'s' if workers != 1 else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (Ray workers take one GPU each)")
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--docs", type=int, default=192, help="documents in the corpus")
    parser.add_argument("--median-tokens", type=int, default=512, help="median document length (lognormal)")
    parser.add_argument("--batch-docs", type=int, default=16, help="documents per write batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to run")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats (medians are shown)")
    parser.add_argument("--store", choices=("chroma", "qdrant"), default="chroma",
                        help="chroma: a `chroma run` server; qdrant: a local folder (one Ray worker)")
    args = parser.parse_args()
    if args.store == "qdrant" and args.workers != [1]:
        parser.error("--store qdrant is a local folder, which one process writes at a time: use --workers 1")

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="jina-rag-ray-bench-"))
    model = random_model_folder(args.shape, work / "model")
    encoder = JinaEncoder.from_pretrained(model, device=args.device)
    lengths = lognormal_lengths(args.docs, median=args.median_tokens, high=encoder.max_length)
    corpus = work / "corpus"
    corpus.mkdir()
    for i, text in enumerate(texts_of_lengths(lengths)):
        (corpus / f"doc-{i:05d}.txt").write_text(text)
    tokens = sum(lengths)
    # Compiled (CUDA) before the single-process path is timed; each Ray worker warms up in its job.
    print(f"corpus of {tokens:,} tokens written; warm-up took {encoder.warm_up():.1f} s", file=sys.stderr)

    if args.store == "chroma":
        from conftest import ChromaServer  # the tests' server fixture (it also turns tokenizers' threads off)

        server = ChromaServer(work / "chroma").start()
    else:
        server = None

    def new_collection(run: str) -> tuple[str, str, str]:
        """(store, location, collection) of an empty collection: on the server, or a folder of its own."""
        return ("chroma", server.url, run) if server is not None else ("qdrant", str(work / run), "docs")

    # Logical CPUs: the cores for the workers, plus one that Ray keeps for reading and tokenising.
    ray.init(num_cpus=cores + 1, include_dashboard=False, logging_level="ERROR")
    seconds: dict[str, list[float]] = {"single process": [], **{label(n): [] for n in args.workers}}
    stages: dict[str, dict[str, float]] = {}
    first_result: dict[str, list[float]] = {label(n): [] for n in args.workers}
    workers_ready: dict[str, list[float]] = {label(n): [] for n in args.workers}
    steady: dict[str, list[float]] = {"single process": [], **{label(n): [] for n in args.workers}}
    try:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            with DocumentIndex(open_store(*new_collection(f"single-{uuid.uuid4().hex[:8]}")), encoder) as index:
                report = index.index(read_documents(corpus), batch_docs=args.batch_docs, show_progress=False)
            assert len(report.indexed) == args.docs and report.tokens == tokens
            seconds["single process"].append(time.perf_counter() - started)
            steady["single process"].append(tokens / seconds["single process"][-1])  # warmed up: no start-up
            print(f"repeat {repeat + 1}: single process {seconds['single process'][-1]:.1f} s", file=sys.stderr)
            for workers in args.workers:
                store, location, collection = new_collection(f"ray-{uuid.uuid4().hex[:8]}")
                report = index_with_ray(
                    [corpus], store=store, location=location, collection=collection,
                    settings=EncoderSettings(model, device=args.device), workers=workers,
                    cpus_per_worker=max(1, cores // workers), batch_docs=args.batch_docs, show_progress=False,
                )
                assert len(report.indexed) == args.docs and report.tokens == tokens and not report.failed, report.summary()
                seconds[label(workers)].append(report.seconds)
                stages[label(workers)] = report.stage_seconds
                first_result[label(workers)].append(report.seconds_to_first_result)
                workers_ready[label(workers)].append(report.seconds_to_workers_ready)
                steady[label(workers)].append(report.steady_tokens_per_second)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in seconds.items()), file=sys.stderr)
    finally:
        ray.shutdown()
        if server is not None:
            server.stop()

    median = {k: statistics.median(v) for k, v in seconds.items()}
    print(
        f"# Ray indexing benchmark: {args.shape} shape {SHAPES[args.shape]} (random weights: throughput only), "
        f"{device_name(torch.device(args.device))}, {str(encoder.dtype).removeprefix('torch.')}, ray {ray.__version__}"
    )
    print(
        f"corpus: {args.docs} text files, {tokens:,} tokens (median {statistics.median(lengths):.0f}, max {max(lengths)} "
        f"per document), write batches of {args.batch_docs}, "
        f"{'Chroma server on 127.0.0.1' if args.store == 'chroma' else 'local Qdrant folder'}; medians of {args.repeats} runs\n"
    )
    print("| path | encoding on | seconds | tokens/s | ratio to single process | workers ready after (s) | first results after (s) "
          "| steady-state tokens/s | steady-state ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, value in median.items():
        if path == "single process":
            on = "1 GPU" if args.device != "cpu" else f"{torch.get_num_threads()} torch threads"
        else:
            workers = int(path.split(", ")[1].split()[0])
            on = f"{workers} GPU{'s' if workers != 1 else ''}" if args.device != "cpu" else f"{workers} × {max(1, cores // workers)} threads"
        first = f"{statistics.median(first_result[path]):.1f}" if path in first_result else ""
        start = f"{statistics.median(workers_ready[path]):.1f}" if path in workers_ready else ""
        rate = statistics.median(steady[path])
        print(f"| {path} | {on} | {value:.1f} | {tokens / value:,.0f} | {median['single process'] / value:.2f} | {start} | {first} "
              f"| {rate:,.0f} | {rate / statistics.median(steady['single process']):.2f} |")
    print("\nwhere the Ray workers' time went (seconds summed over tasks and workers, last repeat):\n")
    print("| path | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for path, spent in stages.items():
        print(f"| {path} | " + " | ".join(f"{spent[stage]:.1f}" for stage in STAGES) + " |")


if __name__ == "__main__":
    main()
