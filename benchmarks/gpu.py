"""GPU throughput, MFU and peak memory: our packed FlexAttention path vs what users run today.

One table from one run, for the base and small shapes (random weights: speed only), bf16:
  (a) ours: packed rows without padding, ALiBi inside FlexAttention (``JinaEncoder``'s CUDA path,
      with the opt-in ``alibi_cutoff=ALIBI_CUTOFF``: key tiles whose ALiBi penalty alone is >= 64 logits are
      skipped per head), from token ids, and end to end from text (tokenisation included) for the
      mixed corpus; "tiles" is the share of the doc mask's tiles it computes (kept tiles over all
      heads / heads x tiles of the exact mask, first batch of each case);
  (a) exact: the path ``JinaEncoder`` runs by default, ``alibi_cutoff=None`` (every tile computed):
      FlexAttention, and with flash-attn-4 installed FlashAttention-4 for rows holding a sequence
      of at least ``FLASH_MIN_TOKENS`` tokens;
  (a) flex: the same, FlexAttention for every row (``attn_implementation="flex"``);
  (a) flash: the same, FlashAttention-4's varlen kernel with the ALiBi ``score_mod`` for every row
      (``attn_implementation="flash"``; needs flash-attn-4);
  (b) SDPA with a materialised [B, heads, L, L] bias over length-sorted, padded batches
      (how the published remote code runs);
  (c) sentence-transformers with a standard BERT of the same size (512 max), from text,
      on the texts it can take (L <= 512).
MFU = forward FLOPs per real token, 2·(4H² + 3·I·H)·layers + 4·L·H·layers, × tokens/s ÷ the
bf16 matmul peak measured in this run. The FLOPs count full attention for every method, so (a)'s
MFU is a formula MFU: the tiles it skips are counted as work done. A row's a/b and a/c compare that
row's (a) variant with (b) and (c).

A fixed-length case is ``--rows`` packed rows of tokens, encoded in one call (eight: a bulk
job: a call's first row waits for the host to pack, copy and launch it, and the last row's results
for pooling and the copy back, about 3.6 ms a call on an H200 (2026-12-03: two rows 71.7 ms, their
compiled forwards on resident inputs 68.1 ms); that is latency, and two rows a call charged it to
throughput four times over).

    python benchmarks/gpu.py [--shapes base,small] [--lengths 128,512,2048,8192] [--docs 3000] [--rows 8] [--skip b,c,cutoff,exact,flex,flash,text]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SHAPES,
    device_name,
    lognormal_lengths,
    matmul_peak_tflops,
    peak_memory_during,
    random_model_folder,
    texts_of_lengths,
    timed,
)

from jina_rag import JinaEncoder, load_model  # noqa: E402
from jina_rag.batching import pack_batch, pad_batch, plan_batches  # noqa: E402
from jina_rag.encoder import TorchBackend, packed_width  # noqa: E402
from jina_rag.attention.flash import flash_alibi_available  # noqa: E402
from jina_rag.attention.flex import ALIBI_CUTOFF, packed_block_mask  # noqa: E402

BATCH_TOKENS = 65536


def flops(config, lengths) -> float:
    """Forward FLOPs of a set of sequences (real tokens only)."""
    return float(sum(n * config.flops_per_token(n) for n in lengths))


def ours_from_ids(backend: TorchBackend, sequences, budget=BATCH_TOKENS):
    batches = plan_batches([len(s) for s in sequences], budget, packed=True)

    def run():
        outs = [backend.embed([sequences[i] for i in b]) for b in batches]
        torch.cat(outs).cpu()

    return run


def tile_fraction(encoder: JinaEncoder, sequences, budget=BATCH_TOKENS) -> float:
    """Share of the exact doc mask's tiles (over all heads) that (a) computes, for its first packed batch."""
    model = encoder.backend.model
    first = plan_batches([len(s) for s in sequences], budget, packed=True)[0]
    batch = [sequences[i] for i in first]
    _, sequence_ids = pack_batch(batch, packed_width(sum(map(len, batch))), 0)
    cutoff = encoder.backend.batching.alibi_cutoff
    if cutoff is None:
        return 1.0
    sequence_ids = torch.from_numpy(sequence_ids)
    dense = packed_block_mask(sequence_ids).to_dense().sum().item() * model.config.num_attention_heads
    kept = packed_block_mask(sequence_ids, model.alibi_slopes.cpu(), cutoff).to_dense().sum().item()
    return kept / dense


