"""The point layout both Qdrant stores write and read: qdrant-client's (a server, ``:memory:``) and Qdrant Edge's (a folder).

The payload follows LangChain's layout (``page_content``, ``metadata``) so ``langchain-qdrant``'s
``QdrantVectorStore`` reads an indexed collection as it is; ``doc_id`` and ``content_hash`` sit
beside them, and passage layouts add the passages' character spans (``passages``). A ``document``
collection has one unnamed vector per point; ``passages`` has two named vectors, ``document``
(dense) and ``passages`` (a multivector compared by MAX_SIM); ``hybrid`` adds the sparse vector
``bm25`` with Qdrant's IDF modifier. Nothing here imports a client, so each store stays optional.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from jina_rag.errors import InvalidInputError
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

# Points per page when listing a collection's document ids.
SCROLL_PAGE = 1024


def check_payload_metadata(doc_id: str, metadata: Mapping[str, Any], store: str) -> None:
    """Refuse metadata Qdrant cannot store as JSON: keys other than strings (at any depth), NaN or Inf.

    Nested objects and lists are fine. Qdrant Edge refuses the rest with a bare ``TypeError`` at
    upsert, after earlier batches landed; a server cannot take NaN in JSON.
    """

    def check(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for inner, item in value.items():
                if not isinstance(inner, str):
                    raise InvalidInputError(
                        f"document {doc_id!r}: metadata key {key!r} holds the key {inner!r}, a {type(inner).__name__}; "
                        f"{store} takes JSON objects, whose keys are strings: nothing was written"
                    )
                check(item, key)
        elif isinstance(value, (list, tuple)):
            for item in value:
                check(item, key)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(
                f"document {doc_id!r}: metadata key {key!r} holds {value}, which {store} cannot store (JSON has no "
                f"NaN or Infinity): use null or a string; nothing was written"
            )
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidInputError(
                f"document {doc_id!r}: metadata key {key!r} is a {type(value).__name__}; {store} takes JSON values "
                f"(str, int, float, bool, None, lists and objects of them): nothing was written"
            )

    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInputError(
                f"document {doc_id!r}: metadata key {key!r} is a {type(key).__name__}; {store} takes string keys: "
                f"nothing was written"
            )
        check(value, key)


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
