"""Distillation stage: the student's vectors of passages, in their document and alone, matched to a teacher's.

Each training row is a text with the character spans of its passages, ``{"text", "spans"}``
(``spans`` left out: the whole text is one passage, e.g. a query). The teacher (all-MiniLM-L6-v2,
``python -m training.teacher embed-spans``) embeds every passage on its own, once, before the run.
The student reads each row whole and is trained so that

- each passage's late-chunked vector (the mean of the row's token states over the passage's
  tokens, as :func:`jina_rag.encode_late_chunks` computes it) points where the teacher's vector of
  that passage does: a passage read inside its document keeps what the passage says;
- the row's own embedding (the mean over all its tokens, as ``encode`` computes it) points at the
  teacher's vector, for a one-passage row, or at the normalised mean of its passages' teacher
  vectors, for a document: one vector per document stays a summary of all its passages;
- with ``distill.passages_alone``, each passage of a document encoded on its own does too, so
  short texts (queries, naive chunks) are embedded as the teacher does.

The loss is the mean of ``1 - cos`` over all these vectors, plus, with ``distill.contrastive_weight``,
that weight times the mean cross-entropy of finding each vector's own target among all the batch's
distinct teacher vectors at ``distill.temperature`` (InfoNCE against the teacher: the cosine term
alone brings vectors near their targets, this one ranks them above the other passages' targets).
Rows with ``queries`` add two retrieval terms for the passages that answer them, read in their
document: ``distill.query_weight`` finds the query's teacher vector among the batch's queries, and
``distill.passage_choice_weight`` finds the passage from the query's teacher vector among every
passage read in context in its packed row, its document's neighbours included (the task late
chunking is scored on: one section of a page among the page's others). Sequences are packed back to back into
rows of ``distill.row_tokens`` tokens (no padding) and each row is back-propagated on its own (the
terms of different vectors do not interact), so memory holds one row's activations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jina_rag.batching import pack_batch, plan_batches
from jina_rag.encoder import special_tokens
from jina_rag.late_chunking import passage_token_spans
from jina_rag.modeling import JinaBertModel
from training.config import RunConfig
from training.data import DataError, expand_paths, read_jsonl, require_text
from training.distributed import DistEnv
from training.loop import Stage, StepContext
from training.models import build_model, load_stage_tokenizer, untruncated_backend
from training.teacher_vectors import SpanTargets

logger = logging.getLogger(__name__)

# What a pooled vector is, for the metrics: a passage in its row, a whole row, a passage alone, a
# query (of a row's ``queries``) alone.
PASSAGE, ROW, ALONE, QUERY = 0, 1, 2, 3
KIND_NAMES = ("passage", "row", "alone", "query")


@dataclass(frozen=True)
class SpanRow:
    text: str
    spans: tuple[tuple[int, int], ...]
    queries: tuple[tuple[int, str], ...] = ()  # (span index, a query that span answers)


def read_span_rows(paths: Sequence[Path]) -> list[SpanRow]:
    """Rows ``{"text", "spans": [[start, end], ...], "queries": [[span, text], ...]}``; without
    ``spans`` the whole text is one span; ``queries`` (optional) name spans that answer a query."""
    rows = []
    for path in paths:
        for number, row in read_jsonl(path):
            where = f"{path}:{number}"
            text = require_text(row, "text", where)
            spans = row.get("spans", [[0, len(text)]])
            if not isinstance(spans, list) or not spans:
                raise DataError(f"{where}: 'spans' must be a non-empty list of [start, end] character ranges")
            checked = []
            for span in spans:
                if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
                        and 0 <= span[0] < span[1] <= len(text) and text[span[0]:span[1]].strip()):
                    raise DataError(f"{where}: span {span!r} is not a non-blank [start, end] range within the text's {len(text)} characters")
                checked.append((span[0], span[1]))
            queries = row.get("queries", [])
            if not isinstance(queries, list) or not all(
                isinstance(q, list) and len(q) == 2 and isinstance(q[0], int) and 0 <= q[0] < len(checked)
                and isinstance(q[1], str) and q[1].strip() for q in queries
            ):
                raise DataError(f"{where}: 'queries' must be a list of [span index, non-blank query text] with indices below {len(checked)}")
            rows.append(SpanRow(text, tuple(checked), tuple((q[0], q[1]) for q in queries)))
    if not rows:
        raise DataError(f"no rows in {', '.join(map(str, paths))}")
    return rows


@dataclass
class PackedRow:
    """One packed row and the vectors pooled from it: vector ``v`` is the mean of ``hidden[positions[segments == v]]``."""

    input_ids: torch.Tensor  # [row_tokens]
    sequence_ids: torch.Tensor  # [row_tokens]
    positions: torch.Tensor  # [pairs]: token positions in the row
    segments: torch.Tensor  # [pairs]: the vector each position counts towards
    counts: torch.Tensor  # [vectors]: tokens per vector
    labels: torch.Tensor  # [vectors]: each vector's target, a row of the batch's ``targets``
    kinds: torch.Tensor  # [vectors]: PASSAGE, ROW, ALONE or QUERY
    answering: torch.Tensor  # [pairs]: vectors of passages (in context) that answer a query
    answers: torch.Tensor  # [pairs]: that query's teacher vector, a row of the batch's ``query_targets``
    passages: torch.Tensor  # [candidates]: vectors of the row's passages read in context
    chosen: torch.Tensor  # [pairs]: where each answering passage is among ``passages``
    shared: torch.Tensor  # [pairs, candidates]: the other passages that answer the pair's query

    def to(self, device: torch.device) -> PackedRow:
        return PackedRow(*(getattr(self, name).to(device, non_blocking=True) for name in self.__dataclass_fields__))


@dataclass
class DistillBatch:
    rows: list[PackedRow]
    targets: torch.Tensor  # [targets, dim]: the teacher's distinct unit vectors (a passage alone and in context share one)
    vectors: int  # over all rows: the loss is a mean over these
    tokens: int  # real tokens over all rows
    kind_counts: np.ndarray  # vectors of each kind over all rows
    query_targets: torch.Tensor  # [queries]: rows of ``targets`` that are queries' teacher vectors


class DistillStage(Stage):
    name = "distill"

    def __init__(self, config: RunConfig, env: DistEnv, weights_from: Path | None) -> None:
        self.settings = config.distill
        self.eval_batch_size = config.train.batch_size
        self.tokenizer = load_stage_tokenizer(config.model, weights_from)
        self.model = build_model(config.model, JinaBertModel, weights_from, self.tokenizer)
        if not self.tokenizer.is_fast:
            raise DataError("the distill stage maps character spans to tokens with a fast (Rust) tokenizer; this one is not")
        self.backend = untruncated_backend(self.tokenizer)
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        target_files = expand_paths(self.settings.teacher_targets, "distill.teacher_targets")
        self.rows, self.targets = self._load(expand_paths(config.data.train, "data.train"), target_files)
        self.eval_rows, self.eval_targets = (
            self._load(expand_paths(config.data.eval, "data.eval"), target_files) if config.data.eval else ([], [])
        )

    def _load(self, files: list[Path], target_files: list[Path]) -> tuple[list[SpanRow], list[np.ndarray]]:
        """Rows of every file and, per row, the teacher's unit vectors of its spans."""
        rows, targets = [], []
        for path in files:
            file_rows = read_span_rows([path])
            sizes = [len(r.spans) + len(r.queries) for r in file_rows]  # the teacher's vectors: spans, then queries
            vectors = SpanTargets.load(target_files, path, sum(sizes)).vectors.astype(np.float32)
            if vectors.shape[1] != self.model.config.hidden_size:
                raise DataError(
                    f"the teacher's vectors of {path} have {vectors.shape[1]} dimensions but the student's embeddings "
                    f"{self.model.config.hidden_size}: distil into a model of the teacher's width"
                )
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
            first = np.cumsum([0] + sizes)
            rows.extend(file_rows)
            targets.extend(vectors[first[i] : first[i + 1]] for i in range(len(file_rows)))
        return rows, targets

    @property
    def num_examples(self) -> int:
        return len(self.rows)

    def make_batch(self, indices: list[int], positions: list[int]) -> DistillBatch:
        return self.batch_of([self.rows[i] for i in indices], [self.targets[i] for i in indices])

    def batch_of(self, rows: list[SpanRow], targets: list[np.ndarray]) -> DistillBatch:
        """Every vector to pool, with its teacher target, packed into rows of ``row_tokens``."""
        width = self.settings.max_length - len(self.prefix) - len(self.suffix)
        sequences: list[list[int]] = []
        # Per sequence: (start, stop, target, kind) of each vector pooled from it, in sequence tokens;
        # target: a row of ``distinct``.
        pools: list[list[tuple[int, int, int, int]]] = []
        distinct: list[np.ndarray] = []
        # Per sequence: (position of a passage in its pool, the query it answers: a row of ``distinct``).
        answered: list[list[tuple[int, int]]] = []
        query_targets: dict[str, int] = {}  # each query once: a heading two passages answer is one candidate

        def target(vector: np.ndarray) -> int:
            distinct.append(vector)
            return len(distinct) - 1

        encodings = self.backend.encode_batch([row.text for row in rows], add_special_tokens=False)
        alone_texts, alone_targets = [], []
        for row, vectors, encoding in zip(rows, targets, encodings):
            ids = encoding.ids[:width]
            sequences.append(self.prefix + ids + self.suffix)
            if len(row.spans) == 1 and row.spans[0] == (0, len(row.text)) and not row.queries:
                pools.append([(0, len(sequences[-1]), target(vectors[0]), ROW)])
                answered.append([])
                continue
            token_spans = passage_token_spans(row.text, row.spans, np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2))
            kept = np.flatnonzero(token_spans[:, 1] <= len(ids))  # passages cut off by max_length are left out
            if not kept.size:
                raise DataError(f"no passage of a row fits distill.max_length={self.settings.max_length} tokens: {row.text[:80]!r}")
            document = vectors[kept].mean(0)
            pool = [(0, len(sequences[-1]), target(document / max(float(np.linalg.norm(document)), 1e-12)), ROW)]
            offset = len(self.prefix)
            passages = {int(k): target(vectors[k]) for k in kept}
            pool += [(int(token_spans[k, 0]) + offset, int(token_spans[k, 1]) + offset, passages[k], PASSAGE) for k in passages]
            pools.append(pool)
            answered.append([])
            if self.settings.query_weight or self.settings.passage_choice_weight:
                in_pool = {k: 1 + n for n, k in enumerate(passages)}
                for number, (span, query) in enumerate(row.queries):
                    if span not in in_pool:
                        continue
                    if query not in query_targets:
                        query_targets[query] = target(vectors[len(row.spans) + number])
                        alone_texts.append(query)
                        alone_targets.append((query_targets[query], QUERY))
                    answered[-1].append((in_pool[span], query_targets[query]))
            if self.settings.passages_alone:
                alone_texts += [row.text[row.spans[k][0] : row.spans[k][1]] for k in passages]
                alone_targets += [(label, ALONE) for label in passages.values()]
        for encoding, (label, kind) in zip(self.backend.encode_batch(alone_texts, add_special_tokens=False), alone_targets):
            sequences.append(self.prefix + encoding.ids[:width] + self.suffix)
            pools.append([(0, len(sequences[-1]), label, kind)])
            answered.append([])
        query_index = {label: n for n, label in enumerate(query_targets.values())}
        packed = []
        for group in plan_batches([len(s) for s in sequences], self.settings.row_tokens, packed=True):
            input_ids, sequence_ids = pack_batch([sequences[i] for i in group], self.settings.row_tokens, self.tokenizer.pad_token_id)
            positions, segments, counts, labels, kinds, answering, answers = [], [], [], [], [], [], []
            start = 0
            for i in group:
                answering += [len(counts) + position for position, _ in answered[i]]
                answers += [query_index[label] for _, label in answered[i]]
                for first, stop, label, kind in pools[i]:
                    positions.append(np.arange(start + first, start + stop))
                    segments.append(np.full(stop - first, len(counts)))
                    counts.append(stop - first)
                    labels.append(label)
                    kinds.append(kind)
                start += len(sequences[i])
            passages = np.flatnonzero(np.array(kinds) == PASSAGE)
            chosen = np.searchsorted(passages, answering).astype(np.int64)
            pair, other = np.nonzero(np.equal.outer(answers, answers))  # pairs answering one query
            shared = np.zeros((len(answering), len(passages)), dtype=bool)
            shared[pair, chosen[other]] = True
            shared[np.arange(len(answering)), chosen] = False
            packed.append(PackedRow(
                torch.from_numpy(input_ids), torch.from_numpy(sequence_ids),
                torch.from_numpy(np.concatenate(positions)), torch.from_numpy(np.concatenate(segments)),
                torch.tensor(counts, dtype=torch.float32), torch.tensor(labels), torch.tensor(kinds),
                torch.tensor(answering, dtype=torch.long), torch.tensor(answers, dtype=torch.long),
                torch.from_numpy(passages), torch.from_numpy(chosen), torch.from_numpy(shared),
            ))
        kinds = np.array([kind for pool in pools for *_, kind in pool])
        return DistillBatch(
            packed, torch.from_numpy(np.stack(distinct)), len(kinds), sum(map(len, sequences)),
            np.bincount(kinds, minlength=len(KIND_NAMES)), torch.tensor(list(query_index), dtype=torch.long),
        )

    @staticmethod
    def pooled(step: StepContext, row: PackedRow) -> torch.Tensor:
        """The student's vectors of a packed row (fp32, not normalised), in the row's vector order."""
        with step.autocast():
            hidden = step.module.forward_packed(row.input_ids, row.sequence_ids)
        sums = hidden.new_zeros(len(row.counts), hidden.shape[-1], dtype=torch.float32)
        sums.index_add_(0, row.segments, hidden[row.positions].float())
        return sums / row.counts[:, None]

    def _losses(
        self, step: StepContext, row: PackedRow, targets: torch.Tensor, query_targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per vector of a packed row: its cosine to its target, and (with ``contrastive_weight``)
        the cross-entropy of finding its target among all the batch's targets; per passage that
        answers a query: the cross-entropy of finding that query's teacher vector among the batch's
        queries' (``query_weight``), and of finding the passage from the query's teacher vector among
        the row's passages read in context, the others that answer it left out (``passage_choice_weight``)."""
        vectors = F.normalize(self.pooled(step, row), dim=-1)
        cosine = (vectors * targets[row.labels]).sum(-1)
        temperature = self.settings.temperature
        entropy = (F.cross_entropy(vectors @ targets.T / temperature, row.labels, reduction="none")
                   if self.settings.contrastive_weight else torch.zeros_like(cosine))
        answering = vectors[row.answering]
        queries = F.cross_entropy(answering @ targets[query_targets].T / temperature, row.answers, reduction="none") \
            if len(row.answering) else answering.new_zeros(0)
        choices = answering.new_zeros(0)
        if self.settings.passage_choice_weight and len(row.answering):
            logits = targets[query_targets[row.answers]] @ vectors[row.passages].T / temperature
            logits = logits.masked_fill(row.shared, float("-inf"))
            choices = logits.logsumexp(-1) - logits.gather(1, row.chosen[:, None]).squeeze(1)
        return cosine, entropy, queries, choices

    def forward_backward(self, step: StepContext, batch: DistillBatch) -> dict[str, torch.Tensor]:
        loss = torch.zeros((), device=step.device)
        contrastive = torch.zeros((), device=step.device)
        by_kind = torch.zeros(len(KIND_NAMES), device=step.device)
        query_term = torch.zeros((), device=step.device)
        choice_term = torch.zeros((), device=step.device)
        targets = batch.targets.to(step.device, non_blocking=True)
        query_targets = batch.query_targets.to(step.device, non_blocking=True)
        pairs = max(1, sum(len(packed.answering) for packed in batch.rows))
        for packed in batch.rows:
            packed = packed.to(step.device)
            cosine, entropy, queries, choices = self._losses(step, packed, targets, query_targets)
            row_loss = ((1.0 - cosine).sum() + self.settings.contrastive_weight * entropy.sum()) / batch.vectors
            row_loss = row_loss + (self.settings.query_weight * queries.sum() + self.settings.passage_choice_weight * choices.sum()) / pairs
            (row_loss * step.loss_scale).backward()
            loss += row_loss.detach()
            contrastive += entropy.detach().sum() / batch.vectors
            query_term += queries.detach().sum() / pairs
            choice_term += choices.detach().sum() / pairs
            by_kind.index_add_(0, packed.kinds, cosine.detach())
        metrics = {"loss": loss, **kind_means(by_kind, batch.kind_counts, "cos"), "tokens": torch.tensor(batch.tokens)}
        if self.settings.contrastive_weight:
            metrics["contrastive"] = contrastive
        if len(batch.query_targets):
            metrics["query_infonce"] = query_term
            if self.settings.passage_choice_weight:
                metrics["choice_infonce"] = choice_term
        return metrics

    def evaluate(self, step: StepContext) -> dict[str, float]:
        """Mean cosine to the teacher on the eval rows, per kind of vector."""
        if not self.eval_rows:
            return {}
        by_kind = torch.zeros(len(KIND_NAMES), device=step.device)
        counts = np.zeros(len(KIND_NAMES), dtype=np.int64)
        size = self.eval_batch_size
        for start in range(0, len(self.eval_rows), size):
            batch = self.batch_of(self.eval_rows[start : start + size], self.eval_targets[start : start + size])
            counts += batch.kind_counts
            targets, query_targets = batch.targets.to(step.device), batch.query_targets.to(step.device)
            for packed in batch.rows:
                packed = packed.to(step.device)
                by_kind.index_add_(0, packed.kinds, self._losses(step, packed, targets, query_targets)[0])
        return {name: float(value) for name, value in kind_means(by_kind, counts, "eval_cos").items()}


def kind_means(sums: torch.Tensor, counts: np.ndarray, prefix: str) -> dict[str, torch.Tensor]:
    """Mean cosine over all vectors and per kind present (``cos_passage``, ``cos_row``, ``cos_alone``, ``cos_query``), from per-kind sums."""
    out = {prefix: sums.sum() / max(int(counts.sum()), 1)}
    for kind, name in enumerate(KIND_NAMES):
        if counts[kind]:
            out[f"{prefix}_{name}"] = sums[kind] / int(counts[kind])
    return out
