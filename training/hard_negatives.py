"""Stage 3: contrastive fine-tuning with mined hard negatives, and the miner.

Training rows are ``{"query", "positive", "negatives": [...]}``; each query is scored against
the global batch's positives plus every mined negative (InfoNCE, τ = 0.05, as in stage 2).

Mining embeds the candidate pool (a corpus plus every positive) with any ``jina_rag`` model and
takes, for each query, the most similar candidates that are not its positives, after skipping
the ``skip_top`` most similar ones: the very top often holds unlabelled true positives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from jina_rag.encoder import JinaEncoder
from training.pairs import PairsStage

logger = logging.getLogger(__name__)


class HardNegativesStage(PairsStage):
    """:class:`PairsStage` whose rows carry ``contrastive.num_negatives`` mined negatives each."""

    name = "hard_negatives"


def mine_hard_negatives(
    encoder: JinaEncoder,
    pairs: Sequence[tuple[str, str]],
    corpus: Sequence[str] = (),
    *,
    num_negatives: int = 7,
    skip_top: int = 0,
    batch_tokens: int = 16384,
    show_progress: bool | None = None,
    queries_per_block: int = 1024,
) -> list[dict[str, Any]]:
    """Rows ``{"query", "positive", "negatives"}`` for each ``(query, positive)`` pair.

    Candidates are ``corpus`` plus all positives, deduplicated; a query's own positives (all
    pairs sharing that query) and the query text itself are never its negatives.
    """
    if num_negatives < 1 or skip_top < 0:
        raise ValueError(f"num_negatives must be at least 1 and skip_top at least 0, got {num_negatives} and {skip_top}")
    if not pairs:
        raise ValueError("no pairs to mine negatives for")
    pool = list(dict.fromkeys([*corpus, *(positive for _, positive in pairs)]))
    pool_index = {text: i for i, text in enumerate(pool)}
    queries = list(dict.fromkeys(query for query, _ in pairs))
    excluded: dict[str, set[int]] = {query: set() for query in queries}
    for query, positive in pairs:
        excluded[query].add(pool_index[positive])
    for query in queries:
        if query in pool_index:
            excluded[query].add(pool_index[query])

    logger.info("embedding %d candidates and %d queries", len(pool), len(queries))
    pool_vectors = encoder.encode(pool, batch_tokens=batch_tokens, show_progress=show_progress, convert_to="torch")
    query_vectors = encoder.encode(queries, batch_tokens=batch_tokens, show_progress=show_progress, convert_to="torch")
    depth = min(len(pool), skip_top + num_negatives + max(len(e) for e in excluded.values()))
    negatives_of: dict[str, list[str]] = {}
    for start in range(0, len(queries), queries_per_block):
        block = queries[start : start + queries_per_block]
        top = torch.topk(query_vectors[start : start + len(block)] @ pool_vectors.T, depth, dim=1).indices.tolist()
        for query, ranked in zip(block, top):
            candidates = [i for i in ranked if i not in excluded[query]]
            negatives_of[query] = [pool[i] for i in candidates[skip_top : skip_top + num_negatives]]
    short = sum(len(negatives_of[q]) < num_negatives for q in queries)
    if short:
        logger.warning(
            "%d of %d queries got fewer than %d negatives: the pool (%d texts) is too small for skip_top=%d",
            short, len(queries), num_negatives, len(pool), skip_top,
        )
    return [{"query": query, "positive": positive, "negatives": negatives_of[query]} for query, positive in pairs]
