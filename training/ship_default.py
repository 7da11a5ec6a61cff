"""Move the default model from the GPU machine into the package, in pieces small enough to travel.

```bash
# on the GPU machine, after training (training/configs/default-small.sh runs this; --fallback RUN
# names an earlier stage's run to export when --run has no checkpoint):
python -m training.ship_default export --run runs/default-small-v3/distill --out $OUT
# here, with the folder the files came back to:
python -m training.ship_default install FILES_DIR          # -> jina_rag/models/jina-rag-small-en/
```

``export`` writes the newest checkpoint in the published layout with fp16 weights, splits
``model.safetensors`` into ``model.part-aa``, ``-ab``, ... of at most 15 MiB (what ``split -b 15M``
writes; ``cat model.part-* > model.safetensors`` joins them) and tars the other files (config,
tokenizer, sentence-transformers files, ``ship.json`` with the weights' sha256, and the runs'
configs and metrics) into ``model-files.tar.gz``. ``install`` joins the pieces, checks the sha256,
loads the model with :class:`jina_rag.JinaEncoder`, embeds a few texts and only then replaces the
shipped folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from jina_rag.loading import SHIPPED_MODEL_DIR, load_model, save_pretrained
from jina_rag.modeling import JinaBertModel
from training.checkpoint import latest_checkpoint
from training.data import file_sha256
from training.models import load_tokenizer_folder

logger = logging.getLogger(__name__)

PIECE_BYTES = 15 * 2**20
# 4 x 15 MiB: fp16 weights up to 60 MiB (issue 8 allows 70 MB); a call returns at most 8 files.
MAX_PIECES = 4
WEIGHTS = "model.safetensors"
ARCHIVE = "model-files.tar.gz"
MANIFEST = "ship.json"
# Small files from each run folder that document how the model was made.
RUN_RECORDS = ("config.yaml", "metrics.jsonl")


def piece_names(count: int) -> list[str]:
    """``model.part-aa``, ``model.part-ab``, ...: the names ``split`` gives (two-letter suffixes)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [f"model.part-{letters[i // 26]}{letters[i % 26]}" for i in range(count)]


def split_file(path: Path, out: Path, piece_bytes: int = PIECE_BYTES) -> list[Path]:
    data = path.read_bytes()
    names = piece_names(-(-len(data) // piece_bytes))
    pieces = []
    for i, name in enumerate(names):
        pieces.append(out / name)
        pieces[-1].write_bytes(data[i * piece_bytes : (i + 1) * piece_bytes])
    return pieces


def export(runs: Sequence[Path], out: Path, max_pieces: int = MAX_PIECES) -> dict:
    """The newest checkpoint of the first run that has one → fp16 pieces + one archive in ``out``."""
    checkpoint = next((c for c in map(latest_checkpoint, runs) if c is not None), None)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {', '.join(map(str, runs))}: nothing to export")
    model = load_model(checkpoint, JinaBertModel, dtype=torch.float32)
    tokenizer = load_tokenizer_folder(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", tokenizer, dtype=torch.float16)
        weights = folder / WEIGHTS
        pieces = split_file(weights, out)
        if len(pieces) > max_pieces:
            raise ValueError(f"{weights.stat().st_size / 2**20:.1f} MiB of fp16 weights need {len(pieces)} pieces; at most {max_pieces} travel")
        manifest = {
            "checkpoint": str(checkpoint),
            "weights_sha256": file_sha256(weights),
            "weights_bytes": weights.stat().st_size,
            "pieces": [p.name for p in pieces],
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        with tarfile.open(out / ARCHIVE, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                if path.name != WEIGHTS:
                    tar.add(path, arcname=f"model/{path.name}")
            for run in runs:
                for name in RUN_RECORDS:
                    if (run / name).is_file():
                        tar.add(run / name, arcname=f"runs/{run.name}/{name}")
    return manifest


def assemble(files: Path, folder: Path) -> dict:
    """Unpack the archive and join the pieces into ``folder``; check the weights' sha256."""
    archive = files / ARCHIVE
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} is missing: pass the folder holding {ARCHIVE} and the model.part-* pieces")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        shutil.copytree(Path(tmp) / "model", folder)
        if (Path(tmp) / "runs").is_dir():
            shutil.copytree(Path(tmp) / "runs", folder.parent / "runs", dirs_exist_ok=True)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    with open(folder / WEIGHTS, "wb") as out:
        for name in manifest["pieces"]:
            piece = files / name
            if not piece.is_file():
                raise FileNotFoundError(f"{piece} is missing (the export wrote {', '.join(manifest['pieces'])})")
            out.write(piece.read_bytes())
    if file_sha256(folder / WEIGHTS) != manifest["weights_sha256"]:
        raise ValueError(f"the joined {WEIGHTS} does not match the exported sha256: a piece is damaged or from another export")
    return manifest


def check_model(folder: Path) -> dict:
    """Load the folder as users will and embed a few texts: finite, unit-length, not all alike."""
    from jina_rag import JinaEncoder

    encoder = JinaEncoder.from_pretrained(folder, device="cpu", max_length=512)
    texts = ["How do I rebase a branch?", "SQLite stores a database in one file.", "The kernel schedules processes."]
    vectors = encoder.encode(texts, show_progress=False)
    if not np.isfinite(vectors).all() or not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{folder}: the model gives non-finite or unnormalised embeddings")
    similarity = vectors @ vectors.T
    if (similarity[np.triu_indices(len(texts), 1)] > 0.999).any():
        raise ValueError(f"{folder}: different texts get the same embedding")
    return {"dim": encoder.dim, "info": encoder.info()}


def install(files: Path, destination: Path = SHIPPED_MODEL_DIR, records: Path | None = None) -> dict:
    """Assemble and check the model from ``files``, then replace ``destination`` with it.

    ``records``: where to copy the training runs' configs and metrics (kept out of the package).
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        manifest = assemble(files, folder)
        report = check_model(folder)
        (folder / MANIFEST).unlink()
        if destination.exists():
            shutil.rmtree(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, destination)
        runs = Path(tmp) / "runs"
        if records is not None and runs.is_dir():
            shutil.copytree(runs, records, dirs_exist_ok=True)
    return {**manifest, **report, "installed": str(destination), "records": str(records) if records else None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ship_default", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="newest checkpoint -> fp16 pieces + archive (on the GPU machine)")
    exporting.add_argument("--run", type=Path, required=True, help="the run whose newest checkpoint ships")
    exporting.add_argument("--fallback", type=Path, action="append", default=[], help="runs to use when --run has no checkpoint")
    exporting.add_argument("--out", type=Path, required=True)
    installing = commands.add_parser("install", help="pieces + archive -> the package's model folder")
    installing.add_argument("files", type=Path, help="folder holding model-files.tar.gz and model.part-*")
    installing.add_argument("--dest", type=Path, default=SHIPPED_MODEL_DIR)
    installing.add_argument("--records", type=Path, default=None, help="copy the runs' config.yaml and metrics.jsonl here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "export":
        result = export([args.run, *args.fallback], args.out)
    else:
        result = install(args.files, args.dest, args.records)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
