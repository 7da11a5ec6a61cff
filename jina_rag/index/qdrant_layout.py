"""The point layout both Qdrant stores write and read: qdrant-client's (a server, ``:memory:``) and Qdrant Edge's (a folder).

The payload follows LangChain's layout (``page_content``, ``metadata``) so ``langchain-qdrant``'s
``QdrantVectorStore`` reads an indexed collection as it is; ``doc_id`` and ``content_hash`` sit
beside them, and passage layouts add the passages' character spans (``passages``). A ``document``
collection has one unnamed vector per point; ``passages`` has two named vectors, ``document``
(dense) and ``passages`` (a multivector compared by MAX_SIM); ``hybrid`` adds the sparse vector
``bm25`` with Qdrant's IDF modifier. Nothing here imports a client, so each store stays optional.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from jina_rag.index.store import (
    DOCUMENT_VECTOR,
    PASSAGE_VECTORS,
    SPARSE_VECTOR,
    CollectionMismatchError,
    Point,
    SearchHit,
    best_passage,
)


class Scored(Protocol):
    """A hit as either client returns it."""

    id: Any
    score: float


ScoredT = TypeVar("ScoredT", bound=Scored)


def payload_of(point: Point) -> dict[str, Any]:
    """A point's payload: text, metadata, document id, content hash and, with passages, their spans."""
    payload = {
        "page_content": point.text,
        "metadata": dict(point.metadata),
        "doc_id": point.doc_id,
        "content_hash": point.content_hash,
    }
    if point.passage_vectors is not None:
        payload["passages"] = [list(span) for span in point.passage_spans]
    return payload


def vectors_of(point: Point, sparse_vector: Callable[[list[int], list[float]], Any]) -> list[float] | dict[str, Any]:
    """A point's vectors: the unnamed vector of a ``document`` point, else the named ones (``sparse_vector`` makes the client's sparse type)."""
    if point.passage_vectors is None:
        return point.vector.tolist()
    vectors: dict[str, Any] = {DOCUMENT_VECTOR: point.vector.tolist(), PASSAGE_VECTORS: point.passage_vectors.tolist()}
    if point.sparse is not None:
        vectors[SPARSE_VECTOR] = sparse_vector(point.sparse.indices.tolist(), point.sparse.values.tolist())
    return vectors


def search_hit(
    payload: Mapping[str, Any], score: float, query: np.ndarray | None = None, passage_vectors: Sequence[Sequence[float]] | None = None
) -> SearchHit:
    """A hit from a point's payload; with the query and the point's passage vectors, naming its best passage."""
    text = payload["page_content"]
    passage = None if passage_vectors is None else best_passage(query, passage_vectors, payload["passages"], text)
    return SearchHit(payload["doc_id"], float(score), text, payload["metadata"], passage)


def best_of(rankings: Iterable[Iterable[ScoredT]], limit: int) -> list[ScoredT]:
    """The top ``limit`` points by their best score in any of the rankings.

    ``both`` scores a document by the better of its two similarities; the top documents by that
    maximum are all among the top of one list or the other, so merging two top-k lists is exact.
    """
    best: dict[Any, ScoredT] = {}
    for ranking in rankings:
        for hit in ranking:
            if hit.id not in best or hit.score > best[hit.id].score:
                best[hit.id] = hit
    return sorted(best.values(), key=lambda hit: -hit.score)[:limit]


def unknown_layout(description: str, vectors: Iterable[str], sparse: Iterable[str]) -> CollectionMismatchError:
    """The error for a collection whose vectors jina-rag did not write (``""`` names the unnamed vector)."""
    dense = ", ".join(name or "unnamed" for name in vectors)
    return CollectionMismatchError(
        f"{description} has vectors ({dense}; sparse: {', '.join(sparse) or 'none'}) in a layout jina-rag does not "
        f"write. Use another collection or delete this one; it was not changed."
    )


def wrong_vectors(description: str, size: int, distance: str, dim: int) -> CollectionMismatchError:
    """The error for a collection of another dimension or distance than the encoder's."""
    return CollectionMismatchError(
        f"{description} holds {size}-dimensional vectors with {distance} distance; this encoder makes "
        f"{dim}-dimensional vectors compared by cosine. Use another collection or delete this one; it was not changed."
    )
