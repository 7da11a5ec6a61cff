"""Stage 1: masked-language-model pre-training, as MosaicBERT (and the JinaBERT paper) do it.

Documents (JSONL ``{"text": ...}`` or text files, documents separated by blank lines) are
tokenised, joined with ``[SEP]`` and cut into packed sequences of ``seq_len`` tokens that each
start with ``[CLS]``; 30% of the tokens are selected for prediction (80% become ``[MASK]``, 10% a
random token, 10% stay). The mask of each sequence is a function of the seed and its position
in the data stream, so it does not depend on the number of processes and survives a resume.
Evaluation packs the eval documents at each of ``mlm.eval_lengths`` (512 and longer: ALiBi was
trained at 512 and must extrapolate) and reports masked-token accuracy and loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jina_rag.modeling import JinaBertForMaskedLM
from training.config import RunConfig
from training.data import DataError, expand_paths, read_documents
from training.distributed import DistEnv, barrier
from training.loop import Stage, StepContext
from training.models import build_model, load_stage_tokenizer, untruncated_backend

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# masked_positions are padded to a multiple of this many (few distinct shapes to compile).
MASKED_POSITIONS_MULTIPLE = 256
_TOKENIZE_BATCH = 1000


def pack_documents(documents: Iterable[str], tokenizer: Any, seq_len: int) -> np.ndarray:
    """``[n, seq_len]`` token ids: ``[CLS]`` + the ``[SEP]``-joined token stream, the last row padded."""
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    backend = untruncated_backend(tokenizer)
    stream: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        for encoding in backend.encode_batch(batch, add_special_tokens=False):
            stream.extend(encoding.ids)
            stream.append(tokenizer.sep_token_id)
        batch.clear()

    for text in documents:
        batch.append(text)
        if len(batch) == _TOKENIZE_BATCH:
            flush()
    if batch:
        flush()
    if not stream:
        raise DataError("no text to pack: the documents are empty")
    body = seq_len - 1
    rows = -(-len(stream) // body)
    packed = np.full((rows, seq_len), tokenizer.pad_token_id, dtype=dtype)
    packed[:, 0] = tokenizer.cls_token_id
    flat = np.asarray(stream, dtype=dtype)
    full = len(stream) // body
    packed[:full, 1:] = flat[: full * body].reshape(full, body)
    rest = flat[full * body :]
    if len(rest):
        packed[full, 1 : 1 + len(rest)] = rest
    return packed


def load_packed(paths: list[Path], tokenizer: Any, seq_len: int, cache_dir: Path, env: DistEnv) -> np.ndarray:
    """Packed sequences, tokenised once by rank 0 and cached under ``cache_dir`` for all ranks and resumes."""
    key = hashlib.sha256(
        json.dumps(
            [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
            + [seq_len, hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()]
        ).encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"mlm-{seq_len}-{key}.npy"
    if env.is_main and not cache.is_file():
        logger.info("tokenising and packing %d file(s) into %d-token sequences", len(paths), seq_len)
        packed = pack_documents(read_documents(paths), tokenizer, seq_len)
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = cache.with_suffix(".tmp.npy")
        np.save(staging, packed)
        staging.rename(cache)
    barrier()
    return np.load(cache, mmap_mode="r")


@dataclass(frozen=True)
class MaskingVocab:
    """What masking needs from the tokenizer, read once (``len(tokenizer)`` alone costs ~20 ms)."""

    special_ids: torch.Tensor
    mask_id: int
    pad_id: int
    size: int  # random replacements are drawn from [0, size)

    @classmethod
    def of(cls, tokenizer: Any) -> MaskingVocab:
        return cls(torch.tensor(tokenizer.all_special_ids), tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer))


def mask_tokens(
    input_ids: torch.Tensor, vocab: MaskingVocab, mask_prob: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of one or more sequences: ``(inputs, labels)``, labels -100 where not selected."""
    candidates = ~torch.isin(input_ids, vocab.special_ids)
    selected = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & candidates
    action = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(vocab.size, input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (action < 0.8)] = vocab.mask_id
    replace = selected & (action >= 0.8) & (action < 0.9)
    inputs[replace] = random_tokens[replace]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return inputs, labels


def _sequence_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63))


def masked_batch(
    packed: np.ndarray, rows: list[int], positions: list[int], vocab: MaskingVocab, mask_prob: float, seed: int
) -> dict[str, torch.Tensor]:
    """Rows of ``packed``, each masked by a generator seeded from ``seed`` and its stream position."""
    input_ids = torch.from_numpy(np.asarray(packed[rows], dtype=np.int64))
    masked, labels = zip(*(mask_tokens(row, vocab, mask_prob, _sequence_generator(seed, p)) for row, p in zip(input_ids, positions)))
    labels = torch.stack(labels)
    return {
        "input_ids": torch.stack(masked),
        "attention_mask": (input_ids != vocab.pad_id).long(),
        "labels": labels,
        "masked_positions": masked_positions(labels),
    }


