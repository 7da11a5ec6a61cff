"""CPU: our best PyTorch path vs ONNX Runtime fp32 and int8, tokens/s and peak memory, in one run.

Random weights of the jina-embeddings-v2-small-en shape (4 layers, 512 hidden, 8 heads, 2048
GEGLU intermediate): throughput and memory only, never quality; or ``--model FOLDER`` (the shipped
model: its int8 cosine is then the one that matters). Columns:

- torch: ``JinaBertModel.pool`` in fp32, blockwise scaled-dot-product attention (the encoder's CPU path);
- ORT fp32 plain: ``export-onnx`` without ``--optimize`` (standard ONNX operators only);
- ORT fp32: ``export-onnx --optimize`` (SkipLayerNorm, Gelu, ALiBi attention → MultiHeadAttention);
- ORT int8: ``export-onnx --optimize --quantize int8`` (dynamic int8 MatMuls, per-channel weights).

Every measurement runs in its own process (one model, one length) on batches of
``--batch-tokens`` tokens, at least 3 calls after a warm-up. Two measures, since the machine may
be shared with other work: wall-clock tokens/s with all cores (per length, ``--rounds`` rounds
go over the configurations in turn and the best call counts), and tokens per CPU-second with
one thread (the process's CPU time per call, which waiting for a core does not inflate).
Peak memory at ``--rss-length`` is the process's peak RSS after one call on one sequence (every
process imports torch and numpy, so the baselines compare). The int8 row's cosine compares int8 with fp32 ONNX vectors of real English paragraphs.

The GEMM ceiling bounds what int8 can gain on this CPU: one MatMul of the model's largest shape
(the GEGLU up-projection, 2048 tokens x 512 -> 4096) in torch fp32, ORT fp32 and ORT dynamic int8
(quantised as ``export-onnx --quantize int8`` does), one thread, operations per CPU-second. Without
VNNI (AVX512-VNNI or AVX-VNNI) x86 int8 GEMM multiplies with VPMADDUBSW + VPMADDWD, which on some
cores is no faster than fp32 FMA, and MatMuls are most of the model's time. The profile line
says where ONNX Runtime spends its time (``SessionOptions.enable_profiling``, node time per
operator type after ONNX Runtime's own graph optimisations, one thread, ``--profile-length``).

    python benchmarks/onnx.py --batch-tokens 4096   # about 30 minutes on 2 shared cores (load 4-6)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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

from common import device_name, english_paragraphs, random_model_folder  # noqa: E402

CONFIGS = ("torch", "ort-fp32-plain", "ort-fp32", "ort-int8")
EXPORTS = {"ort-fp32-plain": {}, "ort-fp32": {"optimize": True}, "ort-int8": {"optimize": True, "quantize": "int8"}}


def run_config(config: str, work: Path, input_ids: np.ndarray, attention_mask: np.ndarray, threads: int):
    """A function running one batch of ``config`` on ``threads`` threads, built once."""
    if config == "torch":
        from jina_rag import load_model

        torch.set_num_threads(threads)
        model = load_model(work / "model")
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)

        def forward():
            with torch.inference_mode():
                model.pool(ids, mask)

        return forward
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(work / config / "model.onnx"), options, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    return lambda: session.run(["sentence_embedding"], feeds)


def measure(config: str, work: Path, length: int, batch_tokens: int, memory: bool, threads: int) -> dict:
    batch = 1 if memory else max(1, batch_tokens // length)
    input_ids = np.random.default_rng(0).integers(1000, 30000, (batch, length), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    forward = run_config(config, work, input_ids, attention_mask, threads)
    if memory:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        forward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_bytes": peak * 1024, "before_bytes": before * 1024}
    forward()  # warm-up
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < 3 or time.perf_counter() - start < 3.0:
        begin, begin_cpu = time.perf_counter(), time.process_time()
        forward()
        wall.append(time.perf_counter() - begin)
        cpu.append(time.process_time() - begin_cpu)
    tokens = batch * length
    return {"tokens_per_s": tokens / min(wall), "tokens_per_cpu_s": tokens / float(np.median(cpu)), "batch": batch, "calls": len(wall)}


def gemm_ceiling(work: Path, tokens: int = 2048, hidden: int = 512, out: int = 4096) -> dict:
    """Operations per CPU-second of one MatMul, one thread: torch fp32, ORT fp32 and ORT dynamic int8."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from jina_rag.onnx_export import _dynamic_int8

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((hidden, out)) * 0.02).astype(np.float32)
    x = rng.standard_normal((tokens, hidden)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", out])], [numpy_helper.from_array(weight, "weight")],
    )
    fp32_file, int8_file = work / "gemm-fp32.onnx", work / "gemm-int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32_file))
    _dynamic_int8(fp32_file, int8_file)

    def ops_per_cpu_s(forward) -> float:
        forward()
        cpu = []
        for _ in range(5):
            begin = time.process_time()
            forward()
            cpu.append(time.process_time() - begin)
        return 2 * tokens * hidden * out / float(np.median(cpu))

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {name: onnxruntime.InferenceSession(str(f), options, providers=["CPUExecutionProvider"]) for name, f in (("ort-fp32", fp32_file), ("ort-int8", int8_file))}
    x_torch, weight_torch = torch.from_numpy(x), torch.from_numpy(weight)
    rates = {"torch": ops_per_cpu_s(lambda: x_torch @ weight_torch)}
    rates |= {name: ops_per_cpu_s(lambda s=session: s.run(None, {"x": x})) for name, session in sessions.items()}
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    return {"rates": rates, "shape": f"{tokens}x{hidden} @ {hidden}x{out}", "int8_flags": sorted(f for f in flags if "vnni" in f or f.startswith("amx") or f == "avx2")}


