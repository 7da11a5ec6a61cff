"""Single vector vs naive chunking vs late chunking on a BEIR-format long-document set.

One run, one table: for each method, nDCG@10 (exact search), the vectors it stores and their size,
and the time to encode the corpus, also as a ratio to the single vector. All three use the same
model, and both chunked methods the same passages (the default splitter of
``encode_late_chunks``, about ``--chunk-tokens`` tokens each):

- single vector: the whole document, one vector (``JinaEncoder.encode``; longer than
  ``--max-length``: averaged windows);
- naive chunking: each passage encoded alone; a document scores as its best passage;
- late chunking: each passage's vector pooled from one pass over its whole document
  (``encode_late_chunks``); a document scores as its best passage;
- with ``--title-prefixed``, also naive chunking with each passage read after its document's
  title (its first line): whether document context helps a passage on the set at all.

Under the table, each other method's paired difference in nDCG@10 to naive chunking and to the
single vector, with a 95% bootstrap interval over the queries (``jina_rag.eval.paired_bootstrap``)
and the per-query wins, losses and ties. Splitting is timed once and counted in both chunked
methods' times. Methods are interleaved over ``--repeats``; times are medians. Beside wall-clock seconds the table gives the process's CPU
seconds, which other jobs on a shared machine disturb less.

    python benchmarks/late_chunking.py data/long --model ./my-model --device cuda
    python benchmarks/late_chunking.py --demo /tmp/stdlib-long --random-shape small   # speed and size only

``--save-spans FILE`` writes the splitter's passages of the set and stops; ``--spans FILE`` then
uses them, on a machine without LangChain (the GPU machine).

``--demo FOLDER`` first writes a small BEIR set there from the Python standard library's
docstrings (a module's docstrings joined is a document; a function's summary line, removed from
it, is a query). ``--random-shape`` uses random weights of a published shape: the script then
prints no nDCG, because random weights say nothing about quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from common import SHAPES, device_name, random_model_folder  # noqa: E402

from jina_rag import JinaEncoder, encode_late_chunks  # noqa: E402
from jina_rag.eval import RetrievalSet, load_beir, ndcg_at_k, paired_bootstrap  # noqa: E402
from jina_rag.late_chunking import DEFAULT_CHUNK_TOKENS, default_splitter, split_spans  # noqa: E402

def document_scores(queries: np.ndarray, vectors: np.ndarray, first_of_document: np.ndarray) -> np.ndarray:
    """``[queries, documents]``: each document's best vector (its vectors are contiguous rows)."""
    scores = []
    for start in range(0, len(queries), 256):  # bounds memory on large corpora
        scores.append(np.maximum.reduceat(queries[start : start + 256] @ vectors.T, first_of_document, axis=1))
    return np.concatenate(scores)


def ndcg_per_query(scores: np.ndarray, data: RetrievalSet) -> np.ndarray:
    top = np.argsort(-scores, axis=1)[:, :10]
    return np.array([ndcg_at_k([data.doc_ids[i] for i in row], data.qrels[q], 10) for q, row in zip(data.query_ids, top)])


