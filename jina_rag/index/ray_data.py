"""Scale-out indexing on Ray Data: many workers, exactly one point per document, every index mode.

The pipeline streams; nothing holds the whole corpus:

1. the driver lists the input files (text files, JSON Lines, Parquet), resolves the mode as the
   local engine does and creates the collection in its layout (refusing one of another layout);
2. read tasks parse them into documents, validated as the indexing core does; an unreadable file
   or a bad record is reported and skipped, the job goes on;
3. tokenise tasks turn texts into token counts (and, for whole-document vectors, the token ids the
   workers encode), on CPUs apart from the encoders;
4. an actor pool of workers, one model each (one GPU each when the cluster has GPUs), each holding
   a :class:`~jina_rag.index.core.DocumentIndex`, loads its model and compiles it for every batch
   shape (:meth:`~jina_rag.JinaEncoder.warm_up`) before it takes work, then runs the local engine's
   own batch step (:meth:`~jina_rag.index.core.DocumentIndex.index_batches`: stored-hash lookup,
   encoding of what changed in the collection's layout, upsert with retries on a writer thread
   while the next batch encodes) on its batches;
5. per-document results stream back to the driver: progress bars and a summary that tells the
   workers' start-up apart from the steady-state rate.

Exactly one point per document, whatever happens: a point's id is ``point_id(doc_id)``, so a
batch Ray retries after its worker died rewrites the same points (and finds those its first
attempt wrote, reporting them unchanged), and a rerun of the whole job skips what is stored.
Workers write concurrently, so server stores qualify (a Chroma server or a Qdrant server); a local
folder store takes one writer at a time, so it serves exactly one worker on a one-machine Ray.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import ray.data
except ImportError as error:  # an optional extra
    raise ImportError("the Ray engine needs Ray Data: pip install 'jina-rag[ray]'") from error

from tqdm.auto import tqdm

from jina_rag.encoder import JinaEncoder, special_tokens, tokenize
from jina_rag.index.core import (
    BatchResult,
    DocumentIndex,
    IndexReport,
    StoreKind,
    WrittenBatch,
    open_store,
    too_long_message,
)
from jina_rag.index.documents import (
    TEXT_SUFFIXES,
    Document,
    document_files,
    documents_from_records,
    read_document_file,
    require_file,
    validate_documents,
)
from jina_rag.index.store import IndexMode
from jina_rag.late_chunking import DEFAULT_CHUNK_TOKENS
from jina_rag.loading import load_tokenizer, resolve_model
from jina_rag.modeling import JinaBertConfig
from jina_rag.errors import InvalidInputError, InvalidTypeError
from jina_rag.settings import EncoderSettings, LongTextPolicy
from jina_rag.sparse import BM25SparseEncoder

logger = logging.getLogger(__name__)

SourceKind = Literal["text", "jsonl", "parquet"]
RECORD_SUFFIXES: dict[str, SourceKind] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
SERVER_SCHEMES = ("http://", "https://")
# Documents per block that read and tokenise tasks hand on: small enough to stream, large enough
# that per-block overhead stays negligible.
BLOCK_DOCS = 256
# The list of input files is cut into at most this many blocks, a read task each.
MAX_SOURCE_BLOCKS = 4096
# Read and tokenise tasks ask for half a CPU: their work is light next to encoding, and resources
# unlike the workers' keep Ray Data from fusing them into the worker actors (where one large input
# file would then be read, tokenised and encoded by a single worker).
TASK_CPUS = 0.5
STAGES = ("reading", "tokenising", "encoding", "writing")
# A worker call holds this many write batches, so each batch's write (on the index's writer thread)
# overlaps the next one's encoding; only a call's last write does not. More would leave fewer calls
# to spread over the workers.
WRITE_BATCHES_PER_CALL = 2

DOCUMENTS = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("metadata", pa.string()), ("content_hash", pa.string()),
    ("error", pa.string()), ("reading", pa.float64()),
])
TOKENISED = pa.schema([*DOCUMENTS, ("token_ids", pa.list_(pa.int32())), ("tokens", pa.int64()), ("tokenising", pa.float64())])
RESULTS = pa.schema([
    ("id", pa.string()), ("status", pa.string()), ("tokens", pa.int64()), ("error", pa.string()),
    *((stage, pa.float64()) for stage in STAGES),
    # A worker's first row carries the settings its encoder was built with (JSON), for the report.
    ("encoder", pa.string()),
    ("starting", pa.float64()),  # and the seconds it took to start (store, model, warm-up)
    ("ready_at", pa.float64()),  # and when it was ready (Unix time)
])


@dataclass
class RayIndexReport(IndexReport):
    """What one :func:`index_with_ray` job did; ``failures`` says why each failed input did not land."""

    failures: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    workers: int = 0
    device: str = "cpu"
    mode: IndexMode = "document"  # the mode the job indexed in (given, or the collection's / the store's default)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    seconds_to_first_result: float = 0.0
    # The slowest worker's own start-up (opening the store, loading the model, compiling it); the
    # seconds from the job's start until every worker was ready (Ray placing them, then their start-up);
    # and the steady-state rate: tokens over the seconds after that.
    worker_start_seconds: float = 0.0
    seconds_to_workers_ready: float = 0.0
    steady_tokens_per_second: float = 0.0
    # The settings the workers' encoders were built with, as the first worker to answer reported them.
    encoder_settings: EncoderSettings | None = None

    def summary(self) -> str:
        lines = [
            f"{super().summary()}; {self.workers} {self.device.upper()} worker{'s' if self.workers != 1 else ''}, "
            f"mode {self.mode}",
            f"workers ready after {self.seconds_to_workers_ready:.1f} s (each starting in up to {self.worker_start_seconds:.1f} s: "
            f"store, model, warm-up), then {self.steady_tokens_per_second:,.0f} tokens/s; first results after "
            f"{self.seconds_to_first_result:.1f} s; "
            "time summed over tasks and workers: "
            + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.stage_seconds.items()),
        ]
        if self.duplicates:
            shown = ", ".join(self.duplicates[:10]) + (", ..." if len(self.duplicates) > 10 else "")
            lines.append(f"{len(self.duplicates)} ids appeared more than once (one point each, the last written): {shown}")
        for where, why in list(self.failures.items())[:10]:
            lines.append(f"failed: {where}: {why}")
        if len(self.failures) > 10:
            lines.append(f"... and {len(self.failures) - 10} more failures")
        return "\n".join(lines)


def index_with_ray(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    records: Sequence[str | os.PathLike[str]] = (),
    store: StoreKind,
    location: str,
    collection: str,
    api_key: str | None = None,
    index_fields: Sequence[str] = (),
    settings: EncoderSettings | None = None,
    mode: IndexMode | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    bm25: BM25SparseEncoder | None = None,
    root: str | os.PathLike[str] | None = None,
    suffixes: Iterable[str] = TEXT_SUFFIXES,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
    batch_docs: int = 32,
    retries: int = 3,
    retry_delay: float = 0.5,
    on_batch: Callable[[WrittenBatch], None] | None = None,
    show_progress: bool | None = None,
) -> RayIndexReport:
    """Index text files and record files (JSON Lines, Parquet) on a Ray cluster; see the module doc.

    ``paths`` are text files or folders, as for :func:`~jina_rag.index.read_documents`;
    ``records`` are ``.jsonl`` files (one ``{"id", "text", "metadata"}`` object a line), ``.parquet``
    files (columns ``id``, ``text`` and optional ``metadata``: a JSON object string or a struct),
    or folders holding such files. ``address`` names a running cluster (``"auto"``, ``ray://...``);
    without it, and with no Ray running in this process, a local Ray instance is started and
    stopped again. Each worker builds its :class:`~jina_rag.JinaEncoder` from ``settings`` (an
    :class:`~jina_rag.EncoderSettings`; None: the defaults), on the device it was given: workers
    use GPUs when the cluster has them (one each; ``settings.device="cpu"`` keeps them on CPUs),
    otherwise ``cpus_per_worker`` CPU threads each; ``workers`` defaults to one per GPU, or as many
    as the CPUs allow with one CPU kept for reading and tokenising. The report's
    ``encoder_settings`` are those a worker built its encoder with.

    ``mode``, ``chunk_tokens`` and ``bm25`` are :class:`~jina_rag.index.DocumentIndex`'s: every
    worker runs that class's batch step with them, so the points (and content hashes) are the
    local engine's. ``mode=None`` follows an existing collection, else the store's default
    (``hybrid`` on Qdrant, ``document`` on Chroma); a collection of another layout is refused
    before anything starts.

    The model folder (or hub cache) and jina-rag must be present on every node. ``on_batch`` runs
    in the worker, after the store acknowledged a batch, so it must be picklable. Failures
    (unreadable inputs, bad documents, batches the store refused after ``retries``) are in the
    report; a rerun finishes the job, skipping what is stored and unchanged.
    """
    if batch_docs < 1 or retries < 0 or cpus_per_worker <= 0 or (workers is not None and workers < 1):
        raise InvalidInputError(
            f"batch_docs and workers must be >= 1, retries >= 0 and cpus_per_worker > 0; got {batch_docs}, "
            f"{workers}, {retries} and {cpus_per_worker}"
        )
    require_shared_store(store, location, workers)
    settings = EncoderSettings() if settings is None else settings
    if not isinstance(settings, EncoderSettings):
        raise InvalidTypeError(f"settings is {type(settings).__name__}: pass an EncoderSettings")
    # What only an encoder checks (the dtype's name, ONNX providers), without loading a model here.
    unloaded = JinaEncoder.from_settings(settings.replace(device="cpu"), load=False)
    folder = resolve_model(settings.model)
    config = JinaBertConfig.from_json_file(folder / "config.json")
    if settings.max_length > config.max_position_embeddings:
        raise InvalidInputError(
            f"max_length {settings.max_length} exceeds the model's limit of {config.max_position_embeddings} tokens")
    sources = list_sources(paths, records, root=root, suffixes=suffixes)
    if not sources:
        raise InvalidInputError("nothing to index: give text files or folders, or record files (.jsonl, .parquet)")
    target = open_store(store, location, collection, api_key=api_key, index_fields=index_fields)
    try:
        # The local engine's rules: its mode resolution, and the collection made (or checked) in that mode's layout.
        resolved = DocumentIndex(target, unloaded, mode=mode, chunk_tokens=chunk_tokens, bm25=bm25)
        mode, layout = resolved.resolved_mode(), resolved.layout()
        bm25 = resolved.bm25 if layout == "hybrid" else None  # made here, so a missing extra fails before Ray starts
        target.ensure_collection(config.hidden_size, layout=layout)
        description = target.description
    finally:
        target.close()

    started_ray = not ray.is_initialized()
    if started_ray:
        # A local Ray gets the logical CPUs the workers asked for, even beyond this machine's cores.
        local = {"num_cpus": max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker) + 1)} if address is None and workers else {}
        ray.init(address=address, logging_level=logging.WARNING, **local)
    try:
        require_one_machine_for_local_store(store, location)
        plan = plan_workers(settings.device, workers, cpus_per_worker)
        if settings.attention == "flash" and plan.device != "cuda":
            raise InvalidInputError("attention='flash' runs on CUDA GPUs, and the Ray workers are CPU workers: "
                                    "use attention 'auto', or a cluster with GPUs")
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        context = ray.data.DataContext.get_current()
        ray_bars, context.enable_progress_bars = context.enable_progress_bars, False
        try:
            started, started_at = time.perf_counter(), time.time()
            results = _pipeline(
                sources, plan,
                # Every node reads the model at the folder found here; "cuda" is each worker's own GPU.
                settings=settings.replace(model=str(folder), device=plan.device),
                store_settings=dict(
                    kind=store, location=location, collection=collection, api_key=api_key, index_fields=tuple(index_fields),
                ),
                index_settings=dict(mode=mode, chunk_tokens=chunk_tokens, bm25=bm25),
                batch_docs=batch_docs, retries=retries, retry_delay=retry_delay, on_batch=on_batch,
            )
            report = RayIndexReport(description, workers=plan.workers, device=plan.device, mode=mode)
            total = len(sources) if all(source["kind"] == "text" for source in sources) else None
            _collect(results, report, total, show_progress, started, started_at)
            if not location.startswith(SERVER_SCHEMES):
                _wait_for_the_worker_to_release(store, location, collection)
        finally:
            context.enable_progress_bars = ray_bars
    finally:
        if started_ray:
            ray.shutdown()
    logger.info("%s", report.summary())
    return report


def require_shared_store(kind: StoreKind, location: str, workers: int | None) -> None:
    """Refuse stores that the workers cannot share: servers take concurrent writers, a folder one.

    A local folder store is allowed with ``workers=1`` given explicitly: the driver closes it before
    the one worker opens it (on this machine: :func:`require_one_machine_for_local_store`).
    ``:memory:`` lives in the driver's process, which no worker can reach.
    """
    if location.startswith(SERVER_SCHEMES) or (workers == 1 and location != ":memory:"):
        return
    in_memory = location == ":memory:"
    held = "in this process's memory, which no worker process can reach" if in_memory else "which one process opens at a time"
    many = f"{workers} workers" if workers else "its workers (one per GPU or CPU slot unless --workers 1)"
    one_worker = "" if in_memory else " (or with exactly one Ray worker on this machine: --workers 1)"
    raise InvalidInputError(
        f"{kind} at {location!r} is a local store, {held}; the Ray engine writes from {many}, in separate "
        f"processes and possibly on other machines. Start a server and give its URL (`chroma run --path DIR`, "
        f"then --location http://127.0.0.1:8000; or a Qdrant server's http(s):// URL), or index into the local "
        f"store without --engine ray{one_worker}."
    )


def require_one_machine_for_local_store(kind: StoreKind, location: str) -> None:
    """A local folder store is on this machine: its one worker must be too, so Ray must have one node."""
    if location.startswith(SERVER_SCHEMES):
        return
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes > 1:
        raise InvalidInputError(
            f"{kind} at {location!r} is a local store on this machine, but the Ray cluster has {nodes} machines and "
            f"its worker may run on another. Give a server's http(s):// URL as location, or run without --address."
        )


def _wait_for_the_worker_to_release(kind: StoreKind, location: str, collection: str, timeout: float = 60.0) -> None:
    """Return once the local store opens here: Ray ends the worker (and its hold) just after the last batch."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            open_store(kind, location, collection).close()
            return
        except RuntimeError:  # a Qdrant folder that another process still holds
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass(frozen=True)
class WorkerPlan:
    """How many encoding workers, on which device, with which Ray resources each."""

    workers: int
    device: Literal["cpu", "cuda"]
    num_cpus: float
    num_gpus: float
    threads: int


def plan_workers(device: str | None, workers: int | None, cpus_per_worker: float) -> WorkerPlan:
    """GPU workers (one GPU each) when the cluster has GPUs and ``device`` allows, else CPU workers."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 0)
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"device {device!r}: the Ray engine runs workers on 'cpu' or 'cuda' (a GPU each)")
    use_gpus = gpus > 0 if device is None else device.startswith("cuda")
    if use_gpus:
        if gpus == 0:
            raise InvalidInputError(f"device {device!r} asks for GPU workers but the Ray cluster has no GPUs; use device 'cpu'")
        workers = workers or gpus
        if workers > gpus:
            raise InvalidInputError(f"{workers} GPU workers need {workers} GPUs; the Ray cluster has {gpus}: lower workers")
        # Ray sets CUDA_VISIBLE_DEVICES per actor, so "cuda" is each worker's own GPU.
        return WorkerPlan(workers, "cuda", num_cpus=1, num_gpus=1, threads=1)
    # One CPU stays free for the read and tokenise tasks; without it they would wait forever.
    fitting = int((cpus - 1) // cpus_per_worker)
    workers = workers or max(1, fitting)
    if workers > fitting:
        raise InvalidInputError(
            f"{workers} CPU workers of {cpus_per_worker:g} CPUs each, plus 1 CPU for reading and tokenising, need "
            f"{workers * cpus_per_worker + 1:g} CPUs; the Ray cluster has {cpus:g}: lower workers or cpus_per_worker"
        )
    return WorkerPlan(workers, "cpu", num_cpus=cpus_per_worker, num_gpus=0, threads=max(1, round(cpus_per_worker)))


def list_sources(
    paths: Sequence[str | os.PathLike[str]],
    records: Sequence[str | os.PathLike[str]],
    *,
    root: str | os.PathLike[str] | None = None,
    suffixes: Iterable[str] = TEXT_SUFFIXES,
) -> list[dict[str, str]]:
    """The input files, each ``{"path", "kind", "root"}``; missing paths are errors before any work starts."""
    sources = [
        {"path": str(file), "kind": "text", "root": str(base)}
        for file, base in (document_files(list(paths), root=root, suffixes=suffixes) if paths else ())
    ]
    for entry in map(Path, records):
        if entry.is_dir():
            files = sorted(
                file for file in entry.rglob("*")
                if file.suffix.lower() in RECORD_SUFFIXES and file.is_file()
                and not any(part.startswith(".") for part in file.relative_to(entry).parts)
            )
            if not files:
                raise InvalidInputError(f"{entry}: no record files ({', '.join(RECORD_SUFFIXES)}) in this folder")
        elif entry.is_file():
            files = [entry]
        else:
            require_file(entry)  # raises, saying what it is: missing, a broken link, a named pipe
        sources.extend({"path": str(file), "kind": RECORD_SUFFIXES.get(file.suffix.lower(), "jsonl"), "root": ""} for file in files)
    return sources


def _pipeline(
    sources: list[dict[str, str]],
    plan: WorkerPlan,
    *,
    settings: EncoderSettings,
    store_settings: dict[str, Any],
    index_settings: dict[str, Any],
    batch_docs: int,
    retries: int,
    retry_delay: float,
    on_batch: Callable[[WrittenBatch], None] | None,
) -> ray.data.Dataset:
    return (
        ray.data.from_items(sources, override_num_blocks=min(len(sources), MAX_SOURCE_BLOCKS))
        .map_batches(read_sources, batch_format="pyarrow", batch_size=None, num_cpus=TASK_CPUS)
        .map_batches(
            # Blocks of one write batch each: the actor pool hands blocks out, so the work spreads.
            tokenize_documents, batch_format="pyarrow", batch_size=batch_docs, num_cpus=TASK_CPUS,
            fn_kwargs=dict(
                model=settings.model, max_length=settings.max_length, long_text=settings.long_text,
                keep_ids=index_settings["mode"] == "document",
            ),
        )
        .map_batches(
            IndexWorker, batch_format="pyarrow", batch_size=batch_docs * WRITE_BATCHES_PER_CALL,
            compute=ray.data.ActorPoolStrategy(size=plan.workers), num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
            fn_constructor_kwargs=dict(
                settings=settings, store_settings=store_settings, index_settings=index_settings, threads=plan.threads,
                batch_docs=batch_docs, retries=retries, retry_delay=retry_delay, on_batch=on_batch,
            ),
        )
    )


# -- stage 2: read and parse ------------------------------------------------------------------------


def read_sources(sources: pa.Table) -> Iterator[pa.Table]:
    """Documents of each source, validated and hashed; what cannot be read becomes a failure row."""
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for source in sources.to_pylist():
        for row in _read_source(source["path"], source["kind"], source["root"]):
            rows.append(row)
            if len(rows) == BLOCK_DOCS:
                yield _table(rows, DOCUMENTS, "reading", time.perf_counter() - started)
                rows, started = [], time.perf_counter()
    if rows:
        yield _table(rows, DOCUMENTS, "reading", time.perf_counter() - started)


def _read_source(path: str, kind: SourceKind, root: str) -> Iterator[dict[str, Any]]:
    if kind == "text":
        try:
            yield _document_row(read_document_file(path, root))
        except (OSError, ValueError) as error:
            yield _failure_row(path, f"unreadable, skipped: {error}")
        return
    reader = _json_lines if kind == "jsonl" else _parquet_rows
    try:
        for where, number, record in reader(path):
            try:
                if isinstance(record, ValueError):
                    raise record
                (document,) = documents_from_records([record], start=number)
                yield _document_row(document)
            except (TypeError, ValueError) as error:
                yield _failure_row(where, str(error))
    except (OSError, ValueError, pa.ArrowException) as error:
        yield _failure_row(path, f"unreadable, skipped from here on: {type(error).__name__}: {error}")


def _json_lines(path: str) -> Iterator[tuple[str, int, Any]]:
    """``(where, record number, record)``; a line that is not JSON comes as a ValueError in its place."""
    with open(path, encoding="utf-8") as lines:
        number = 0
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                yield f"{path}:{line_number}", number, _json(line, f"record {number}")
                number += 1


def _parquet_rows(path: str) -> Iterator[tuple[str, int, Any]]:
    """``(where, row number, record)``; ``metadata`` may be a JSON object string, a struct or a map."""
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if "id" not in names or "text" not in names:
        raise InvalidInputError(f"Parquet records need columns 'id' and 'text' (and optional 'metadata'); {path} has {names}")
    columns = [name for name in ("id", "text", "metadata") if name in names]
    number = 0
    for batch in parquet.iter_batches(batch_size=BLOCK_DOCS, columns=columns):
        for row in batch.to_pylist():
            metadata = row.get("metadata")
            if isinstance(metadata, str):
                metadata = _json(metadata, f"record {number}: metadata")
            elif isinstance(metadata, list):  # a Parquet map arrives as (key, value) pairs
                metadata = dict(metadata)
            record = metadata if isinstance(metadata, ValueError) else {**row, "metadata": metadata}
            yield f"{path}:row {number}", number, record
            number += 1


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        return ValueError(f"{what} is not valid JSON ({error.msg} at column {error.colno})")


def _document_row(document: Document) -> dict[str, Any]:
    try:
        validate_documents([document])
    except (TypeError, ValueError) as error:
        return _failure_row(document.id, str(error))
    return {
        "id": document.id, "text": document.text, "metadata": json.dumps(dict(document.metadata), ensure_ascii=False),
        "content_hash": document.content_hash(), "error": "",
    }


def _failure_row(where: str, why: str) -> dict[str, Any]:
    return {"id": where, "text": "", "metadata": "{}", "content_hash": "", "error": why}


def _table(rows: list[dict[str, Any]], schema: pa.Schema, stage: str, seconds: float) -> pa.Table:
    """Rows as a table; the stage's time is spread over them, so sums over any rows add up."""
    for row in rows:
        row[stage] = seconds / len(rows)
    return pa.Table.from_pylist(rows, schema=schema)


# -- stage 3: tokenise --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _tokenizer(model: str) -> Any:
    return load_tokenizer(model)


def tokenize_documents(
    documents: pa.Table, *, model: str, max_length: int, long_text: LongTextPolicy, keep_ids: bool = True,
) -> pa.Table:
    """Token ids (as the encoder cuts them) and token counts (special tokens included); with
    ``keep_ids=False`` the counts only (the passage modes tokenise again, with character offsets)."""
    tokenizer = _tokenizer(model)  # loaded once per process: start-up, not tokenising
    started = time.perf_counter()
    rows = documents.to_pylist()
    valid = [i for i, row in enumerate(rows) if not row["error"]]
    token_ids = tokenize(tokenizer, [rows[i]["text"] for i in valid]) if valid else []
    prefix, suffix = special_tokens(tokenizer)
    for row in rows:
        row["token_ids"], row["tokens"] = [], 0
    for i, ids in zip(valid, token_ids):
        row = rows[i]
        row["token_ids"], row["tokens"] = ids if keep_ids else [], len(prefix) + len(ids) + len(suffix)
        if long_text == "error" and row["tokens"] > max_length:
            row["error"], row["token_ids"] = too_long_message(row["id"], row["tokens"], max_length), []
    return _table(rows, TOKENISED, "tokenising", time.perf_counter() - started)


# -- stage 4: encode and write ------------------------------------------------------------------------


class IndexWorker:
    """One model and one store client in a :class:`~jina_rag.index.core.DocumentIndex`; each call runs
    its batch step (:meth:`~jina_rag.index.core.DocumentIndex.index_batch`) on a batch.

    The encoder is built from ``settings`` (its ``batch_tokens`` included) and warmed up, the index
    from ``index_settings`` (``mode``, ``chunk_tokens``, ``bm25``); a call's documents are written in
    batches of ``batch_docs``. The first call's first row reports the encoder's settings and the
    worker's start-up seconds and the time it was ready back (columns ``encoder``, ``starting``, ``ready_at``).
    """

    def __init__(
        self,
        *,
        settings: EncoderSettings,
        store_settings: dict[str, Any],
        index_settings: dict[str, Any],
        threads: int,
        batch_docs: int,
        retries: int,
        retry_delay: float,
        on_batch: Callable[[WrittenBatch], None] | None,
    ) -> None:
        import torch

        started = time.perf_counter()
        if settings.device == "cpu":
            torch.set_num_threads(threads)
        store = open_store(
            store_settings["kind"], store_settings["location"], store_settings["collection"],
            api_key=store_settings["api_key"], index_fields=store_settings["index_fields"],
        )
        self.index = DocumentIndex(
            store, JinaEncoder.from_settings(settings), batch_tokens=settings.batch_tokens, **index_settings,
        )
        # Compiled for every batch shape before the first batch, so no batch waits on the compiler.
        self.index.encoder.warm_up(settings.batch_tokens)
        self.starting = time.perf_counter() - started
        self.ready_at = time.time()  # wall clock: the driver compares it with its own (one machine, or NTP)
        # Whole-document vectors come from the tokenise stage's ids; the passage layouts tokenise again.
        self.pass_token_ids = self.index.layout() == "document"
        self.settings_reported = False
        self.batch_docs = batch_docs
        self.retries = retries
        self.retry_delay = retry_delay
        self.on_batch = on_batch
        self.written = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row["status"] = "failed" if row["error"] else ""
            row["encoding"] = row["writing"] = 0.0
        # A store call cannot hold one id twice: an id repeated in a batch keeps its last copy.
        last = {row["id"]: i for i, row in enumerate(rows) if not row["status"]}
        for i, row in enumerate(rows):
            if not row["status"] and last[row["id"]] != i:
                row["status"] = "duplicate"
        todo = [row for row in rows if not row["status"]]
        if todo:
            self._index(todo)
        for row in rows:
            if row["status"] != "indexed":
                row["tokens"] = 0  # like the core's report: tokens encoded and written
            row["encoder"], row["starting"], row["ready_at"] = "", 0.0, 0.0
        if rows and not self.settings_reported:
            rows[0]["encoder"] = json.dumps(self.index.encoder.settings.to_dict())
            rows[0]["starting"], rows[0]["ready_at"] = self.starting, self.ready_at
            self.settings_reported = True
        return pa.Table.from_pylist(rows, schema=RESULTS)

    def _index(self, todo: list[dict[str, Any]]) -> None:
        """The index's batch step over the call's write batches of ``batch_docs`` (writes overlap encoding),
        longest documents first, as the local engine's plan cuts them, so each batch pads little."""
        todo = sorted(todo, key=lambda row: -row["tokens"])
        batches = [todo[start : start + self.batch_docs] for start in range(0, len(todo), self.batch_docs)]
        results = self.index.index_batches(
            [[Document(row["id"], row["text"], json.loads(row["metadata"])) for row in rows] for rows in batches],
            token_ids={row["id"]: row["token_ids"] for row in todo} if self.pass_token_ids else None,
            retries=self.retries, retry_delay=self.retry_delay,
        )
        for rows, result in zip(batches, results):
            self._record(rows, result)

    def _record(self, rows: list[dict[str, Any]], result: BatchResult) -> None:
        """Each row's outcome and its share of the batch's time; ``on_batch`` for what landed."""
        outcome = {**dict.fromkeys(result.skipped, "skipped"), **dict.fromkeys(result.indexed, "indexed")}
        why = self._why(result)
        for row in rows:
            row["status"] = outcome.get(row["id"], "failed")
            if row["status"] == "failed":
                row["error"] = why
        if result.indexed:
            if self.on_batch is not None:
                tokens = sum(row["tokens"] for row in rows if row["status"] == "indexed")
                self.on_batch(WrittenBatch(self.written, tuple(result.indexed), tokens))
            self.written += 1
        _spread([row for row in rows if row["status"] != "skipped"], "encoding", result.encoding)
        _spread(rows, "writing", result.looking_up + result.writing)  # store round trips: look-ups and upserts

    def _why(self, result: BatchResult) -> str:
        """Why the batch's failed documents did not land, and what to do."""
        if result.error is None:
            return ""
        error = f"{type(result.error).__name__}: {result.error}"
        where = self.index.store.description
        if result.failed_in == "looking up":
            return f"looking up stored documents in {where} failed: {error}"
        if result.failed_in == "encoding":
            return (f"document {result.blamed!r} got a vector holding NaN or Inf, so its batch was not written: {error}. "
                    f"Fix the model (in float16: use bfloat16 or float32), then index again.")
        return (f"writing to {where} failed after {self.retries} retries: {error}. Run the same indexing again: stored, "
                f"unchanged documents are skipped.")


def _spread(rows: list[dict[str, Any]], stage: str, seconds: float) -> None:
    for row in rows:
        row[stage] += seconds / len(rows)


# -- stage 5: results on the driver -------------------------------------------------------------------


def _collect(
    results: ray.data.Dataset, report: RayIndexReport, total: int | None, show_progress: bool, started: float, started_at: float,
) -> None:
    """Results into the report; ``started`` is the job's start on the performance counter, ``started_at`` in Unix time."""
    seen: set[str] = set()
    with (
        tqdm(total=total, unit="doc", desc="documents", disable=not show_progress) as doc_bar,
        tqdm(unit="tok", unit_scale=True, desc="tokens", disable=not show_progress) as token_bar,
    ):
        ready_at = 0.0
        for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            report.seconds_to_first_result = report.seconds_to_first_result or time.perf_counter() - started
            for row in batch.to_pylist():
                status, doc_id = row["status"], row["id"]
                if status == "failed":
                    report.failed.append(doc_id)
                    report.failures[doc_id] = row["error"]
                elif status == "duplicate" or doc_id in seen:
                    report.duplicates.append(doc_id)
                if status in ("indexed", "skipped"):
                    (report.indexed if status == "indexed" else report.skipped).append(doc_id)
                    seen.add(doc_id)
                report.tokens += row["tokens"]
                if row["encoder"] and report.encoder_settings is None:
                    report.encoder_settings = EncoderSettings.from_dict(json.loads(row["encoder"]))
                report.worker_start_seconds = max(report.worker_start_seconds, row["starting"])
                ready_at = max(ready_at, row["ready_at"])
                for stage in STAGES:
                    report.stage_seconds[stage] += row[stage]
            doc_bar.update(batch.num_rows)
            token_bar.update(sum(batch["tokens"].to_pylist()))
    report.seconds = time.perf_counter() - started
    if ready_at:
        report.seconds_to_workers_ready = min(report.seconds, max(0.0, ready_at - started_at))
    steady = report.seconds - report.seconds_to_workers_ready
    report.steady_tokens_per_second = report.tokens / steady if steady > 0 else 0.0
