"""Document indexing: one point per document, written idempotently to a vector store.

Data flows one way: documents → validation (metadata also by the store's rules) → content hashes
→ lookup of stored hashes (unchanged documents are skipped before any encoding) → token counts →
write batches of similar length (:meth:`DocumentIndex.plan`) → points
(:meth:`DocumentIndex.encode_points`) → upsert with bounded retries → ``on_batch`` hook (and,
with ``sync``, removal of stored documents the run did not hold). The step from write batches of
documents to stored points is :meth:`DocumentIndex.index_batches` (hashes, stored-hash lookup,
encoding of what changed, upsert with retries on one writer thread while the next batch encodes):
:meth:`DocumentIndex.index` runs it in this process, the Ray engine (:mod:`jina_rag.index.ray_data`)
on its workers. Stores sit behind
:class:`DocumentStore` and take :class:`Point` objects.

Modes: ``document`` stores one whole-document vector per document; ``late-chunks`` and ``both``
also store late-chunked passage vectors (:mod:`jina_rag.late_chunking`) with their character
spans; ``hybrid`` adds a BM25 sparse vector (:mod:`jina_rag.sparse`). They differ in search:
``late-chunks`` scores a document by its best passage, ``both`` by the better of that and its
whole-document vector, ``hybrid`` by fusing rankings in the store (:class:`Fusion`; by default
late chunks and BM25).
Hits of passage collections name the passage that matches best. Layouts and the store contract:
:mod:`jina_rag.index.store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from tqdm.auto import tqdm

from jina_rag.encoder import DEFAULT_BATCH_TOKENS, JinaEncoder, NonFiniteVectorError, ProgressCallback, TextTooLongError
from jina_rag.errors import InvalidInputError, InvalidTypeError, JinaRagError
from jina_rag.index.documents import Document, documents_from_records, point_id, validate_documents
from jina_rag.index.store import (
    DEFAULT_MODE_OF_LAYOUT,
    CollectionMismatchError,
    LAYOUT_OF_MODE,
    DocumentStore,
    FilterValue,
    Fusion,
    IndexMode,
    Layout,
    Point,
    SearchHit,
    SearchQuery,
    check_mode,
)
from jina_rag.parallel import Parallel, check_parallel
from jina_rag.late_chunking import DEFAULT_CHUNK_TOKENS, SEPARATORS, Splitter, TextSplitter, encode_late_chunks
from jina_rag.sparse import BM25SparseEncoder

logger = logging.getLogger(__name__)

StoreKind = Literal["qdrant", "chroma"]
STORES: tuple[StoreKind, ...] = ("qdrant", "chroma")
# Stored hashes are looked up, and documents removed by sync, in chunks of this many ids (one round trip each).
LOOKUP_BATCH = 256
T = TypeVar("T")


class IndexingError(RuntimeError, JinaRagError):
    """Some documents did not land in the store; ``failed_ids`` names them, ``report`` tells what did."""

    def __init__(self, message: str, failed_ids: list[str], report: IndexReport) -> None:
        super().__init__(message)
        self.failed_ids = failed_ids
        self.report = report


@dataclass(frozen=True)
class WrittenBatch:
    """A batch the store has acknowledged (passed to the ``on_batch`` hook)."""

    index: int
    doc_ids: tuple[str, ...]
    tokens: int


@dataclass
class IndexPlan:
    """What an indexing run will do: write batches of documents to encode, and the unchanged ones."""

    batches: list[list[Document]]
    hashes: dict[str, str]  # content hash of every document in the run
    tokens: dict[str, int]  # tokens of every document to encode
    skipped: list[str]
    # The collection does not exist yet: :meth:`DocumentIndex.index` creates it just before its first
    # write, so a run that fails earlier leaves no empty collection behind.
    new_collection: bool = False
    # With sync: stored documents that are not among the run's, removed once every document landed.
    stale: list[str] | None = None


@dataclass
class BatchResult:
    """What :meth:`DocumentIndex.index_batch` did with one batch: document ids by outcome, why ``failed``
    did not land (``error``, in stage ``failed_in``; ``blamed``: the document a NaN/Inf vector came from),
    and the seconds spent looking up stored hashes, encoding and writing."""

    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: Exception | None = None
    failed_in: Literal["looking up", "encoding", "writing"] | None = None
    blamed: str | None = None
    looking_up: float = 0.0
    encoding: float = 0.0
    writing: float = 0.0


@dataclass
class IndexReport:
    """What one :meth:`DocumentIndex.index` run did."""

    collection: str
    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    # Documents ``sync`` removed (stored, but not among the run's; none if a document failed); ``None``: no sync.
    removed: list[str] | None = None

    def summary(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        removed = "" if self.removed is None else f", {len(self.removed)} removed"
        return (
            f"{self.collection}: {len(self.indexed)} indexed, {len(self.skipped)} unchanged (skipped), "
            f"{len(self.failed)} failed{removed}; {self.tokens} tokens in {self.seconds:.1f} s ({rate:,.0f} tokens/s)"
        )


def filter_conditions(filter: Mapping[str, FilterValue | Sequence[FilterValue]] | None) -> dict[str, list[FilterValue]]:
    """Normalise ``{"key": value | [values]}`` (all keys must match; a list means any of) for stores."""
    conditions: dict[str, list[FilterValue]] = {}
    for key, value in (filter or {}).items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values or not all(isinstance(v, (str, int)) for v in values):
            raise InvalidTypeError(f"filter {key!r}: use a string, integer or boolean, or a non-empty list of them; got {value!r}")
        conditions[key] = values
    return conditions


def chunking_key(splitter: Splitter | None, chunk_tokens: int) -> str:
    """What decides the passages; part of a passage point's hash, so changing it re-indexes documents.

    A splitter function is known by its name only: give a changed one another name (or a new collection).
    """
    if splitter is None:
        return json.dumps({"chunk_tokens": chunk_tokens, "separators": SEPARATORS})
    if isinstance(splitter, TextSplitter):
        settings = {
            key: getattr(value, "__qualname__", None) if callable(value) else value
            for key, value in sorted(vars(splitter).items())
            if callable(value) or isinstance(value, (str, int, float, bool, list, tuple, type(None)))
        }
        return f"{type(splitter).__module__}.{type(splitter).__qualname__} {json.dumps(settings, default=str)}"
    return f"{getattr(splitter, '__module__', '')}.{getattr(splitter, '__qualname__', type(splitter).__qualname__)}"


def stored_hash(content_hash: str, model_fingerprint: str, *settings: str) -> str:
    """The hash stored with a document's point: its content's, the model's (so documents indexed by another
    model are re-embedded, not skipped as unchanged) and any settings that shape its vectors."""
    key = "\n".join([content_hash, f"model {model_fingerprint}", *settings])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def open_store(
    kind: StoreKind,
    location: str,
    collection: str,
    *,
    api_key: str | None = None,
    index_fields: Sequence[str] = (),
) -> DocumentStore:
    """A store from a location: Qdrant ``:memory:``, a folder or an ``http(s)://`` URL; Chroma a folder or URL.

    A Qdrant folder is Qdrant Edge's (:class:`~jina_rag.index.qdrant_edge.EdgeStore`, a collection
    per subfolder); ``:memory:`` and servers go through qdrant-client.
    """
    if kind == "qdrant":
        if location == ":memory:" or location.startswith(("http://", "https://")):
            from jina_rag.index.qdrant import QdrantStore

            return QdrantStore.from_location(location, collection, api_key=api_key, index_fields=index_fields)
        if api_key:
            raise InvalidInputError("an API key only applies to a Qdrant server: give an http(s):// URL as location")
        from jina_rag.index.qdrant_edge import EdgeStore

        return EdgeStore(location, collection, index_fields=index_fields)
    if kind == "chroma":
        from jina_rag.index.chroma import ChromaStore

        return ChromaStore.from_location(location, collection, api_key=api_key)
    raise InvalidInputError(f"unknown store {kind!r}: use one of {', '.join(STORES)}")


def too_long_message(doc_id: str, tokens: int, max_length: int) -> str:
    """Why a document over ``max_length`` is refused under the ``long_text="error"`` policy."""
    return (
        f"document {doc_id!r} has {tokens} tokens, over max_length={max_length}; "
        f"use an encoder with long_text='windows' (one averaged vector) or 'truncate'"
    )


def upsert_with_retries(store: DocumentStore, points: Sequence[Point], retries: int, retry_delay: float) -> None:
    """Upsert, retrying ``retries`` times with doubling delays; bad input is raised at once."""
    with_retries(lambda: store.upsert(points), f"writing {len(points)} points to {store.description}", retries, retry_delay)


def with_retries(call: Callable[[], T], what: str, retries: int, retry_delay: float) -> T:
    """``call()``, retried ``retries`` times with doubling delays; bad input (TypeError, ValueError) is raised at once."""
    for attempt in range(retries + 1):
        try:
            return call()
        except (TypeError, ValueError):
            raise  # bad input: retrying cannot help
        except Exception as error:
            if attempt == retries:
                raise
            delay = retry_delay * 2**attempt
            logger.warning(
                "%s failed (%s: %s); retry %d of %d in %.1f s", what, type(error).__name__, error, attempt + 1, retries, delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class _BatchProgress:
    """Moves a token bar through one write batch of ``tokens`` as the model reads it (called with ``(done, total)``
    in tokens read, windows and special tokens included, so scaled to the batch's share)."""

    def __init__(self, bar: Any, tokens: int) -> None:
        self.bar, self.start, self.tokens = bar, bar.n, tokens

    def __call__(self, done: int, total: int) -> None:
        target = self.start + self.tokens * min(done, total) // max(total, 1)
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)


