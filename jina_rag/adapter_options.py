"""The encoder options every framework adapter takes, and the one encoder they load from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from jina_rag.encoder import JinaEncoder
from jina_rag.settings import DEFAULT_SETTINGS as DEFAULT
from jina_rag.settings import AttentionName, BackendName, EncoderSettings, LongTextPolicy, Provider


class EncoderOptions(BaseModel):
    """Fields and encoder shared by :class:`~jina_rag.langchain.JinaEmbeddings` and
    :class:`~jina_rag.llama_index.JinaEmbedding`; the model loads when the adapter is created.

    The fields are :class:`~jina_rag.settings.EncoderSettings`' (``model_name`` is its ``model``),
    with its defaults; :attr:`settings` gathers them, checked there, and the encoder is built from them.
    """

    model_name: str | None = Field(default=DEFAULT.model, description="model folder or hub id; None: the default model")
    device: str | None = DEFAULT.device
    dtype: str | None = DEFAULT.dtype
    max_length: int = DEFAULT.max_length
    long_text: LongTextPolicy = DEFAULT.long_text
    window_overlap: int | None = DEFAULT.window_overlap
    backend: BackendName = DEFAULT.backend  # "onnx": a folder from ``jina-rag export-onnx`` on ONNX Runtime
    providers: list[Provider] | None = None  # ONNX Runtime execution providers (default: CPU)
    alibi_cutoff: float | None = DEFAULT.alibi_cutoff
    attention: AttentionName = DEFAULT.attention
    batch_tokens: int = DEFAULT.batch_tokens
    normalize: bool = DEFAULT.normalize

    _encoder: JinaEncoder = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._encoder = JinaEncoder.from_settings(self.settings)

    @property
    def settings(self) -> EncoderSettings:
        """The encoder settings these fields make."""
        values = {name: getattr(self, name) for name in EncoderSettings.__dataclass_fields__ if name != "model"}
        return EncoderSettings(self.model_name, **values)

    @property
    def encoder(self) -> JinaEncoder:
        return self._encoder

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode(texts, show_progress=False).tolist()
