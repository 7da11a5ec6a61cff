"""The contract between the indexer and the stores: points, queries, hits, layouts.

A collection has one of three layouts, all one point per document:

- ``document``: one whole-document dense vector;
- ``passages``: the whole-document vector (``document``) and the late-chunked passage vectors
  (``passages``, a multivector compared by MAX_SIM, so a query scores a document by its best
  passage), with the passages' character spans;
- ``hybrid``: ``passages`` plus a BM25 sparse vector (``bm25``, IDF applied by the store).

Search modes say how documents are scored: ``document`` by the whole-document vector,
``late-chunks`` by the best passage, ``both`` by the better of the two, ``hybrid`` by fusing the
rankings of the representations :class:`Fusion` names (by default late chunks and BM25) inside the store.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from jina_rag.errors import InvalidInputError, JinaRagError
from jina_rag.sparse import SparseVector

FilterValue = str | int | bool
IndexMode = Literal["document", "late-chunks", "both", "hybrid"]
INDEX_MODES: tuple[IndexMode, ...] = ("document", "late-chunks", "both", "hybrid")
Layout = Literal["document", "passages", "hybrid"]
LAYOUTS: tuple[Layout, ...] = ("document", "passages", "hybrid")
# The layout a mode indexes into, and the modes a layout can answer.
LAYOUT_OF_MODE: dict[str, Layout] = {"document": "document", "late-chunks": "passages", "both": "passages", "hybrid": "hybrid"}
MODES_OF_LAYOUT: dict[Layout, tuple[IndexMode, ...]] = {
    "document": ("document",),
    "passages": ("document", "late-chunks", "both"),
    "hybrid": INDEX_MODES,
}
# The mode a collection is searched in when none is named.
DEFAULT_MODE_OF_LAYOUT: dict[Layout, IndexMode] = {"document": "document", "passages": "late-chunks", "hybrid": "hybrid"}

# Names of a point's representations (Qdrant's named vectors).
DOCUMENT_VECTOR = "document"
PASSAGE_VECTORS = "passages"
SPARSE_VECTOR = "bm25"
REPRESENTATIONS = (DOCUMENT_VECTOR, PASSAGE_VECTORS, SPARSE_VECTOR)
# Hybrid's default: distribution-based score fusion (DBSF) of the late-chunk passages and BM25 (with
# word pairs), the whole-document vector left out. Chosen among 26 fusions on the tuning package's
# long set (PostgreSQL's manual, neither trained nor evaluated on: nDCG@10 0.865; with the
# whole-document vector too 0.861; the best RRF 0.855 at k=60, k=2 0.842-0.854, k=10 at most 0.835;
# BM25 alone 0.843), never on an evaluation set: benchmarks/hybrid.py data/tune-long --tune,
# benchmarks/logs/2026-12-08-cpu-hybrid-tune.log. RRF's k default is that best RRF's.
DEFAULT_FUSION_METHOD = "dbsf"
DEFAULT_RRF_K = 60
DEFAULT_FUSION_WEIGHTS = {PASSAGE_VECTORS: 1.0, SPARSE_VECTOR: 1.0}


class CollectionMismatchError(JinaRagError, ValueError):
    """An existing collection holds another layout, dimension or distance; it is left untouched."""


class CollectionNotFoundError(JinaRagError, ValueError):
    """A search, count or lookup named a collection that does not exist; nothing was created for it."""


def missing_collection(description: str, store: str, location: str, collection: str, detail: str = "") -> CollectionNotFoundError:
    """The error for reading a collection that does not exist (a mistyped location or name, or one never indexed).

    ``detail`` says what the location holds instead, as :func:`location_holds` puts it.
    """
    command = f"jina-rag index PATH --store {store} --location {shlex.quote(str(location))} --collection {shlex.quote(collection)}"
    return CollectionNotFoundError(
        f"{description} does not exist{detail}: index documents into it first ({command}), or check the location "
        f"and collection name"
    )


def location_holds(location: str, names: Sequence[str]) -> str:
    """`` (LOCATION holds a, b)``: the collections a location holds, for :func:`missing_collection`."""
    if not names:
        return f" ({location} holds no collections)"
    shown = ", ".join(repr(name) for name in sorted(names)[:10]) + (", ..." if len(names) > 10 else "")
    return f" ({location} holds {shown})"


@dataclass(frozen=True)
class Point:
    """One document as a store keeps it: its whole-document vector and, by layout, passages and BM25."""

    id: str
    doc_id: str
    vector: np.ndarray
    text: str
    metadata: Mapping[str, Any]
    content_hash: str
    passage_spans: tuple[tuple[int, int], ...] = ()
    passage_vectors: np.ndarray | None = None  # [passages, dim]; None: a whole-document collection
    sparse: SparseVector | None = None  # BM25 term weights; None unless the layout is hybrid


@dataclass(frozen=True)
class Fusion:
    """How hybrid search merges the representations' rankings, inside the store.

    ``method`` ``rrf`` (Qdrant's reciprocal rank fusion: a document at rank ``r`` (from 1) of a
    representation of weight ``w`` gains ``1 / (r / w + k - 1)``; a weight of 0 or none leaves the
    representation out) or ``dbsf`` (distribution-based score fusion, unweighted: the weights only
    choose the representations). Each representation contributes its top ``candidates`` documents.
    """

    method: Literal["rrf", "dbsf"] = DEFAULT_FUSION_METHOD
    k: int = DEFAULT_RRF_K
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FUSION_WEIGHTS))
    candidates: int = 100

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "dbsf"):
            raise InvalidInputError(f"unknown fusion method {self.method!r}: use 'rrf' or 'dbsf'")
        unknown = set(self.weights) - set(REPRESENTATIONS)
        if unknown:
            raise InvalidInputError(f"fusion weights for unknown representations {sorted(unknown)}: use {', '.join(REPRESENTATIONS)}")
        if any(weight < 0 for weight in self.weights.values()) or not any(self.weights.values()):
            raise InvalidInputError(f"fusion weights must be >= 0 with at least one above 0, got {dict(self.weights)}")
        if self.k < 0 or self.candidates < 1:
            raise InvalidInputError(f"fusion k must be >= 0 and candidates >= 1, got k={self.k}, candidates={self.candidates}")

    def used(self) -> list[tuple[str, float]]:
        """The representations taking part, with their weights, in the order of :data:`REPRESENTATIONS`."""
        return [(name, float(self.weights.get(name, 0.0))) for name in REPRESENTATIONS if self.weights.get(name, 0.0) > 0]


@dataclass(frozen=True)
class SearchQuery:
    """A query as the store needs it: its dense vector, its BM25 vector (hybrid) and the fusion."""

    vector: np.ndarray
    sparse: SparseVector | None = None
    fusion: Fusion = field(default_factory=Fusion)


@dataclass(frozen=True)
class Passage:
    """The passage of a hit that matches the query best: ``text == document_text[start:end]``."""

    index: int
    start: int
    end: int
    text: str
    score: float


@dataclass(frozen=True)
class SearchHit:
    """A search result: the document's id, score, text, metadata and best passage (passage layouts).

    The score is a cosine similarity, except in ``hybrid`` mode, where it is the fused score.
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    passage: Passage | None = None


