"""Qdrant behind :class:`~jina_rag.index.store.DocumentStore` in-process: Qdrant Edge on a local folder.

Qdrant Edge (``qdrant-edge-py``) is Qdrant's own engine as a library: the same segments, WAL,
HNSW, payload indexes, filters and Query API (prefetch and RRF/DBSF fusion) as a server, with
points in the layout of :mod:`jina_rag.index.qdrant_layout`, so a collection behaves as the
qdrant-client store's does. One folder holds several collections, an Edge shard each, in
``<folder>/<collection>/``.

How Edge behaves, and what this store does about it:

- Durability: an update is in the WAL when it returns, so a process killed right after loses
  nothing; the WAL and segments are synced to disk (``flush``) every :data:`FLUSH_SECONDS`, as a
  Qdrant server does, and on close, so a power cut loses at most those last seconds (syncing
  every batch costs about five times the write).
- HNSW: Edge runs no background optimizer; writes land in one plain (brute-force) segment, and
  ``optimize()`` turns segments past the indexing threshold (about 10 MB of vectors) into HNSW
  segments. A store that was opened for indexing (:meth:`EdgeStore.ensure_collection`) optimizes
  on close, so an indexing run ends with the index built, also a rerun after a killed one.
- One process at a time: Edge takes an exclusive lock on the shard's WAL, failing with a
  bare ``WouldBlock``. The store first takes an OS lock (``flock``) on ``jina-rag.lock`` in the
  collection's folder, held while it is open, and refuses a second opener with
  :class:`CollectionLockedError`, before Edge touches any file.

A folder written by qdrant-client's local mode (``meta.json`` and ``collection/``) is another
format: the store refuses it, and :func:`migrate_local_folder` copies its collections to Edge.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

try:
    import qdrant_edge as edge
except ImportError as error:  # an optional extra
    raise ImportError("Qdrant Edge support needs qdrant-edge-py: pip install 'jina-rag[qdrant]'") from error

from jina_rag.errors import InvalidInputError, JinaRagError
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

logger = logging.getLogger(__name__)

# Edge persists a shard's vector config here; it is the shard's mark of existence.
CONFIG_FILE = "edge_config.json"
LOCK_FILE = "jina-rag.lock"
# A Qdrant server's default flush interval: the most a power cut may lose.
FLUSH_SECONDS = 5.0
# Points per write when migrating.
MIGRATE_BATCH = 256


class CollectionLockedError(OSError, RuntimeError, JinaRagError):
    """Another process (or another store in this one) has the collection open.

    An ``OSError`` (the resource is busy) and a ``RuntimeError``, as qdrant-client's locked
    local folder raises, so callers waiting for a folder to be released keep working.
    """


class CollectionUnreadableError(OSError, JinaRagError):
    """Qdrant Edge cannot open a collection's files (damaged, or written by another version)."""


