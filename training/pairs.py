"""Stage 2: contrastive fine-tuning on (query, positive) pairs with in-batch negatives.

Embeddings are mean-pooled, L2-normalised, and scored by InfoNCE with temperature τ (0.05) in
both directions, ``L = L(q→p) + L(p→q)``, as in the JinaBERT paper. Under torchrun the
embeddings of every rank are gathered with their gradients, so each query is contrasted with the
whole global batch. With ``contrastive.chunk_size`` the batch is encoded by GradCache (Gao et
al., 2021): embed every chunk without a graph, compute the loss and its gradient with respect to
the cached embeddings, then re-encode chunk by chunk with the graph and back-propagate those
gradients. Dropout masks are replayed by restoring each chunk's RNG state for the second pass,
so the gradients equal those of the whole batch encoded at once (same masks), while memory holds
one chunk's activations.

The loss is a weighted sum of :class:`LossTerm` s computed from the batch's embeddings:
``infonce``, and with ``contrastive.distill_weight`` a relational distillation term that matches
the student's in-batch query→passage similarities to a teacher's (embeddings precomputed by
``python -m training.teacher``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from jina_rag.modeling import JinaBertModel, mean_pool
from training.config import RunConfig
from training.data import DataError, expand_paths, read_jsonl, require_text
from training.distributed import DistEnv, gather_with_grad, world
from training.loop import Stage, StepContext
from training.models import build_model, load_stage_tokenizer
from training.teacher_vectors import TeacherEmbeddings

logger = logging.getLogger(__name__)


@dataclass
class Tokens:
    """A padded batch of token ids (padding at the end of each row)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> Tokens:
        return Tokens(self.input_ids.to(device, non_blocking=True), self.attention_mask.to(device, non_blocking=True))

    def chunks(self, size: int) -> list[Tokens]:
        """Row chunks, each cut to its own longest row (padding at the end changes no embedding)."""
        out = []
        for start in range(0, len(self), size):
            mask = self.attention_mask[start : start + size]
            width = int(mask.sum(dim=1).max())
            out.append(Tokens(self.input_ids[start : start + size, :width], mask[:, :width]))
        return out


@dataclass
class ContrastiveExample:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass
class ContrastiveBatch:
    """One rank's micro-batch; query i's negatives are rows ``i*k .. i*k+k-1`` of ``negatives``."""

    examples: list[ContrastiveExample]
    queries: Tokens
    positives: Tokens
    negatives: Tokens | None = None
    # The teacher's normalised (queries, positives) embeddings of these examples, when distilling.
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None

    def groups(self) -> list[Tokens]:
        return [self.queries, self.positives] + ([self.negatives] if self.negatives is not None else [])


@dataclass
class ContrastiveEmbeddings:
    """Mean-pooled (not normalised) fp32 embeddings of this rank's batch."""

    queries: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor | None = None


class LossTerm(Protocol):
    """A loss computed from a batch's embeddings (so GradCache applies to it unchanged)."""

    def __call__(self, embeddings: ContrastiveEmbeddings, batch: ContrastiveBatch) -> torch.Tensor: ...


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float = 0.05,
    symmetric: bool = True,
    gather: bool = True,
) -> torch.Tensor:
    """InfoNCE over cosine similarities: row i of ``queries`` matches row i of ``positives``.

    Candidates of a query are every positive of the (global) batch plus every negative;
    with ``symmetric`` the loss adds the reverse direction, each positive against every query.
    With ``gather`` and a process group, the batch is the concatenation over ranks and the
    result is this rank's rows' mean, whose average over ranks is the global batch's loss.
    """
    q = F.normalize(queries.float(), dim=-1)
    p = F.normalize(positives.float(), dim=-1)
    collect = gather_with_grad if gather else (lambda t: t)
    rank = world()[0] if gather else 0
    all_q, all_p = collect(q), collect(p)
    candidates = all_p
    if negatives is not None:
        candidates = torch.cat([all_p, collect(F.normalize(negatives.float(), dim=-1))])
    labels = torch.arange(len(q), device=q.device) + rank * len(q)
    loss = F.cross_entropy(q @ candidates.T / temperature, labels)
    if symmetric:
        loss = loss + F.cross_entropy(p @ all_q.T / temperature, labels)
    return loss


@dataclass
class InfoNCE:
    temperature: float = 0.05
    symmetric: bool = True

    def __call__(self, embeddings: ContrastiveEmbeddings, batch: ContrastiveBatch) -> torch.Tensor:
        return info_nce(
            embeddings.queries, embeddings.positives, embeddings.negatives,
            temperature=self.temperature, symmetric=self.symmetric,
        )