class DocumentIndex:
    """Index documents into a store (one point each), and search them.

    ``mode`` is ``document`` (one whole-document vector per document), ``late-chunks`` or ``both``
    (passage vectors too, from ``splitter`` or LangChain's recursive splitter with passages of about
    ``chunk_tokens`` tokens; see :func:`~jina_rag.late_chunking.encode_late_chunks`) or ``hybrid``
    (passages and a BM25 sparse vector from ``bm25``, searched with ``fusion``). It also sets how
    :meth:`search` scores documents by default. ``None`` follows the collection (``hybrid``,
    ``late-chunks`` or ``document`` by its layout); a new collection is ``hybrid`` where the store
    can hold it (Qdrant: it retrieved best on our long and short sets), else ``document``.

    Re-running on the same corpus is cheap and safe: point ids derive from document ids, and a
    document whose stored content hash matches is skipped without being encoded. The hash covers the
    model (:attr:`JinaEncoder.fingerprint`), so another model re-embeds everything; in passage modes
    it also covers the splitter's settings, in hybrid mode the BM25 settings.
    """

    def __init__(
        self,
        store: DocumentStore,
        encoder: JinaEncoder | None = None,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        mode: IndexMode | None = None,
        splitter: Splitter | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        bm25: BM25SparseEncoder | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        if mode is not None:
            check_mode(mode)
        if chunk_tokens < 1:
            raise InvalidInputError(f"chunk_tokens must be positive, got {chunk_tokens}")
        self.store = store
        self.encoder = encoder or JinaEncoder.from_pretrained()
        self.batch_tokens = batch_tokens
        self.mode = mode
        self.splitter = splitter
        self.chunk_tokens = chunk_tokens
        self._bm25 = bm25
        self.fusion = fusion or Fusion()
        self._stored_dimension: int | None = None  # the collection's, learnt at the first search

    @property
    def bm25(self) -> BM25SparseEncoder:
        """The BM25 sparse encoder of hybrid mode (made on first use)."""
        if self._bm25 is None:
            self._bm25 = BM25SparseEncoder()
        return self._bm25

    @classmethod
    def open(
        cls,
        kind: StoreKind,
        location: str,
        collection: str,
        *,
        encoder: JinaEncoder | None = None,
        api_key: str | None = None,
        index_fields: Sequence[str] = (),
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        mode: IndexMode | None = None,
        splitter: Splitter | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        bm25: BM25SparseEncoder | None = None,
        fusion: Fusion | None = None,
    ) -> DocumentIndex:
        """Open (not yet create) a collection in a store named by kind and location; see :func:`open_store`."""
        encoder = encoder or JinaEncoder.from_pretrained()
        store = open_store(kind, location, collection, api_key=api_key, index_fields=index_fields)
        return cls(
            store, encoder, batch_tokens=batch_tokens, mode=mode, splitter=splitter, chunk_tokens=chunk_tokens,
            bm25=bm25, fusion=fusion,
        )

    def resolved_mode(self) -> IndexMode:
        """The mode in use: the one given, else the collection's (by its layout); for a new collection
        ``hybrid`` where the store can hold it (Qdrant), else ``document`` (Chroma)."""
        if self.mode is not None:
            return self.mode
        layout = self.store.layout()
        if layout is not None:
            return DEFAULT_MODE_OF_LAYOUT[layout]
        return "hybrid" if "hybrid" in self.store.layouts else "document"

    def layout(self) -> Layout:
        """The layout this index writes: the one its mode needs."""
        return LAYOUT_OF_MODE[self.resolved_mode()]

    def __enter__(self) -> DocumentIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def plan(
        self,
        documents: Iterable[Document | Mapping[str, Any] | Sequence[Any]],
        *,
        batch_docs: int = 32,
        sync: bool = False,
        unread_ids: Collection[str] = (),
    ) -> IndexPlan:
        """Validate documents (their metadata against what the store takes), check an existing
        collection, and find what needs encoding; with ``sync``, also what to remove (see :meth:`index`).

        A bad document stops here, before anything is written. A new collection is not created
        here but by :meth:`index` just before its first write (call the store's
        ``ensure_collection`` when writing a plan's points another way). Documents whose stored
        hash matches are skipped; the rest are sorted longest first into write batches, so each
        batch holds documents of similar length and pads little.
        """
        if batch_docs < 1:
            raise InvalidInputError(f"batch_docs must be >= 1, got {batch_docs}")
        docs = validate_documents(documents_from_records(documents))
        for doc in docs:
            self.store.check_metadata(doc.id, doc.metadata)
        layout = self.layout()
        exists = self.store.layout() is not None
        if exists:
            self.store.ensure_collection(self.encoder.dim, layout=layout)
        stale = self._stale(docs, exists, unread_ids) if sync else None
        hashes = self.content_hashes(docs, layout)
        stored = self._stored_hashes([doc.id for doc in docs]) if exists else {}
        todo = [doc for doc in docs if stored.get(doc.id) != hashes[doc.id]]
        counts = self.encoder.count_tokens([doc.text for doc in todo]) if todo else []
        tokens = {doc.id: count for doc, count in zip(todo, counts)}
        self._check_lengths(todo, counts)
        todo.sort(key=lambda doc: -tokens[doc.id])
        return IndexPlan(
            batches=[todo[start : start + batch_docs] for start in range(0, len(todo), batch_docs)],
            hashes=hashes,
            tokens=tokens,
            skipped=[doc.id for doc in docs if stored.get(doc.id) == hashes[doc.id]],
            new_collection=not exists,
            stale=stale,
        )

    def _stale(self, docs: Sequence[Document], exists: bool, unread_ids: Collection[str]) -> list[str]:
        """The stored documents sync would remove, refusing (before anything is written) a sync that would remove wrongly."""
        where = self.store.description
        if not docs:
            raise InvalidInputError(
                f"sync with no documents would remove every document of {where}: give the documents the collection "
                f"should hold, or delete the collection; nothing was written or removed"
            )
        if not exists:
            return []
        stored = set(self.store.document_ids())
        given = {doc.id for doc in docs}
        stale = sorted(stored - given)
        if stored and not stored & given:
            raise InvalidInputError(
                f"sync refused: none of this run's {len(given)} documents is among the {len(stored)} of {where}, so "
                f"sync would remove every one of them. Ids are paths relative to the indexed folder: is it another "
                f"folder or --root than last time? Index without sync, or delete the collection first; nothing was "
                f"written or removed"
            )
        unread = sorted(set(unread_ids) & set(stale))
        if unread:
            shown = ", ".join(unread[:10]) + (", ..." if len(unread) > 10 else "")
            raise InvalidInputError(
                f"sync refused: {len(unread)} documents of {where} were skipped this run, not deleted ({shown}: files "
                f"of types not read, named pipes or broken links; see the warnings), and sync would remove them. Read "
                f"them (--suffix .EXT, suffixes= in Python), or remove them with delete; nothing was written or removed"
            )
        return stale

    def encode_points(
        self, docs: Sequence[Document], hashes: Mapping[str, str], on_progress: ProgressCallback | None = None,
        parallel: Parallel = None, *, token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[Point]:
        """One point per document: its whole text as one vector (long ones through the encoder's
        windows) and, by layout, its late-chunked passage vectors and spans and its BM25 vector.
        ``on_progress(done, total)`` follows the model's batches in tokens read (see :meth:`JinaEncoder.encode`);
        ``parallel`` spreads the encoding over worker processes (see :meth:`JinaEncoder.encode`).
        ``token_ids``: the documents' ids as :func:`~jina_rag.encoder.tokenize` made them, so the
        whole-document layout does not tokenise again (:meth:`JinaEncoder.encode_tokenized`; no
        ``on_progress`` or ``parallel`` then); the passage layouts tokenise anyway."""
        texts = [doc.text for doc in docs]
        layout = self.layout()
        if token_ids is not None and len(token_ids) != len(docs):
            raise InvalidInputError(f"token_ids holds {len(token_ids)} entries for {len(docs)} documents")
        if token_ids is not None and (on_progress is not None or parallel is not None):
            raise InvalidInputError("token_ids are encoded in this process without progress: drop on_progress and parallel")
        if layout == "document":
            if token_ids is not None:
                vectors = self.encoder.encode_tokenized(token_ids, batch_tokens=self.batch_tokens)
            else:
                vectors = self.encoder.encode(
                    texts, batch_tokens=self.batch_tokens, show_progress=False, on_progress=on_progress, parallel=parallel,
                )
            return [
                Point(point_id(doc.id), doc.id, vector, doc.text, doc.metadata, hashes[doc.id])
                for doc, vector in zip(docs, vectors)
            ]
        # Late chunking needs each token's character offsets to map passages onto tokens, which plain
        # ids do not carry: the passage layouts tokenise the texts again (with offsets), ignoring token_ids.
        chunked = encode_late_chunks(
            self.encoder, texts, splitter=self.splitter, chunk_tokens=self.chunk_tokens,
            batch_tokens=self.batch_tokens, show_progress=False, on_progress=on_progress, parallel=parallel,
        )
        sparse = self.bm25.embed_documents(texts) if layout == "hybrid" else [None] * len(docs)
        return [
            Point(
                point_id(doc.id), doc.id, chunks.document_vector, doc.text, doc.metadata, hashes[doc.id],
                passage_spans=chunks.spans, passage_vectors=chunks.vectors, sparse=bm25,
            )
            for doc, chunks, bm25 in zip(docs, chunked, sparse)
        ]

    def index_batch(
        self,
        docs: Sequence[Document],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
        hashes: Mapping[str, str] | None = None,
        look_up: bool = True,
        create_collection: bool = False,
        retries: int = 3,
        retry_delay: float = 0.5,
        on_progress: ProgressCallback | None = None,
        parallel: Parallel = None,
    ) -> BatchResult:
        """One write batch, from documents to stored points: :meth:`index_batches` with one batch.

        ``token_ids`` are the documents' ids in their order; ``on_progress`` follows the encoding
        (see :meth:`encode_points`). A failed look-up or write, or a NaN/Inf vector, marks the
        documents it concerns failed, with the error, and is not raised.
        """
        if token_ids is not None and len(token_ids) != len(docs):
            raise InvalidInputError(f"token_ids holds {len(token_ids)} entries for {len(docs)} documents")
        (result,) = self.index_batches(
            [docs], token_ids=None if token_ids is None else {doc.id: ids for doc, ids in zip(docs, token_ids)},
            hashes=hashes, look_up=look_up, create_collection=create_collection, retries=retries,
            retry_delay=retry_delay, progress=None if on_progress is None else lambda number: on_progress, parallel=parallel,
        )
        return result

    def index_batches(
        self,
        batches: Sequence[Sequence[Document]],
        *,
        token_ids: Mapping[str, Sequence[int]] | None = None,
        hashes: Mapping[str, str] | None = None,
        look_up: bool = True,
        create_collection: bool = False,
        retries: int = 3,
        retry_delay: float = 0.5,
        progress: Callable[[int], ProgressCallback | None] | None = None,
        parallel: Parallel = None,
        stop_on_failure: bool = False,
    ) -> Iterator[BatchResult]:
        """The batch step over write batches, each written on a background thread while the next one
        encodes: what :meth:`index` runs in this process and the Ray engine's workers run on theirs.
        Yields each batch's :class:`BatchResult`, in order, once the store acknowledged or refused it.

        ``batches`` hold validated documents with unique ids; ``hashes`` their stored hashes (default:
        :meth:`content_hashes`). With ``look_up``, documents whose stored hash matches are skipped (one
        look-up for every batch before anything is written; the collection must exist). The rest are
        encoded (:meth:`encode_points`, with ``token_ids`` by document id, ``progress(batch number)``'s
        callback and ``parallel``) and upserted with ``retries`` (doubling delays from ``retry_delay``);
        ``create_collection`` creates the collection just before the first write. At most one write is
        in flight, and only the store's thread touches the store, so a store client needs no thread
        safety. A failed look-up or write, or a NaN/Inf vector, marks its documents failed, with the
        error; with ``stop_on_failure`` nothing after that batch is written (its result is the last).
        """
        if retries < 0:
            raise InvalidInputError(f"retries must be >= 0, got {retries}")
        layout = self.layout()
        if hashes is None:
            hashes = self.content_hashes([doc for docs in batches for doc in docs], layout)
        stored: dict[str, str] = {}
        started = time.perf_counter()
        if look_up:
            try:
                stored = self._stored_hashes([doc.id for docs in batches for doc in docs], retries, retry_delay)
            except Exception as error:
                for docs in batches:
                    yield BatchResult(failed=[doc.id for doc in docs], error=error, failed_in="looking up",
                                      looking_up=time.perf_counter() - started)
                    if stop_on_failure:
                        return
                return
        looking_up = (time.perf_counter() - started) / max(1, len(batches))
        create = create_collection
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jina-rag-writer") as writer:
            writing: Future[BatchResult] | None = None
            for number, docs in enumerate(batches):
                result = BatchResult(skipped=[doc.id for doc in docs if stored.get(doc.id) == hashes[doc.id]], looking_up=looking_up)
                todo = [doc for doc in docs if stored.get(doc.id) != hashes[doc.id]]
                points = self._encode_batch(
                    todo, result, hashes, token_ids, None if progress is None else progress(number), parallel,
                ) if todo else []
                if writing is not None:
                    previous = writing.result()
                    yield previous
                    if previous.error is not None and stop_on_failure:
                        return
                if points:
                    writing = writer.submit(self._write_batch, todo, points, result, create, retries, retry_delay)
                    create = False
                else:
                    writing = None
                    yield result
                    if result.error is not None and stop_on_failure:
                        return
            if writing is not None:
                yield writing.result()

    def _encode_batch(
        self, todo: list[Document], result: BatchResult, hashes: Mapping[str, str],
        token_ids: Mapping[str, Sequence[int]] | None, on_progress: ProgressCallback | None, parallel: Parallel,
    ) -> list[Point]:
        """The points of ``todo``, or none and ``result`` failed when a vector holds NaN or Inf."""
        started = time.perf_counter()
        try:
            points = self.encode_points(
                todo, hashes, on_progress=on_progress, parallel=parallel,
                token_ids=None if token_ids is None else [token_ids[doc.id] for doc in todo],
            )
        except NonFiniteVectorError as error:
            # The store would refuse NaN or keep it and break search: the batch is not written.
            result.failed, result.error, result.failed_in = [doc.id for doc in todo], error, "encoding"
            result.blamed = todo[error.index].id
            points = []
        result.encoding = time.perf_counter() - started
        return points

    def _write_batch(
        self, todo: list[Document], points: list[Point], result: BatchResult, create_collection: bool, retries: int, retry_delay: float,
    ) -> BatchResult:
        """Upsert a batch's points (on the writer thread); ``result`` says whether they landed."""
        started = time.perf_counter()
        if create_collection:  # created only now, so a run that fails before writing leaves none behind
            self.store.ensure_collection(self.encoder.dim, layout=self.layout())
        try:
            upsert_with_retries(self.store, points, retries, retry_delay)
        except Exception as error:
            result.failed, result.error, result.failed_in = [doc.id for doc in todo], error, "writing"
        else:
            result.indexed = [doc.id for doc in todo]
        result.writing = time.perf_counter() - started
        return result

    def content_hashes(self, docs: Sequence[Document], layout: Layout | None = None) -> dict[str, str]:
        """The hash stored with each document's point (by id): content, model and the settings that shape
        its vectors in ``layout`` (default: :meth:`layout`); see :func:`stored_hash`."""
        layout = self.layout() if layout is None else layout
        return {doc.id: self._content_hash(doc, layout) for doc in docs}

    def _stored_hashes(self, doc_ids: Sequence[str], retries: int = 0, retry_delay: float = 0.5) -> dict[str, str]:
        """Stored hashes of those documents that have a point, looked up ``LOOKUP_BATCH`` ids a round trip."""
        stored: dict[str, str] = {}
        for start in range(0, len(doc_ids), LOOKUP_BATCH):
            chunk = list(doc_ids[start : start + LOOKUP_BATCH])
            stored.update(with_retries(
                lambda: self.store.existing_hashes(chunk), f"looking up {len(chunk)} documents in {self.store.description}",
                retries, retry_delay,
            ))
        return stored

    def index(
        self,
        documents: Iterable[Document | Mapping[str, Any] | Sequence[Any]],
        *,
        batch_docs: int = 32,
        retries: int = 3,
        retry_delay: float = 0.5,
        on_batch: Callable[[WrittenBatch], None] | None = None,
        show_progress: bool | None = None,
        sync: bool = False,
        unread_ids: Collection[str] = (),
        parallel: Parallel = None,
    ) -> IndexReport:
        """Encode and write new or changed documents; skip unchanged ones (see :meth:`plan`).

        Each write batch of up to ``batch_docs`` documents is retried ``retries`` times with
        doubling delays. If a batch still fails, the run stops and raises :class:`IndexingError`
        naming every document that did not land; running again finishes the job. ``on_batch`` is
        called after each batch the store acknowledged.

        ``sync=True`` makes the collection hold exactly ``documents``: once every one of them
        landed, stored documents that are not among them (a file deleted from the indexed folder)
        are removed, all their points, and ``report.removed`` names them. Without it nothing is
        removed. Sync removes nothing when a document fails, and refuses before writing anything
        when ``documents`` is empty, shares no id with the collection (another folder or root), or
        would remove one of ``unread_ids`` (files that exist but were skipped this run, as
        :func:`~jina_rag.index.read_documents` reports them through ``skipped=``).

        ``parallel=N`` (or a list of devices) encodes each batch over N worker processes (see
        :meth:`JinaEncoder.encode`); writing stays in this process, so the guarantees above hold.
        """
        if retries < 0:
            raise InvalidInputError(f"retries must be >= 0, got {retries}")
        check_parallel(parallel)
        started = time.perf_counter()
        plan = self.plan(documents, batch_docs=batch_docs, sync=sync, unread_ids=unread_ids)
        report = IndexReport(self.store.description, skipped=plan.skipped)
        total_tokens = sum(plan.tokens.values())
        if show_progress is None:
            show_progress = bool(plan.batches) and sys.stderr.isatty()
        with (
            tqdm(total=len(plan.hashes), initial=len(plan.skipped), unit="doc", desc="documents", disable=not show_progress) as doc_bar,
            tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="tokens", disable=not show_progress) as token_bar,
        ):
            batch_tokens = [sum(plan.tokens[doc.id] for doc in batch) for batch in plan.batches]
            # The token bar moves while a batch is encoded (one long document can take minutes), as the
            # batch's share of the tokens the model has read; the document bar when the batch is written.
            # Planned: hashes made and stored ones looked up for the whole run, so no look-up there.
            results = self.index_batches(
                plan.batches, hashes=plan.hashes, look_up=False, create_collection=plan.new_collection,
                retries=retries, retry_delay=retry_delay, parallel=parallel, stop_on_failure=True,
                progress=(lambda number: _BatchProgress(token_bar, batch_tokens[number])) if show_progress else None,
            )
            for number, (batch, result) in enumerate(zip(plan.batches, results)):
                if result.error is not None:
                    self._stop(report, plan, number, started)
                    message = self._failure_message(report, result.error, result.blamed)
                    raise IndexingError(message, report.failed, report) from result.error
                written = WrittenBatch(number, tuple(doc.id for doc in batch), batch_tokens[number])
                report.indexed.extend(written.doc_ids)
                report.tokens += written.tokens
                doc_bar.update(len(batch))
                token_bar.update(max(0, report.tokens - token_bar.n))
                # Progress where no bar is shown (logs, `jina-rag -v index`), and what was acknowledged before a crash.
                logger.info(
                    "batch %d of %d written to %s: %d documents, %d tokens",
                    number + 1, len(plan.batches), self.store.description, len(batch), written.tokens,
                )
                if on_batch is not None:
                    on_batch(written)
        if plan.stale is not None:
            self._remove_stale(report, plan.stale, retries, retry_delay)
        report.seconds = time.perf_counter() - started
        logger.info("%s", report.summary())
        return report

    def _remove_stale(self, report: IndexReport, stale: list[str], retries: int, retry_delay: float) -> None:
        """Sync's last step, once every document landed: remove the stored documents the run did not hold."""
        report.removed = []
        for start in range(0, len(stale), LOOKUP_BATCH):
            chunk = stale[start : start + LOOKUP_BATCH]
            try:
                with_retries(lambda: self.store.delete(chunk), f"removing {len(chunk)} documents from {self.store.description}", retries, retry_delay)
            except Exception as error:
                raise IndexingError(
                    f"every document landed in {self.store.description}, but sync removed only {len(report.removed)} of "
                    f"the {len(stale)} documents not in this run: {type(error).__name__}: {error}. Run the same "
                    f"indexing again to finish.", [], report,
                ) from error
            report.removed.extend(chunk)

    def _content_hash(self, doc: Document, layout: Layout) -> str:
        settings = []
        if layout != "document":
            settings.append(chunking_key(self.splitter, self.chunk_tokens))
        if layout == "hybrid":
            settings.append(str(self.bm25.settings))
        return stored_hash(doc.content_hash(), self.encoder.fingerprint, *settings)

    def _check_lengths(self, docs: list[Document], tokens: list[int]) -> None:
        if self.encoder.long_text != "error":
            return
        for doc, count in zip(docs, tokens):
            if count > self.encoder.max_length:
                raise TextTooLongError(too_long_message(doc.id, count, self.encoder.max_length))

    @staticmethod
    def _stop(report: IndexReport, plan: IndexPlan, number: int, started: float) -> None:
        """Mark batch ``number`` and every later one failed: the run stops there (and a sync removes nothing)."""
        report.failed = [doc.id for later in plan.batches[number:] for doc in later]
        report.seconds = time.perf_counter() - started
        report.removed = None if plan.stale is None else []

    @staticmethod
    def _failure_message(report: IndexReport, error: Exception, doc_id: str | None = None) -> str:
        """Why the run stopped, and what to do: a rerun helps when the store failed, not when the input or model did."""
        shown = ", ".join(report.failed[:10]) + (", ..." if len(report.failed) > 10 else "")
        landed = f"{len(report.indexed)} were written this run"
        if report.removed is not None:
            landed += " and sync removed nothing (it removes documents only once every document landed)"
        if isinstance(error, NonFiniteVectorError):
            return (
                f"document {doc_id!r} got a vector holding NaN or Inf, so its batch was not written; "
                f"{len(report.failed)} documents did not land in {report.collection} ({shown}); {landed}. The model's "
                f"outputs overflow (in float16: use bfloat16 or float32) or its weights are damaged: fix the model, "
                f"then index again."
            )
        what = f"{len(report.failed)} documents did not land in {report.collection} ({shown}): {type(error).__name__}: {error}"
        if isinstance(error, (TypeError, ValueError)):  # refused at once, as upsert_with_retries does not retry them
            return f"{what}. {landed}. The store refused the data: fix it, then index again."
        return (
            f"{what}. {landed}. Run the same indexing again once the store is reachable: stored, unchanged "
            f"documents are skipped."
        )

    def search(
        self,
        query: str | SearchQuery,
        *,
        limit: int = 5,
        filter: Mapping[str, FilterValue | Sequence[FilterValue]] | None = None,
        mode: IndexMode | None = None,
        fusion: Fusion | None = None,
    ) -> list[SearchHit]:
        """Documents most similar to ``query`` whose metadata matches ``filter``, best first.

        ``mode`` (default: :meth:`resolved_mode`) scores a document by its whole-document vector
        (``document``), its best passage (``late-chunks``), the better of the two (``both``) or
        the fusion of those and BM25 (``hybrid``, weighted by ``fusion``, default the index's);
        all but the first need a collection indexed with passages, ``hybrid`` one indexed in
        hybrid mode. Hits of such a collection carry the best-matching passage. ``query`` may be
        prepared by :meth:`prepare_queries` (many queries encoded in one batch).
        """
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, got {limit}")
        mode = mode or self.resolved_mode()
        check_mode(mode)
        conditions = filter_conditions(filter)
        if isinstance(query, str):
            query = self.prepare_queries([query], mode=mode)[0]
        if mode == "hybrid" and query.sparse is None:
            raise InvalidInputError("this query was prepared without its BM25 vector: prepare it with mode='hybrid'")
        self._check_query_dimension(len(query.vector))
        return self.store.search(replace(query, fusion=fusion or self.fusion), limit, conditions, mode)

    def _check_query_dimension(self, dim: int) -> None:
        # The store's own errors for this are a bare Exception (Edge) or chromadb's InvalidArgumentError.
        if self._stored_dimension is None:
            self._stored_dimension = self.store.dimension()
        if self._stored_dimension not in (None, dim):
            raise CollectionMismatchError(
                f"{self.store.description} holds {self._stored_dimension}-dimensional vectors; this query has {dim} "
                f"dimensions: search with the model that indexed the collection (or re-index it with this one)"
            )

    def prepare_queries(self, texts: Sequence[str], *, mode: IndexMode | None = None) -> list[SearchQuery]:
        """Encode query texts in one batch (and their BM25 vectors for ``hybrid``) for :meth:`search`."""
        mode = mode or self.resolved_mode()
        vectors = self.encoder.encode(list(texts), batch_tokens=self.batch_tokens, show_progress=False)
        sparse = [self.bm25.embed_query(text) for text in texts] if mode == "hybrid" else [None] * len(texts)
        return [SearchQuery(vector, bm25, self.fusion) for vector, bm25 in zip(vectors, sparse)]

    def delete(self, doc_ids: Iterable[str]) -> None:
        """Remove documents from the store."""
        self.store.delete(list(doc_ids))

    def count(self) -> int:
        """Documents in the collection."""
        return self.store.count()
