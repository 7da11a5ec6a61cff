"""One run = one YAML file, parsed into these dataclasses (unknown keys are errors, not ignored).

Paths in a config are relative to the directory the run starts from (the repository root).
``key.sub=value`` overrides on the command line use the same names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

StageName = Literal["mlm", "pairs", "hard_negatives", "distill"]
STAGES: tuple[str, ...] = typing.get_args(StageName)


class ConfigError(ValueError):
    """A run config that cannot be used as written."""


@dataclass
class ModelConfig:
    """Where the weights come from: ``init_from`` a folder, or ``architecture`` from scratch."""

    # A published-layout folder, or the output_dir of an earlier run (its latest checkpoint).
    init_from: str | None = None
    # JinaBertConfig fields for a model trained from scratch, e.g. {hidden_size: 768, ...}.
    architecture: dict[str, Any] | None = None
    # A folder with tokenizer files; default: the one beside init_from, else BERT-uncased WordPiece.
    tokenizer: str | None = None
    attn_implementation: Literal["auto", "blockwise", "flex", "eager"] = "auto"
    compile: bool = False


@dataclass
class DataConfig:
    """Training and evaluation files (globs allowed); the format depends on the stage."""

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = 0
    # The learning rate decays to lr * min_lr_ratio at the last step.
    min_lr_ratio: float = 0.0
    # null disables clipping (the norm is still logged).
    max_grad_norm: float | None = 1.0


@dataclass
class TrainConfig:
    steps: int = 100
    # Per process and micro-step: packed sequences (mlm) or queries (contrastive stages).
    batch_size: int = 8
    grad_accum: int = 1
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    checkpoint_every: int | None = None
    # Keep only the newest N checkpoints (null keeps all).
    keep_checkpoints: int | None = None
    resume: bool = True
    progress: bool | None = None


@dataclass
class MLMConfig:
    seq_len: int = 512
    mask_prob: float = 0.3
    # The ALiBi extrapolation check: MLM accuracy on the eval files packed at each length.
    eval_lengths: list[int] = field(default_factory=lambda: [512])
    eval_sequences: int = 64
    eval_batch_tokens: int = 16384


@dataclass
class ContrastiveConfig:
    temperature: float = 0.05
    # L = L(q→p) + L(p→q) when true, L(q→p) alone when false.
    symmetric: bool = True
    query_max_length: int = 512
    passage_max_length: int = 512
    # GradCache: encode the batch in chunks of this many texts; null encodes each side at once.
    chunk_size: int | None = None
    # Mined negatives per query (hard_negatives stage; the first N of each row are used).
    num_negatives: int = 0
    eval_batch_size: int = 256
    # Distillation (pairs stage): teacher embeddings of the training pairs (python -m training.teacher),
    # one .npz per data.train file. The loss adds distill_weight x (the student's in-batch query→passage
    # similarities matched to the teacher's): "kl" between softmaxes at distill_temperature, or "mse".
    teacher_embeddings: list[str] = field(default_factory=list)
    distill_weight: float = 0.0
    distill_temperature: float = 0.05
    distill_loss: Literal["kl", "mse"] = "kl"


@dataclass
class DistillConfig:
    """Distillation stage: the student's span vectors matched to a teacher's (``training.distill``)."""

    # One .npz per data file, train and eval (python -m training.teacher embed-spans), matched by sha256.
    teacher_targets: list[str] = field(default_factory=list)
    # Tokens of a row read in one pass (special tokens included); spans past it are dropped.
    max_length: int = 2048
    # Sequences are packed back to back into rows of this many tokens (one forward each).
    row_tokens: int = 16384
    # Also encode each passage of a multi-span row alone (as naive chunking and short queries are).
    passages_alone: bool = True
    # Adds contrastive_weight x the cross-entropy of picking each vector's own target among all the
    # batch's distinct targets at this temperature: the ranking, beside the cosine to the target.
    contrastive_weight: float = 0.0
    temperature: float = 0.05
    # Adds query_weight x the cross-entropy, at the same temperature, of picking the teacher's vector
    # of the query a passage answers (rows' "queries") among the batch's queries, from the passage's
    # vector read in its document: late-chunked passages learn to point at the queries they answer.
    query_weight: float = 0.0
    # Adds passage_choice_weight x the cross-entropy, at the same temperature, of picking from the
    # teacher's vector of a query the passage that answers it among all passages read in context in
    # its packed row: late chunking's own retrieval task, the document's other passages as negatives.
    passage_choice_weight: float = 0.0


@dataclass
class RunConfig:
    stage: StageName
    output_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> None:
        model = self.model
        if (model.init_from is None) == (model.architecture is None):
            raise ConfigError("model: give exactly one of init_from (a model folder or run) or architecture (from scratch)")
        if not self.data.train:
            raise ConfigError("data.train: list at least one training file")
        train = self.train
        for name in ("steps", "batch_size", "grad_accum", "log_every"):
            if getattr(train, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(train, name)}")
        for name in ("eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(train, name) is not None and getattr(train, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1 (or null), got {getattr(train, name)}")
        if self.optim.warmup_steps >= train.steps:
            raise ConfigError(f"optim.warmup_steps ({self.optim.warmup_steps}) must be below train.steps ({train.steps})")
        if self.stage == "mlm":
            if not 0.0 < self.mlm.mask_prob < 1.0:
                raise ConfigError(f"mlm.mask_prob must be in (0, 1), got {self.mlm.mask_prob}")
            if self.mlm.seq_len < 8:
                raise ConfigError(f"mlm.seq_len must be at least 8, got {self.mlm.seq_len}")
        elif self.stage == "distill":
            distill = self.distill
            if not distill.teacher_targets:
                raise ConfigError("distill.teacher_targets: list the teacher's .npz files (python -m training.teacher embed-spans)")
            if min(distill.contrastive_weight, distill.query_weight, distill.passage_choice_weight) < 0 or distill.temperature <= 0:
                raise ConfigError(
                    "distill.contrastive_weight, distill.query_weight and distill.passage_choice_weight must be >= 0 "
                    "and distill.temperature positive"
                )
            if distill.max_length < 8 or distill.row_tokens < distill.max_length:
                raise ConfigError(
                    f"distill.max_length ({distill.max_length}) must be at least 8 and at most distill.row_tokens ({distill.row_tokens})"
                )
        else:
            contrastive = self.contrastive
            if contrastive.temperature <= 0:
                raise ConfigError(f"contrastive.temperature must be positive, got {contrastive.temperature}")
            if contrastive.chunk_size is not None and contrastive.chunk_size < 1:
                raise ConfigError("contrastive.chunk_size must be at least 1 (or null)")
            if self.stage == "hard_negatives" and contrastive.num_negatives < 1:
                raise ConfigError("the hard_negatives stage needs contrastive.num_negatives of at least 1")
            if self.stage == "pairs" and contrastive.num_negatives:
                raise ConfigError("the pairs stage uses in-batch negatives only: set stage: hard_negatives to use mined ones")
            if contrastive.distill_weight < 0 or contrastive.distill_temperature <= 0:
                raise ConfigError("contrastive.distill_weight must be >= 0 and contrastive.distill_temperature positive")
            if contrastive.distill_weight > 0 and not contrastive.teacher_embeddings:
                raise ConfigError(
                    "contrastive.distill_weight is set but contrastive.teacher_embeddings is empty: "
                    "compute them with python -m training.teacher and list the .npz files"
                )
            if contrastive.teacher_embeddings and self.stage != "pairs":
                raise ConfigError("teacher embeddings are aligned with pairs files: distillation is for the pairs stage")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type annotation, converting where YAML is loose."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(annotation):
        return _from_dict(annotation, value, where)
    if origin in (list, tuple):
        if isinstance(value, str) and origin is list:
            value = [value]  # one path where a list of paths is expected
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML reads 5e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation in (int, str, bool) and isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where or 'config'}: {error}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key.sub=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a run config from a plain dict (as YAML gives it)."""
    if not isinstance(data, dict) or "stage" not in data or "output_dir" not in data:
        raise ConfigError(f"a run config needs 'stage' (one of {', '.join(STAGES)}) and 'output_dir'")
    stage = data["stage"]
    used = {"mlm": "mlm", "pairs": "contrastive", "hard_negatives": "contrastive", "distill": "distill"}.get(stage)
    for section in {"mlm", "contrastive", "distill"} - {used}:
        if section in data:
            raise ConfigError(f"the {section}: section does not apply to stage {stage!r}: remove it")
    config = _from_dict(RunConfig, data, "")
    config.validate()
    return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config, apply ``key=value`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)
