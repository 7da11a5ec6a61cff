"""Chroma behind :class:`~jina_rag.index.core.DocumentStore`: embedded (a folder) or a server (a URL).

Chroma's metadata is flat, so ``doc_id`` and ``content_hash`` sit beside the document's own keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

try:
    import chromadb
    from chromadb.errors import NotFoundError
except ImportError as error:  # an optional extra
    raise ImportError("Chroma support needs chromadb: pip install 'jina-rag[chroma]'") from error

from jina_rag.index.core import CollectionMismatchError, FilterValue, Point, SearchHit
from jina_rag.index.documents import RESERVED_METADATA_KEYS, point_id

METADATA_TYPES = (str, int, float, bool)


class ChromaStore:
    """A Chroma collection of document vectors (cosine space)."""

    def __init__(self, client: Any, collection: str, *, description: str | None = None) -> None:
        self.client = client
        self.collection = collection
        self.description = description or f"chroma collection {collection!r}"
        self._handle: Any = None

    @classmethod
    def from_location(cls, location: str, collection: str, *, api_key: str | None = None) -> ChromaStore:
        """A folder (``PersistentClient``) or an ``http(s)://host:port`` server (``HttpClient``)."""
        if location.startswith(("http://", "https://")):
            url = urlsplit(location)
            client = chromadb.HttpClient(
                host=url.hostname or "localhost",
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                headers={"x-chroma-token": api_key} if api_key else None,
            )
        else:
            if api_key:
                raise ValueError("an API key only applies to a Chroma server: give an http(s):// URL as location")
            client = chromadb.PersistentClient(path=location)
        return cls(client, collection, description=f"chroma collection {collection!r} at {location}")

    def ensure_collection(self, dim: int) -> None:
        handle = self.client.get_or_create_collection(
            self.collection, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )
        config = handle.configuration_json
        space = (config.get("hnsw") or config.get("spann") or {}).get("space", "l2")
        stored = handle.get(limit=1, include=["embeddings"])["embeddings"]
        stored_dim = len(stored[0]) if stored is not None and len(stored) else None
        if space != "cosine" or stored_dim not in (None, dim):
            raise CollectionMismatchError(
                f"{self.description} holds {stored_dim or 'no'}-dimensional vectors in {space!r} space; this "
                f"encoder makes {dim}-dimensional vectors compared by cosine. Use another collection or delete "
                f"this one; it was not changed."
            )
        self._handle = handle

    def _collection(self) -> Any:
        if self._handle is None:
            try:
                self._handle = self.client.get_collection(self.collection, embedding_function=None)
            except NotFoundError:
                raise ValueError(f"{self.description} does not exist: index documents into it first") from None
        return self._handle

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        found = self._collection().get(ids=[point_id(doc_id) for doc_id in doc_ids], include=["metadatas"])
        # Points written by other tools carry no hash: they count as absent and get rewritten.
        return {m["doc_id"]: m["content_hash"] for m in found["metadatas"] if m and "content_hash" in m}

    def upsert(self, points: Sequence[Point]) -> None:
        for point in points:
            for key, value in point.metadata.items():
                if not isinstance(value, METADATA_TYPES):
                    raise TypeError(
                        f"document {point.doc_id!r}: Chroma metadata values must be str, int, float or bool; "
                        f"{key!r} is a {type(value).__name__}"
                    )
        self._collection().upsert(
            ids=[point.id for point in points],
            embeddings=np.stack([point.vector for point in points]),
            documents=[point.text for point in points],
            metadatas=[{**point.metadata, "doc_id": point.doc_id, "content_hash": point.content_hash} for point in points],
        )

    def delete(self, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._collection().delete(where={"doc_id": {"$in": list(doc_ids)}})

    def search(self, vector: np.ndarray, limit: int, conditions: dict[str, list[FilterValue]]) -> list[SearchHit]:
        clauses = [{key: {"$in": values}} for key, values in conditions.items()]
        where = clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else None
        found = self._collection().query(
            query_embeddings=vector[None], n_results=limit, where=where,
            include=["documents", "metadatas", "distances"],
        )
        return [
            SearchHit(
                metadata["doc_id"], 1.0 - float(distance), text,
                {k: v for k, v in metadata.items() if k not in RESERVED_METADATA_KEYS},
            )
            for text, metadata, distance in zip(found["documents"][0], found["metadatas"][0], found["distances"][0])
        ]

    def count(self) -> int:
        return self._collection().count()

    def close(self) -> None:
        self._handle = None
        self.client.close()