def relational_distillation(
    queries: torch.Tensor,
    positives: torch.Tensor,
    teacher_queries: torch.Tensor,
    teacher_positives: torch.Tensor,
    *,
    temperature: float = 0.05,
    symmetric: bool = True,
    kind: str = "kl",
) -> torch.Tensor:
    """Match the student's in-batch cosine similarity matrix (query i × passage j) to the teacher's.

    ``kl``: KL(teacher ‖ student) between the row softmaxes at ``temperature`` (with ``symmetric``,
    plus the same over columns: each passage's distribution over the queries), averaged over rows.
    ``mse``: mean squared difference of the cosine similarities. Computed on this rank's batch.
    """
    student = F.normalize(queries.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T
    teacher = F.normalize(teacher_queries.float(), dim=-1) @ F.normalize(teacher_positives.float(), dim=-1).T
    if kind == "mse":
        return F.mse_loss(student, teacher.to(student.device))
    teacher = teacher.to(student.device) / temperature
    student = student / temperature

    def kl(dim: int) -> torch.Tensor:
        return F.kl_div(F.log_softmax(student, dim=dim), F.log_softmax(teacher, dim=dim), log_target=True, reduction="sum") / student.shape[1 - dim]

    return kl(1) + kl(0) if symmetric else kl(1)


@dataclass
class Distillation:
    temperature: float = 0.05
    symmetric: bool = True
    kind: str = "kl"

    def __call__(self, embeddings: ContrastiveEmbeddings, batch: ContrastiveBatch) -> torch.Tensor:
        if batch.teacher is None:
            raise ValueError("the distillation term needs the batch's teacher embeddings")
        return relational_distillation(
            embeddings.queries, embeddings.positives, *batch.teacher,
            temperature=self.temperature, symmetric=self.symmetric, kind=self.kind,
        )


@dataclass
class _RngState:
    cpu: torch.Tensor
    cuda: torch.Tensor | None = None


def _capture_rng(device: torch.device) -> _RngState:
    return _RngState(torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


@contextlib.contextmanager
def _replayed_rng(state: _RngState, device: torch.device) -> Iterator[None]:
    """Run a block with the RNG streams as they were at ``state``; restore them afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state.cpu)
        if state.cuda is not None:
            torch.cuda.set_rng_state(state.cuda, device)
        yield


def encode_and_backward(
    encode: Callable[[Tokens], torch.Tensor],
    groups: Sequence[Tokens],
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    *,
    chunk_size: int | None,
    loss_scale: float = 1.0,
    device: torch.device = torch.device("cpu"),
) -> torch.Tensor:
    """Embed each group of texts, compute ``loss_fn`` on the embeddings and back-propagate.

    ``chunk_size=None`` encodes each group in one pass with the graph kept. Otherwise GradCache:
    activations of one chunk at a time, the same gradients (dropout masks replayed).
    """
    if chunk_size is None:
        loss = loss_fn([encode(group) for group in groups])
        (loss * loss_scale).backward()
        return loss.detach()
    chunked = [group.chunks(chunk_size) for group in groups]
    states: list[list[_RngState]] = []
    cached: list[torch.Tensor] = []
    with torch.no_grad():
        for chunks in chunked:
            states.append([])
            parts = []
            for chunk in chunks:
                states[-1].append(_capture_rng(device))
                parts.append(encode(chunk))
            cached.append(torch.cat(parts).requires_grad_())
    loss = loss_fn(cached)
    (loss * loss_scale).backward()
    for chunks, chunk_states, embeddings in zip(chunked, states, cached):
        grads = embeddings.grad.split([len(c) for c in chunks])
        for chunk, state, grad in zip(chunks, chunk_states, grads):
            with _replayed_rng(state, device):
                recomputed = encode(chunk)
            recomputed.backward(grad)
    return loss.detach()


class BatchTokenizer:
    """A tokenizer's Rust backend, fixed to truncate at ``max_length`` and pad to the longest row.

    Gives what ``tokenizer(texts, max_length=..., truncation=True, padding=True)`` gives, without
    the Python wrapper's per-token overhead (most of the time at 512 pairs), and, since its
    settings never change, it may be used from several threads at once.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.enable_truncation(max_length)
        self.backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)

    def __call__(self, texts: list[str]) -> Tokens:
        encodings = self.backend.encode_batch(texts)
        input_ids = torch.from_numpy(np.array([e.ids for e in encodings], dtype=np.int64))
        attention_mask = torch.from_numpy(np.array([e.attention_mask for e in encodings], dtype=np.int64))
        return Tokens(input_ids, attention_mask)


def read_pairs(paths: list[Path], num_negatives: int = 0) -> list[ContrastiveExample]:
    """Rows ``{"query", "positive"}`` (and ``"negatives"``: the first ``num_negatives`` are kept)."""
    examples = []
    for path in paths:
        for number, row in read_jsonl(path):
            where = f"{path}:{number}"
            example = ContrastiveExample(require_text(row, "query", where), require_text(row, "positive", where))
            if num_negatives:
                negatives = row.get("negatives")
                if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
                    raise DataError(f"{where}: 'negatives' must be a list of non-empty strings (mine them with python -m training.mine)")
                if len(negatives) < num_negatives:
                    raise DataError(
                        f"{where}: {len(negatives)} negatives, contrastive.num_negatives is {num_negatives}: "
                        "mine more or lower num_negatives"
                    )
                example.negatives = tuple(negatives[:num_negatives])
            examples.append(example)
    if not examples:
        raise DataError(f"no pairs in {', '.join(map(str, paths))}")
    return examples


class PairsStage(Stage):
    """Pairs (in-batch negatives only); :class:`training.hard_negatives.HardNegativesStage` adds mined ones."""

    name = "pairs"

    def __init__(self, config: RunConfig, env: DistEnv, weights_from: Path | None) -> None:
        self.config = config
        self.settings = config.contrastive
        self.tokenizer = load_stage_tokenizer(config.model, weights_from)
        self.model = build_model(config.model, JinaBertModel, weights_from, self.tokenizer)
        train_files = expand_paths(config.data.train, "data.train")
        per_file = [read_pairs([path], self.settings.num_negatives) for path in train_files]
        self.examples = [example for examples in per_file for example in examples]
        self.teacher = None
        if self.settings.teacher_embeddings:
            self.teacher = TeacherEmbeddings.load(
                expand_paths(self.settings.teacher_embeddings, "contrastive.teacher_embeddings"),
                train_files, [len(examples) for examples in per_file],
            )
        self.eval_examples = read_pairs(expand_paths(config.data.eval, "data.eval")) if config.data.eval else []
        global_batch = config.train.batch_size * env.world_size
        if global_batch > len(self.examples):
            logger.warning("the global batch (%d) is larger than the data (%d pairs): pairs repeat within a batch", global_batch, len(self.examples))
        self.terms = self.loss_terms()
        self.tokenize_queries = BatchTokenizer(self.tokenizer, self.settings.query_max_length)
        self.tokenize_passages = BatchTokenizer(self.tokenizer, self.settings.passage_max_length)

    def loss_terms(self) -> dict[str, tuple[float, LossTerm]]:
        """Named ``(weight, term)`` pairs whose weighted sum is the loss."""
        terms: dict[str, tuple[float, LossTerm]] = {"infonce": (1.0, InfoNCE(self.settings.temperature, self.settings.symmetric))}
        if self.settings.distill_weight > 0:
            terms["distill"] = (
                self.settings.distill_weight,
                Distillation(self.settings.distill_temperature, self.settings.symmetric, self.settings.distill_loss),
            )
        return terms

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    def batch_of(self, examples: list[ContrastiveExample]) -> ContrastiveBatch:
        negatives = [n for e in examples for n in e.negatives]
        return ContrastiveBatch(
            examples,
            self.tokenize_queries([e.query for e in examples]),
            self.tokenize_passages([e.positive for e in examples]),
            self.tokenize_passages(negatives) if negatives else None,
        )

    def make_batch(self, indices: list[int], positions: list[int]) -> ContrastiveBatch:
        batch = self.batch_of([self.examples[i] for i in indices])
        if self.teacher is not None:
            batch.teacher = self.teacher.rows(indices)
        return batch

    def forward_backward(self, step: StepContext, batch: ContrastiveBatch) -> dict[str, torch.Tensor]:
        groups = [g.to(step.device) for g in batch.groups()]
        values: dict[str, torch.Tensor] = {}

        def encode(tokens: Tokens) -> torch.Tensor:
            with step.autocast():
                hidden = step.module(tokens.input_ids, tokens.attention_mask)
            return mean_pool(hidden, tokens.attention_mask)

        def loss_fn(embeddings: list[torch.Tensor]) -> torch.Tensor:
            bundle = ContrastiveEmbeddings(*embeddings)
            total = torch.zeros((), device=step.device)
            for name, (weight, term) in self.terms.items():
                value = term(bundle, batch)
                values[name] = value.detach()
                total = total + weight * value
            return total

        loss = encode_and_backward(
            encode, groups, loss_fn, chunk_size=self.settings.chunk_size, loss_scale=step.loss_scale, device=step.device
        )
        tokens = sum(g.attention_mask.sum() for g in groups)
        return {"loss": loss, **values, "tokens": tokens}

    def evaluate(self, step: StepContext) -> dict[str, float]:
        """Retrieval of each eval query's positive among all eval positives: recall@1, MRR, InfoNCE."""
        if not self.eval_examples:
            return {}
        size = self.settings.eval_batch_size
        queries, positives = [], []
        for start in range(0, len(self.eval_examples), size):
            batch = self.batch_of(self.eval_examples[start : start + size])
            for tokens, out in ((batch.queries, queries), (batch.positives, positives)):
                tokens = tokens.to(step.device)
                with step.autocast():
                    hidden = step.module(tokens.input_ids, tokens.attention_mask)
                out.append(mean_pool(hidden, tokens.attention_mask))
        q, p = torch.cat(queries), torch.cat(positives)
        scores = F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T
        rank_of_positive = (scores > scores.diagonal()[:, None]).sum(dim=1) + 1
        loss = info_nce(q, p, temperature=self.settings.temperature, symmetric=self.settings.symmetric, gather=False)
        return {
            "eval_recall@1": float((rank_of_positive == 1).float().mean()),
            "eval_mrr": float((1.0 / rank_of_positive.float()).mean()),
            "eval_infonce": float(loss),
        }

