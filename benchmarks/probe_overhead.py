"""Where the encoder loop loses time against the bare compiled forward: 512-token sequences, base shape.

    python benchmarks/probe_overhead.py LABEL [ROWS] [WINDOWS]

LABEL names the run in its output; ``cudagraph`` compiles the packed forward with CUDA graphs
(``mode="reduce-overhead"``). ROWS (2) packed rows of 65,536 tokens a call; WINDOWS (8) further
2-second timings of the loop, to see throughput drift as the card heats.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_tflops, random_model_folder, timed  # noqa: E402

from jina_rag import JinaEncoder  # noqa: E402
from jina_rag.batching import pack_batch, plan_batches  # noqa: E402
from jina_rag.encoder import packed_width  # noqa: E402
from jina_rag.modeling import segment_mean  # noqa: E402

cuda = torch.device("cuda")
mode = sys.argv[1] if len(sys.argv) > 1 else "default"
ROWS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
mode = f"{mode} rows={ROWS}"
peak = matmul_peak_tflops(cuda)
print(f"{mode} matmul peak {peak:.0f} TFLOP/s", flush=True)
folder = random_model_folder("base", Path(tempfile.mkdtemp()) / "base")
encoder = JinaEncoder.from_pretrained(folder, device="cuda", dtype="bf16")
backend = encoder.backend
config = backend.config
if sys.argv[1:2] == ["cudagraph"]:
    backend._compiled_forward = torch.compile(backend.model.forward_packed, dynamic=False, mode="reduce-overhead")
n = 512
sequences = [[1000 + (i * 7 + j) % 20000 for j in range(n)] for i in range(ROWS * 65536 // n)]
batches = plan_batches([len(s) for s in sequences], 65536, packed=True)
flop = sum(len(s) * config.flops_per_token(len(s)) for s in sequences)
tokens = sum(map(len, sequences))


def report(label, seconds):
    print(f"{mode} {label}: {seconds * 1e3:.2f} ms per pass, {tokens / seconds:,.0f} tok/s, MFU {flop / seconds / peak / 1e12:.0%}",
          flush=True)


def full():
    torch.cat([backend.embed([sequences[i] for i in b]) for b in batches]).cpu()


start = time.perf_counter()
full()
torch.cuda.synchronize()
print(f"{mode} first pass (compile) {time.perf_counter() - start:.1f} s", flush=True)
report("full loop (gpu.py (a))", timed(full, cuda, min_seconds=2.0, max_runs=50))

for window in range(int(sys.argv[3]) if len(sys.argv) > 3 else 8):
    report(f"window {window} (2 s)", timed(full, cuda, min_seconds=2.0, max_runs=100))
