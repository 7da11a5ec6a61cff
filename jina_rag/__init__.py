"""jina-rag: the Jina Embeddings v2 encoder (JinaBERT) for retrieval-augmented generation."""

from typing import Any

from jina_rag.encoder import JinaEncoder, NonFiniteVectorError, TextTooLongError
from jina_rag.errors import InvalidInputError, InvalidTypeError, JinaRagError
from jina_rag.eval import RetrievalSet, load_beir, load_narrativeqa
from jina_rag.index import (
    CollectionMismatchError,
    CollectionNotFoundError,
    Document,
    DocumentIndex,
    Fusion,
    IndexingError,
    IndexReport,
    Passage,
    SearchHit,
    read_documents,
)
from jina_rag.late_chunking import LateChunks, encode_late_chunks
from jina_rag.parallel import WorkerError
from jina_rag.loading import CheckpointError, ModelNotFoundError, load_model, load_tokenizer, save_pretrained
from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM, JinaBertModel, alibi_slopes
from jina_rag.settings import EncoderSettings  # the encoder's options, one frozen object: JinaEncoder.from_settings
from jina_rag.sparse import BM25SparseEncoder

__version__ = "0.1.0"

# Adapters, the ONNX tools and the Ray engine import optional extras, so they load on first use.
_ADAPTERS = {
    "JinaEmbeddings": "jina_rag.langchain",
    "JinaBM25SparseEmbeddings": "jina_rag.langchain_sparse",
    "JinaRetriever": "jina_rag.langchain",
    "JinaEmbedding": "jina_rag.llama_index",
    "JinaBM25SparseFunctions": "jina_rag.llama_index",
    "JinaNodeRetriever": "jina_rag.llama_index",
    "JinaEmbeddingFunction": "jina_rag.chroma_embedding",
    "OnnxBackend": "jina_rag.onnx_backend",
    "OnnxExport": "jina_rag.onnx_export",
    "OnnxExportError": "jina_rag.onnx_export",
    "export_onnx": "jina_rag.onnx_export",
    "index_with_ray": "jina_rag.index.ray_data",
}


def __getattr__(name: str) -> Any:
    if name in _ADAPTERS:
        import importlib

        return getattr(importlib.import_module(_ADAPTERS[name]), name)
    raise AttributeError(f"module 'jina_rag' has no attribute {name!r}")


__all__ = [
    "BM25SparseEncoder",
    "alibi_slopes",
    "CheckpointError",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "Document",
    "DocumentIndex",
    "Fusion",
    "encode_late_chunks",
    "EncoderSettings",
    "export_onnx",
    "index_with_ray",
    "IndexingError",
    "IndexReport",
    "InvalidInputError",
    "InvalidTypeError",
    "JinaBertConfig",
    "JinaBertForMaskedLM",
    "JinaBertModel",
    "JinaBM25SparseEmbeddings",
    "JinaBM25SparseFunctions",
    "JinaEmbedding",
    "JinaEmbeddingFunction",
    "JinaEmbeddings",
    "JinaEncoder",
    "JinaNodeRetriever",
    "JinaRagError",
    "JinaRetriever",
    "LateChunks",
    "load_beir",
    "load_model",
    "load_narrativeqa",
    "load_tokenizer",
    "ModelNotFoundError",
    "NonFiniteVectorError",
    "OnnxBackend",
    "OnnxExport",
    "OnnxExportError",
    "Passage",
    "read_documents",
    "RetrievalSet",
    "save_pretrained",
    "SearchHit",
    "TextTooLongError",
    "WorkerError",
]
