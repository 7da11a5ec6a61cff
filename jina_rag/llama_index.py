"""LlamaIndex adapters: :class:`JinaEmbedding` (a ``BaseEmbedding`` over :class:`JinaEncoder`),
:class:`JinaNodeRetriever` (a ``BaseRetriever`` over a :class:`~jina_rag.index.DocumentIndex`) and
:class:`JinaBM25SparseFunctions` (BM25 for the Qdrant vector store's hybrid search)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
except ImportError as error:  # an optional extra
    raise ImportError("the LlamaIndex adapter needs llama-index-core: pip install 'jina-rag[llamaindex]'") from error
from pydantic import Field

from jina_rag.adapter_options import EncoderOptions
from jina_rag.index import DocumentIndex, IndexMode
from jina_rag.index.store import FilterValue
from jina_rag.sparse import BM25SparseEncoder, SparseVector
from jina_rag.errors import InvalidInputError

if TYPE_CHECKING:
    from qdrant_client import models

# What the Qdrant vector store's sparse_doc_fn and sparse_query_fn return: indices and values per text.
BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]

# Added to each node's metadata; kept out of what the LLM and embedders read.
HIT_KEYS = ["doc_id", "passage"]


class JinaEmbedding(EncoderOptions, BaseEmbedding):
    """Jina Embeddings v2 for LlamaIndex (``Settings.embed_model = JinaEmbedding()``).

    The model loads at creation and is shared by adapters naming the same model and device.
    ``embed_batch_size`` texts go to the encoder at once, which packs them into batches of at most
    ``batch_tokens`` tokens. Async methods run the encoder in a worker thread.
    """

    embed_batch_size: int = Field(default=64, gt=0, le=2048)

    @classmethod
    def class_name(cls) -> str:
        return "JinaEmbedding"

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embeddings([query])[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._aget_text_embeddings([query]))[0]


class JinaNodeRetriever(BaseRetriever):
    """Whole documents from a :class:`~jina_rag.index.DocumentIndex` as LlamaIndex nodes, best first.

    Each node is a document (``id_`` and source = the document id, scored by the index); on a
    collection indexed with passages (``late-chunks`` or ``both``) its metadata ``passage`` holds
    the passage that matches the query best (``{"index", "start", "end", "text", "score"}``).
    ``aretrieve`` runs the search in a worker thread.
    """

    def __init__(
        self,
        index: DocumentIndex,
        *,
        similarity_top_k: int = 4,
        filter: Mapping[str, FilterValue | Sequence[FilterValue]] | None = None,
        mode: IndexMode | None = None,
        **kwargs: Any,
    ) -> None:
        if similarity_top_k < 1:
            raise InvalidInputError(f"similarity_top_k must be at least 1, got {similarity_top_k}")
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.filter = filter
        self.mode = mode
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.index.search(query_bundle.query_str, limit=self.similarity_top_k, filter=self.filter, mode=self.mode)
        return [
            NodeWithScore(
                node=TextNode(
                    id_=hit.id,
                    text=hit.text,
                    metadata={
                        **hit.metadata, "doc_id": hit.id,
                        "passage": dataclasses.asdict(hit.passage) if hit.passage else None,
                    },
                    excluded_embed_metadata_keys=HIT_KEYS,
                    excluded_llm_metadata_keys=HIT_KEYS,
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.id)},
                ),
                score=hit.score,
            )
            for hit in hits
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class JinaBM25SparseFunctions:
    """BM25 for llama-index-vector-stores-qdrant: ``QdrantVectorStore(..., **bm25.store_kwargs)``.

    The vectors leave out the IDF, so the collection's sparse vector needs Qdrant's ``IDF``
    modifier, which the store sets only for FastEmbed models it knows: give it ``sparse_config``
    (``store_kwargs`` does, along with ``enable_hybrid``, ``sparse_doc_fn`` and ``sparse_query_fn``).
    Words and weights are those of ``bm25`` (default: :class:`~jina_rag.sparse.BM25SparseEncoder`'s
    settings), as in :class:`~jina_rag.index.DocumentIndex`'s hybrid mode.
    """

    def __init__(self, bm25: BM25SparseEncoder | None = None) -> None:
        self.bm25 = bm25 or BM25SparseEncoder()

    def doc_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """The store's ``sparse_doc_fn``: BM25 term weights without the IDF, per text."""
        return _as_batch(self.bm25.embed_documents(texts))

    def query_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """The store's ``sparse_query_fn``: weight 1 per query word (Qdrant multiplies in the IDF)."""
        return _as_batch([self.bm25.embed_query(text) for text in texts])

    @property
    def sparse_config(self) -> models.SparseVectorParams:
        """The store's ``sparse_config`` for a new collection: Qdrant applies the IDF."""
        # qdrant-client comes with the Qdrant vector store, not with this adapter.
        from qdrant_client import models

        return models.SparseVectorParams(modifier=models.Modifier.IDF)

    @property
    def store_kwargs(self) -> dict[str, Any]:
        """Everything ``QdrantVectorStore`` needs for BM25 hybrid search."""
        return {
            "enable_hybrid": True, "sparse_doc_fn": self.doc_fn, "sparse_query_fn": self.query_fn,
            "sparse_config": self.sparse_config,
        }


def _as_batch(vectors: list[SparseVector]) -> BatchSparseEncoding:
    return [vector.indices.tolist() for vector in vectors], [vector.values.tolist() for vector in vectors]
