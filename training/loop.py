"""The training loop every stage shares.

AdamW with warmup and linear or cosine decay, gradient clipping, gradient accumulation, bf16
autocast on CUDA (fp32 on CPU), seeds, metrics to ``<output_dir>/metrics.jsonl`` and the console
(with a progress bar), evaluation and checkpoints every N steps, and an exact resume from the
newest checkpoint: weights, optimizer, scheduler, step, data position and RNG streams.

A stage (``training.mlm``, ``training.pairs``, ``training.hard_negatives``, ``training.distill``) supplies the model,
the examples and how one micro-batch becomes gradients; see :class:`Stage`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from training.checkpoint import latest_checkpoint, load_training_state, resolve_init_folder, save_checkpoint
from training.config import RunConfig
from training.data import EpochSampler
from training.distributed import (
    DistEnv,
    all_reduce_mean,
    average_gradients,
    barrier,
    broadcast_parameters,
    init_distributed,
    shutdown,
)

logger = logging.getLogger(__name__)

STAGE_CLASSES = {
    "mlm": "training.mlm.MLMStage",
    "pairs": "training.pairs.PairsStage",
    "hard_negatives": "training.hard_negatives.HardNegativesStage",
    "distill": "training.distill.DistillStage",
}
# Metrics a stage reports that are summed over micro-batches and ranks; the rest are averaged.
SUMMED_METRICS = ("tokens",)


@dataclass
class StepContext:
    """What a stage needs to turn one micro-batch into gradients."""

    module: Callable[..., Any]  # the model to call (compiled when model.compile is on)
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]
    loss_scale: float  # 1 / grad_accum: the stage multiplies its loss by it before backward


class Stage(ABC):
    """One training objective."""

    name: str
    model: nn.Module
    tokenizer: Any

    @property
    @abstractmethod
    def num_examples(self) -> int: ...

    @abstractmethod
    def make_batch(self, indices: list[int], positions: list[int]) -> Any:
        """Collate the examples at ``indices`` (``positions``: their places in the data stream)."""

    @abstractmethod
    def forward_backward(self, step: StepContext, batch: Any) -> dict[str, torch.Tensor]:
        """Run forward and backward on one micro-batch; return detached scalar metrics.

        ``loss`` is required; ``tokens`` (real tokens seen) feeds the throughput figures.
        """

    def evaluate(self, step: StepContext) -> dict[str, float]:
        """Held-out metrics (rank 0 only, model in eval mode); none by default."""
        return {}


def learning_rate_factor(config: RunConfig) -> Callable[[int], float]:
    """Multiplier of ``optim.lr`` at each step: linear warmup, then linear/cosine decay or constant."""
    optim, total = config.optim, config.train.steps
    warmup, floor = optim.warmup_steps, optim.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if optim.schedule == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - floor) * progress

    return factor


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only; biases and LayerNorm parameters are not decayed (as BERT)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def resolve_precision(config: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    precision = config.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


class MetricsLog:
    """``metrics.jsonl`` (rank 0): one JSON object per logged step, cut back to the step a run resumes at."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        kept = []
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= resume_step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


