"""Our attention (blockwise SDPA on CPU, FlexAttention on CUDA) vs the naive materialised-bias path.

One table from one run: tokens/s and peak memory at L in {512, 2048, 8192}, with ratios.
Each measurement runs in its own process so peak memory (RSS on CPU) is its own.

    python benchmarks/encode.py                  # CPU, small shape, fp32
    python benchmarks/encode.py --device cuda    # GPU, base shape, bf16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, device_name, peak_memory_during, timed  # noqa: E402

from jina_rag import JinaBertConfig, JinaBertModel  # noqa: E402

IMPLEMENTATIONS = {"ours": "auto", "naive": "eager"}


def measure(impl: str, length: int, shape: str, device: torch.device, dtype: torch.dtype, batch_tokens: int) -> dict:
    torch.manual_seed(0)
    model = JinaBertModel(JinaBertConfig(**SHAPES[shape]), attn_implementation=IMPLEMENTATIONS[impl])
    model = model.to(device, dtype).eval()
    batch = max(1, batch_tokens // length)
    ids = torch.randint(1000, 30000, (batch, length), device=device)
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            model.pool(ids, mask)

    peak = peak_memory_during(run, device)  # first: on CPU the RSS high-water mark only rises
    seconds = timed(run, device, min_seconds=2.0 if device.type == "cuda" else 0.0, max_runs=20 if device.type == "cuda" else 1)
    return {"tokens_per_s": batch * length / seconds, "peak_bytes": peak, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: small on CPU, base on CUDA")
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = args.shape or ("base" if device.type == "cuda" else "small")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch_tokens = 32768 if device.type == "cuda" else 8192
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), shape, device, dtype, batch_tokens)))
        return

    rows = []
    for length in map(int, args.lengths.split(",")):
        result = {}
        for impl in IMPLEMENTATIONS:
            command = [sys.executable, __file__, "--device", args.device, "--shape", shape, "--one", impl, str(length)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                result[impl] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
            else:
                result[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((length, result))

    print(f"# encode benchmark: {shape} shape (random weights), {str(dtype).removeprefix('torch.')}, {device_name(device)}")
    print("| L | batch | ours tok/s | naive tok/s | speed ratio | ours peak MB | naive peak MB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for length, r in rows:
        ours, naive = r["ours"], r["naive"]
        if "error" in ours or "error" in naive:
            print(f"| {length} | | {ours.get('tokens_per_s', ours.get('error'))} | {naive.get('tokens_per_s', naive.get('error'))} | | | | |")
            continue
        print(
            f"| {length} | {ours['batch']} | {ours['tokens_per_s']:,.0f} | {naive['tokens_per_s']:,.0f} | "
            f"{ours['tokens_per_s'] / naive['tokens_per_s']:.2f}x | {ours['peak_bytes'] / 2**20:,.0f} | "
            f"{naive['peak_bytes'] / 2**20:,.0f} | {ours['peak_bytes'] / naive['peak_bytes']:.3f}x |"
        )


if __name__ == "__main__":
    main()
