"""Where the encoder loop loses time against the bare compiled forward: 512-token sequences, base shape.

    python benchmarks/probe_overhead.py LABEL [ROWS] [WINDOWS]

LABEL names the run in its output; ``cudagraph`` compiles the packed forward with CUDA graphs
(``mode="reduce-overhead"``). ROWS (2) packed rows of 65,536 tokens a call; WINDOWS (0) further
2-second timings of the loop, to see throughput drift as the card heats. Then the compiled forward
alone on inputs already on the device, the host's packing and launch times, three ways to pool a
row, and the profiler's top operations of one call.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

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

for window in range(int(sys.argv[3]) if len(sys.argv) > 3 else 0):
    report(f"window {window} (2 s)", timed(full, cuda, min_seconds=2.0, max_runs=100))

packed = [pack_batch([sequences[i] for i in b], packed_width(sum(len(sequences[i]) for i in b)), 0) for b in batches]
device_rows = [(torch.from_numpy(i).cuda(), torch.from_numpy(s).cuda()) for i, s in packed]
forward = backend._compiled_forward


def forward_only():
    with torch.inference_mode():
        for ids, sids in device_rows:
            forward(ids, sids, None)


report("compiled forward only, inputs resident", timed(forward_only, cuda, min_seconds=2.0, max_runs=50))

start = time.perf_counter()
for _ in range(20):
    for b in batches:
        pack_batch([sequences[i] for i in b], 65536, 0)
print(f"{mode} pack_batch per pass {(time.perf_counter() - start) / 20 * 1e3:.2f} ms", flush=True)

torch.cuda.synchronize()
start = time.perf_counter()
with torch.inference_mode():
    launched = [backend.embed([sequences[i] for i in b]) for b in batches]
host = time.perf_counter() - start
torch.cuda.synchronize()
print(f"{mode} host time to launch one pass (no sync) {host * 1e3:.2f} ms; with device {(time.perf_counter() - start) * 1e3:.2f} ms",
      flush=True)

with torch.inference_mode():
    hidden = forward(*device_rows[0], None).clone()
    sids = device_rows[0][1]
    count = len(batches[0])
    t_seg = timed(lambda: segment_mean(hidden, sids, count), cuda, min_seconds=0.5, max_runs=200)
    print(f"{mode} segment_mean (index_add) per row {t_seg * 1e3:.3f} ms", flush=True)
    lengths = torch.bincount(sids.clamp(max=count), minlength=count + 1)
    t_red = timed(lambda: torch.segment_reduce(hidden.float(), "mean", lengths=lengths), cuda, min_seconds=0.5, max_runs=200)
    print(f"{mode} torch.segment_reduce per row {t_red * 1e3:.3f} ms", flush=True)

    def one_hot_mean():
        ids = sids.clamp(max=count)
        weights = (ids[None, :] == torch.arange(count, device=cuda)[:, None]).to(hidden.dtype)
        sums = (weights @ hidden).float()
        return sums / weights.sum(dim=1, dtype=torch.float32).clamp(min=1)[:, None]

    t_mm = timed(one_hot_mean, cuda, min_seconds=0.5, max_runs=200)
    difference = (one_hot_mean() - segment_mean(hidden, sids, count)).abs().max().item()
    print(f"{mode} one-hot matmul per row {t_mm * 1e3:.3f} ms, max diff {difference:.2e}", flush=True)

with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
    full()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18, max_name_column_width=70))
