"""CPU: our best PyTorch path vs ONNX Runtime fp32 and int8, tokens/s and peak memory, in one run.

Random weights of the jina-embeddings-v2-small-en shape (4 layers, 512 hidden, 8 heads, 2048
GEGLU intermediate): throughput and memory only, never quality. Columns:

- torch: ``JinaBertModel.pool`` in fp32, blockwise scaled-dot-product attention (the encoder's CPU path);
- ORT fp32 plain: ``export-onnx`` without ``--optimize`` (standard ONNX operators only);
- ORT fp32: ``export-onnx --optimize`` (SkipLayerNorm, Gelu, ALiBi attention → MultiHeadAttention);
- ORT int8: ``export-onnx --optimize --quantize int8`` (dynamic int8 MatMuls, per-channel weights).

Every measurement runs in its own process (one model, one length); per length, ``--rounds``
rounds go over the configurations in turn, and tokens/s is the best call of any round (at least
3 calls each) on batches of ``--batch-tokens`` tokens: the machine may be shared.
Peak memory at ``--rss-length`` is the process's peak RSS after one call on one sequence (every
process imports torch and numpy, so the baselines compare). The int8 row's cosine compares int8 with fp32 ONNX vectors of real English paragraphs.

    python benchmarks/onnx.py                    # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is named onnx.py: keep its folder behind site-packages so `import onnx` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import device_name, random_model_folder  # noqa: E402

CONFIGS = ("torch", "ort-fp32-plain", "ort-fp32", "ort-int8")
EXPORTS = {"ort-fp32-plain": {}, "ort-fp32": {"optimize": True}, "ort-int8": {"optimize": True, "quantize": "int8"}}


def run_config(config: str, work: Path, input_ids: np.ndarray, attention_mask: np.ndarray):
    """A function running one batch of ``config``, built once."""
    if config == "torch":
        from jina_rag import load_model

        model = load_model(work / "model")
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)

        def forward():
            with torch.inference_mode():
                model.pool(ids, mask)

        return forward
    import onnxruntime

    session = onnxruntime.InferenceSession(str(work / config / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    return lambda: session.run(["sentence_embedding"], feeds)


def measure(config: str, work: Path, length: int, batch_tokens: int, memory: bool) -> dict:
    batch = 1 if memory else max(1, batch_tokens // length)
    input_ids = np.random.default_rng(0).integers(1000, 30000, (batch, length), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    forward = run_config(config, work, input_ids, attention_mask)
    if memory:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        forward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_bytes": peak * 1024, "before_bytes": before * 1024}
    forward()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < 3.0:
        begin = time.perf_counter()
        forward()
        times.append(time.perf_counter() - begin)
    return {"tokens_per_s": batch * length / min(times), "batch": batch, "calls": len(times)}


def in_subprocess(config: str, work: Path, length: int, batch_tokens: int, memory: bool) -> dict:
    command = [sys.executable, __file__, "--work", str(work), "--batch-tokens", str(batch_tokens), "--one", config, str(length)]
    done = subprocess.run(command + (["--memory"] if memory else []), capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(work: Path) -> dict[str, object]:
    """The random-weight model folder and its three exports; returns export facts per configuration."""
    from jina_rag.onnx_export import export_onnx

    folder = random_model_folder("small", work / "model")
    facts = {}
    for config, options in EXPORTS.items():
        result = export_onnx(folder, work / config, show_progress=False, **options)
        facts[config] = result
        print(f"exported {config}: {result.file_bytes / 1e6:.1f} MB, {result.exporter} exporter, "
              f"fused {result.operators.get('MultiHeadAttention', 0)} attention nodes", flush=True)
    return facts


def int8_cosine(work: Path) -> float:
    """Smallest cosine between int8 and fp32 ONNX vectors of real English paragraphs."""
    import importlib
    import inspect

    from jina_rag import JinaEncoder

    docs = [inspect.getdoc(importlib.import_module(m)) or "" for m in ("argparse", "unittest", "csv", "heapq", "subprocess", "doctest")]
    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    texts = [p.strip() for d in [readme, *docs] for p in d.split("\n\n") if len(p.strip()) > 200]
    fp32 = JinaEncoder(work / "ort-fp32", backend="onnx").encode(texts, show_progress=False)
    int8 = JinaEncoder(work / "ort-int8", backend="onnx").encode(texts, show_progress=False)
    return float((fp32 * int8).sum(axis=1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="128,512,2048")
    parser.add_argument("--rss-length", type=int, default=8192)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the configurations per length; the best counts")
    parser.add_argument("--work", type=Path, default=None, help="keep the model and exports here (default: a temporary folder)")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "LENGTH"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.work, int(args.one[1]), args.batch_tokens, args.memory)))
        return

    with tempfile.TemporaryDirectory(prefix="jina-rag-onnx-bench-") as temporary:
        work = args.work or Path(temporary)
        facts = prepare(work)
        cosine = int8_cosine(work)
        speed = {}
        for length in map(int, args.lengths.split(",")):
            rounds = [{c: in_subprocess(c, work, length, args.batch_tokens, memory=False) for c in CONFIGS} for _ in range(args.rounds)]
            speed[length] = {c: max((r[c] for r in rounds), key=lambda m: m.get("tokens_per_s", 0)) for c in CONFIGS}
            print(f"L={length}: " + ", ".join(f"{c} {r.get('tokens_per_s', r.get('error'))}" for c, r in speed[length].items()), flush=True)
        memory = {c: in_subprocess(c, work, args.rss_length, args.batch_tokens, memory=True) for c in CONFIGS}

    import onnxruntime

    print()
    print(f"# ONNX Runtime vs PyTorch on CPU: small shape (random weights: throughput and memory only), "
          f"{device_name(torch.device('cpu'))}, {platform.processor() or platform.machine()}, "
          f"{datetime.date.today()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print()
    print("| L | batch | " + " | ".join(f"{c} tok/s" for c in CONFIGS) + " | " + " | ".join(f"{c} / torch" for c in CONFIGS[1:]) + " |")
    print("|---" * (2 + 2 * len(CONFIGS) - 1) + "|")
    for length, row in speed.items():
        rates = [row[c].get("tokens_per_s") for c in CONFIGS]
        cells = [f"{r:,.0f}" if r else row[c].get("error", "?") for c, r in zip(CONFIGS, rates)]
        ratios = [f"{r / rates[0]:.2f}x" if r and rates[0] else "" for r in rates[1:]]
        print(f"| {length} | {row['torch'].get('batch', '')} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    peaks = [memory[c].get("peak_bytes") for c in CONFIGS]
    cells = [f"{p / 2**20:,.0f} MB" if p is not None else memory[c].get("error", "?") for c, p in zip(CONFIGS, peaks)]
    ratios = [f"{p / peaks[0]:.2f}x" if p and peaks[0] else "" for p in peaks[1:]]
    print(f"| peak RSS, L={args.rss_length} | 1 | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    before = ", ".join(f"{c} {memory[c]['before_bytes'] / 2**20:,.0f} MB" for c in CONFIGS if "before_bytes" in memory[c])
    print(f"\nPeak RSS of the whole process (Python, torch and the model included); before the call: {before}.")
    sizes = ", ".join(f"{c} {facts[c].file_bytes / 1e6:.1f} MB" for c in EXPORTS)
    print(f"Files: {sizes} (fp32 weights {facts['ort-fp32'].weight_bytes / 1e6:.1f} MB). "
          f"int8 vs fp32 cosine on real English paragraphs (min): {cosine:.4f}.")


if __name__ == "__main__":
    main()
