"""Qdrant behind :class:`~jina_rag.index.core.DocumentStore`: ``:memory:``, a local folder or a server.

The payload follows LangChain's layout (``page_content``, ``metadata``) so ``langchain-qdrant``'s
``QdrantVectorStore`` reads an indexed collection as it is; ``doc_id`` and ``content_hash`` sit
beside them. A whole-document collection has one unnamed vector per point; a passage collection
has two named vectors, ``document`` (dense) and ``passages`` (a multivector compared by MAX_SIM,
so a query scores a document by its best passage), and the passages' character spans in the
payload (``passages``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:
    from qdrant_client import QdrantClient, models
    from qdrant_client.http.exceptions import ResponseHandlingException
except ImportError as error:  # an optional extra
    raise ImportError("Qdrant support needs qdrant-client: pip install 'jina-rag[qdrant]'") from error

from jina_rag.index.core import (
    CollectionMismatchError,
    FilterValue,
    IndexMode,
    Point,
    SearchHit,
    best_passage,
    check_search_mode,
)
from jina_rag.index.documents import point_id

DOCUMENT_VECTOR = "document"
PASSAGE_VECTORS = "passages"


class QdrantStore:
    """A Qdrant collection of document vectors (cosine distance).

    ``index_fields`` are metadata keys to give keyword payload indexes on a server, so filtered
    search stays fast; local mode (``:memory:`` or a folder) has no payload indexes and skips them.
    """

    def __init__(self, client: QdrantClient, collection: str, *, index_fields: Sequence[str] = ()) -> None:
        self.client = client
        self.collection = collection
        self.index_fields = tuple(index_fields)
        options = client.init_options
        self.local = options.get("location") == ":memory:" or options.get("path") is not None
        where = options.get("path") or options.get("location") or options.get("url") or options.get("host")
        self.description = f"qdrant collection {collection!r} at {where}"
        self._passages: bool | None = None  # the collection's layout, once known

    @classmethod
    def from_location(
        cls, location: str, collection: str, *, api_key: str | None = None, index_fields: Sequence[str] = ()
    ) -> QdrantStore:
        """``:memory:``, a folder path, or an ``http(s)://`` server URL (with an optional API key)."""
        if location.startswith(("http://", "https://")):
            client = QdrantClient(url=location, api_key=api_key)
        elif api_key:
            raise ValueError("an API key only applies to a Qdrant server: give an http(s):// URL as location")
        elif location == ":memory:":
            client = QdrantClient(location=":memory:")
        else:
            client = QdrantClient(path=location)
        return cls(client, collection, index_fields=index_fields)

    def _exists(self) -> bool:
        """Whether the collection exists; the first call to a server, so unreachable ones fail here."""
        try:
            return self.client.collection_exists(self.collection)
        except ResponseHandlingException as error:
            raise ConnectionError(f"cannot reach the Qdrant server for {self.description} ({error}): is it running?") from error

    def ensure_collection(self, dim: int, *, passages: bool = False) -> None:
        dense = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        if not self._exists():
            if passages:
                multivector = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
                vectors_config = {
                    DOCUMENT_VECTOR: dense,
                    PASSAGE_VECTORS: models.VectorParams(size=dim, distance=models.Distance.COSINE, multivector_config=multivector),
                }
                self.client.create_collection(self.collection, vectors_config=vectors_config)
            else:
                self.client.create_collection(self.collection, vectors_config=dense)
        else:
            self._check_layout(dim, passages)
        self._passages = passages
        if not self.local:
            for name in ("doc_id", *(f"metadata.{field}" for field in self.index_fields)):
                self.client.create_payload_index(self.collection, name, field_schema=models.PayloadSchemaType.KEYWORD)

    def _check_layout(self, dim: int, passages: bool) -> None:
        vectors = self.client.get_collection(self.collection).config.params.vectors
        unchanged = "Use another collection or delete this one; it was not changed."
        if isinstance(vectors, dict) and not self._holds_passages(vectors):
            raise CollectionMismatchError(
                f"{self.description} uses named vectors ({', '.join(vectors)}) that jina-rag does not write. {unchanged}"
            )
        if self._holds_passages(vectors) != passages:
            raise CollectionMismatchError(
                f"{self.description} was indexed with "
                + ("mode 'document' (one vector per document); modes 'late-chunks' and 'both' need passage vectors."
                   if passages else "passages (mode 'late-chunks' or 'both'); index it in one of those modes.")
                + f" {unchanged}"
            )
        stored = vectors[DOCUMENT_VECTOR] if passages else vectors
        if stored.size != dim or stored.distance != models.Distance.COSINE:
            raise CollectionMismatchError(
                f"{self.description} holds {stored.size}-dimensional vectors with {stored.distance.value} "
                f"distance; this encoder makes {dim}-dimensional vectors compared by cosine. {unchanged}"
            )

    @staticmethod
    def _holds_passages(vectors: object) -> bool:
        """Whether a collection's vector config is the passage layout jina-rag writes."""
        if not isinstance(vectors, dict) or set(vectors) != {DOCUMENT_VECTOR, PASSAGE_VECTORS}:
            return False
        multivector = vectors[PASSAGE_VECTORS].multivector_config
        return multivector is not None and multivector.comparator == models.MultiVectorComparator.MAX_SIM

    def holds_passages(self) -> bool | None:
        if self._passages is None and self._exists():
            self._passages = self._holds_passages(self.client.get_collection(self.collection).config.params.vectors)
        return self._passages

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        records = self.client.retrieve(
            self.collection, ids=[point_id(doc_id) for doc_id in doc_ids],
            with_payload=["doc_id", "content_hash"], with_vectors=False,
        )
        # Points written by other tools carry no hash: they count as absent and get rewritten.
        return {r.payload["doc_id"]: r.payload["content_hash"] for r in records if "content_hash" in (r.payload or {})}

    def upsert(self, points: Sequence[Point]) -> None:
        # One point per document, so an upsert replaces all of a document's passages at once.
        self.client.upsert(self.collection, points=[self._point(point) for point in points], wait=True)

    @staticmethod
    def _point(point: Point) -> models.PointStruct:
        payload = {
            "page_content": point.text,
            "metadata": dict(point.metadata),
            "doc_id": point.doc_id,
            "content_hash": point.content_hash,
        }
        if point.passage_vectors is None:
            return models.PointStruct(id=point.id, vector=point.vector.tolist(), payload=payload)
        vectors = {DOCUMENT_VECTOR: point.vector.tolist(), PASSAGE_VECTORS: point.passage_vectors.tolist()}
        payload["passages"] = [list(span) for span in point.passage_spans]
        return models.PointStruct(id=point.id, vector=vectors, payload=payload)

    def delete(self, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        selector = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def search(
        self, vector: np.ndarray, limit: int, conditions: dict[str, list[FilterValue]], mode: IndexMode = "document"
    ) -> list[SearchHit]:
        passages = self.holds_passages()
        if passages is None:
            self._require_collection()  # raises: the collection does not exist
        check_search_mode(mode, passages, self.description)
        must = [
            models.FieldCondition(
                key=f"metadata.{key}",
                match=models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=values),
            )
            for key, values in conditions.items()
        ]
        query_filter = models.Filter(must=must) if must else None
        if not passages:
            hits = self.client.query_points(
                self.collection, query=vector.tolist(), limit=limit, query_filter=query_filter, with_payload=True,
            ).points
            return [
                SearchHit(hit.payload["doc_id"], float(hit.score), hit.payload["page_content"], hit.payload["metadata"])
                for hit in hits
            ]
        requests = []
        if mode in ("document", "both"):
            requests.append(models.QueryRequest(
                query=vector.tolist(), using=DOCUMENT_VECTOR, limit=limit, filter=query_filter,
                with_payload=True, with_vector=[PASSAGE_VECTORS],
            ))
        if mode in ("late-chunks", "both"):
            # A one-vector multivector query: MAX_SIM gives the best passage's cosine similarity.
            requests.append(models.QueryRequest(
                query=[vector.tolist()], using=PASSAGE_VECTORS, limit=limit, filter=query_filter,
                with_payload=True, with_vector=[PASSAGE_VECTORS],
            ))
        # ``both`` scores a document by the better of its two similarities; the top documents by that
        # maximum are all among the top of one list or the other, so merging two top-k lists is exact.
        best: dict[str, models.ScoredPoint] = {}
        for response in self.client.query_batch_points(self.collection, requests):
            for hit in response.points:
                if hit.id not in best or hit.score > best[hit.id].score:
                    best[hit.id] = hit
        ranked = sorted(best.values(), key=lambda hit: -hit.score)[:limit]
        return [
            SearchHit(
                hit.payload["doc_id"], float(hit.score), hit.payload["page_content"], hit.payload["metadata"],
                best_passage(vector, hit.vector[PASSAGE_VECTORS], hit.payload["passages"], hit.payload["page_content"]),
            )
            for hit in ranked
        ]

    def count(self) -> int:
        self._require_collection()
        return self.client.count(self.collection, exact=True).count

    def close(self) -> None:
        self.client.close()

    def _require_collection(self) -> None:
        if not self._exists():
            raise ValueError(f"{self.description} does not exist: index documents into it first")
