"""Document indexing into Qdrant and Chroma: one point per document (whole-document vector, and
late-chunked passage vectors in modes ``late-chunks`` and ``both``, plus BM25 in ``hybrid``),
idempotent, resumable.

Store modules (``jina_rag.index.qdrant`` for servers and ``:memory:``, ``jina_rag.index.qdrant_edge``
for Qdrant Edge in a local folder, ``jina_rag.index.chroma``) import their client library, so
they load only when a store of that kind is opened.
"""

from jina_rag.index.core import (
    STORES,
    BatchResult,
    DocumentIndex,
    IndexingError,
    IndexPlan,
    IndexReport,
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
from jina_rag.index.store import (
    INDEX_MODES,
    CollectionMismatchError,
    CollectionNotFoundError,
    DocumentStore,
    Fusion,
    IndexMode,
    Layout,
    Passage,
    Point,
    SearchHit,
    SearchQuery,
)

__all__ = [
    "INDEX_MODES",
    "STORES",
    "TEXT_SUFFIXES",
    "BatchResult",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "Document",
    "DocumentIndex",
    "DocumentStore",
    "Fusion",
    "IndexMode",
    "IndexPlan",
    "IndexReport",
    "IndexingError",
    "Layout",
    "Passage",
    "Point",
    "SearchHit",
    "SearchQuery",
    "WrittenBatch",
    "documents_from_records",
    "filter_conditions",
    "open_store",
    "point_id",
    "read_documents",
    "read_records_file",
    "validate_documents",
]
