"""CPU: which int8 quantisation of the shipped model pays, and at what cosine: ONNX Runtime's options side by side.

From one ``export-onnx --optimize`` fp32 graph of the model, each variant is made with what ONNX
Runtime's quantiser offers, then measured in this one process against the fp32 graph and our
PyTorch path (fp32, the encoder's CPU attention):

- ``dynamic, GEGLU fp32``: ``quantize_dynamic`` (int8 weights per output channel, uint8 activations
  per tensor at run time) with the GEGLU input projections left fp32 (``--quantize int8`` before
  issue #29);
- ``dynamic, all``: the same with every MatMul in int8 (broken on the shipped model);
- ``rewrite, all``: the GEGLU blocks first rewritten into the same fp32 function that int8 keeps
  (``_int8_friendly_geglu``: ones-vector projection, SmoothQuant), then every MatMul in int8: what
  ``--quantize int8`` does now; ``rewrite, wo fp32``: the same with the feed-forward outputs fp32;
- ``nbits8 bB``: ``MatMulNBitsQuantizer`` with 8-bit weights in blocks of B along the input
  dimension and ``accuracy_level=4`` (activations quantised to int8 per block at run time, int8
  dot products: VNNI/AMX where the CPU has them): much finer activation scales than per tensor;
- ``nbits4 b32``: the same with 4-bit weights.

Cosine: min and mean over real English paragraphs, against the fp32 graph. Speed: tokens/s of
batches of ``--batch-tokens`` at each length, best of 3 calls after a warm-up, ``--threads``
threads (default: every core).

    python benchmarks/onnx_int8.py --work /tmp/int8   # the shipped model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchmarks/onnx.py would shadow the onnx library: keep this folder behind site-packages.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import device_name, english_paragraphs  # noqa: E402

SHIPPED = HERE.parent / "jina_rag" / "models" / "jina-rag-small-en"


def make_variants(model: Path, work: Path) -> dict[str, Path]:
    """The fp32 export and every int8 variant of it (kept when ``work`` has them)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from jina_rag.modeling import JinaBertConfig
    from jina_rag.loading import load_tokenizer
    from jina_rag.onnx_export import (
        _calibration_batches, _dynamic_int8, _ffn_output_matmuls, _gated_matmuls, _int8_friendly_geglu, export_onnx,
    )

    fp32 = work / "ort-fp32"
    if not (fp32 / "model.onnx").is_file():
        export_onnx(model, fp32, optimize=True, show_progress=False)
    source = fp32 / "model.onnx"
    config = JinaBertConfig.from_json_file(model / "config.json")
    files = {"fp32": source}
    rewritten = work / "rewritten-fp32.onnx"
    if not rewritten.is_file():
        _int8_friendly_geglu(source, rewritten, _calibration_batches(load_tokenizer(model), config.vocab_size))
    plans = {
        "dynamic, GEGLU fp32": lambda target: _dynamic_int8(source, target, _gated_matmuls(source, config)),
        "dynamic, all": lambda target: _dynamic_int8(source, target),
        "rewrite, all": lambda target: _dynamic_int8(rewritten, target),
        "rewrite, wo fp32": lambda target: _dynamic_int8(rewritten, target, _ffn_output_matmuls(rewritten, config)),
    }
    for bits, block in ((8, 32), (8, 128), (4, 32)):
        def nbits(target: Path, bits: int = bits, block: int = block) -> None:
            quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=bits, block_size=block, is_symmetric=True, accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
        plans[f"nbits{bits} b{block}"] = nbits
    for name, make in plans.items():
        target = work / (name.replace(",", "").replace(" ", "-") + ".onnx")
        if not target.is_file():
            try:
                make(target)
            except Exception as error:  # an ONNX Runtime without that quantiser or kernel: say so, go on
                print(f"{name}: not made ({type(error).__name__}: {str(error)[:200]})", flush=True)
                continue
        files[name] = target
    return files


def session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def best_rate(forward, tokens: int) -> float:
    forward()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        forward()
        best = min(best, time.perf_counter() - started)
    return tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--lengths", default="512,2048")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import onnxruntime

    from jina_rag import JinaEncoder, load_model

    args.work.mkdir(parents=True, exist_ok=True)
    files = make_variants(args.model, args.work)
    encoder = JinaEncoder(args.work / "ort-fp32", backend="onnx")
    texts = english_paragraphs(HERE.parent)
    token_ids = [ids[: 510] for ids in encoder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    prefix, suffix = encoder.special_tokens
    rows = [prefix + ids + suffix for ids in token_ids]
    width = max(map(len, rows))
    ids = np.array([row + [0] * (width - len(row)) for row in rows], dtype=np.int64)
    mask = (np.arange(width)[None, :] < np.array([len(r) for r in rows])[:, None]).astype(np.int64)

    def vectors(path: Path) -> np.ndarray:
        out = session(path, args.threads).run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    reference = vectors(files["fp32"])
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    lengths = [int(n) for n in args.lengths.split(",")]
    print(f"{device_name(torch.device('cpu'))}; {args.threads} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; model {args.model}; {len(texts)} paragraphs for the cosine")
    print("| variant | min cosine | mean cosine | " + " | ".join(f"tok/s @{n}" for n in lengths) + " | "
          + " | ".join(f"vs torch @{n}" for n in lengths) + " | file MB |")
    print("|---" * (4 + 2 * len(lengths)) + "|")
    figures = {}
    rng = np.random.default_rng(0)
    batches = {n: rng.integers(1000, 30000, (max(1, args.batch_tokens // n), n), dtype=np.int64) for n in lengths}
    torch_rates = {}
    for n, batch in batches.items():
        tensor_ids, tensor_mask = torch.from_numpy(batch), torch.ones_like(torch.from_numpy(batch))

        def forward(tensor_ids=tensor_ids, tensor_mask=tensor_mask):
            with torch.inference_mode():
                model.pool(tensor_ids, tensor_mask)

        torch_rates[n] = best_rate(forward, batch.size)
    print("| torch fp32 | 1 | 1 | " + " | ".join(f"{torch_rates[n]:,.0f}" for n in lengths) + " | "
          + " | ".join("1.00×" for _ in lengths) + " | |", flush=True)
    for name, path in files.items():
        got = vectors(path)
        cosines = (got * reference).sum(axis=1)
        runner = session(path, args.threads)
        rates = {n: best_rate(lambda b=batch: runner.run(["sentence_embedding"], {"input_ids": b, "attention_mask": np.ones_like(b)}), batch.size)
                 for n, batch in batches.items()}
        figures[name] = {"min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()), "tokens_per_s": rates,
                         "vs_torch": {n: rates[n] / torch_rates[n] for n in lengths}, "bytes": path.stat().st_size}
        print(f"| {name} | {cosines.min():.4f} | {cosines.mean():.5f} | " + " | ".join(f"{rates[n]:,.0f}" for n in lengths)
              + " | " + " | ".join(f"{rates[n] / torch_rates[n]:.2f}×" for n in lengths) + f" | {path.stat().st_size / 1e6:.1f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"torch": torch_rates, "variants": figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
