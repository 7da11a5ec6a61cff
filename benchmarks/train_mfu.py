"""MLM-stage training throughput and MFU of JinaBERT on one CUDA GPU.

    PYTHONPATH=. python benchmarks/train_mfu.py [--batch-size 32] [--seq-len 512] [--variants ...]

One optimizer step is what ``training.mlm`` does per micro-batch: bf16 autocast forward of
``JinaBertForMaskedLM`` with 30% of the tokens masked (logits for masked positions only),
backward, gradient clipping, fused AdamW (fp32 master weights). Batches are random packed token
ids already on the GPU, so the figure is the model's, not the data pipeline's.

MFU = 3 × (2·(4H² + 3·I·H)·layers + 4·L·H·layers) × real tokens/s ÷ peak, where the peak is
the bf16 throughput of an 8192³ matmul measured in the same run (``JinaBertConfig.flops_per_token``
gives the bracket). Each attention variant is measured side by side on the same batch.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_tflops  # noqa: E402

from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM  # noqa: E402
from training.mlm import masked_positions, mlm_metrics  # noqa: E402

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30528)
# name: (attention implementation, torch.compile the whole model, masked positions given ahead)
VARIANTS = {
    "blockwise": ("blockwise", False, True),
    "flex": ("flex", False, True),
    "flex+compile": ("flex", True, True),
    "flex+compile+host-sync": ("flex", True, False),
    "blockwise+compile": ("blockwise", True, True),
}
MASK_ID, FIRST_WORD_ID = 103, 1000


def random_mlm_batch(batch_size: int, seq_len: int, vocab: int, mask_prob: float = 0.3) -> dict[str, torch.Tensor]:
    generator = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(FIRST_WORD_ID, vocab, (batch_size, seq_len), device="cuda", generator=generator)
    selected = torch.rand(ids.shape, device="cuda", generator=generator) < mask_prob
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    return {
        "input_ids": torch.where(selected, torch.full_like(ids, MASK_ID), ids),
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "masked_positions": masked_positions(labels.cpu()).cuda(),
    }


def measure(variant: str, batch: dict[str, torch.Tensor], warmup: int, steps: int, profile: int = 0) -> dict[str, float]:
    attention, compiled, static_positions = VARIANTS[variant]
    if not static_positions:
        batch = {k: v for k, v in batch.items() if k != "masked_positions"}
    torch.manual_seed(0)
    model = JinaBertForMaskedLM(JinaBertConfig(**BASE), attn_implementation=attention).cuda().train()
    module = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = mlm_metrics(module, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    torch.cuda.reset_peak_memory_stats()
    compile_start = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warmup_seconds = time.perf_counter() - compile_start
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}")
    if profile:
        print_profile(variant, step, profile)
    result = {
        "step_ms": seconds * 1e3,
        "tokens_per_s": batch["attention_mask"].sum().item() / seconds,
        "warmup_s": warmup_seconds,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
    }
    del model, module, optimizer
    gc.collect()
    torch.cuda.empty_cache()
    return result


def print_profile(variant: str, step, steps: int, top: int = 25) -> None:
    """Where a step's GPU time goes: the kernels that take most of it, over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    print(f"\n{variant}: GPU kernel time per step {total / steps / 1e3:.1f} ms; top {top} kernels:")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:top]:
        print(f"  {e.self_device_time_total / steps / 1e3:7.2f} ms  {e.self_device_time_total / total:5.1%}  x{e.count // steps:<4} {e.key[:110]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--variants", nargs="+", default=["blockwise", "flex", "flex+compile"], choices=list(VARIANTS))
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS", help="after timing, profile this many steps of each variant")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("train_mfu.py measures a CUDA GPU; none is available here", file=sys.stderr)
        return 2
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = True
    config = JinaBertConfig(**BASE)
    peak = matmul_peak_tflops(torch.device("cuda"))
    flops_per_token = 3 * config.flops_per_token(args.seq_len)
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | transformers {transformers.__version__}")
    print(f"bf16 matmul peak (8192^3, measured): {peak:.0f} TFLOP/s")
    print(f"base config: {config.num_hidden_layers} layers, {config.hidden_size} hidden, {config.num_attention_heads} heads, "
          f"{config.intermediate_size} intermediate; {args.batch_size} x {args.seq_len} tokens per step; "
          f"training FLOPs per token {flops_per_token / 1e9:.3f} G")
    batch = random_mlm_batch(args.batch_size, args.seq_len, config.vocab_size)
    rows = []
    for variant in args.variants:
        try:
            result = measure(variant, batch, args.warmup, args.steps, args.profile)
        except Exception as error:  # one failing variant (e.g. a compiler error) must not hide the others
            print(f"{variant}: failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr)
            continue
        achieved = flops_per_token * result["tokens_per_s"] / 1e12
        rows.append((variant, result, achieved, achieved / peak))
    if not rows:
        return 1
    baseline = rows[0][1]["tokens_per_s"]
    print()
    print("| variant | step (ms) | tokens/s | vs first | model TFLOP/s | MFU | peak mem (GiB) | warmup (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, result, achieved, mfu in rows:
        print(f"| {variant} | {result['step_ms']:.1f} | {result['tokens_per_s']:,.0f} | {result['tokens_per_s'] / baseline:.2f}x | "
              f"{achieved:.0f} | {mfu:.1%} | {result['peak_memory_gb']:.1f} | {result['warmup_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
