"""The teacher's vectors as the stages read them: :class:`TeacherEmbeddings` (pairs stage) and
:class:`SpanTargets` (distill stage), loaded from the ``.npz`` files that ``python -m training.teacher``
writes and matched to their data file by sha256.

Kept apart from ``training.teacher`` (the CLI that embeds and writes them, reading the stages' data
files) so that the stages depend on this module alone and no import goes round in a circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data import DataError, file_sha256


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


@dataclass
class SpanTargets:
    """The teacher's vectors of a distillation file's spans, in row order (``training.distill``)."""

    vectors: np.ndarray

    @classmethod
    def load(cls, target_files: Sequence[Path], data_file: Path, num_spans: int) -> SpanTargets:
        """The file among ``target_files`` made from ``data_file`` (matched by sha256), with one vector per span."""
        wanted = file_sha256(data_file)
        for path in target_files:
            with np.load(path) as targets:
                if str(targets["data_sha256"]) == wanted:
                    vectors = targets["vectors"]
                    if len(vectors) != num_spans:
                        raise DataError(f"{path}: {len(vectors)} vectors, but {data_file} has {num_spans} spans")
                    return cls(vectors)
        raise DataError(
            f"no teacher vectors for {data_file} (its sha256 matches none of {', '.join(map(str, target_files)) or 'no files'}): "
            f"run python -m training.teacher embed-spans --data {data_file} --out FILE.npz and list FILE.npz in distill.teacher_targets"
        )
