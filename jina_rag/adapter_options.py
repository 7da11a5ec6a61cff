"""The encoder options every framework adapter takes, and the one encoder they load from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from jina_rag.encoder import DEFAULT_BATCH_TOKENS, BackendName, JinaEncoder, LongTextPolicy


class EncoderOptions(BaseModel):
    """Fields and encoder shared by :class:`~jina_rag.langchain.JinaEmbeddings` and
    :class:`~jina_rag.llama_index.JinaEmbedding`; the model loads when the adapter is created."""

    model_name: str | None = Field(default=None, description="model folder or hub id; None: the default model")
    device: str | None = None
    max_length: int = 8192
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    normalize: bool = True
    long_text: LongTextPolicy = "windows"
    backend: BackendName = "torch"  # "onnx": a folder from ``jina-rag export-onnx`` on ONNX Runtime
    providers: list[str] | None = None  # ONNX Runtime execution providers (default: CPU)

    _encoder: JinaEncoder = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._encoder = JinaEncoder.from_pretrained(
            self.model_name, device=self.device, max_length=self.max_length, long_text=self.long_text,
            backend=self.backend, providers=self.providers,
        )

    @property
    def encoder(self) -> JinaEncoder:
        return self._encoder

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode(
            texts, batch_tokens=self.batch_tokens, normalize=self.normalize, show_progress=False
        ).tolist()
