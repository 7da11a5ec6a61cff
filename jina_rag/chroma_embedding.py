"""Chroma adapter: :class:`JinaEmbeddingFunction`, so a Chroma collection embeds texts on its own.

(The Chroma *store* that :class:`~jina_rag.index.DocumentIndex` writes is :mod:`jina_rag.index.chroma`.)
"""

from __future__ import annotations

from typing import Any

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as error:  # an optional extra
    raise ImportError("the Chroma adapter needs chromadb: pip install 'jina-rag[chroma]'") from error

from jina_rag.encoder import JinaEncoder
from jina_rag.errors import InvalidInputError, InvalidTypeError
from jina_rag.settings import DEFAULT_SETTINGS as DEFAULT
from jina_rag.settings import AttentionName, BackendName, EncoderSettings, LongTextPolicy, Provider

# The config key of the model: "model_name", as collections saved before EncoderSettings existed have it.
MODEL_KEY = "model_name"


@register_embedding_function
class JinaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Jina Embeddings v2 as a Chroma embedding function.

    ``client.create_collection("docs", embedding_function=JinaEmbeddingFunction())`` lets
    ``add(documents=...)`` and ``query(query_texts=...)`` embed by themselves. The collection stores
    this function's config (its :class:`~jina_rag.settings.EncoderSettings`); once
    ``jina_rag.chroma_embedding`` is imported, Chroma rebuilds it on ``get_collection``.
    """

    def __init__(
        self,
        model_name: str | None = DEFAULT.model,
        *,
        device: str | None = DEFAULT.device,
        max_length: int = DEFAULT.max_length,
        batch_tokens: int = DEFAULT.batch_tokens,
        normalize: bool = DEFAULT.normalize,
        long_text: LongTextPolicy = DEFAULT.long_text,
        backend: BackendName = DEFAULT.backend,
        providers: list[Provider] | None = None,
        dtype: str | None = DEFAULT.dtype,
        window_overlap: int | None = DEFAULT.window_overlap,
        alibi_cutoff: float | None = DEFAULT.alibi_cutoff,
        attention: AttentionName = DEFAULT.attention,
    ) -> None:
        self.settings = EncoderSettings(
            model_name, device=device, dtype=dtype, max_length=max_length, long_text=long_text,
            window_overlap=window_overlap, backend=backend, providers=providers, alibi_cutoff=alibi_cutoff,
            attention=attention, batch_tokens=batch_tokens, normalize=normalize,
        )
        self.encoder = JinaEncoder.from_settings(self.settings)

    @classmethod
    def from_settings(cls, settings: EncoderSettings) -> JinaEmbeddingFunction:
        """The embedding function of an encoder's settings."""
        if not isinstance(settings, EncoderSettings):
            raise InvalidTypeError(f"settings is {type(settings).__name__}: pass an EncoderSettings")
        values = settings.to_dict()
        return cls(values.pop("model"), **values)

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.encoder.encode(list(input), show_progress=False))

    @staticmethod
    def name() -> str:
        return "jina_rag"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        # Vectors are L2-normalised by default, where all three spaces rank alike.
        return ["cosine", "ip", "l2"] if self.settings.normalize else ["cosine"]

    def get_config(self) -> dict[str, Any]:
        """The settings as JSON values, the model under ``model_name``."""
        values = self.settings.to_dict()
        return {MODEL_KEY: values.pop("model"), **values}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> JinaEmbeddingFunction:
        """Rebuild from :meth:`get_config`'s output, or an older config holding fewer keys (the rest: defaults)."""
        values = dict(config)
        model = values.pop(MODEL_KEY, None)
        if "model" in values:
            raise InvalidInputError(f"unknown encoder setting 'model' in a Chroma config: the model is under {MODEL_KEY!r}")
        return JinaEmbeddingFunction.from_settings(EncoderSettings.from_dict({"model": model, **values}))

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if MODEL_KEY in new_config and new_config[MODEL_KEY] != old_config.get(MODEL_KEY):
            raise InvalidInputError("a collection's model cannot change: its stored vectors come from the old one")