def sdpa_padded(model, sequences, budget=BATCH_TOKENS):
    batches = plan_batches([len(s) for s in sequences], budget)
    tensors = []
    for b in batches:
        ids, mask = pad_batch([sequences[i] for i in b], 0)
        tensors.append((torch.from_numpy(ids).cuda(), torch.from_numpy(mask).cuda()))

    def run():
        with torch.inference_mode():
            torch.cat([model.pool(ids, mask) for ids, mask in tensors]).cpu()

    return run


def sentence_transformers_run(shape: str, folder: Path, texts, budget=BATCH_TOKENS):
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    bert_dir = folder / "bert"
    if not (bert_dir / "config.json").is_file():
        s = SHAPES[shape]
        config = BertConfig(
            hidden_size=s["hidden_size"], num_hidden_layers=s["num_hidden_layers"],
            num_attention_heads=s["num_attention_heads"], intermediate_size=s["intermediate_size"],
            max_position_embeddings=512, vocab_size=30522,
        )
        BertModel(config).save_pretrained(bert_dir)
        from common import tokenizer

        tokenizer().save_pretrained(str(bert_dir))
    transformer = models.Transformer(str(bert_dir), max_seq_length=512, model_args={"attn_implementation": "sdpa"})
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cuda").to(torch.bfloat16)
    longest = max(len(t.split()) + 2 for t in texts)
    batch_size = max(1, budget // min(512, longest))

    def run():
        model.encode(texts, batch_size=batch_size, convert_to_numpy=True)

    return run


def measure(label: str, run, tokens: int, total_flops: float, peak_tflops: float) -> dict:
    """One method on one case; printed at once, so a run cut short by a timeout still reports what it measured."""
    started = time.perf_counter()
    peak = peak_memory_during(run, torch.device("cuda"))
    # At least two seconds of passes: a 512-token case is one 75 ms pass, so the earlier cap of
    # five passes timed it over 0.4 s.
    seconds = timed(run, torch.device("cuda"), min_seconds=2.0, max_runs=50)
    rate = tokens / seconds
    result = {"tok_s": rate, "mfu": total_flops / seconds / (peak_tflops * 1e12), "peak_gb": peak / 1e9}
    print(f"{label}: {rate:,.0f} tok/s, MFU {result['mfu']:.0%}, peak {result['peak_gb']:.2f} GB "
          f"({time.perf_counter() - started:.0f} s with warm-up)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="base,small")
    parser.add_argument("--lengths", default="128,512,2048,8192")
    parser.add_argument("--docs", type=int, default=3000, help="documents in the mixed-length corpus")
    parser.add_argument("--rows", type=int, default=8,
                        help="packed rows of 65,536 tokens per fixed-length case (before 2026-12-03: 2)")
    parser.add_argument("--skip", default="", help="comma list of methods to skip: b,c,cutoff,exact,flex,flash,text")
    args = parser.parse_args()
    device = torch.device("cuda")
    peak_tflops = matmul_peak_tflops(device)
    skip = set(args.skip.split(","))
    if "flash" not in skip and not flash_alibi_available(device):
        print("flash-attn-4 is not installed (or this GPU is not Hopper/Blackwell): no (a) flash rows", flush=True)
        skip.add("flash")
    rows = []
    work = Path(tempfile.mkdtemp())
    for shape in args.shapes.split(","):
        folder = random_model_folder(shape, work / shape)
        encoder = JinaEncoder.from_pretrained(folder, device="cuda", dtype="bf16", alibi_cutoff=ALIBI_CUTOFF)
        exact = None if "exact" in skip else JinaEncoder.from_pretrained(folder, device="cuda", dtype="bf16", alibi_cutoff=None)
        flex = None if "flex" in skip else TorchBackend(
            load_model(folder, device="cuda", dtype=torch.bfloat16, attn_implementation="flex"), device)
        flash = None if "flash" in skip else TorchBackend(
            load_model(folder, device="cuda", dtype=torch.bfloat16, attn_implementation="flash"), device)
        config = encoder.backend.model.config
        reference = load_model(folder, device="cuda", dtype=torch.bfloat16, attn_implementation="sdpa")
        cases = [(f"L={n}", [n] * max(1, args.rows * BATCH_TOKENS // n)) for n in map(int, filter(None, args.lengths.split(",")))]
        cases.append((f"mixed ({args.docs} docs)", lognormal_lengths(args.docs)))
        for name, lengths in cases:
            texts = texts_of_lengths(lengths)
            sequences = encoder.tokenizer(texts, verbose=False)["input_ids"]
            real = [len(s) for s in sequences]
            tokens, total = sum(real), flops(config, real)
            row = {"shape": shape, "case": name, "tokens": tokens}
            if "cutoff" not in skip:
                row["a"] = measure(f"{shape} {name} (a) cutoff", ours_from_ids(encoder.backend, sequences),
                                   tokens, total, peak_tflops)
                row["a"]["tiles"] = tile_fraction(encoder, sequences)
            if exact is not None:
                row["a_exact"] = measure(f"{shape} {name} (a) exact", ours_from_ids(exact.backend, sequences),
                                         tokens, total, peak_tflops)
            if flex is not None:
                row["a_flex"] = measure(f"{shape} {name} (a) flex", ours_from_ids(flex, sequences), tokens, total, peak_tflops)
            if flash is not None:
                row["a_flash"] = measure(f"{shape} {name} (a) flash", ours_from_ids(flash, sequences), tokens, total, peak_tflops)
            if name.startswith("mixed") and "text" not in skip:
                row["a_text"] = measure(f"{shape} {name} (a) from text",
                                        lambda: encoder.encode(texts, batch_tokens=BATCH_TOKENS, show_progress=False),
                                        tokens, total, peak_tflops)
            if "b" not in skip:
                try:
                    row["b"] = measure(f"{shape} {name} (b)", sdpa_padded(reference, sequences), tokens, total, peak_tflops)
                except torch.OutOfMemoryError:
                    row["b"] = None
                torch.cuda.empty_cache()
            if "c" not in skip and max(real) <= 512:
                row["c"] = measure(f"{shape} {name} (c)", sentence_transformers_run(shape, work / shape, texts), tokens, total, peak_tflops)
            rows.append(row)
            print(row, flush=True)

    print()
    print(f"# GPU benchmark, {device_name(device)}, {datetime.date.today()}, torch {torch.__version__}, "
          f"bf16 matmul peak {peak_tflops:.0f} TFLOP/s (measured)")
    print("| shape | case | tokens | (a) ours tok/s | MFU | peak GB | tiles | (b) SDPA+bias tok/s | MFU | peak GB "
          "| a/b speed | a/b memory | (c) ST BERT tok/s | MFU | a/c |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, c = r.get("b"), r.get("c")
        variants = [(label, r[key]) for key, label in (("a", ""), ("a_exact", ", (a) exact"), ("a_flex", ", (a) flex"),
                                                         ("a_flash", ", (a) flash"))
                    if key in r]
        for index, (label, a) in enumerate(variants):
            cells = [r["shape"], r["case"] + label, f"{r['tokens']:,}" if index == 0 else "",
                     f"{a['tok_s']:,.0f}", f"{a['mfu']:.0%}", f"{a['peak_gb']:.2f}", f"{a.get('tiles', 1.0):.0%}"]
            cells += [f"{b['tok_s']:,.0f}", f"{b['mfu']:.0%}", f"{b['peak_gb']:.2f}", f"{a['tok_s'] / b['tok_s']:.2f}x",
                      f"{a['peak_gb'] / b['peak_gb']:.2f}x"] if b else ["OOM/skipped", "", "", "", ""]
            cells += [f"{c['tok_s']:,.0f}", f"{c['mfu']:.0%}", f"{a['tok_s'] / c['tok_s']:.2f}x"] if c else ["n/a", "", ""]
            if index and b:
                cells[7:10] = ["", "", ""]  # (b) is printed once, on the first (a) row
            if index and c:
                cells[12:14] = ["", ""]
            print("| " + " | ".join(cells) + " |")
        if "a_text" in r:
            t = r["a_text"]
            print(f"| {r['shape']} | {r['case']}, ours from text (tokenisation included) | | {t['tok_s']:,.0f} | "
                  f"{t['mfu']:.0%} | {t['peak_gb']:.2f} | | | | | | | | | |")

if __name__ == "__main__":
    main()
