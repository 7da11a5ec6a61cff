"""Chroma behind :class:`~jina_rag.index.core.DocumentStore`: embedded (a folder) or a server (a URL).

Chroma's metadata is flat, so ``doc_id`` and ``content_hash`` sit beside the document's own keys.
Chroma has no multivectors: a passage collection (its metadata says ``jina_rag_layout: passages``)
holds one record per document (whole-document vector and text, ``passage_index`` -1) and one per
passage (its vector and text, ``passage_index``, ``passage_start``, ``passage_end`` and the
document's metadata, so filters apply); search groups passage records back into documents.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uuid

import numpy as np

try:
    import chromadb
    from chromadb.api.types import validate_metadata
    from chromadb.errors import NotFoundError
except ImportError as error:  # an optional extra
    raise ImportError("Chroma support needs chromadb: pip install 'jina-rag[chroma]'") from error

from jina_rag.errors import InvalidInputError
from jina_rag.index.documents import RESERVED_METADATA_KEYS, point_id
from jina_rag.index.store import (
    CollectionMismatchError,
    FilterValue,
    IndexMode,
    Layout,
    Point,
    SearchHit,
    SearchQuery,
    best_passage,
    check_layout,
    check_search_mode,
    location_holds,
    missing_collection,
)

# Metadata keys Chroma refuses at upsert (in its Rust core: empty, or starting with "$" or "#") or
# drops without a word ("chroma:" is its own prefix).
RESERVED_KEY_PREFIXES = ("$", "#", "chroma:")
# Records per page when listing a collection's document ids.
LIST_PAGE = 1000
# The file embedded Chroma keeps a folder's collections in: without it, the folder holds none.
DATABASE_FILE = "chroma.sqlite3"
LAYOUT_KEY = "jina_rag_layout"
# Passage record ids live in a namespace of their own, so they never equal a document's point id.
PASSAGE_NAMESPACE = uuid.UUID("b3d1a0c4-7e52-5f19-8a6d-2c4e9f1b7a30")
# chromadb 1.5's hybrid search (Collection.search with sparse vectors and Rrf) is for distributed and
# hosted Chroma only: its local implementation, which embedded Chroma and `chroma run` use, raises
# NotImplementedError("Search is not implemented for Local Chroma").
HYBRID_UNSUPPORTED = (
    "mode 'hybrid' needs sparse (BM25) search fused with dense search inside the store, which Chroma runs only "
    "distributed or hosted (embedded Chroma and `chroma run` raise NotImplementedError for it): index into Qdrant "
    "(a local folder runs Qdrant Edge in-process, no server), or use mode 'late-chunks' or 'both' with Chroma"
)
# Search asks for this many records per wanted document, more if passages crowd out documents.
RECORDS_PER_DOCUMENT = 4


def passage_record_id(doc_id: str, index: int) -> str:
    """The Chroma id of a document's ``index``-th passage record."""
    return str(uuid.uuid5(PASSAGE_NAMESPACE, f"{index}:{doc_id}"))


