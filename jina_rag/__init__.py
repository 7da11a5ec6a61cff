"""jina-rag: the Jina Embeddings v2 encoder (JinaBERT) for retrieval-augmented generation."""

from jina_rag.encoder import JinaEncoder, TextTooLongError
from jina_rag.eval import RetrievalSet, load_beir, load_narrativeqa
from jina_rag.loading import CheckpointError, ModelNotFoundError, load_model, load_tokenizer, save_pretrained
from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM, JinaBertModel, alibi_slopes

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "JinaBertConfig",
    "JinaBertForMaskedLM",
    "JinaBertModel",
    "JinaEncoder",
    "ModelNotFoundError",
    "RetrievalSet",
    "TextTooLongError",
    "alibi_slopes",
    "load_beir",
    "load_model",
    "load_narrativeqa",
    "load_tokenizer",
    "save_pretrained",
]
