"""Checkpoints: the published model layout plus what an exact resume needs.

``<output_dir>/checkpoints/step-00000100/`` holds ``config.json``, ``model.safetensors``, the
tokenizer and sentence-transformers files (``jina_rag.save_pretrained``; it loads with
``JinaEncoder.from_pretrained``), ``training_state.pt`` (optimizer, scheduler, step, data
position) and ``rng-rank<r>.pt`` per process. A checkpoint is written under a temporary name and
renamed when complete, so the newest complete one is always safe to resume from.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jina_rag.loading import save_pretrained
from training.distributed import DistEnv, barrier

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_init_folder(init_from: str | Path) -> Path:
    """A model folder, or a run's output_dir standing for its latest checkpoint."""
    path = Path(init_from)
    if (path / "config.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    if path.is_dir():
        raise FileNotFoundError(f"model.init_from {path}: neither a model folder (config.json) nor a run with checkpoints")
    raise FileNotFoundError(f"model.init_from {path} does not exist")


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: nn.Module,
    tokenizer: Any,
    training_state: dict[str, Any],
    env: DistEnv,
    keep: int | None = None,
) -> Path:
    """Write a checkpoint (collective: every rank calls it)."""
    final = checkpoint_root(output_dir) / f"step-{step:08d}"
    staging = final.with_name(final.name + ".tmp")
    if env.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        save_pretrained(model, staging, tokenizer)
    barrier()
    torch.save(rng_state(env.device), staging / f"rng-rank{env.rank}.pt")
    barrier()
    if env.is_main:
        torch.save({**training_state, "world_size": env.world_size}, staging / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        if keep is not None:
            for _, old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
        logger.info("saved checkpoint %s", final)
    barrier()
    return final


def load_training_state(folder: Path, env: DistEnv) -> dict[str, Any]:
    """Read the training state and restore this rank's RNG streams."""
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    if state.get("world_size") != env.world_size:
        logger.warning(
            "resuming a run of %s processes with %d: data order is kept, dropout streams are not",
            state.get("world_size"), env.world_size,
        )
    rng_file = folder / f"rng-rank{env.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False), env.device)
    return state
