"""Qdrant behind :class:`~jina_rag.index.store.DocumentStore` through qdrant-client: a server or ``:memory:``.

(A local folder is Qdrant Edge's job: :mod:`jina_rag.index.qdrant_edge`; :meth:`QdrantStore.from_location`
still opens one in qdrant-client's local mode for code that asks for it.) Points follow
:mod:`jina_rag.index.qdrant_layout`: LangChain's payload layout, so ``langchain-qdrant``'s
``QdrantVectorStore`` reads an indexed collection as it is, and the vectors of the collection's
layout. Hybrid search is one Query API call: a prefetch per representation, fused by RRF (or
DBSF) in Qdrant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    from qdrant_client import QdrantClient, models
    from qdrant_client.http.exceptions import ResponseHandlingException
except ImportError as error:  # an optional extra
    raise ImportError("Qdrant support needs qdrant-client: pip install 'jina-rag[qdrant]'") from error

from jina_rag.index.documents import point_id
from jina_rag.index.qdrant_layout import (
    SCROLL_PAGE,
    best_of,
    check_payload_metadata,
    payload_of,
    search_hit,
    unknown_layout,
    vectors_of,
    wrong_vectors,
)
from jina_rag.index.store import (
    LAYOUTS,
    DOCUMENT_VECTOR,
    PASSAGE_VECTORS,
    SPARSE_VECTOR,
    FilterValue,
    Fusion,
    IndexMode,
    Layout,
    Point,
    SearchHit,
    SearchQuery,
    check_layout,
    check_search_mode,
    layout_of_vectors,
    location_holds,
    missing_collection,
    representation_queries,
)
from jina_rag.errors import InvalidInputError


class QdrantStore:
    """A Qdrant collection of document vectors (cosine distance).

    ``index_fields`` are metadata keys to give keyword payload indexes on a server, so filtered
    search stays fast; local mode (``:memory:`` or a folder) has no payload indexes and skips them.
    """

    layouts = LAYOUTS

    def __init__(self, client: QdrantClient, collection: str, *, index_fields: Sequence[str] = ()) -> None:
        self.client = client
        self.collection = collection
        self.index_fields = tuple(index_fields)
        options = client.init_options
        self.local = options.get("location") == ":memory:" or options.get("path") is not None
        self.where = str(options.get("path") or options.get("location") or options.get("url") or options.get("host"))
        self.description = f"qdrant collection {collection!r} at {self.where}"
        self._layout: Layout | None = None  # the collection's layout, once known

    @classmethod
    def from_location(
        cls, location: str, collection: str, *, api_key: str | None = None, index_fields: Sequence[str] = ()
    ) -> QdrantStore:
        """``:memory:``, an ``http(s)://`` server URL (with an optional API key), or a folder (qdrant-client's local mode)."""
        if location.startswith(("http://", "https://")):
            client = QdrantClient(url=location, api_key=api_key)
        elif api_key:
            raise InvalidInputError("an API key only applies to a Qdrant server: give an http(s):// URL as location")
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

    def ensure_collection(self, dim: int, *, layout: Layout = "document") -> None:
        dense = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        if not self._exists():
            if layout == "document":
                self.client.create_collection(self.collection, vectors_config=dense)
            else:
                multivector = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
                passages = models.VectorParams(size=dim, distance=models.Distance.COSINE, multivector_config=multivector)
                sparse = {SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)} if layout == "hybrid" else None
                self.client.create_collection(
                    self.collection, vectors_config={DOCUMENT_VECTOR: dense, PASSAGE_VECTORS: passages},
                    sparse_vectors_config=sparse,
                )
        else:
            self._check_collection(dim, layout)
        self._layout = layout
        if not self.local:
            for name in ("doc_id", *(f"metadata.{field}" for field in self.index_fields)):
                self.client.create_payload_index(self.collection, name, field_schema=models.PayloadSchemaType.KEYWORD)

    def _check_collection(self, dim: int, layout: Layout) -> None:
        params = self.client.get_collection(self.collection).config.params
        existing = self._layout_of(params)
        if existing is None:
            raise unknown_layout(
                self.description, params.vectors if isinstance(params.vectors, dict) else [""], params.sparse_vectors or {}
            )
        check_layout(existing, layout, self.description)
        stored = params.vectors if layout == "document" else params.vectors[DOCUMENT_VECTOR]
        if stored.size != dim or stored.distance != models.Distance.COSINE:
            raise wrong_vectors(self.description, stored.size, stored.distance.value, dim)

    @staticmethod
    def _layout_of(params: models.CollectionParams) -> Layout | None:
        """The layout of a collection's vector config, ``None`` if jina-rag did not write it."""
        vectors, sparse = params.vectors, params.sparse_vectors or {}
        if not isinstance(vectors, dict):
            return layout_of_vectors(True, False, bool(sparse))
        multivector = vectors.get(PASSAGE_VECTORS) and vectors[PASSAGE_VECTORS].multivector_config
        passages = bool(multivector) and multivector.comparator == models.MultiVectorComparator.MAX_SIM
        if set(vectors) != {DOCUMENT_VECTOR, PASSAGE_VECTORS} or set(sparse) - {SPARSE_VECTOR}:
            return None
        return layout_of_vectors(True, passages, SPARSE_VECTOR in sparse)

    def layout(self) -> Layout | None:
        if self._layout is None and self._exists():
            self._layout = self._layout_of(self.client.get_collection(self.collection).config.params)
        return self._layout

    def dimension(self) -> int | None:
        if not self._exists():
            return None
        vectors = self.client.get_collection(self.collection).config.params.vectors
        dense = vectors.get(DOCUMENT_VECTOR) if isinstance(vectors, dict) else vectors
        return dense.size if dense is not None else None

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        records = self.client.retrieve(
            self.collection, ids=[point_id(doc_id) for doc_id in doc_ids],
            with_payload=["doc_id", "content_hash"], with_vectors=False,
        )
        # Points written by other tools carry no hash: they count as absent and get rewritten.
        return {r.payload["doc_id"]: r.payload["content_hash"] for r in records if "content_hash" in (r.payload or {})}

    def document_ids(self) -> list[str]:
        self._require_collection()
        ids: set[str] = set()
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=SCROLL_PAGE, offset=offset, with_payload=["doc_id"], with_vectors=False,
            )
            ids.update(r.payload["doc_id"] for r in records if "doc_id" in (r.payload or {}))
            if offset is None:
                return sorted(ids)

    def check_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> None:
        check_payload_metadata(doc_id, metadata, "Qdrant")

    def upsert(self, points: Sequence[Point]) -> None:
        # One point per document, so an upsert replaces all of a document's passages at once.
        self.client.upsert(self.collection, points=[self._point(point) for point in points], wait=True)

    @staticmethod
    def _point(point: Point) -> models.PointStruct:
        vectors = vectors_of(point, lambda indices, values: models.SparseVector(indices=indices, values=values))
        return models.PointStruct(id=point.id, vector=vectors, payload=payload_of(point))

    def delete(self, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        selector = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def search(
        self, query: SearchQuery, limit: int, conditions: dict[str, list[FilterValue]], mode: IndexMode = "document"
    ) -> list[SearchHit]:
        layout = self.layout()
        if layout is None:
            self._require_collection()  # raises: the collection does not exist
        check_search_mode(mode, layout, self.description)
        must = [
            models.FieldCondition(
                key=f"metadata.{key}",
                match=models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=values),
            )
            for key, values in conditions.items()
        ]
        query_filter = models.Filter(must=must) if must else None
        if layout == "document":
            hits = self.client.query_points(
                self.collection, query=query.vector.tolist(), limit=limit, query_filter=query_filter, with_payload=True,
            ).points
            return [search_hit(hit.payload, hit.score) for hit in hits]
        if mode == "hybrid":
            ranked = self._fused(query, limit, query_filter)
        else:
            ranked = self._best_of_dense(query.vector, limit, query_filter, mode)
        return [search_hit(hit.payload, hit.score, query.vector, hit.vector[PASSAGE_VECTORS]) for hit in ranked]

    def _best_of_dense(
        self, vector: np.ndarray, limit: int, query_filter: models.Filter | None, mode: IndexMode
    ) -> list[models.ScoredPoint]:
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
        return best_of((response.points for response in self.client.query_batch_points(self.collection, requests)), limit)

    def _fused(self, query: SearchQuery, limit: int, query_filter: models.Filter | None) -> list[models.ScoredPoint]:
        prefetch = []
        for name, _, value in representation_queries(query):
            if name == SPARSE_VECTOR:
                value = models.SparseVector(indices=value.indices.tolist(), values=value.values.tolist())
            else:
                value = value.tolist()
            prefetch.append(models.Prefetch(query=value, using=name, limit=max(limit, query.fusion.candidates), filter=query_filter))
        return self.client.query_points(
            self.collection, prefetch=prefetch, query=_fusion_query(query.fusion), limit=limit,
            query_filter=query_filter, with_payload=True, with_vectors=[PASSAGE_VECTORS],
        ).points

    def count(self) -> int:
        self._require_collection()
        return self.client.count(self.collection, exact=True).count

    def close(self) -> None:
        self.client.close()

    def _require_collection(self) -> None:
        if not self._exists():
            try:
                detail = location_holds(self.where, [c.name for c in self.client.get_collections().collections])
            except Exception:  # what the location holds is a hint; the error is the missing collection
                detail = ""
            raise missing_collection(self.description, "qdrant", self.where, self.collection, detail)


def _fusion_query(fusion: Fusion) -> models.Query:
    if fusion.method == "dbsf":
        return models.FusionQuery(fusion=models.Fusion.DBSF)
    return models.RrfQuery(rrf=models.Rrf(k=fusion.k, weights=[weight for _, weight in fusion.used()]))
