"""BM25 as sparse vectors, the way Qdrant computes it, for hybrid search.

A document's sparse vector holds, per stemmed word, BM25's saturated term frequency
``tf · (k + 1) / (tf + k · (1 − b + b · length / avg_len))``; a query's holds 1 per word. The
inverse document frequency is not in either: the store applies it from its own statistics
(Qdrant's ``IDF`` modifier on the sparse vector), so adding documents never changes stored
vectors. Words are found, lower-cased, stop-word filtered and Snowball-stemmed (English) by
Qdrant Edge's own ``Bm25`` (``qdrant-edge-py``), the tokenisation Qdrant uses server-side too, so
points written here and queries made by any Qdrant client agree on every word.

Word pairs: besides single words, each pair of neighbouring words (after stop words are dropped)
is a dimension of its own, weighted the same way, so a query's phrase ("scalar function
callback") counts more where the document uses it as a phrase. Pair dimensions are a hash of the
two words' dimensions; a client that sends single words only still matches the word dimensions.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np

from jina_rag.errors import InvalidInputError

# BM25's document length normalisation assumes a typical document of this many words (Qdrant's
# default). Chosen among 256, 1000 and 3000 on the tuning package's long set (PostgreSQL's manual,
# neither trained nor evaluated on; BM25 alone, nDCG@10 with word pairs 0.843 / 0.826 / 0.822,
# without 0.809 / 0.800 / 0.789; benchmarks/hybrid.py data/tune-long --tune,
# benchmarks/logs/2026-12-08-cpu-hybrid-tune.log), never on an evaluation set.
DEFAULT_AVG_LEN = 256.0
DEFAULT_K = 1.2
DEFAULT_B = 0.75
# Word pairs: chosen on the same set and log (0.843 vs 0.809 at avg_len 256).
DEFAULT_WORD_PAIRS = True
# Qdrant's tokenizer splits at every character that is not a letter or a digit; a run of letters
# and digits is at most one word (or none: a stop word).
_WORD = re.compile(r"[^\W_]+")
_PAIR_MIX = 0x9E3779B1  # Knuth's multiplicative hash constant: (a, b) and (b, a) land apart


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
    words and the Snowball stemmer; ``word_pairs`` adds a dimension per pair of neighbouring words.
    """

    def __init__(
        self,
        *,
        avg_len: float = DEFAULT_AVG_LEN,
        k: float = DEFAULT_K,
        b: float = DEFAULT_B,
        language: str = "english",
        word_pairs: bool = DEFAULT_WORD_PAIRS,
    ) -> None:
        try:
            import qdrant_edge
        except ImportError as error:  # an optional extra
            raise ImportError("BM25 sparse vectors need qdrant-edge-py: pip install 'jina-rag[qdrant]'") from error
        try:
            self._model = qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=k, b=b, avg_len=avg_len, language=language))
        except ValueError as error:
            raise InvalidInputError(f"BM25 settings avg_len={avg_len}, k={k}, b={b}, language={language!r}: {error}") from error
        self.avg_len, self.k, self.b, self.language = avg_len, k, b, language
        self.word_pairs = word_pairs
        self._word_ids = lru_cache(maxsize=1 << 20)(self._word_ids_uncached)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickled as its settings (the Rust model is not picklable), so Ray workers can get one."""
        options = {"avg_len": self.avg_len, "k": self.k, "b": self.b, "language": self.language, "word_pairs": self.word_pairs}
        return partial(BM25SparseEncoder, **options), ()

    @property
    def settings(self) -> str:
        """What decides a document's sparse vector; part of its content hash, so a change re-indexes."""
        bm25 = {"avg_len": self.avg_len, "k": self.k, "b": self.b, "language": self.language}
        if self.word_pairs:
            bm25["word_pairs"] = True
        return json.dumps({"bm25": bm25})

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        if not self.word_pairs:
            return [_as_arrays(self._model.embed_document(text)) for text in texts]
        return [self._document_vector(text) for text in texts]

    def embed_query(self, text: str) -> SparseVector:
        if not self.word_pairs:
            return _as_arrays(self._model.embed_query(text))
        terms = Counter(self._terms(self._words(text)))
        return _sorted(terms.keys(), np.ones(len(terms), dtype=np.float32))

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        return tuple(self._model.embed_query(word).indices)

    def _words(self, text: str) -> list[int]:
        """The text's words as Qdrant's dimensions, in order, stop words left out."""
        return [index for word in _WORD.findall(text) for index in self._word_ids(word)]

    @staticmethod
    def _terms(words: list[int]) -> list[int]:
        pairs = [((first * _PAIR_MIX) ^ second) & 0xFFFFFFFF for first, second in zip(words, words[1:])]
        return words + pairs

    def _document_vector(self, text: str) -> SparseVector:
        words = self._words(text)
        counts = Counter(self._terms(words))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        # The same saturation as Qdrant's Bm25 (whose document length is its word count), for words and pairs alike.
        norm = self.k * (1 - self.b + self.b * len(words) / self.avg_len)
        return _sorted(counts.keys(), (tf * (self.k + 1) / (tf + norm)).astype(np.float32))


def _as_arrays(vector) -> SparseVector:
    return SparseVector(np.asarray(vector.indices, dtype=np.uint32), np.asarray(vector.values, dtype=np.float32))


def _sorted(indices, values: np.ndarray) -> SparseVector:
    """A sparse vector with its dimensions in increasing order."""
    dims = np.fromiter(indices, dtype=np.uint32, count=len(values))
    order = np.argsort(dims)
    return SparseVector(dims[order], values[order])
