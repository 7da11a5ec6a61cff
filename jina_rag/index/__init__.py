"""Whole-document indexing into Qdrant and Chroma: one vector per document, idempotent, resumable.

Store modules (``jina_rag.index.qdrant``, ``jina_rag.index.chroma``) import their client library,
so they load only when a store of that kind is opened.
"""

from jina_rag.index.core import (
    STORES,
    CollectionMismatchError,
    DocumentIndex,
    DocumentStore,
    IndexingError,
    IndexPlan,
    IndexReport,
    Point,
    SearchHit,
    WrittenBatch,
    filter_conditions,
    open_store,
)
from jina_rag.index.documents import (
    TEXT_SUFFIXES,
    Document,
    documents_from_records,
    point_id,
    read_documents,
    read_records_file,
    validate_documents,
)

__all__ = [
    "STORES",
    "TEXT_SUFFIXES",
    "CollectionMismatchError",
    "Document",
    "DocumentIndex",
    "DocumentStore",
    "IndexPlan",
    "IndexReport",
    "IndexingError",
    "Point",
    "SearchHit",
    "WrittenBatch",
    "documents_from_records",
    "filter_conditions",
    "open_store",
    "point_id",
    "read_documents",
    "read_records_file",
    "validate_documents",
]
