"""LlamaIndex adapter: :class:`JinaEmbedding`, a ``BaseEmbedding`` over :class:`JinaEncoder`."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from llama_index.core.embeddings import BaseEmbedding
except ImportError as error:  # an optional extra
    raise ImportError("the LlamaIndex adapter needs llama-index-core: pip install 'jina-rag[llamaindex]'") from error
from pydantic import Field, PrivateAttr

from jina_rag.encoder import DEFAULT_BATCH_TOKENS, BackendName, JinaEncoder, LongTextPolicy


class JinaEmbedding(BaseEmbedding):
    """Jina Embeddings v2 for LlamaIndex (``Settings.embed_model = JinaEmbedding()``).

    The model loads at creation and is shared by adapters naming the same model and device.
    ``embed_batch_size`` texts go to the encoder at once, which packs them into batches of at most
    ``batch_tokens`` tokens. Async methods run the encoder in a worker thread.
    """

    model_name: str | None = Field(default=None, description="model folder or hub id; None: the default model")
    device: str | None = None
    max_length: int = 8192
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    normalize: bool = True
    long_text: LongTextPolicy = "windows"
    backend: BackendName = "torch"  # "onnx": a folder from ``jina-rag export-onnx`` on ONNX Runtime
    providers: list[str] | None = None  # ONNX Runtime execution providers (default: CPU)
    embed_batch_size: int = Field(default=64, gt=0, le=2048)

    _encoder: JinaEncoder = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._encoder = JinaEncoder.from_pretrained(
            self.model_name, device=self.device, max_length=self.max_length, long_text=self.long_text,
            backend=self.backend, providers=self.providers,
        )

    @classmethod
    def class_name(cls) -> str:
        return "JinaEmbedding"

    @property
    def encoder(self) -> JinaEncoder:
        return self._encoder

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode(
            texts, batch_tokens=self.batch_tokens, normalize=self.normalize, show_progress=False
        ).tolist()

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
