"""Chroma adapter: :class:`JinaEmbeddingFunction`, so a Chroma collection embeds texts on its own."""

from __future__ import annotations

from typing import Any

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as error:  # an optional extra
    raise ImportError("the Chroma adapter needs chromadb: pip install 'jina-rag[chroma]'") from error

from jina_rag.encoder import DEFAULT_BATCH_TOKENS, BackendName, JinaEncoder, LongTextPolicy
from jina_rag.errors import InvalidInputError


@register_embedding_function
class JinaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Jina Embeddings v2 as a Chroma embedding function.

    ``client.create_collection("docs", embedding_function=JinaEmbeddingFunction())`` lets
    ``add(documents=...)`` and ``query(query_texts=...)`` embed by themselves. The collection stores
    this function's config; once ``jina_rag.chroma`` is imported, Chroma rebuilds it on ``get_collection``.
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        device: str | None = None,
        max_length: int = 8192,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        normalize: bool = True,
        long_text: LongTextPolicy = "windows",
        backend: BackendName = "torch",
        providers: list[str] | None = None,
    ) -> None:
        self.model_name = model_name
        self.device = device
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.normalize = normalize
        self.long_text = long_text
        self.backend = backend
        self.providers = providers
        self.encoder = JinaEncoder.from_pretrained(
            model_name, device=device, max_length=max_length, long_text=long_text, backend=backend, providers=providers
        )

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.encoder.encode(list(input), batch_tokens=self.batch_tokens, normalize=self.normalize, show_progress=False))

    @staticmethod
    def name() -> str:
        return "jina_rag"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        # Vectors are L2-normalised by default, where all three spaces rank alike.
        return ["cosine", "ip", "l2"] if self.normalize else ["cosine"]

    def get_config(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "device": self.device,
            "max_length": self.max_length,
            "batch_tokens": self.batch_tokens,
            "normalize": self.normalize,
            "long_text": self.long_text,
            "backend": self.backend,
            "providers": self.providers,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> JinaEmbeddingFunction:
        return JinaEmbeddingFunction(**config)

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if "model_name" in new_config and new_config["model_name"] != old_config.get("model_name"):
            raise InvalidInputError("a collection's model cannot change: its stored vectors come from the old one")
