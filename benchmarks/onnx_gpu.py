"""GPU: ONNX Runtime's CUDA provider against our torch CUDA path, with the shipped model, in one run.

Configurations, each in its own process (so GPU memory is its own), one after another:

- ``torch``: ``JinaEncoder(model, device="cuda")``, the library's default GPU path (its dtype and attention);
- ``torch-fp32``: the same in fp32, the reference every cosine is taken against;
- ``ort-fp32``: ``export-onnx`` (standard operators) on ``backend="onnx", device="cuda"`` (IO binding);
- ``ort-fp16``: ``export-onnx --dtype fp16 --optimize`` (attention fused into ONNX Runtime's
  ``MultiHeadAttention``, ALiBi passed as its additive ``attention_bias``) on the same path.

Every configuration embeds the same token sequences through ``JinaEncoder.encode_tokenized`` (the
user path after the tokenizer: token-budget batches, the backend, pooling) at three lengths: 512,
8192 and mixed (log-uniform 16..8192). Text is real English prose (docstrings of Python's standard
library), cut into sequences. Figures: tokens/s (best of ``--rounds`` after a warm-up), peak GPU
memory (``nvidia-smi`` polled every 20 ms, minus the idle GPU's; it includes the CUDA context), and
the smallest cosine to ``torch-fp32`` over the sequences.

    python benchmarks/onnx_gpu.py --out benchmarks/out/onnx_gpu.json
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# benchmarks/onnx.py would shadow the onnx library: keep this folder off the path, the repo root on it.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

PROSE_MODULES = ("argparse", "asyncio", "collections", "concurrent.futures", "csv", "dataclasses", "datetime",
                 "decimal", "difflib", "doctest", "email", "enum", "functools", "http.client", "inspect", "io",
                 "itertools", "json", "logging", "multiprocessing", "os", "pathlib", "pickle", "re", "shutil",
                 "socket", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile", "textwrap",
                 "threading", "typing", "unittest", "urllib.request", "xml.etree.ElementTree", "zipfile")
CONFIGS = ("ort-fp32", "ort-fp16", "torch", "torch-fp32")
EXPORTS = {"ort-fp32": {}, "ort-fp16": {"dtype": "fp16", "optimize": True}}


@functools.lru_cache(maxsize=1)
def prose(min_chars: int) -> str:
    """Docstrings of the standard library until there are ``min_chars`` characters."""
    parts, total = [], 0
    for module in PROSE_MODULES:
        imported = importlib.import_module(module)
        for _, member in [(module, imported), *inspect.getmembers(imported)]:
            doc = inspect.getdoc(member) if inspect.ismodule(member) or inspect.isclass(member) or inspect.isfunction(member) else None
            if doc and len(doc) > 200:
                parts.append(doc)
                total += len(doc)
        if total >= min_chars:
            break
    return "\n\n".join(parts)


def sequences(tokenizer, length: str, budget: int, seed: int = 0) -> list[list[int]]:
    """Token id sequences (no special tokens) of ``length`` (a number or ``mixed``), about ``budget`` tokens in all."""
    stream = tokenizer(prose(budget * 6), add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(seed)
    if length == "mixed":
        lengths = np.exp(rng.uniform(np.log(16), np.log(8190), size=4 * budget // 2000)).astype(int)
        lengths = lengths[: np.searchsorted(np.cumsum(lengths), budget) + 1]
    else:
        lengths = [int(length) - 2] * max(1, budget // int(length))
    starts = rng.integers(0, len(stream) - max(lengths), size=len(lengths))
    return [stream[s : s + n] for s, n in zip(starts, lengths)]


class GpuMemoryPeak:
    """Peak GPU memory in use on device 0 while the block runs, polled with nvidia-smi."""

    def __init__(self) -> None:
        self.baseline = self._used()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @staticmethod
    def _used() -> int:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._used()) - self.baseline


def measure(config: str, work: Path, model: str, lengths: list[str], budget: int, rounds: int) -> dict:
    """One configuration in this process: every length, then the vectors for the cosine."""
    memory = GpuMemoryPeak()
    import torch

    from jina_rag import JinaEncoder

    if config.startswith("ort"):
        encoder = JinaEncoder.from_pretrained(str(work / config), backend="onnx", device="cuda")
    else:
        encoder = JinaEncoder.from_pretrained(model, device="cuda", **({"dtype": torch.float32} if config == "torch-fp32" else {}))
    result = {"config": config, "info": {k: str(v) for k, v in encoder.info().items()}, "lengths": {}}
    tokenizer = encoder.tokenizer
    for length in lengths:
        batch = sequences(tokenizer, length, budget)
        tokens = sum(len(s) + 2 for s in batch)
        encoder.encode_tokenized(batch[: max(1, len(batch) // 4)])  # warm-up (kernels, arena, compile)
        best = float("inf")
        for _ in range(rounds):
            torch.cuda.synchronize()
            start = time.perf_counter()
            vectors = encoder.encode_tokenized(batch)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        np.save(work / f"{config}-{length}.npy", vectors)
        result["lengths"][length] = {"sequences": len(batch), "tokens": tokens, "tokens_per_s": tokens / best}
        print(f"  {config} {length}: {tokens / best:,.0f} tokens/s", file=sys.stderr, flush=True)
    result["peak_gpu_mib"] = memory.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--lengths", default="512,8192,mixed")
    parser.add_argument("--budget", type=int, default=400_000, help="tokens per length")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from jina_rag.loading import resolve_model

    model = str(resolve_model(args.model))
    work = args.work or Path(tempfile.mkdtemp(prefix="jina-rag-onnx-gpu-"))
    lengths = args.lengths.split(",")
    if args.one:
        print(json.dumps(measure(args.one, work, model, lengths, args.budget, args.rounds)))
        return
    from jina_rag.onnx_export import export_onnx

    configs = args.configs.split(",")
    exports = {}
    for config in configs:
        if config in EXPORTS and not (work / config / "model.onnx").is_file():
            export = export_onnx(model, work / config, show_progress=False, **EXPORTS[config])
            exports[config] = {"exporter": export.exporter, "file_mb": export.file_bytes / 1e6,
                               "operators": dict(list(export.operators.items())[:8]), "min_cosine_cpu": export.min_cosine}
            print(f"exported {config}: {exports[config]}", file=sys.stderr, flush=True)
    results = []
    for config in configs:
        command = [sys.executable, __file__, "--one", config, "--work", str(work), "--model", model, "--lengths",
                   args.lengths, "--budget", str(args.budget), "--rounds", str(args.rounds)]
        run = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if run.returncode != 0 or not run.stdout.strip():
            results.append({"config": config, "error": f"exit {run.returncode}"})
            continue
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    reference = "torch-fp32"
    for result in results:
        for length, figures in result.get("lengths", {}).items():
            if (work / f"{reference}-{length}.npy").is_file():
                ref, got = (np.load(work / f"{name}-{length}.npy") for name in (reference, result["config"]))
                figures["min_cosine_to_fp32"] = float((ref * got).sum(1).min())
    baseline = next((r for r in results if r["config"] == "torch"), None)
    print(f"\n| config | {' | '.join(f'{n} tok/s' for n in lengths)} | peak GPU MiB | min cosine to torch fp32 |")
    print("|---|" + "---:|" * (len(lengths) + 2))
    for result in results:
        if "error" in result:
            print(f"| {result['config']} | failed: {result['error'][:200]} |")
            continue
        cells = []
        for length in lengths:
            rate = result["lengths"][length]["tokens_per_s"]
            ratio = rate / baseline["lengths"][length]["tokens_per_s"] if baseline and "lengths" in baseline else float("nan")
            cells.append(f"{rate:,.0f} ({ratio:.2f}x torch)")
        cosine = min((f.get("min_cosine_to_fp32", float("nan")) for f in result["lengths"].values()), default=float("nan"))
        print(f"| {result['config']} | {' | '.join(cells)} | {result['peak_gpu_mib']:,} | {cosine:.5f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"exports": exports, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
