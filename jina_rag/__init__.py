"""jina-rag: the Jina Embeddings v2 encoder (JinaBERT) for retrieval-augmented generation."""

from typing import Any

from jina_rag.encoder import JinaEncoder, TextTooLongError
from jina_rag.index import (
    CollectionMismatchError,
    Document,
    DocumentIndex,
    IndexingError,
    IndexReport,
    SearchHit,
    read_documents,
)
from jina_rag.loading import CheckpointError, ModelNotFoundError, load_model, load_tokenizer, save_pretrained
from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM, JinaBertModel, alibi_slopes

__version__ = "0.1.0"

# Adapters and the Ray engine import their framework (an optional extra), so they load on first use.
_ADAPTERS = {
    "JinaEmbeddings": "jina_rag.langchain",
    "JinaEmbedding": "jina_rag.llama_index",
    "JinaEmbeddingFunction": "jina_rag.chroma",
    "index_with_ray": "jina_rag.index.ray_data",
}


def __getattr__(name: str) -> Any:
    if name in _ADAPTERS:
        import importlib

        return getattr(importlib.import_module(_ADAPTERS[name]), name)
    raise AttributeError(f"module 'jina_rag' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "CollectionMismatchError",
    "Document",
    "DocumentIndex",
    "IndexReport",
    "IndexingError",
    "JinaBertConfig",
    "JinaBertForMaskedLM",
    "JinaBertModel",
    "JinaEmbedding",
    "JinaEmbeddingFunction",
    "JinaEmbeddings",
    "JinaEncoder",
    "ModelNotFoundError",
    "SearchHit",
    "TextTooLongError",
    "alibi_slopes",
    "index_with_ray",
    "load_model",
    "load_tokenizer",
    "read_documents",
    "save_pretrained",
]
