"""BM25 as sparse vectors, the way Qdrant computes it, for hybrid search.

A document's sparse vector holds, per stemmed word, BM25's saturated term frequency
``tf · (k + 1) / (tf + k · (1 − b + b · length / avg_len))``; a query's holds 1 per word. The
inverse document frequency is not in either: the store applies it from its own statistics
(Qdrant's ``IDF`` modifier on the sparse vector), so adding documents never changes stored
vectors. Words are found, lower-cased, stop-word filtered and Snowball-stemmed (English) by
Qdrant Edge's own ``Bm25`` (``qdrant-edge-py``), the tokenisation Qdrant uses server-side too, so
points written here and queries made by any Qdrant client agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# BM25's document length normalisation assumes a typical document of this many words. Qdrant's
# default (256) suits chunks; whole documents run to thousands of words. Chosen among 256, 1000 and
# 3000 on the training packages' long set (BM25 alone, nDCG@10 0.755 / 0.772 / 0.769;
# benchmarks/hybrid.py --tune, benchmarks/logs/2026-12-07-cpu-hybrid-tune.log), never on an evaluation set.
DEFAULT_AVG_LEN = 1000.0
DEFAULT_K = 1.2
DEFAULT_B = 0.75


@dataclass(frozen=True)
class SparseVector:
    """Non-zero dimensions (word hashes) and their weights."""

    indices: np.ndarray  # uint32
    values: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.indices)


class BM25SparseEncoder:
    """Documents and queries to BM25 sparse vectors (IDF left to the store; see the module doc).

    ``avg_len`` (words), ``k`` and ``b`` are BM25's usual parameters; ``language`` picks stop
    words and the Snowball stemmer.
    """

    def __init__(
        self, *, avg_len: float = DEFAULT_AVG_LEN, k: float = DEFAULT_K, b: float = DEFAULT_B, language: str = "english"
    ) -> None:
        try:
            import qdrant_edge
        except ImportError as error:  # an optional extra
            raise ImportError("BM25 sparse vectors need qdrant-edge-py: pip install 'jina-rag[qdrant]'") from error
        try:
            self._model = qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=k, b=b, avg_len=avg_len, language=language))
        except ValueError as error:
            raise ValueError(f"BM25 settings avg_len={avg_len}, k={k}, b={b}, language={language!r}: {error}") from error
        self.avg_len, self.k, self.b, self.language = avg_len, k, b, language

    @property
    def settings(self) -> str:
        """What decides a document's sparse vector; part of its content hash, so a change re-indexes."""
        return json.dumps({"bm25": {"avg_len": self.avg_len, "k": self.k, "b": self.b, "language": self.language}})

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return [_as_arrays(self._model.embed_document(text)) for text in texts]

    def embed_query(self, text: str) -> SparseVector:
        return _as_arrays(self._model.embed_query(text))


def _as_arrays(vector) -> SparseVector:
    return SparseVector(np.asarray(vector.indices, dtype=np.uint32), np.asarray(vector.values, dtype=np.float32))