class EdgeStore:
    """A Qdrant Edge collection of document vectors (cosine distance) in ``<folder>/<collection>/``.

    An existing collection is opened (and locked) at once, a new one when it is created.
    ``index_fields`` are metadata keys to give keyword payload indexes (``doc_id`` always has
    one), so filtered search and deletes stay fast on large collections.
    """

    layouts = LAYOUTS

    def __init__(self, folder: str | os.PathLike[str], collection: str, *, index_fields: Sequence[str] = ()) -> None:
        check_collection_name(collection)
        self.folder = Path(folder)
        self.collection = collection
        self.path = self.folder / collection
        self.index_fields = tuple(index_fields)
        self.description = f"qdrant edge collection {collection!r} at {self.folder}"
        refuse_qdrant_client_folder(self.folder)
        self._shard: Any = None
        self._lock: IO[str] | None = None
        self._closed = False
        self._layout: Layout | None = None  # the collection's layout, once known
        self._optimize_on_close = False
        self._flushed = time.monotonic()
        if self._exists():
            self._open()

    @property
    def shard(self) -> Any:
        """The open ``qdrant_edge.EdgeShard`` (snapshots, inspection); raises if the collection does not exist."""
        if self._shard is None:
            self._require_collection()
            self._open()
        return self._shard

    def _exists(self) -> bool:
        return (self.path / CONFIG_FILE).is_file()

    def _open(self, config: Any = None) -> None:
        """Lock the collection's folder, then load the shard, or create it from ``config`` if it still does not exist."""
        if self._closed:
            raise InvalidInputError(f"{self.description} was closed: open a new store")
        self.path.mkdir(parents=True, exist_ok=True)
        lock = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise CollectionLockedError(
                f"{self.description} is open in another process (pid {holder}) or another store: Qdrant Edge lets one "
                f"process at a time open a collection. Close it there or wait for that run to finish; for concurrent "
                f"writers, use a Qdrant server (an http(s):// URL)."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            if config is None or self._exists():  # another process may have created it since we looked
                self._shard = edge.EdgeShard.load(str(self.path))
            else:
                self._shard = edge.EdgeShard.create(str(self.path), config)
        except Exception as error:  # Edge raises bare Exceptions
            lock.close()
            raise CollectionUnreadableError(f"Qdrant Edge cannot open {self.description}: {error}") from error
        self._lock = lock

    def ensure_collection(self, dim: int, *, layout: Layout = "document") -> None:
        if self._shard is None:
            self._open(_config(dim, layout))
        self._check_collection(dim, layout)
        self._layout = layout
        self._optimize_on_close = True
        indexed = set(self._shard.info().payload_schema)
        for name in ("doc_id", *(f"metadata.{field}" for field in self.index_fields)):
            if name not in indexed:
                self._write(edge.UpdateOperation.create_field_index(name, edge.PayloadSchemaType.Keyword))

    def _stored_config(self) -> dict[str, Any]:
        return json.loads((self.path / CONFIG_FILE).read_text())

    def _check_collection(self, dim: int, layout: Layout) -> None:
        config = self._stored_config()
        existing = _layout_of(config)
        if existing is None:
            raise unknown_layout(self.description, config.get("vectors") or {}, config.get("sparse_vectors") or {})
        check_layout(existing, layout, self.description)
        stored = config["vectors"]["" if layout == "document" else DOCUMENT_VECTOR]
        if stored["size"] != dim or stored["distance"] != "Cosine":
            raise wrong_vectors(self.description, stored["size"], stored["distance"], dim)

    def layout(self) -> Layout | None:
        if self._layout is None and self._exists():
            self._layout = _layout_of(self._stored_config())
        return self._layout

    def dimension(self) -> int | None:
        if not self._exists():
            return None
        vectors = self._stored_config().get("vectors") or {}
        dense = vectors.get("") or vectors.get(DOCUMENT_VECTOR)
        return dense["size"] if dense else None

    def existing_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        records = self.shard.retrieve(
            [point_id(doc_id) for doc_id in doc_ids], with_payload=["doc_id", "content_hash"], with_vector=False,
        )
        # Points written by other tools carry no hash: they count as absent and get rewritten.
        return {r.payload["doc_id"]: r.payload["content_hash"] for r in records if "content_hash" in (r.payload or {})}

    def document_ids(self) -> list[str]:
        ids: set[str] = set()
        offset = None
        while True:
            records, offset = self.shard.scroll(edge.ScrollRequest(
                offset=offset, limit=SCROLL_PAGE, with_payload=["doc_id"], with_vector=False,
            ))
            ids.update(r.payload["doc_id"] for r in records if "doc_id" in (r.payload or {}))
            if offset is None:
                return sorted(ids)

    def check_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> None:
        check_payload_metadata(doc_id, metadata, "Qdrant Edge")

    def upsert(self, points: Sequence[Point]) -> None:
        # One point per document, so an upsert replaces all of a document's passages at once.
        self._write(edge.UpdateOperation.upsert_points([
            edge.Point(point.id, vectors_of(point, edge.SparseVector), payload_of(point)) for point in points
        ]))

    def _write(self, operation: Any) -> None:
        """Apply an update: in the WAL when this returns; synced to disk every :data:`FLUSH_SECONDS`."""
        self.shard.update(operation)
        if time.monotonic() - self._flushed > FLUSH_SECONDS:
            self._shard.flush()
            self._flushed = time.monotonic()

    def delete(self, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        selector = edge.Filter(must=[edge.FieldCondition("doc_id", match=edge.MatchAny(list(doc_ids)))])
        self._write(edge.UpdateOperation.delete_points_by_filter(selector))

    def search(
        self, query: SearchQuery, limit: int, conditions: dict[str, list[FilterValue]], mode: IndexMode = "document"
    ) -> list[SearchHit]:
        layout = self.layout()
        if layout is None:
            self._require_collection()  # raises: the collection does not exist
        check_search_mode(mode, layout, self.description)
        must = [_condition(f"metadata.{key}", values) for key, values in conditions.items()]
        query_filter = edge.Filter(must=must) if must else None
        if layout == "document":
            hits = self.shard.query(edge.QueryRequest(
                limit=limit, query=edge.Query.Nearest(query.vector.tolist()), filter=query_filter, with_payload=True,
            ))
            return [search_hit(hit.payload, hit.score) for hit in hits]
        if mode == "hybrid":
            ranked = self._fused(query, limit, query_filter)
        else:
            ranked = self._best_of_dense(query.vector, limit, query_filter, mode)
        return [search_hit(hit.payload, hit.score, query.vector, hit.vector[PASSAGE_VECTORS]) for hit in ranked]

    def _best_of_dense(self, vector: np.ndarray, limit: int, query_filter: Any, mode: IndexMode) -> list[Any]:
        requests = []
        if mode in ("document", "both"):
            requests.append(edge.QueryRequest(
                limit=limit, query=edge.Query.Nearest(vector.tolist(), using=DOCUMENT_VECTOR), filter=query_filter,
                with_payload=True, with_vector=[PASSAGE_VECTORS],
            ))
        if mode in ("late-chunks", "both"):
            # A one-vector multivector query: MAX_SIM gives the best passage's cosine similarity.
            requests.append(edge.QueryRequest(
                limit=limit, query=edge.Query.Nearest([vector.tolist()], using=PASSAGE_VECTORS), filter=query_filter,
                with_payload=True, with_vector=[PASSAGE_VECTORS],
            ))
        return best_of(self.shard.query_batch(edge.QueryBatchRequest(requests)), limit)

    def _fused(self, query: SearchQuery, limit: int, query_filter: Any) -> list[Any]:
        prefetches = []
        for name, _, value in representation_queries(query):
            if name == SPARSE_VECTOR:
                value = edge.SparseVector(value.indices.tolist(), value.values.tolist())
            else:
                value = value.tolist()
            prefetches.append(edge.Prefetch(
                limit=max(limit, query.fusion.candidates), query=edge.Query.Nearest(value, using=name), filter=query_filter,
            ))
        return self.shard.query(edge.QueryRequest(
            limit=limit, prefetches=prefetches, query=_fusion_query(query.fusion), filter=query_filter,
            with_payload=True, with_vector=[PASSAGE_VECTORS],
        ))

    def count(self) -> int:
        return self.shard.count(edge.CountRequest(exact=True))

    def close(self) -> None:
        """Build the HNSW index if this store indexed, sync to disk, and release the shard and its lock."""
        if self._shard is None:
            self._closed = True
            return
        try:
            if self._optimize_on_close:
                started = time.perf_counter()
                logger.debug("optimizing %s: Qdrant Edge builds the HNSW index on request", self.description)
                if self._shard.optimize():
                    logger.info("built the HNSW index of %s in %.1f s", self.description, time.perf_counter() - started)
            self._shard.flush()
        finally:
            self._shard.close()
            self._shard = None
            self._closed = True
            if self._lock is not None:
                self._lock.close()  # closing the file releases the flock
                self._lock = None

    def _require_collection(self) -> None:
        if not self._exists():
            if not self.folder.is_dir():
                detail = f" (there is no folder {self.folder})"
            else:
                detail = location_holds(str(self.folder), [
                    entry.name for entry in self.folder.iterdir() if (entry / CONFIG_FILE).is_file()
                ])
            raise missing_collection(self.description, "qdrant", str(self.folder), self.collection, detail)


def check_collection_name(name: str) -> None:
    """Refuse a collection name that is not one plain folder name, so nothing lands outside the folder."""
    if not name or name in (".", "..") or any(char in name for char in "/\\\0") or name != name.strip():
        raise InvalidInputError(
            f"collection name {name!r} must be one folder name: not empty, not '.' or '..', without '/', '\\\\', "
            f"NUL or surrounding spaces"
        )


def is_qdrant_client_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` was written by qdrant-client's local mode (``QdrantClient(path=...)``)."""
    folder = Path(folder)
    return (folder / "meta.json").is_file() and (folder / "collection").is_dir()


def refuse_qdrant_client_folder(folder: Path) -> None:
    """Refuse to read a qdrant-client local folder as Qdrant Edge collections, saying how to migrate."""
    if is_qdrant_client_folder(folder):
        raise InvalidInputError(
            f"{folder} is a qdrant-client local-mode folder (meta.json, collection/), written by an earlier jina-rag; "
            f"local Qdrant collections are now Qdrant Edge shards. Copy its collections to a new folder with "
            f"`python -c \"from jina_rag.index.qdrant_edge import migrate_local_folder; "
            f"migrate_local_folder('{folder}', '{folder}-edge')\"` and use that folder, or open this one with "
            f"jina_rag.index.qdrant.QdrantStore.from_location."
        )


def migrate_local_folder(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> dict[str, int]:
    """Copy every collection jina-rag wrote in a qdrant-client local folder to Qdrant Edge collections in ``target``.

    Points keep their ids, vectors and payload; collections in layouts jina-rag does not write
    are skipped with a warning. Rerunning finishes an interrupted migration (writes are upserts).
    Returns the points in each copied collection.
    """
    from qdrant_client import QdrantClient, models

    from jina_rag.index.qdrant import QdrantStore

    if not is_qdrant_client_folder(source):
        raise InvalidInputError(f"{source} is not a qdrant-client local-mode folder (no meta.json and collection/)")
    client = QdrantClient(path=str(source))
    copied: dict[str, int] = {}
    try:
        for name in sorted(description.name for description in client.get_collections().collections):
            layout = QdrantStore(client, name).layout()
            params = client.get_collection(name).config.params
            dense = None if layout is None else params.vectors if layout == "document" else params.vectors[DOCUMENT_VECTOR]
            if dense is None or dense.distance != models.Distance.COSINE:
                logger.warning("skipped collection %r of %s: jina-rag did not write its vectors", name, source)
                continue
            dim = dense.size
            store = EdgeStore(target, name)
            try:
                store.ensure_collection(dim, layout=layout)
                offset = None
                while True:
                    records, offset = client.scroll(name, limit=MIGRATE_BATCH, offset=offset, with_payload=True, with_vectors=True)
                    store._write(edge.UpdateOperation.upsert_points([
                        edge.Point(record.id, _edge_vectors(record.vector, models.SparseVector), record.payload)
                        for record in records
                    ]))
                    if offset is None:
                        break
                copied[name] = store.count()
            finally:
                store.close()
            logger.info("copied %d points of collection %r from %s to %s", copied[name], name, source, target)
    finally:
        client.close()
    return copied


def _edge_vectors(vector: Any, client_sparse: type) -> Any:
    """A qdrant-client record's vectors as Edge takes them: its sparse vectors (``client_sparse``) are another type."""
    if not isinstance(vector, dict):
        return vector
    return {
        name: edge.SparseVector(value.indices, value.values) if isinstance(value, client_sparse) else value
        for name, value in vector.items()
    }


def _config(dim: int, layout: Layout) -> Any:
    """The Edge config of a new collection of ``layout``: named as :mod:`jina_rag.index.qdrant_layout` says."""
    dense = edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine)
    if layout == "document":
        return edge.EdgeConfig(vectors=dense)
    multivector = edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
    passages = edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine, multivector_config=multivector)
    sparse = {SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)} if layout == "hybrid" else None
    return edge.EdgeConfig(vectors={DOCUMENT_VECTOR: dense, PASSAGE_VECTORS: passages}, sparse_vectors=sparse)


