"""BM25 sparse embeddings for langchain-qdrant's hybrid search: :class:`JinaBM25SparseEmbeddings`.

Apart from :mod:`jina_rag.langchain` so that the dense adapter does not need langchain-qdrant.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_qdrant import SparseEmbeddings, SparseVector
    from qdrant_client import models
except ImportError as error:  # beyond the langchain extra
    raise ImportError("JinaBM25SparseEmbeddings plugs into langchain-qdrant: pip install langchain-qdrant") from error

from jina_rag import sparse


class JinaBM25SparseEmbeddings(SparseEmbeddings):
    """BM25 for ``QdrantVectorStore(retrieval_mode=RetrievalMode.HYBRID, sparse_embedding=...)``.

    The vectors leave out the IDF, so the collection's sparse vector must carry Qdrant's ``IDF``
    modifier, which langchain-qdrant does not set: create the collection passing this object's
    :attr:`sparse_vector_params` as ``sparse_vector_params`` (``from_texts``, ``from_documents``,
    ``construct_instance``); one made by hand needs ``SparseVectorParams(modifier=Modifier.IDF)``.
    Words and weights are those of ``bm25`` (default: :class:`~jina_rag.sparse.BM25SparseEncoder`'s
    settings), as in :class:`~jina_rag.index.DocumentIndex`'s hybrid mode. ``aembed_documents`` and
    ``aembed_query`` (from ``SparseEmbeddings``) run in a worker thread.
    """

    def __init__(self, bm25: sparse.BM25SparseEncoder | None = None) -> None:
        self.bm25 = bm25 or sparse.BM25SparseEncoder()

    @property
    def sparse_vector_params(self) -> dict[str, Any]:
        """langchain-qdrant's ``sparse_vector_params`` for a new collection: Qdrant applies the IDF."""
        return {"modifier": models.Modifier.IDF}

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """One vector per text, in order: BM25 term weights without the IDF."""
        return [_as_langchain(vector) for vector in self.bm25.embed_documents(texts)]

    def embed_query(self, text: str) -> SparseVector:
        """Weight 1 per query word (Qdrant multiplies in the IDF)."""
        return _as_langchain(self.bm25.embed_query(text))


def _as_langchain(vector: sparse.SparseVector) -> SparseVector:
    return SparseVector(indices=vector.indices.tolist(), values=vector.values.tolist())
