"""Export a JinaBERT model to the ONNX variants people deploy, and check each one against PyTorch.

    python onnx/export.py MODEL OUT_ROOT [--variants fp32,int8,fp16] [--texts FILE]

writes ``OUT_ROOT/fp32`` (optimised fp32: CPU), ``OUT_ROOT/int8`` (optimised, dynamic int8: CPU,
about a quarter of the size) and ``OUT_ROOT/fp16`` (optimised fp16: the CUDA provider), each a
folder ``JinaEncoder.from_pretrained(folder, backend="onnx")`` and optimum's
``ORTModelForFeatureExtraction`` load. Then it embeds real text (``--texts``: a file of paragraphs
separated by blank lines; default: this folder's README) with PyTorch and with each variant on
ONNX Runtime's CPU provider and prints their agreement: the smallest cosine and the largest
absolute difference of the normalised vectors.

Run it from the repository root or anywhere the package is installed; it needs the ``onnx``
extra (``pip install 'jina-rag[onnx]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This folder is named onnx/: keep it off the front of sys.path so `import onnx` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402

from jina_rag import JinaEncoder  # noqa: E402
from jina_rag.onnx_export import export_onnx  # noqa: E402

VARIANTS = {
    "fp32": {"optimize": True},
    "int8": {"optimize": True, "quantize": "int8"},
    "fp16": {"optimize": True, "dtype": "fp16"},
}


def paragraphs(path: Path) -> list[str]:
    chunks = [c.strip() for c in path.read_text(encoding="utf-8").split("\n\n")]
    return [c for c in chunks if len(c) > 80]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder or hub id")
    parser.add_argument("out_root", type=Path, help="one sub-folder per variant is written here")
    parser.add_argument("--variants", default="fp32,int8,fp16", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--texts", type=Path, default=HERE / "README.md", help="paragraphs to check the exports on")
    parser.add_argument("--max-length", type=int, default=8192)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    texts = paragraphs(args.texts)
    if not texts:
        parser.error(f"{args.texts} holds no paragraphs of text to check the exports on")

    reference = JinaEncoder.from_pretrained(args.model, device="cpu", dtype="float32", max_length=args.max_length)
    expected = reference.encode(texts)
    print(f"{'variant':8} {'MB':>8} {'exporter':>11} {'min cosine':>11} {'max |diff|':>11}  folder")
    for name in variants:
        result = export_onnx(args.model, args.out_root / name, **VARIANTS[name])
        onnx_encoder = JinaEncoder.from_pretrained(result.folder, backend="onnx", max_length=args.max_length)
        got = onnx_encoder.encode(texts)
        cosine = float((got * expected).sum(axis=1).min())
        print(f"{name:8} {result.file_bytes / 1e6:8.1f} {result.exporter:>11} {cosine:11.6f} "
              f"{float(np.abs(got - expected).max()):11.2e}  {result.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
