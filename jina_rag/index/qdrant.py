"""Qdrant behind :class:`~jina_rag.index.core.DocumentStore`: ``:memory:``, a local folder or a server.

The payload follows LangChain's layout (``page_content``, ``metadata``) so ``langchain-qdrant``'s
``QdrantVectorStore`` reads an indexed collection as it is; ``doc_id`` and ``content_hash`` sit
beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:
    from qdrant_client import QdrantClient, models
    from qdrant_client.http.exceptions import ResponseHandlingException
except ImportError as error:  # an optional extra
    raise ImportError("Qdrant support needs qdrant-client: pip install 'jina-rag[qdrant]'") from error

from jina_rag.index.core import CollectionMismatchError, FilterValue, Point, SearchHit
from jina_rag.index.documents import point_id


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

    def ensure_collection(self, dim: int) -> None:
        if not self._exists():
            self.client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
        else:
            vectors = self.client.get_collection(self.collection).config.params.vectors
            if not isinstance(vectors, models.VectorParams):
                raise CollectionMismatchError(
                    f"{self.description} uses named vectors ({', '.join(vectors or {})}); jina-rag writes one "
                    f"unnamed vector per point. Use another collection; this one was not changed."
                )
            if vectors.size != dim or vectors.distance != models.Distance.COSINE:
                raise CollectionMismatchError(
                    f"{self.description} holds {vectors.size}-dimensional vectors with {vectors.distance.value} "
                    f"distance; this encoder makes {dim}-dimensional vectors compared by cosine. Use another "
                    f"collection or delete this one; it was not changed."
                )
        if not self.local:
            for name in ("doc_id", *(f"metadata.{field}" for field in self.index_fields)):
                self.client.create_payload_index(self.collection, name, field_schema=models.PayloadSchemaType.KEYWORD)

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        records = self.client.retrieve(
            self.collection, ids=[point_id(doc_id) for doc_id in doc_ids],
            with_payload=["doc_id", "content_hash"], with_vectors=False,
        )
        # Points written by other tools carry no hash: they count as absent and get rewritten.
        return {r.payload["doc_id"]: r.payload["content_hash"] for r in records if "content_hash" in (r.payload or {})}

    def upsert(self, points: Sequence[Point]) -> None:
        self.client.upsert(
            self.collection,
            points=[
                models.PointStruct(
                    id=point.id,
                    vector=point.vector.tolist(),
                    payload={
                        "page_content": point.text,
                        "metadata": dict(point.metadata),
                        "doc_id": point.doc_id,
                        "content_hash": point.content_hash,
                    },
                )
                for point in points
            ],
            wait=True,
        )

    def delete(self, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        selector = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def search(self, vector: np.ndarray, limit: int, conditions: dict[str, list[FilterValue]]) -> list[SearchHit]:
        self._require_collection()
        must = [
            models.FieldCondition(
                key=f"metadata.{key}",
                match=models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=values),
            )
            for key, values in conditions.items()
        ]
        hits = self.client.query_points(
            self.collection, query=vector.tolist(), limit=limit,
            query_filter=models.Filter(must=must) if must else None, with_payload=True,
        ).points
        return [
            SearchHit(hit.payload["doc_id"], float(hit.score), hit.payload["page_content"], hit.payload["metadata"])
            for hit in hits
        ]

    def count(self) -> int:
        self._require_collection()
        return self.client.count(self.collection, exact=True).count

    def close(self) -> None:
        self.client.close()

    def _require_collection(self) -> None:
        if not self._exists():
            raise ValueError(f"{self.description} does not exist: index documents into it first")
