"""LangChain adapters: :class:`JinaEmbeddings` (``Embeddings`` over :class:`~jina_rag.encoder.JinaEncoder`) and
:class:`JinaRetriever` (a ``BaseRetriever`` over a :class:`~jina_rag.index.DocumentIndex`).

BM25 sparse embeddings for langchain-qdrant's hybrid search are in :mod:`jina_rag.langchain_sparse`."""

from __future__ import annotations

import dataclasses
from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
except ImportError as error:  # an optional extra
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'jina-rag[langchain]'") from error
from pydantic import ConfigDict, Field

from jina_rag.adapter_options import EncoderOptions
from jina_rag.index import DocumentIndex, IndexMode
from jina_rag.index.store import FilterValue
from jina_rag.errors import InvalidTypeError


class JinaEmbeddings(EncoderOptions, Embeddings):
    """Jina Embeddings v2 for LangChain; ``JinaEmbeddings()`` uses the default model.

    The model loads when the object is created (a missing model fails here, not mid-chain) and is
    shared by every adapter naming the same model and device. Documents up to ``max_length``
    tokens take one pass; longer ones follow ``long_text`` (default: averaged windows, one vector).
    ``aembed_documents``/``aembed_query`` (from ``Embeddings``) run in a worker thread, and torch
    releases the GIL while it computes, so the event loop keeps running.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        if isinstance(texts, str):  # a string is a sequence of one-letter texts to a loop
            raise InvalidTypeError("embed_documents takes a list of texts: pass [text], or use embed_query for one text")
        return self._embed(texts)

    def embed_query(self, text: str) -> list[float]:
        """Queries and documents share one encoder (Jina v2 uses no query prefix)."""
        return self.embed_documents([text])[0]


class JinaRetriever(BaseRetriever):
    """Whole documents from a :class:`~jina_rag.index.DocumentIndex`, best first, for LangChain.

    Works on any collection the index writes; on one indexed with passages (``late-chunks`` or
    ``both``; langchain-qdrant cannot search multivectors) each document comes back with the
    passage that matches the query best. Metadata: the document's own keys, ``doc_id``, ``score``
    and ``passage`` (``{"index", "start", "end", "text", "score"}``, or None), so
    ``doc.page_content[start:end] == passage["text"]``. ``invoke(query, k=..., filter=..., mode=...)``
    overrides the fields for one call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: DocumentIndex
    k: int = Field(default=4, gt=0)
    filter: dict[str, FilterValue | list[FilterValue]] | None = None
    mode: IndexMode | None = None  # None: the index's mode

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, FilterValue | list[FilterValue]] | None = None,
        mode: IndexMode | None = None,
    ) -> list[Document]:
        hits = self.index.search(query, limit=k or self.k, filter=filter or self.filter, mode=mode or self.mode)
        return [
            Document(
                page_content=hit.text,
                id=hit.id,
                metadata={
                    **hit.metadata, "doc_id": hit.id, "score": hit.score,
                    "passage": dataclasses.asdict(hit.passage) if hit.passage else None,
                },
            )
            for hit in hits
        ]
