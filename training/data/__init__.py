"""Reading training files and walking the data in a resumable, seeded order (builders of the data: the submodules)."""

from __future__ import annotations

import glob
import gzip
import lzma
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DataError(ValueError):
    """Training data that cannot be used as it is (the message names the file and line)."""


def expand_paths(patterns: list[str], what: str) -> list[Path]:
    """Files named by paths or globs, in a stable order; an error names the pattern that matched nothing."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise FileNotFoundError(f"{what}: {pattern!r} matches no file")
        files.extend(Path(m) for m in matches)
    return files


def open_text(path: Path, errors: str = "strict") -> IO[str]:
    """A text file for reading; ``.gz`` and ``.xz`` files are decompressed on the fly (data that must travel small)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors=errors)
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8", errors=errors)
    return open(path, encoding="utf-8", errors=errors)


def is_jsonl(path: Path) -> bool:
    """``.jsonl``, ``.jsonl.gz`` or ``.jsonl.xz``."""
    return path.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.xz"))


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-empty line; a bad line is an error naming it."""
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def require_text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string (keys present: {', '.join(row) or 'none'})")
    return value


def read_documents(paths: Iterable[Path]) -> Iterator[str]:
    """Texts of ``.jsonl`` files (field ``text``) and of text files (blocks between blank lines); either may be gzipped."""
    for path in paths:
        if is_jsonl(path):
            for number, row in read_jsonl(path):
                yield require_text(row, "text", f"{path}:{number}")
        else:
            block: list[str] = []
            with open_text(path, errors="replace") as f:
                for line in f:
                    if line.strip():
                        block.append(line.rstrip("\n"))
                    elif block:
                        yield "\n".join(block)
                        block = []
            if block:
                yield "\n".join(block)


class EpochSampler:
    """An endless stream of example indices: a fresh seeded permutation per epoch.

    Position ``i`` of the stream is ``permutation(i // n)[i % n]``, a pure function of the seed,
    so a run resumed at position ``i`` sees exactly the examples it would have seen.
    """

    def __init__(self, num_examples: int, seed: int, shuffle: bool = True) -> None:
        if num_examples < 1:
            raise DataError("the training data is empty")
        self.num_examples = num_examples
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._order = torch.randperm(self.num_examples, generator=generator)
            else:
                self._order = torch.arange(self.num_examples)
            self._epoch = epoch
        return self._order

    def indices(self, start: int, count: int) -> list[int]:
        """Example indices at stream positions ``start .. start + count``."""
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.num_examples)
            out.append(int(self._permutation(epoch)[offset]))
        return out