class Trainer:
    def __init__(self, config: RunConfig, env: DistEnv, stage: Stage) -> None:
        self.config = config
        self.env = env
        self.stage = stage
        self.output_dir = Path(config.output_dir)
        self.model = stage.model.to(env.device)
        broadcast_parameters(self.model)
        module = torch.compile(self.model) if config.model.compile else self.model
        autocast_dtype = resolve_precision(config, env.device)

        def autocast() -> contextlib.AbstractContextManager:
            if autocast_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(env.device.type, dtype=autocast_dtype)

        self.context = StepContext(module, env.device, autocast, 1.0 / config.train.grad_accum)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, optim.weight_decay), lr=optim.lr, betas=optim.betas, eps=optim.eps,
            fused=env.device.type == "cuda",
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, learning_rate_factor(config))
        self.sampler = EpochSampler(stage.num_examples, config.train.seed)
        self.step = 0
        self.position = 0  # examples consumed by all ranks together

    def _save(self) -> Path:
        state = {
            "step": self.step,
            "data_position": self.position,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.config.to_dict(),
        }
        return save_checkpoint(
            self.output_dir, self.step, self.model, self.stage.tokenizer, state, self.env, self.config.train.keep_checkpoints
        )

    def _restore(self, folder: Path) -> None:
        state = load_training_state(folder, self.env)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.position = state["data_position"]
        logger.info("resumed from %s at step %d (data position %d)", folder, self.step, self.position)

    def _evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.env.is_main:
            self.model.eval()
            eval_context = StepContext(self.model, self.env.device, self.context.autocast, 1.0)
            with torch.no_grad():
                metrics = self.stage.evaluate(eval_context)
            self.model.train()
        barrier()
        return metrics

    def _prefetched_batches(self, pool: ThreadPoolExecutor) -> Iterator[Any]:
        """This rank's micro-batches from the current data position on, one collated ahead.

        Collation (tokenising, masking) runs in a worker thread while the model computes; it
        uses no global RNG, so prefetching changes nothing a resume must reproduce.
        """
        size, world_size, rank, accum = self.config.train.batch_size, self.env.world_size, self.env.rank, self.config.train.grad_accum

        def make(start: int) -> Any:
            return self.stage.make_batch(self.sampler.indices(start, size), list(range(start, start + size)))

        def starts() -> Iterator[int]:
            position = self.position
            while True:
                for micro in range(accum):
                    yield position + (micro * world_size + rank) * size
                position += size * world_size * accum

        upcoming = starts()
        pending = pool.submit(make, next(upcoming))
        while True:
            current, pending = pending, pool.submit(make, next(upcoming))
            yield current.result()

    def fit(self, resume_from: Path | None = None, stop_after: int | None = None) -> Path:
        """Train to ``train.steps`` (or ``stop_after`` more steps); return the last checkpoint."""
        config, env, train = self.config, self.env, self.config.train
        if resume_from is not None:
            self._restore(resume_from)
        else:
            # Every rank built the same initial weights from train.seed; dropout streams differ.
            torch.manual_seed(train.seed + env.rank)
        if env.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "config.yaml", "w", encoding="utf-8") as f:
                yaml.safe_dump(config.to_dict(), f, sort_keys=False)
        log = MetricsLog(self.output_dir / "metrics.jsonl", self.step if resume_from else None, env.is_main)
        stop_at = train.steps if stop_after is None else min(train.steps, self.step + stop_after)
        show = env.is_main and (train.progress if train.progress is not None else sys.stderr.isatty())
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_start = 0, time.perf_counter()
        last_checkpoint: Path | None = resume_from
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") as pool, \
                tqdm(total=train.steps, initial=self.step, desc=self.stage.name, unit="step", disable=not show) as bar:
            batches = self._prefetched_batches(pool)
            while self.step < stop_at:
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.scheduler.get_last_lr()[0]
                for _ in range(train.grad_accum):
                    for name, value in self.stage.forward_backward(self.context, next(batches)).items():
                        weight = 1.0 if name in SUMMED_METRICS else self.context.loss_scale
                        sums[name] = sums.get(name, 0.0) + value.detach().float() * weight
                average_gradients(self.model)
                max_norm = config.optim.max_grad_norm
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm if max_norm is not None else math.inf)
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm.detach().float()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.position += train.batch_size * env.world_size * train.grad_accum
                window_steps += 1
                bar.update(1)
                record: dict[str, Any] = {}
                if self.step % train.log_every == 0 or self.step == stop_at:
                    record = self._summarise(sums, window_steps, time.perf_counter() - window_start)
                    record["lr"] = lr
                    bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                    sums, window_steps, window_start = {}, 0, time.perf_counter()
                if (train.eval_every and self.step % train.eval_every == 0) or self.step == train.steps:
                    record.update(self._evaluate())
                if record:
                    record = {"step": self.step, **record}
                    log.write(record)
                    if env.is_main:
                        logger.info("step %d: %s", self.step, ", ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k != "step"))
                every = train.checkpoint_every
                if (every and self.step % every == 0) or self.step == stop_at:
                    last_checkpoint = self._save()
            batches.close()
        if last_checkpoint is None:
            raise RuntimeError("no checkpoint was written")
        return last_checkpoint

    def _summarise(self, sums: dict[str, torch.Tensor], steps: int, seconds: float) -> dict[str, float]:
        names = sorted(sums)
        stacked = torch.stack([torch.as_tensor(sums[n], device=self.env.device) for n in names])
        reduced = all_reduce_mean(stacked).tolist()
        record = {}
        for name, value in zip(names, reduced):
            if name in SUMMED_METRICS:
                total = value * self.env.world_size
                record[f"{name}_per_s"] = total / seconds
                record[name] = total
            else:
                record[name] = value / steps
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"the loss is {record['loss']} at step {self.step}: lower optim.lr or check the data")
        return record


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_trainer(config: RunConfig, env: DistEnv) -> tuple[Trainer, Path | None]:
    """The stage's trainer, and the checkpoint to resume from (None for a fresh start)."""
    resume_from = latest_checkpoint(config.output_dir) if config.train.resume else None
    if resume_from is not None:
        weights_from = resume_from
    elif config.model.init_from is not None:
        weights_from = resolve_init_folder(config.model.init_from)
    else:
        weights_from = None
    if env.is_main:
        logger.info("stage %s on %s (%d process%s); weights from %s", config.stage, env.device, env.world_size,
                    "es" if env.world_size > 1 else "", weights_from or "scratch")
    torch.manual_seed(config.train.seed)
    module_name, class_name = STAGE_CLASSES[config.stage].rsplit(".", 1)
    stage = getattr(importlib.import_module(module_name), class_name)(config, env, weights_from)
    return Trainer(config, env, stage), resume_from


def train(config: RunConfig, stop_after: int | None = None) -> Path:
    """Run one stage as its config says (under torchrun: one process of many); return the last checkpoint."""
    env = init_distributed(config.train.device)
    try:
        if env.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        trainer, resume_from = build_trainer(config, env)
        return trainer.fit(resume_from, stop_after)
    finally:
        shutdown()
