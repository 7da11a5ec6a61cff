"""Local Qdrant stores at scale: Qdrant Edge (``EdgeStore``) against qdrant-client's local folder (``QdrantStore``).

Random points (no encoding), written through each store's ``upsert`` in batches, then searched
the way ``DocumentIndex.search`` does: write rate, the time the close takes (Edge builds its HNSW
index there; qdrant-client's local mode has none and searches by brute force), the time a new
process takes to open the folder, query latency p50/p99 (one query at a time, limit 10, in the
layout's default mode), on-disk size and peak RSS. Each store runs in its own process (so peak
RSS is its own), writing until ``--time-limit`` seconds of writes, and is killed after
``--hard-limit`` seconds in all; the table shows what it reached.

    python benchmarks/store_scale.py                                  # 20,000 whole-document 384-d points
    python benchmarks/store_scale.py --docs 100000 --layout hybrid --passages 10 --time-limit 600   # issue #26's target

The target run writes 1,000,000 passage vectors in 100,000 documents; the targets are >= 3,000
points/s written, p50 <= 20 ms and p99 <= 100 ms with the HNSW index built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jina_rag.index.documents import point_id  # noqa: E402
from jina_rag.index.store import DEFAULT_MODE_OF_LAYOUT, Point, SearchQuery  # noqa: E402
from jina_rag.sparse import SparseVector  # noqa: E402

STORES = ("edge", "qdrant-client")
COLLECTION = "bench"
# BM25 terms per document and per query, from a vocabulary of this many word hashes.
DOC_TERMS, QUERY_TERMS, VOCABULARY = 120, 4, 50_000


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def make_points(start: int, count: int, args: argparse.Namespace, rng: np.random.Generator) -> list[Point]:
    """Whole-document points of the layout: random unit vectors, a text of ``--text-chars``, spans over it."""
    text = "x" * args.text_chars
    points = []
    passages = unit(rng.standard_normal((count, args.passages, args.dim))) if args.layout != "document" else None
    documents = unit(passages.mean(axis=1)) if passages is not None else unit(rng.standard_normal((count, args.dim)))
    step = max(1, args.text_chars // max(1, args.passages))
    spans = tuple((i * step, (i + 1) * step) for i in range(args.passages))
    for i in range(count):
        doc_id = f"doc-{start + i:07d}"
        sparse = None
        if args.layout == "hybrid":
            indices = np.unique(rng.integers(0, VOCABULARY, DOC_TERMS)).astype(np.uint32)
            sparse = SparseVector(indices, rng.uniform(0.3, 2.0, len(indices)).astype(np.float32))
        points.append(Point(
            point_id(doc_id), doc_id, documents[i], text, {"n": start + i, "shard": (start + i) % 16}, f"hash-{start + i}",
            passage_spans=spans if passages is not None else (), passage_vectors=passages[i] if passages is not None else None,
            sparse=sparse,
        ))
    return points


def open_store(name: str, folder: Path):
    if name == "edge":
        from jina_rag.index.qdrant_edge import EdgeStore

        return EdgeStore(folder, COLLECTION)
    from qdrant_client import QdrantClient

    from jina_rag.index.qdrant import QdrantStore

    return QdrantStore(QdrantClient(path=str(folder)), COLLECTION)


def disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def report(**values) -> None:
    print(json.dumps(values), flush=True)


def child(args: argparse.Namespace) -> None:
    """One store: write, close (Edge builds HNSW), reopen, query; a JSON line after each step."""
    folder = Path(args.folder) / args.child
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    store = open_store(args.child, folder)
    store.ensure_collection(args.dim, layout=args.layout)
    written, writing, started = 0, 0.0, time.perf_counter()
    while written < args.docs and writing < args.time_limit:
        points = make_points(written, min(args.batch, args.docs - written), args, rng)
        began = time.perf_counter()
        store.upsert(points)
        writing += time.perf_counter() - began
        written += len(points)
        if written // args.batch % 50 == 0:
            report(step="writing", points=written, write_s=writing)
    report(step="written", points=written, write_s=writing, wall_s=time.perf_counter() - started)
    began = time.perf_counter()
    store.close()
    report(step="closed", close_s=time.perf_counter() - began)
    began = time.perf_counter()
    store = open_store(args.child, folder)
    count = store.count()
    report(step="opened", open_s=time.perf_counter() - began, count=count)
    mode = DEFAULT_MODE_OF_LAYOUT[args.layout]
    latencies = []
    for _ in range(args.queries):
        vector = unit(rng.standard_normal(args.dim))
        sparse = None
        if args.layout == "hybrid":
            indices = np.unique(rng.integers(0, VOCABULARY, QUERY_TERMS)).astype(np.uint32)
            sparse = SparseVector(indices, np.ones(len(indices), dtype=np.float32))
        began = time.perf_counter()
        hits = store.search(SearchQuery(vector, sparse), 10, {}, mode)
        latencies.append(time.perf_counter() - began)
        assert len(hits) == min(10, count)
    store.close()
    report(
        step="queried", mode=mode, p50_ms=1e3 * float(np.percentile(latencies, 50)), p99_ms=1e3 * float(np.percentile(latencies, 99)),
        disk_mb=disk_bytes(folder) / 2**20, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def run_store(name: str, args: argparse.Namespace, folder: Path) -> dict:
    """Run one store in a child process; its last reports, however far it got in ``--hard-limit`` seconds."""
    command = [sys.executable, __file__, "--child", name, "--folder", str(folder)] + [
        f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key not in ("child", "folder", "stores", "hard_limit")
    ]
    result: dict = {"store": name}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    # A reader thread, so the limit holds while the child is silent (Edge's HNSW build on close).
    reader = threading.Thread(target=lambda: [result.update(json.loads(line)) for line in process.stdout], daemon=True)
    reader.start()
    try:
        process.wait(timeout=args.hard_limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        result["note"] = f"killed at the {args.hard_limit:.0f} s limit while {result.get('step', 'starting')}"
    reader.join()
    if process.returncode and "note" not in result:
        result["note"] = f"exited with {process.returncode} while {result.get('step', 'starting')}"
    result.setdefault("disk_mb", disk_bytes(folder / name) / 2**20 if (folder / name).exists() else None)
    return result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(results: list[dict], args: argparse.Namespace) -> str:
    def number(value, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    vectors_per_point = args.passages + 1 if args.layout != "document" else 1
    rows = [
        "| store | points | vectors | write points/s | write vectors/s | close s | open s | p50 ms | p99 ms | disk MB | peak RSS MB | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        points, write_s = r.get("points"), r.get("write_s")
        rate = points / write_s if points and write_s else None
        rows.append(
            f"| {r['store']} | {number(points)} | {number(points and points * vectors_per_point)} | {number(rate)} | "
            f"{number(rate and rate * vectors_per_point)} | {number(r.get('close_s'), 1)} | {number(r.get('open_s'), 2)} | "
            f"{number(r.get('p50_ms'), 2)} | {number(r.get('p99_ms'), 2)} | {number(r.get('disk_mb'))} | "
            f"{number(r.get('peak_rss_mb'))} | {r.get('note', '')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000, help="documents (points) to write")
    parser.add_argument("--layout", choices=("document", "passages", "hybrid"), default="document")
    parser.add_argument("--passages", type=int, default=10, help="passage vectors per document (passages, hybrid)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=256, help="points per upsert")
    parser.add_argument("--text-chars", type=int, default=2000, help="characters of text per document")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds of writes per store")
    parser.add_argument("--hard-limit", type=float, default=1800.0, help="seconds per store in all; killed after")
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated: {', '.join(STORES)}")
    parser.add_argument("--folder", default=None, help="where the stores write (default: a temporary folder, removed)")
    parser.add_argument("--child", choices=STORES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    folder = Path(args.folder or tempfile.mkdtemp(prefix="jina-rag-store-scale-"))
    try:
        results = [run_store(name, args, folder) for name in args.stores.split(",")]
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    passages = f", {args.passages} passage vectors each" if args.layout != "document" else ""
    print(
        f"\n{args.docs:,} {args.dim}-d documents, layout {args.layout}{passages}; batches of {args.batch}; "
        f"{cpu_name()}, {os.cpu_count()} CPUs; qdrant-edge-py {_version('qdrant-edge-py')}, qdrant-client {_version('qdrant-client')}\n"
    )
    print(table(results, args))


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