class ChromaStore:
    """A Chroma collection of document vectors (cosine space)."""

    layouts: tuple[Layout, ...] = ("document", "passages")  # no hybrid: see HYBRID_UNSUPPORTED

    def __init__(
        self, client: Any, collection: str, *, description: str | None = None, folder: str | os.PathLike[str] | None = None,
        location: str | None = None,
    ) -> None:
        """``client``: a chromadb client; or ``None`` with ``folder``: embedded Chroma there, opened when first
        needed and created only to write (:meth:`ensure_collection`), so reading a mistyped folder creates nothing."""
        if client is None and folder is None:
            raise InvalidInputError("give a chromadb client or the folder of an embedded database")
        self._client = client
        self.folder = Path(folder) if folder is not None else None
        self.collection = collection
        self.location = location or (str(folder) if folder is not None else "")
        self.description = description or f"chroma collection {collection!r}"
        self._handle: Any = None
        self._layout: Layout | None = None  # the collection's layout, once known

    @property
    def client(self) -> Any:
        """The chromadb client; an embedded one opens (creating its folder and database) on first use."""
        if self._client is None:
            self._client = chromadb.PersistentClient(path=str(self.folder))
        return self._client

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
                raise InvalidInputError("an API key only applies to a Chroma server: give an http(s):// URL as location")
            if Path(location).exists() and not Path(location).is_dir():
                raise InvalidInputError(
                    f"chroma location {location} is a file, not a folder: give a folder (made when missing) or "
                    f"an http(s)://host:port URL"
                )
            return cls(None, collection, description=f"chroma collection {collection!r} at {location}", folder=location)
        return cls(client, collection, description=f"chroma collection {collection!r} at {location}", location=location)

    def ensure_collection(self, dim: int, *, layout: Layout = "document") -> None:
        if layout == "hybrid":
            raise InvalidInputError(HYBRID_UNSUPPORTED)
        try:
            handle = self.client.get_collection(self.collection, embedding_function=None)
        except NotFoundError:
            handle = self.client.create_collection(
                self.collection, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None,
                metadata={LAYOUT_KEY: "passages"} if layout == "passages" else None,
            )
        check_layout(_layout_of(handle), layout, self.description)
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
        self._layout = layout

    def _collection(self) -> Any:
        if self._handle is None:
            if self._client is None and not (self.folder / DATABASE_FILE).is_file():
                # Opening the client would create the folder and an empty database: refuse first.
                detail = f" ({self.folder} holds no Chroma database)" if self.folder.is_dir() else f" (there is no folder {self.folder})"
                raise missing_collection(self.description, "chroma", self.location, self.collection, detail)
            try:
                self._handle = self.client.get_collection(self.collection, embedding_function=None)
            except NotFoundError:
                raise missing_collection(self.description, "chroma", self.location, self.collection, self._holds()) from None
        return self._handle

    def _holds(self) -> str:
        """What collections the location holds, for the error naming a missing one."""
        try:
            return location_holds(self.location, [getattr(c, "name", c) for c in self.client.list_collections()])
        except Exception:  # a hint only: the error is the missing collection
            return ""

    def layout(self) -> Layout | None:
        if self._layout is None:
            try:
                self._layout = _layout_of(self._collection())
            except ValueError:  # no such collection yet
                return None
        return self._layout

    def dimension(self) -> int | None:
        try:
            stored = self._collection().get(limit=1, include=["embeddings"])["embeddings"]
        except ValueError:  # no such collection (our CollectionNotFoundError, or chromadb's NotFoundError)
            return None
        return len(stored[0]) if stored is not None and len(stored) else None

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        found = self._collection().get(ids=[point_id(doc_id) for doc_id in doc_ids], include=["metadatas"])
        # Points written by other tools carry no hash: they count as absent and get rewritten.
        return {m["doc_id"]: m["content_hash"] for m in found["metadatas"] if m and "content_hash" in m}

    def document_ids(self) -> list[str]:
        # Every record, passages too: a document whose write was interrupted may have passages and no document record.
        collection = self._collection()
        ids: set[str] = set()
        offset = 0
        while True:
            page = collection.get(limit=LIST_PAGE, offset=offset, include=["metadatas"])
            ids.update(m["doc_id"] for m in page["metadatas"] if m and "doc_id" in m)
            if len(page["ids"]) < LIST_PAGE:
                return sorted(ids)
            offset += LIST_PAGE

    def check_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> None:
        """Chroma's metadata is flat: str, int, float, bool or None values (and, where the installed chromadb
        takes them, non-empty lists of one of those types), as chromadb's own ``validate_metadata`` says."""
        for key, value in metadata.items():
            if not isinstance(key, str) or not key or key.startswith(RESERVED_KEY_PREFIXES):
                raise InvalidInputError(
                    f"document {doc_id!r}: metadata key {key!r} cannot be stored in Chroma (keys are non-empty strings "
                    f"not starting with {', '.join(repr(p) for p in RESERVED_KEY_PREFIXES)}): rename it; nothing was written"
                )
            try:
                validate_metadata({key: value})
            except (TypeError, ValueError) as error:
                raise InvalidInputError(
                    f"document {doc_id!r}: metadata key {key!r} holds a {type(value).__name__}, which Chroma cannot "
                    f"store ({error}): Chroma's metadata is flat (str, int, float, bool or None values); flatten it "
                    f"or store it as a JSON string, or index into Qdrant, which takes nested JSON; nothing was written"
                ) from None

    def upsert(self, points: Sequence[Point]) -> None:
        for point in points:  # the indexer checked them; direct callers get the same clear error
            self.check_metadata(point.doc_id, point.metadata)
        collection = self._collection()
        head = {"passage_index": -1} if self._passage_layout() else {}
        documents = dict(
            ids=[point.id for point in points],
            embeddings=np.stack([point.vector for point in points]),
            documents=[point.text for point in points],
            metadatas=[
                {**point.metadata, "doc_id": point.doc_id, "content_hash": point.content_hash, **head} for point in points
            ],
        )
        if not self._passage_layout():
            collection.upsert(**documents)
            return
        # Drop the old records first, so no stale passage outlives a shorter new version, and write
        # the document records (which carry the hash) last: an interrupted write leaves no hash
        # behind, and the next run re-indexes those documents.
        self.delete([point.doc_id for point in points])
        records = [
            (passage_record_id(point.doc_id, index), vector, point.text[start:end],
             {**point.metadata, "doc_id": point.doc_id, "passage_index": index, "passage_start": start, "passage_end": end})
            for point in points
            for index, ((start, end), vector) in enumerate(zip(point.passage_spans, point.passage_vectors))
        ]
        step = self.client.get_max_batch_size()
        for first in range(0, len(records), step):
            ids, vectors, texts, metadatas = zip(*records[first : first + step])
            collection.add(ids=list(ids), embeddings=np.stack(vectors), documents=list(texts), metadatas=list(metadatas))
        collection.add(**documents)

    def delete(self, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._collection().delete(where={"doc_id": {"$in": list(doc_ids)}})

    def search(
        self, query: SearchQuery, limit: int, conditions: dict[str, list[FilterValue]], mode: IndexMode = "document"
    ) -> list[SearchHit]:
        self._collection()  # a clear error if it does not exist
        check_search_mode(mode, self.layout(), self.description)
        vector = query.vector
        clauses = [{key: {"$in": values}} for key, values in conditions.items()]
        if not self._passage_layout():
            found = self._collection().query(
                query_embeddings=vector[None], n_results=limit, where=_all_of(clauses),
                include=["documents", "metadatas", "distances"],
            )
            return [
                SearchHit(metadata["doc_id"], 1.0 - float(distance), text, _user_metadata(metadata))
                for text, metadata, distance in zip(found["documents"][0], found["metadatas"][0], found["distances"][0])
            ]
        kinds = {"document": [{"passage_index": -1}], "late-chunks": [{"passage_index": {"$gte": 0}}], "both": []}[mode]
        scores = self._best_records(vector, limit, _all_of(clauses + kinds))
        if not scores:
            return []
        records = self._collection().get(
            where={"doc_id": {"$in": list(scores)}}, include=["embeddings", "documents", "metadatas"]
        )
        heads: dict[str, tuple[str, dict[str, Any]]] = {}
        passages: dict[str, list[tuple[int, int, int, np.ndarray]]] = {doc_id: [] for doc_id in scores}
        for text, metadata, embedding in zip(records["documents"], records["metadatas"], records["embeddings"]):
            if metadata["passage_index"] < 0:
                heads[metadata["doc_id"]] = (text, metadata)
            else:
                span = (metadata["passage_index"], metadata["passage_start"], metadata["passage_end"])
                passages[metadata["doc_id"]].append((*span, embedding))
        hits = []
        for doc_id, score in scores.items():
            if doc_id not in heads:
                continue  # being written right now: its document record comes last
            text, metadata = heads[doc_id]
            ordered = sorted(passages[doc_id], key=lambda passage: passage[0])
            passage = best_passage(vector, np.stack([p[3] for p in ordered]), [p[1:3] for p in ordered], text)
            hits.append(SearchHit(doc_id, score, text, _user_metadata(metadata), passage))
        return hits

    def _best_records(self, vector: np.ndarray, limit: int, where: dict[str, Any] | None) -> dict[str, float]:
        """The ``limit`` documents whose best record (within ``where``) is nearest, with its similarity."""
        wanted = limit * RECORDS_PER_DOCUMENT
        while True:
            found = self._collection().query(
                query_embeddings=vector[None], n_results=wanted, where=where, include=["metadatas", "distances"]
            )
            best: dict[str, float] = {}
            # Records come nearest first, so a document's first record is its best.
            for metadata, distance in zip(found["metadatas"][0], found["distances"][0]):
                best.setdefault(metadata["doc_id"], 1.0 - float(distance))
            if len(best) >= limit or len(found["ids"][0]) < wanted:
                return dict(list(best.items())[:limit])
            wanted *= RECORDS_PER_DOCUMENT

    def count(self) -> int:
        if not self._passage_layout():
            return self._collection().count()
        return len(self._collection().get(where={"passage_index": -1}, include=[])["ids"])

    def _passage_layout(self) -> bool:
        """Whether the existing collection holds passage records."""
        self._collection()  # a clear error if it does not exist
        return self.layout() == "passages"

    def close(self) -> None:
        self._handle = None
        if self._client is not None:
            self._client.close()


def _layout_of(collection: Any) -> Layout:
    return "passages" if (collection.metadata or {}).get(LAYOUT_KEY) == "passages" else "document"


def _all_of(clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A Chroma ``where`` requiring every clause (``$and`` needs two or more)."""
    return clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else None


def _user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key not in RESERVED_METADATA_KEYS}
