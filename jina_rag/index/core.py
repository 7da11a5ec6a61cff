"""Whole-document indexing: one vector per document, written idempotently to a vector store.

Data flows one way: documents → validation → content hashes → lookup of stored hashes (unchanged
documents are skipped before any encoding) → token counts → write batches of similar length →
encode → upsert with bounded retries → ``on_batch`` hook. Stores sit behind :class:`DocumentStore`,
so encoding and writing stay separable (several passage vectors per document, or encoding spread
over workers, only change what produces the :class:`Point`\\ s).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from jina_rag.encoder import DEFAULT_BATCH_TOKENS, JinaEncoder, TextTooLongError
from jina_rag.index.documents import Document, documents_from_records, point_id, validate_documents

logger = logging.getLogger(__name__)

StoreKind = Literal["qdrant", "chroma"]
STORES: tuple[StoreKind, ...] = ("qdrant", "chroma")
FilterValue = str | int | bool
# Stored hashes are looked up in chunks of this many ids (one round trip each).
LOOKUP_BATCH = 256


class CollectionMismatchError(ValueError):
    """An existing collection holds vectors of another dimension or distance; it is left untouched."""


class IndexingError(RuntimeError):
    """Some documents did not land in the store; ``failed_ids`` names them, ``report`` tells what did."""

    def __init__(self, message: str, failed_ids: list[str], report: IndexReport) -> None:
        super().__init__(message)
        self.failed_ids = failed_ids
        self.report = report


@dataclass(frozen=True)
class Point:
    """One vector as a store keeps it, with the document it belongs to."""

    id: str
    doc_id: str
    vector: np.ndarray
    text: str
    metadata: Mapping[str, Any]
    content_hash: str


@dataclass(frozen=True)
class SearchHit:
    """A search result: the document's id, cosine similarity, text and metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class WrittenBatch:
    """A batch the store has acknowledged (passed to the ``on_batch`` hook)."""

    index: int
    doc_ids: tuple[str, ...]
    tokens: int


@dataclass
class IndexReport:
    """What one :meth:`DocumentIndex.index` run did."""

    collection: str
    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return (
            f"{self.collection}: {len(self.indexed)} indexed, {len(self.skipped)} unchanged (skipped), "
            f"{len(self.failed)} failed; {self.tokens} tokens in {self.seconds:.1f} s ({rate:,.0f} tokens/s)"
        )


class DocumentStore(Protocol):
    """What the indexer needs from a vector store. Vectors are compared by cosine similarity."""

    description: str

    def ensure_collection(self, dim: int) -> None:
        """Create the collection, or check an existing one (raise :class:`CollectionMismatchError`)."""

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hashes of those documents that have a point with id ``point_id(doc_id)``."""

    def upsert(self, points: Sequence[Point]) -> None:
        """Write points, replacing those with the same ids; return only once the store has them."""

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove every point of these documents."""

    def search(self, vector: np.ndarray, limit: int, conditions: dict[str, list[FilterValue]]) -> list[SearchHit]:
        """Nearest points whose metadata matches every condition (key → any of the values)."""

    def count(self) -> int:
        """Points in the collection."""

    def close(self) -> None:
        """Release the client (local stores hold a lock on their folder)."""


def filter_conditions(filter: Mapping[str, FilterValue | Sequence[FilterValue]] | None) -> dict[str, list[FilterValue]]:
    """Normalise ``{"key": value | [values]}`` (all keys must match; a list means any of) for stores."""
    conditions: dict[str, list[FilterValue]] = {}
    for key, value in (filter or {}).items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values or not all(isinstance(v, (str, int)) for v in values):
            raise TypeError(f"filter {key!r}: use a string, integer or boolean, or a non-empty list of them; got {value!r}")
        conditions[key] = values
    return conditions


def open_store(
    kind: StoreKind,
    location: str,
    collection: str,
    *,
    api_key: str | None = None,
    index_fields: Sequence[str] = (),
) -> DocumentStore:
    """A store from a location: Qdrant ``:memory:``, a folder or an ``http(s)://`` URL; Chroma a folder or URL."""
    if kind == "qdrant":
        from jina_rag.index.qdrant import QdrantStore

        return QdrantStore.from_location(location, collection, api_key=api_key, index_fields=index_fields)
    if kind == "chroma":
        from jina_rag.index.chroma import ChromaStore

        return ChromaStore.from_location(location, collection, api_key=api_key)
    raise ValueError(f"unknown store {kind!r}: use one of {', '.join(STORES)}")


def too_long_message(doc_id: str, tokens: int, max_length: int) -> str:
    """Why a document over ``max_length`` is refused under the ``long_text="error"`` policy."""
    return (
        f"document {doc_id!r} has {tokens} tokens, over max_length={max_length}; "
        f"use an encoder with long_text='windows' (one averaged vector) or 'truncate'"
    )


def upsert_with_retries(store: DocumentStore, points: Sequence[Point], retries: int, retry_delay: float) -> None:
    """Upsert, retrying ``retries`` times with doubling delays; bad input is raised at once."""
    for attempt in range(retries + 1):
        try:
            store.upsert(points)
            return
        except (TypeError, ValueError):
            raise  # bad input: retrying cannot help
        except Exception as error:
            if attempt == retries:
                raise
            delay = retry_delay * 2**attempt
            logger.warning(
                "writing %d points to %s failed (%s: %s); retry %d of %d in %.1f s",
                len(points), store.description, type(error).__name__, error, attempt + 1, retries, delay,
            )
            time.sleep(delay)