def profile(config: str, work: Path, length: int, batch_tokens: int) -> dict:
    """Share of ONNX Runtime's node time per operator type (after its runtime fusions), one thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"profile-{config}")
    session = onnxruntime.InferenceSession(str(work / config / "model.onnx"), options, providers=["CPUExecutionProvider"])
    batch = max(1, batch_tokens // length)
    input_ids = np.random.default_rng(0).integers(1000, 30000, (batch, length), dtype=np.int64)
    feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
    for _ in range(2):
        session.run(["sentence_embedding"], feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    time_per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            time_per_op[op] = time_per_op.get(op, 0.0) + event["dur"]
    total = sum(time_per_op.values())
    return {op: round(t / total, 3) for op, t in sorted(time_per_op.items(), key=lambda item: -item[1]) if t / total >= 0.01}


def in_subprocess(*arguments: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(work: Path, model: str | None) -> dict:
    """The model folder (``model`` copied, else random weights) and its three exports (kept when ``work`` has them)."""
    import shutil

    from jina_rag.onnx_export import export_onnx

    if model:
        folder = work / "model"
        if not folder.is_dir():
            shutil.copytree(model, folder)
    else:
        folder = random_model_folder("small", work / "model")
    exporters = {}
    for config, options in EXPORTS.items():
        if not (work / config / "model.onnx").is_file():
            result = export_onnx(folder, work / config, show_progress=False, **options)
            exporters[config] = f"{result.exporter}, {result.operators.get('MultiHeadAttention', 0)} fused attention nodes"
    return {"exporters": exporters, "int8_cosine": int8_cosine(work)}


def int8_cosine(work: Path) -> float:
    """Smallest cosine between int8 and fp32 ONNX vectors of real English paragraphs."""
    from jina_rag import JinaEncoder

    texts = english_paragraphs(HERE.parent)
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
    parser.add_argument("--model", default=None, help="a model folder to measure (default: random weights of the small shape)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for the wall-clock measure (default: all cores)")
    parser.add_argument("--one", nargs=3, metavar=("CONFIG", "LENGTH", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-length", type=int, default=512, help="length of the profiled ONNX Runtime runs")
    parser.add_argument("--profile", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        config, length, threads = args.one
        print(json.dumps(measure(config, args.work, int(length), args.batch_tokens, args.memory, int(threads))))
        return
    if args.prepare:
        print(json.dumps(prepare(args.work, args.model)))
        return
    if args.gemm:
        print(json.dumps(gemm_ceiling(args.work)))
        return
    if args.profile:
        print(json.dumps(profile(args.profile, args.work, args.profile_length, args.batch_tokens)))
        return

    with tempfile.TemporaryDirectory(prefix="jina-rag-onnx-bench-") as temporary:
        work = args.work or Path(temporary)
        common = ["--work", str(work), "--batch-tokens", str(args.batch_tokens)]
        # Exports and the cosine run in a process of their own, so their memory is not held here.
        prepared = in_subprocess(*common, "--prepare", *(["--model", args.model] if args.model else []))
        if "error" in prepared:
            sys.exit(f"preparing the model and its exports failed: {prepared['error']}")
        print(f"prepared: {prepared}", flush=True)
        loads = [os.getloadavg()[0]]
        wall, cpu = {}, {}
        for length in map(int, args.lengths.split(",")):
            rounds = [
                {c: in_subprocess(*common, "--one", c, str(length), str(args.threads)) for c in CONFIGS}
                for _ in range(args.rounds)
            ]
            wall[length] = {c: max((r[c] for r in rounds), key=lambda m: m.get("tokens_per_s", 0)) for c in CONFIGS}
            cpu[length] = {c: in_subprocess(*common, "--one", c, str(length), "1") for c in CONFIGS}
            loads.append(os.getloadavg()[0])
            print(f"L={length}: wall {wall[length]}\n  cpu {cpu[length]}", flush=True)
        memory = {c: in_subprocess(*common, "--one", c, str(args.rss_length), str(args.threads), "--memory") for c in CONFIGS}
        gemm = in_subprocess(*common, "--gemm")
        profiles = {c: in_subprocess(*common, "--profile", c, "--profile-length", str(args.profile_length)) for c in ("ort-fp32", "ort-int8")}
        sizes = {c: (work / c / "model.onnx").stat().st_size for c in EXPORTS}
        weights = (work / "model" / "model.safetensors").stat().st_size

    import onnxruntime

    print()
    shape = f"model {args.model}" if args.model else "small shape (random weights: throughput and memory only)"
    print(f"# ONNX Runtime vs PyTorch on CPU: {shape}, "
          f"{device_name(torch.device('cpu'))}, {platform.machine()}, {datetime.date.today()}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
          f"load average {min(loads):.1f}-{max(loads):.1f} during the run")
    table(wall, "tokens_per_s", f"wall-clock tokens/s, {args.threads} threads, best call")
    table(cpu, "tokens_per_cpu_s", "tokens per CPU-second, 1 thread, median call")
    print()
    print(f"| peak RSS, L={args.rss_length}, batch 1 | " + " | ".join(CONFIGS) + " | " + " | ".join(f"{c} / torch" for c in CONFIGS[1:]) + " |")
    print("|---" * (2 * len(CONFIGS)) + "|")
    peaks = [memory[c].get("peak_bytes") for c in CONFIGS]
    cells = [f"{p / 2**20:,.0f} MB" if p is not None else memory[c].get("error", "?") for c, p in zip(CONFIGS, peaks)]
    ratios = [f"{p / peaks[0]:.2f}x" if p and peaks[0] else "" for p in peaks[1:]]
    print("| | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    before = ", ".join(f"{c} {memory[c]['before_bytes'] / 2**20:,.0f} MB" for c in CONFIGS if "before_bytes" in memory[c])
    print(f"\nPeak RSS of the whole process (Python, torch and the model included); before the call: {before}.")
    files = ", ".join(f"{c} {size / 1e6:.1f} MB" for c, size in sizes.items())
    print(f"Files: {files} (model.safetensors {weights / 1e6:.1f} MB). Exports: {prepared['exporters'] or 'reused'}. "
          f"int8 vs fp32 cosine on real English paragraphs (min): {prepared['int8_cosine']:.4f}.")
    if "rates" in gemm:
        rates = gemm["rates"]
        cells = ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in rates.items())
        print(f"GEMM ceiling ({gemm['shape']}, 1 thread, G operations per CPU-second): {cells}; ort-int8 / ort-fp32 "
              f"{rates['ort-int8'] / rates['ort-fp32']:.2f}x, ort-int8 / torch {rates['ort-int8'] / rates['torch']:.2f}x "
              f"(CPU flags: {', '.join(gemm['int8_flags']) or 'none of avx2, vnni, amx'}).")
    else:
        print(f"GEMM ceiling failed: {gemm['error']}")
    for config, shares in profiles.items():
        cells = ", ".join(f"{op} {share:.0%}" for op, share in shares.items()) if "error" not in shares else shares["error"]
        print(f"Profile of {config} at L={args.profile_length} (node time, 1 thread): {cells}.")


def table(results: dict, key: str, title: str) -> None:
    print()
    print(f"| L ({title}) | batch | " + " | ".join(CONFIGS) + " | " + " | ".join(f"{c} / torch" for c in CONFIGS[1:]) + " |")
    print("|---" * (2 * len(CONFIGS) + 1) + "|")
    for length, row in results.items():
        rates = [row[c].get(key) for c in CONFIGS]
        cells = [f"{r:,.0f}" if r else row[c].get("error", "?") for c, r in zip(CONFIGS, rates)]
        ratios = [f"{r / rates[0]:.2f}x" if r and rates[0] else "" for r in rates[1:]]
        print(f"| {length} | {row['torch'].get('batch', '')} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