class DocumentStore(Protocol):
    """What the indexer needs from a vector store. Dense vectors are compared by cosine similarity."""

    description: str
    layouts: tuple[Layout, ...]  # the layouts this store can hold

    def ensure_collection(self, dim: int, *, layout: Layout = "document") -> None:
        """Create the collection, or check an existing one (raise :class:`CollectionMismatchError`)."""

    def layout(self) -> Layout | None:
        """The collection's layout; ``None`` if it does not exist yet."""

    def dimension(self) -> int | None:
        """The dimension of the collection's dense vectors; ``None`` if it does not exist or holds none yet."""

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hashes of those documents that have a point with id ``point_id(doc_id)``."""

    def document_ids(self) -> list[str]:
        """Every document id with anything stored in the collection (each once, sorted): what ``sync`` compares
        the run's documents with. Points written by other tools (no ``doc_id``) are not listed."""

    def check_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> None:
        """Raise :class:`~jina_rag.errors.InvalidInputError` naming the document and key if the store would refuse
        this metadata; the indexer calls it for every document before it writes anything."""

    def upsert(self, points: Sequence[Point]) -> None:
        """Write points, replacing everything stored for their documents; return only once the store has them."""

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove every point of these documents."""

    def search(
        self, query: SearchQuery, limit: int, conditions: dict[str, list[FilterValue]], mode: IndexMode = "document"
    ) -> list[SearchHit]:
        """Best documents whose metadata matches every condition (key → any of the values), scored as ``mode`` says."""

    def count(self) -> int:
        """Documents in the collection."""

    def close(self) -> None:
        """Release the client (local stores hold a lock on their folder)."""


def best_passage(query: np.ndarray, vectors: np.ndarray, spans: Sequence[Sequence[int]], text: str) -> Passage:
    """Re-score a document's passages against the query: stores rank documents but do not say which passage matched."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)).clip(min=1e-12)
    best = int(scores.argmax())
    start, end = (int(bound) for bound in spans[best])
    return Passage(best, start, end, text[start:end], float(scores[best]))