class DocumentIndex:
    """Index whole documents (one vector each) into a store, and search them.

    Re-running on the same corpus is cheap and safe: point ids derive from document ids, and a
    document whose stored content hash matches is skipped without being encoded.
    """

    def __init__(
        self,
        store: DocumentStore,
        encoder: JinaEncoder | None = None,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> None:
        self.store = store
        self.encoder = encoder or JinaEncoder.from_pretrained()
        self.batch_tokens = batch_tokens

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
    ) -> DocumentIndex:
        """Open (not yet create) a collection in a store named by kind and location; see :func:`open_store`."""
        encoder = encoder or JinaEncoder.from_pretrained()
        store = open_store(kind, location, collection, api_key=api_key, index_fields=index_fields)
        return cls(store, encoder, batch_tokens=batch_tokens)

    def __enter__(self) -> DocumentIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def index(
        self,
        documents: Iterable[Document | Mapping[str, Any] | Sequence[Any]],
        *,
        batch_docs: int = 32,
        retries: int = 3,
        retry_delay: float = 0.5,
        on_batch: Callable[[WrittenBatch], None] | None = None,
        show_progress: bool | None = None,
    ) -> IndexReport:
        """Encode and write new or changed documents; skip unchanged ones.

        Documents are validated up front (a bad one stops the run before anything is written).
        Each write batch holds up to ``batch_docs`` documents of similar length and is retried
        ``retries`` times with doubling delays. If a batch still fails, the run stops and raises
        :class:`IndexingError` naming every document that did not land; running again finishes
        the job. ``on_batch`` is called after each batch the store acknowledged.
        """
        if batch_docs < 1 or retries < 0:
            raise ValueError(f"batch_docs must be >= 1 and retries >= 0, got {batch_docs} and {retries}")
        started = time.perf_counter()
        docs = validate_documents(documents_from_records(documents))
        report = IndexReport(self.store.description)
        self.store.ensure_collection(self.encoder.dim)
        hashes = {doc.id: doc.content_hash() for doc in docs}
        stored: dict[str, str] = {}
        for start in range(0, len(docs), LOOKUP_BATCH):
            stored.update(self.store.existing_hashes([doc.id for doc in docs[start : start + LOOKUP_BATCH]]))
        todo = [doc for doc in docs if stored.get(doc.id) != hashes[doc.id]]
        report.skipped = [doc.id for doc in docs if stored.get(doc.id) == hashes[doc.id]]
        tokens = self.encoder.count_tokens([doc.text for doc in todo]) if todo else []
        self._check_lengths(todo, tokens)
        # Longest first, so each write batch holds documents of similar length and pads little.
        order = sorted(range(len(todo)), key=lambda i: -tokens[i])
        batches = [order[start : start + batch_docs] for start in range(0, len(order), batch_docs)]
        if show_progress is None:
            show_progress = bool(todo) and sys.stderr.isatty()
        with (
            tqdm(total=len(docs), initial=len(report.skipped), unit="doc", desc="documents", disable=not show_progress) as doc_bar,
            tqdm(total=sum(tokens), unit="tok", unit_scale=True, desc="tokens", disable=not show_progress) as token_bar,
        ):
            for number, batch in enumerate(batches):
                chunk = [todo[i] for i in batch]
                vectors = self.encoder.encode(
                    [doc.text for doc in chunk], batch_tokens=self.batch_tokens, show_progress=False
                )
                points = [
                    Point(point_id(doc.id), doc.id, vector, doc.text, doc.metadata, hashes[doc.id])
                    for doc, vector in zip(chunk, vectors)
                ]
                try:
                    upsert_with_retries(self.store, points, retries, retry_delay)
                except Exception as error:
                    report.failed = [todo[i].id for later in batches[number:] for i in later]
                    report.seconds = time.perf_counter() - started
                    raise IndexingError(self._failure_message(report, error), report.failed, report) from error
                batch_tokens = sum(tokens[i] for i in batch)
                report.indexed.extend(doc.id for doc in chunk)
                report.tokens += batch_tokens
                doc_bar.update(len(batch))
                token_bar.update(batch_tokens)
                if on_batch is not None:
                    on_batch(WrittenBatch(number, tuple(doc.id for doc in chunk), batch_tokens))
        report.seconds = time.perf_counter() - started
        logger.info("%s", report.summary())
        return report

    def _check_lengths(self, docs: list[Document], tokens: list[int]) -> None:
        if self.encoder.long_text != "error":
            return
        for doc, count in zip(docs, tokens):
            if count > self.encoder.max_length:
                raise TextTooLongError(too_long_message(doc.id, count, self.encoder.max_length))

    @staticmethod
    def _failure_message(report: IndexReport, error: Exception) -> str:
        shown = ", ".join(report.failed[:10]) + (", ..." if len(report.failed) > 10 else "")
        return (
            f"{len(report.failed)} documents did not land in {report.collection} ({shown}): "
            f"{type(error).__name__}: {error}. {len(report.indexed)} were written this run. Run the same "
            f"indexing again once the store is reachable: stored, unchanged documents are skipped."
        )

    def search(
        self, query: str, *, limit: int = 5, filter: Mapping[str, FilterValue | Sequence[FilterValue]] | None = None
    ) -> list[SearchHit]:
        """Documents most similar to ``query`` whose metadata matches ``filter``, best first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        conditions = filter_conditions(filter)
        vector = self.encoder.encode(query, batch_tokens=self.batch_tokens, show_progress=False)
        return self.store.search(vector, limit, conditions)

    def delete(self, doc_ids: Iterable[str]) -> None:
        """Remove documents from the store."""
        self.store.delete(list(doc_ids))

    def count(self) -> int:
        """Points in the collection (one per document)."""
        return self.store.count()