def write_stdlib_beir(folder: Path, encoder: JinaEncoder, documents: int, min_tokens: int, max_tokens: int) -> Path:
    """A small long-document BEIR set from the standard library's docstrings (see the module docstring)."""
    from training.demo_data import module_texts, stdlib_files

    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for path, root in stdlib_files():
        try:
            text, pairs = module_texts(path, root)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        asked = [pair["query"] for pair in pairs[:3] if text.count(pair["query"]) == 1]
        for query in asked:
            text = text.replace(query, "")
        if not asked or not min_tokens <= encoder.count_tokens(text)[0] <= max_tokens:
            continue
        doc_id = path.relative_to(root).as_posix()
        corpus.append({"_id": doc_id, "title": "", "text": text})
        for number, query in enumerate(asked):
            queries.append({"_id": f"{doc_id}#{number}", "text": query})
            qrels.append((f"{doc_id}#{number}", doc_id))
        if len(corpus) == documents:
            break
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: $JINA_RAG_MODEL or the shipped model)")
    parser.add_argument("--random-shape", choices=SHAPES, help="random weights of this shape instead of --model: speed and size only")
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--late-contexts", default=None,
                        help="late chunking with windows of these many tokens, e.g. 8192,2048,512 (default: --max-length)")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--title-prefixed", action="store_true",
                        help="also naive chunking with each passage read after its document's first line (the title "
                             "of a BEIR document): whether document context helps passages on this set at all")
    parser.add_argument("--spans", type=Path, default=None,
                        help="passages from this JSON file ({doc_id: [[start, end], ...]}) instead of the splitter; "
                             "written by --save-spans where LangChain is installed")
    parser.add_argument("--save-spans", type=Path, default=None, help="write the splitter's passages to this JSON file and stop")
    parser.add_argument("--max-queries", type=int, default=None, help="the first N judged queries")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--demo", type=Path, help="write the standard-library set here first, and use it")
    parser.add_argument("--demo-docs", type=int, default=32)
    parser.add_argument("--demo-min-tokens", type=int, default=2048)
    parser.add_argument("--demo-max-tokens", type=int, default=8192)
    args = parser.parse_args()
    if (args.data is None) == (args.demo is None):
        parser.error("give a BEIR folder or --demo FOLDER")

    model = args.model
    if args.random_shape:
        model = random_model_folder(args.random_shape, Path(tempfile.mkdtemp(prefix="jina-rag-late-")) / "model")
    encoder = JinaEncoder.from_pretrained(model, device=args.device, max_length=args.max_length)
    contexts = [int(n) for n in args.late_contexts.split(",")] if args.late_contexts else [args.max_length]
    # One loaded model serves every context: only the window length differs.
    late_encoders = {n: JinaEncoder.from_pretrained(model, device=args.device, max_length=n) for n in contexts}
    folder = write_stdlib_beir(args.demo, encoder, args.demo_docs, args.demo_min_tokens, args.demo_max_tokens) if args.demo else args.data
    data = load_beir(folder, args.split)
    if args.max_queries:
        data = dataclasses.replace(data, query_ids=data.query_ids[: args.max_queries], query_texts=data.query_texts[: args.max_queries])
    doc_texts = data.doc_texts
    tokens = encoder.count_tokens(doc_texts)
    stored_spans = json.loads(args.spans.read_text(encoding="utf-8")) if args.spans else None
    if stored_spans is None:
        default_splitter(1, 1)  # imports LangChain's splitters before the clock starts

    def sync() -> None:
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()

    def split() -> list[list[tuple[int, int]]]:
        if stored_spans is not None:
            return [[tuple(span) for span in stored_spans[doc_id]] for doc_id in data.doc_ids]
        counts = [len(ids) for ids in encoder.tokenizer(doc_texts, add_special_tokens=False, verbose=False)["input_ids"]]
        return [split_spans(text, default_splitter(n, len(text), args.chunk_tokens)) for text, n in zip(doc_texts, counts)]

    def late(context: int):
        return lambda: np.concatenate([c.vectors for c in encode_late_chunks(late_encoders[context], doc_texts, spans=spans)])

    if args.save_spans:
        args.save_spans.write_text(json.dumps(dict(zip(data.doc_ids, split()))) + "\n", encoding="utf-8")
        print(f"{args.save_spans}: the passages of {len(doc_texts)} documents")
        return

    late_methods = {f"late chunking, {n}-token windows" if len(contexts) > 1 else "late chunking": n for n in contexts}
    prefixed = ["naive chunking, title prefixed"] if args.title_prefixed else []
    methods = ["single vector", "naive chunking", *prefixed, *late_methods]
    seconds: dict[str, list[float]] = {"split": [], **{method: [] for method in methods}}
    cpu_seconds: dict[str, list[float]] = {"split": [], **{method: [] for method in methods}}
    # On CUDA a first, untimed pass compiles every shape the timed passes meet.
    warmup = 1 if encoder.device.type == "cuda" else 0
    for repeat in range(warmup + args.repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        spans = split()
        split_seconds, split_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        passages = [text[start:end] for text, doc_spans in zip(doc_texts, spans) for start, end in doc_spans]
        runs = {
            "single vector": lambda: encoder.encode(doc_texts, show_progress=False),
            "naive chunking": lambda: encoder.encode(passages, show_progress=False),
            **{method: (lambda: encoder.encode([text.split("\n", 1)[0] + "\n\n" + text[start:end]
                                                for text, doc_spans in zip(doc_texts, spans) for start, end in doc_spans],
                                               show_progress=False)) for method in prefixed},
            **{method: late(n) for method, n in late_methods.items()},
        }
        vectors = {}
        timings = {"split": (split_seconds, split_cpu)}
        for method, run in runs.items():
            sync()
            started, cpu_started = time.perf_counter(), time.process_time()
            vectors[method] = run()
            sync()
            timings[method] = (time.perf_counter() - started, time.process_time() - cpu_started)
        print(f"{'warm-up' if repeat < warmup else f'repeat {repeat + 1 - warmup}'}: "
              + ", ".join(f"{k} {v[0]:.2f} s" for k, v in timings.items()), file=sys.stderr)
        if repeat >= warmup:
            for key, (wall, cpu_time) in timings.items():
                seconds[key].append(wall)
                cpu_seconds[key].append(cpu_time)

    per_document = [len(doc_spans) for doc_spans in spans]
    passage_starts = np.cumsum([0, *per_document[:-1]])
    first_of_document = {method: passage_starts for method in methods}
    first_of_document["single vector"] = np.arange(len(doc_texts))
    queries = encoder.encode(data.query_texts, show_progress=False)
    median = {key: statistics.median(values) for key, values in seconds.items()}
    cpu = {key: statistics.median(values) for key, values in cpu_seconds.items()}
    for chunked in methods[1:]:
        median[chunked] += median["split"]
        cpu[chunked] += cpu["split"]

    print(
        f"# late chunking benchmark: {folder} ({args.split}), {len(doc_texts)} documents, {sum(tokens):,} tokens "
        f"(median {statistics.median(tokens):.0f}, max {max(tokens)}), {len(data.query_ids)} queries; "
        f"{sum(per_document)} passages of about {args.chunk_tokens} tokens"
    )
    print(
        f"model: {'random weights, ' + args.random_shape + ' shape' if args.random_shape else encoder.info()['model']}; "
        f"{device_name(encoder.device)}, {str(encoder.dtype).removeprefix('torch.')}, max_length {args.max_length}; "
        f"times are medians of {args.repeats}{' after a warm-up pass' if warmup else ''}, "
        f"splitting ({median['split']:.2f} s{', passages read from ' + str(args.spans) if args.spans else ''}) counted in every chunked method\n"
    )
    print("| method | nDCG@10 | vectors | size (float32) | encode seconds | vs single vector | CPU seconds | vs single vector |")
    print("|---|---|---|---|---|---|---|---|")
    scores = {method: document_scores(queries, vectors[method], first_of_document[method]) for method in methods}
    per_query = {} if args.random_shape else {method: ndcg_per_query(scores[method], data) for method in methods}
    for method in methods:
        stored = vectors[method]
        quality = "n/a (random weights)" if args.random_shape else f"{per_query[method].mean():.4f}"
        print(
            f"| {method} | {quality} | {len(stored):,} | {stored.nbytes / 2**20:.2f} MiB | {median[method]:.2f} | "
            f"{median[method] / median['single vector']:.2f}x | {cpu[method]:.1f} | {cpu[method] / cpu['single vector']:.2f}x |"
        )
    if not args.random_shape:
        # DocumentIndex's mode "both": a document scores as the better of its own vector and its best passage.
        for method in late_methods:
            both = np.maximum(scores["single vector"], scores[method])
            print(f"| {method} + the document vector (index mode both) | {ndcg_per_query(both, data).mean():.4f} | "
                  f"{len(vectors[method]) + len(doc_texts):,} | | | | | |")
        print(f"\nPaired differences in nDCG@10 over the {len(data.query_ids)} queries (95% bootstrap interval, "
              "10,000 resamples of the queries; wins / losses / ties per query):\n")
        for method in methods[2:]:  # everything after the two baselines
            for baseline in ("naive chunking", "single vector"):
                mean, low, high = paired_bootstrap(per_query[method], per_query[baseline])
                delta = per_query[method] - per_query[baseline]
                print(f"- {method} − {baseline}: {mean:+.4f} [{low:+.4f}, {high:+.4f}]; "
                      f"{(delta > 0).sum()} / {(delta < 0).sum()} / {(delta == 0).sum()}")


if __name__ == "__main__":
    main()