def check_mode(mode: str) -> None:
    if mode not in INDEX_MODES:
        raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(INDEX_MODES)}")


def check_search_mode(mode: str, layout: Layout, description: str) -> None:
    """Refuse a search mode the collection cannot answer, saying how to index for it."""
    check_mode(mode)
    if mode not in MODES_OF_LAYOUT[layout]:
        needs = "a BM25 sparse vector (index with mode 'hybrid')" if mode == "hybrid" else \
            "passage vectors (index with mode 'late-chunks', 'both' or 'hybrid')"
        raise InvalidInputError(
            f"{description} was indexed with layout {layout!r}: search mode {mode!r} needs {needs}; "
            f"search it with mode {' or '.join(repr(m) for m in MODES_OF_LAYOUT[layout])}, or re-index into a new collection"
        )


def check_layout(existing: Layout, wanted: Layout, description: str) -> None:
    """Refuse to write one layout into a collection of another."""
    if existing != wanted:
        modes = " or ".join(repr(m) for m, layout in LAYOUT_OF_MODE.items() if layout == existing)
        raise CollectionMismatchError(
            f"{description} holds the {existing!r} layout (indexed with mode {modes}); writing the {wanted!r} layout "
            f"into it would mix documents. Index it with mode {modes}, or use another collection (it was not changed)."
        )


def layout_of_vectors(dense: bool, passages: bool, sparse: bool) -> Layout | None:
    """The layout a collection's vector names make up, or ``None`` if jina-rag did not write it."""
    layouts: dict[tuple[bool, bool, bool], Layout] = {
        (True, False, False): "document", (True, True, False): "passages", (True, True, True): "hybrid",
    }
    return layouts.get((dense, passages, sparse))


def representation_queries(query: SearchQuery) -> list[tuple[str, float, Any]]:
    """What hybrid search asks of each representation taking part: ``(name, weight, query)``.

    The dense representations take the query vector (the passages as a one-vector multivector, so
    MAX_SIM gives the best passage's similarity); BM25 takes the query's sparse vector.
    """
    if query.sparse is None and query.fusion.weights.get(SPARSE_VECTOR, 0) > 0:
        raise InvalidInputError("hybrid search needs the query's BM25 sparse vector")
    values = {DOCUMENT_VECTOR: query.vector, PASSAGE_VECTORS: query.vector[None], SPARSE_VECTOR: query.sparse}
    return [(name, weight, values[name]) for name, weight in query.fusion.used()]
