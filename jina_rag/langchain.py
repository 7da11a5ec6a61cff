"""LangChain adapter: :class:`JinaEmbeddings`, a ``langchain_core`` ``Embeddings`` over :class:`JinaEncoder`."""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # an optional extra
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'jina-rag[langchain]'") from error
from pydantic import BaseModel, ConfigDict, PrivateAttr

from jina_rag.encoder import DEFAULT_BATCH_TOKENS, BackendName, JinaEncoder, LongTextPolicy


class JinaEmbeddings(BaseModel, Embeddings):
    """Jina Embeddings v2 for LangChain; ``JinaEmbeddings()`` uses the default model.

    The model loads when the object is created (a missing model fails here, not mid-chain) and is
    shared by every adapter naming the same model and device. Documents up to ``max_length``
    tokens take one pass; longer ones follow ``long_text`` (default: averaged windows, one vector).
    ``aembed_documents``/``aembed_query`` (from ``Embeddings``) run in a worker thread, and torch
    releases the GIL while it computes, so the event loop keeps running.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str | None = None
    device: str | None = None
    max_length: int = 8192
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    normalize: bool = True
    long_text: LongTextPolicy = "windows"
    backend: BackendName = "torch"  # "onnx": a folder from ``jina-rag export-onnx`` on ONNX Runtime
    providers: list[str] | None = None  # ONNX Runtime execution providers (default: CPU)

    _encoder: JinaEncoder = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._encoder = JinaEncoder.from_pretrained(
            self.model_name, device=self.device, max_length=self.max_length, long_text=self.long_text,
            backend=self.backend, providers=self.providers,
        )

    @property
    def encoder(self) -> JinaEncoder:
        return self._encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return self._encoder.encode(
            texts, batch_tokens=self.batch_tokens, normalize=self.normalize, show_progress=False
        ).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Queries and documents share one encoder (Jina v2 uses no query prefix)."""
        return self.embed_documents([text])[0]