def masked_positions(labels: torch.Tensor, multiple: int = MASKED_POSITIONS_MULTIPLE) -> torch.Tensor:
    """Flat indices of the labelled tokens, padded to a multiple of ``multiple``.

    The filler repeats the first unlabelled token (label -100, ignored by the loss). The padding
    keeps the number of distinct shapes a compiled model sees small: the number of masked tokens
    of a batch varies by a few dozen from batch to batch.
    """
    flat = labels.flatten()
    selected = (flat != IGNORE_INDEX).nonzero().squeeze(1)
    unlabelled = (flat == IGNORE_INDEX).nonzero().squeeze(1)
    if not unlabelled.numel():  # every token labelled: nothing to pad with
        return selected
    padded = unlabelled[:1].repeat(max(multiple, -(-selected.numel() // multiple) * multiple))
    padded[: selected.numel()] = selected
    return padded


def mlm_metrics(model: nn.Module | Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, correct predictions, masked tokens)`` of one batch (already on the model's device).

    With ``batch["masked_positions"]`` nothing here reads back to the host.
    """
    positions = batch.get("masked_positions")
    labels = batch["labels"]
    loss, logits = model(batch["input_ids"], batch["attention_mask"], labels=labels, masked_positions=positions)
    targets = labels[labels != IGNORE_INDEX] if positions is None else labels.flatten()[positions]
    real = targets != IGNORE_INDEX
    correct = ((logits.argmax(dim=-1) == targets) & real).sum()
    return loss, correct, real.sum()


@torch.no_grad()
def evaluate_mlm(
    model: JinaBertForMaskedLM,
    packed_by_length: dict[int, np.ndarray],
    vocab: MaskingVocab,
    *,
    mask_prob: float = 0.3,
    batch_tokens: int = 16384,
    autocast: Any = None,
) -> dict[str, float]:
    """Masked-token accuracy and loss at each length (fixed masks: comparable across runs)."""
    device = next(model.parameters()).device
    results: dict[str, float] = {}
    for length, packed in packed_by_length.items():
        batch_size = max(1, batch_tokens // length)
        correct = masked = 0
        loss_sum = 0.0
        for start in range(0, len(packed), batch_size):
            rows = list(range(start, min(len(packed), start + batch_size)))
            batch = {k: v.to(device) for k, v in masked_batch(packed, rows, rows, vocab, mask_prob, seed=0).items()}
            with autocast() if autocast else torch.autocast(device.type, enabled=False):
                loss, batch_correct, batch_masked = mlm_metrics(model, batch)
            correct += int(batch_correct)
            masked += int(batch_masked)
            loss_sum += float(loss) * int(batch_masked)
        results[f"eval_mlm_accuracy@{length}"] = correct / max(1, masked)
        results[f"eval_mlm_loss@{length}"] = loss_sum / max(1, masked)
    return results


class MLMStage(Stage):
    name = "mlm"

    def __init__(self, config: RunConfig, env: DistEnv, weights_from: Path | None) -> None:
        self.config = config
        self.tokenizer = load_stage_tokenizer(config.model, weights_from)
        self.model = build_model(config.model, JinaBertForMaskedLM, weights_from, self.tokenizer)
        self.vocab = MaskingVocab.of(self.tokenizer)
        cache_dir = Path(config.output_dir) / "cache"
        mlm = config.mlm
        self.packed = load_packed(expand_paths(config.data.train, "data.train"), self.tokenizer, mlm.seq_len, cache_dir, env)
        self.eval_packed: dict[int, np.ndarray] = {}
        if config.data.eval:
            eval_paths = expand_paths(config.data.eval, "data.eval")
            for length in mlm.eval_lengths:
                packed = load_packed(eval_paths, self.tokenizer, length, cache_dir, env)
                if packed.shape[0] == 1 and packed[0, -1] == self.tokenizer.pad_token_id:
                    logger.warning("the eval text is shorter than %d tokens: the @%d figures measure shorter sequences", length, length)
                self.eval_packed[length] = packed[: mlm.eval_sequences]

    @property
    def num_examples(self) -> int:
        return len(self.packed)

    def make_batch(self, indices: list[int], positions: list[int]) -> dict[str, torch.Tensor]:
        return masked_batch(self.packed, indices, positions, self.vocab, self.config.mlm.mask_prob, self.config.train.seed)

    def forward_backward(self, step: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = {k: v.to(step.device, non_blocking=True) for k, v in batch.items()}
        with step.autocast():
            loss, correct, masked = mlm_metrics(step.module, batch)
        (loss * step.loss_scale).backward()
        return {
            "loss": loss.detach(),
            "mlm_accuracy": correct / masked.clamp(min=1),
            "tokens": batch["attention_mask"].sum(),
        }

    def evaluate(self, step: StepContext) -> dict[str, float]:
        if not self.eval_packed:
            return {}
        mlm = self.config.mlm
        return evaluate_mlm(
            self.model, self.eval_packed, self.vocab, mask_prob=mlm.mask_prob,
            batch_tokens=mlm.eval_batch_tokens, autocast=step.autocast,
        )