def _layout_of(config: dict[str, Any]) -> Layout | None:
    """The layout of a shard's stored config (``edge_config.json``), ``None`` if jina-rag did not write it."""
    vectors, sparse = config.get("vectors") or {}, config.get("sparse_vectors") or {}
    if set(vectors) == {""}:
        return layout_of_vectors(True, False, bool(sparse))
    if set(vectors) != {DOCUMENT_VECTOR, PASSAGE_VECTORS} or set(sparse) - {SPARSE_VECTOR}:
        return None
    multivector = vectors[PASSAGE_VECTORS].get("multivector_config") or {}
    idf = (sparse.get(SPARSE_VECTOR) or {}).get("modifier") == "idf"
    if multivector.get("comparator") != "max_sim" or (SPARSE_VECTOR in sparse and not idf):
        return None
    return layout_of_vectors(True, True, SPARSE_VECTOR in sparse)


def _condition(key: str, values: list[FilterValue]) -> Any:
    """``key`` matches any of ``values``.

    Edge's bindings read a Python bool as an integer (``MatchValue(True)`` matches 1, never
    ``true``) and ``MatchAny`` takes only all-string or all-integer lists, so booleans go as
    NumPy booleans and mixed lists as one condition per value.
    """
    if len(values) > 1 and (all(isinstance(v, str) for v in values) or all(type(v) is int for v in values)):
        return edge.FieldCondition(key, match=edge.MatchAny(values))
    matches = [edge.FieldCondition(key, match=edge.MatchValue(np.bool_(v) if isinstance(v, bool) else v)) for v in values]
    return matches[0] if len(matches) == 1 else edge.Filter(should=matches)


def _fusion_query(fusion: Fusion) -> Any:
    if fusion.method == "dbsf":
        return edge.Fusion.Dbsf()
    return edge.Fusion.Rrf(k=fusion.k, weights=[weight for _, weight in fusion.used()])
