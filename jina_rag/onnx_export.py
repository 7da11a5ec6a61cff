"""Export a JinaBERT model to ONNX, then optionally optimise it for ONNX Runtime and quantise it to int8.

The exported folder is what ``JinaEncoder(folder, backend="onnx")`` and optimum's
``ORTModelForFeatureExtraction`` load: ``model.onnx``, ``config.json`` and the tokenizer files.

The graph takes ``input_ids`` and ``attention_mask`` (dynamic batch and sequence axes) and returns
``last_hidden_state`` and the mean-pooled ``sentence_embedding``. It comes from the model's eager
attention: the ALiBi bias is built once per forward from the actual sequence length (Range, Sub,
Abs, Mul) and shared by every layer, so the file holds the weights and nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from jina_rag.errors import InvalidInputError, JinaRagError
from jina_rag.loading import CheckpointError, load_model, load_tokenizer, resolve_model
from jina_rag.modeling import JinaBertConfig, JinaBertModel, mean_pool
from jina_rag.onnx_backend import INPUT_NAMES, METADATA_PREFIX, ONNX_FILE, OUTPUT_NAMES

logger = logging.getLogger(__name__)

OPSET = 20  # the first opset with a Gelu operator
EXPORT_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
QUANTIZATIONS = ("int8",)

Exporter = Literal["auto", "dynamo", "torchscript"]


class OnnxExportError(RuntimeError, JinaRagError):
    """The export, optimisation or quantisation failed, or its result does not match PyTorch."""


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and how it checked it."""

    folder: Path
    exporter: str
    dtype: str
    quantization: str | None
    optimized: bool
    file_bytes: int
    weight_bytes: int
    operators: dict[str, int] = field(default_factory=dict)
    # int8 exports: MatMuls left in fp32 (the GEGLU input projections where int8 drifts).
    fp32_matmuls: int = 0
    # Agreement with the PyTorch model on a padded sample batch.
    max_abs_diff: float = float("nan")
    min_cosine: float = float("nan")

    @property
    def model_file(self) -> Path:
        return self.folder / ONNX_FILE


class _EmbeddingGraph(nn.Module):
    """The forward that becomes the ONNX graph: token states and their mean."""

    def __init__(self, model: JinaBertModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(input_ids, attention_mask)
        return hidden, mean_pool(hidden, attention_mask)


def _example_inputs(length: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Batch 2 with a padded row: size-1 axes would be specialised away by the exporter.
    generator = torch.Generator().manual_seed(0)
    # From id 1000 on, BERT's vocabulary holds words ([unused] and special tokens sit below); a small
    # vocabulary gives any id but padding's 0.
    high = min(vocab_size, 20000)
    low = 1000 if high > 1000 else min(1, high - 1)
    input_ids = torch.randint(low, high, (2, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, length // 2 :] = 0
    return input_ids, attention_mask


def _export_dynamo(graph: _EmbeddingGraph, example: tuple[torch.Tensor, ...], path: Path) -> None:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    program = torch.onnx.export(
        graph, example, dynamo=True, opset_version=OPSET, input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES), dynamic_shapes={name: axes for name in INPUT_NAMES}, verbose=False,
    )
    program.save(str(path))


def _export_torchscript(graph: _EmbeddingGraph, example: tuple[torch.Tensor, ...], path: Path) -> None:
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}}
    torch.onnx.export(
        graph, example, str(path), dynamo=False, opset_version=OPSET, input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES), dynamic_axes=axes, do_constant_folding=True,
    )


def _export_graph(graph: _EmbeddingGraph, example: tuple[torch.Tensor, ...], path: Path, exporter: Exporter) -> str:
    """Export with torch.onnx; ``auto`` tries the dynamo exporter, then the TorchScript one."""
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(graph, example, path)
            return "dynamo"
        except Exception as error:  # noqa: BLE001 - any exporter failure means: try the other exporter
            if exporter == "dynamo":
                raise OnnxExportError(f"the dynamo exporter failed: {error}") from error
            logger.warning(
                "the dynamo exporter failed (%s: %s); falling back to the TorchScript exporter",
                type(error).__name__, str(error).splitlines()[0] if str(error) else "",
            )
    try:
        _export_torchscript(graph, example, path)
    except Exception as error:  # noqa: BLE001 - report it as this library's error, with its cause
        raise OnnxExportError(f"the TorchScript exporter failed: {type(error).__name__}: {error}") from error
    return "torchscript"


def _fuse_for_onnxruntime(source: Path, target: Path, config: JinaBertConfig) -> Path:
    """ONNX Runtime's transformer fusions (SkipLayerNorm, Gelu) plus ALiBi attention → MultiHeadAttention."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # EmbedLayerNormalization expects BERT's learned position embeddings; JinaBERT has none.
    options.enable_embed_layer_norm = False
    model = optimize_model(
        str(source), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
        optimization_options=options, opt_level=0,
    )
    from jina_rag.onnx_fusion import FusionAlibiAttention

    FusionAlibiAttention(model, config.num_attention_heads).apply()
    if not any(opset.domain == "com.microsoft" for opset in model.model.opset_import):
        model.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    model.topological_sort()
    model.save_model_to_file(str(target))
    return target


# Below this cosine to the fp32 graph an int8 graph is not used as it is (the export's own check).
INT8_MIN_COSINE = 0.99


def _quantize_int8(source: Path, target: Path, config: JinaBertConfig) -> tuple[Path, list[str]]:
    """Dynamic int8: weights quantised once (per output channel), activations per batch at run time.

    Returns the file and the MatMuls kept in fp32. Where the whole-int8 graph falls below
    ``INT8_MIN_COSINE`` to the fp32 graph, the GEGLU input projections (``gated_layers``) stay
    fp32: a model whose ``up`` half sums large terms to a small value (as one initialised from a
    GELU BERT does, ``training/teacher_init.py``) loses that sum to per-tensor int8 activations.
    """
    _dynamic_int8(source, target)
    if _graph_cosine(source, target, config) >= INT8_MIN_COSINE:
        return target, []
    kept = _gated_matmuls(source, config)
    logger.warning("int8 of the whole graph drifts from fp32; keeping the %d GEGLU input projections in fp32", len(kept))
    _dynamic_int8(source, target, kept)
    return target, kept


def _dynamic_int8(source: Path, target: Path, fp32_nodes: Sequence[str] = ()) -> None:
    """ONNX Runtime's dynamic quantisation as the export uses it: int8 weights per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=list(fp32_nodes))


def _gated_matmuls(path: Path, config: JinaBertConfig) -> list[str]:
    """Names of the MatMul/Gemm nodes whose weight is a ``gated_layers`` matrix ([H, 2I] or [2I, H])."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    gated = {(config.hidden_size, 2 * config.intermediate_size), (2 * config.intermediate_size, config.hidden_size)}
    return [
        node.name for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and any(shapes.get(name) in gated for name in node.input)
    ]


def _graph_cosine(reference: Path, candidate: Path, config: JinaBertConfig) -> float:
    """Smallest cosine between the pooled vectors of two graphs on the example batch (CPU)."""
    import onnxruntime as ort

    input_ids, attention_mask = _example_inputs(40, config.vocab_size)
    feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    a, b = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["sentence_embedding"], feeds)[0]
        for path in (reference, candidate)
    )
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.nan_to_num(cosine, nan=-1.0).min())


def _operator_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_PREFIX + k: v for k, v in metadata.items()})
    model.producer_name = "jina-rag"
    onnx.save(model, str(path))


def _check_against_torch(path: Path, model: JinaBertModel, *, exact: bool) -> tuple[float, float]:
    """Run the file on ONNX Runtime (CPU) and the fp32 model on one padded batch; raise if they disagree.

    ``exact`` (fp32 graphs) asks for agreement to rounding; int8 and fp16 only for cosine ≥ 0.99.
    """
    import onnxruntime as ort

    input_ids, attention_mask = _example_inputs(40, model.config.vocab_size)
    with torch.inference_mode():
        expected = model.pool(input_ids, attention_mask).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["sentence_embedding"], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
    max_abs_diff = float(np.abs(got - expected).max())
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    min_cosine = float(cosine.min())
    tolerance = 1e-3 * max(1.0, float(np.abs(expected).max()))
    if not np.isfinite(got).all() or min_cosine < 0.99 or (exact and max_abs_diff > tolerance):
        raise OnnxExportError(
            f"{path.name} disagrees with the PyTorch model: max |diff| {max_abs_diff:.3g}, min cosine "
            f"{min_cosine:.5f}; the export is not usable"
        )
    return max_abs_diff, min_cosine


def export_onnx(
    model_name_or_path: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    dtype: str = "fp32",
    quantize: str | None = None,
    optimize: bool = False,
    example_length: int = 16,
    exporter: Exporter = "auto",
    verify: bool = True,
    show_progress: bool | None = None,
) -> OnnxExport:
    """Export a JinaBERT model folder (or hub id) to an ONNX folder ready for ONNX Runtime.

    ``dtype="fp16"`` targets the CUDA provider; ``quantize="int8"`` applies dynamic int8
    quantisation (CPU); ``optimize=True`` fuses operators for ONNX Runtime (the file then needs
    ONNX Runtime's contrib operators). ``verify`` compares the result with PyTorch on a sample.
    """
    if dtype.lower() not in EXPORT_DTYPES:
        raise InvalidInputError(f"dtype must be one of fp32, fp16; got {dtype!r}")
    torch_dtype = EXPORT_DTYPES[dtype.lower()]
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InvalidInputError(f"quantize must be one of {QUANTIZATIONS} or None; got {quantize!r}")
    if quantize and torch_dtype != torch.float32:
        raise InvalidInputError("int8 quantisation starts from an fp32 export: pass dtype='fp32' with quantize='int8'")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise InvalidInputError(f"exporter must be 'auto', 'dynamo' or 'torchscript'; got {exporter!r}")
    folder = resolve_model(model_name_or_path)
    out_dir = Path(out_dir)
    if out_dir.resolve() == folder.resolve():
        raise InvalidInputError(f"out_dir {out_dir} is the model folder itself: export into another folder")
    try:
        model = load_model(folder, attn_implementation="eager", dtype=torch_dtype)
    except CheckpointError as error:
        raise CheckpointError(
            f"cannot export {folder}: {error}. export-onnx takes a JinaBERT model folder in the published "
            f"jina-embeddings-v2 layout (config.json with position_embedding_type 'alibi', weights, tokenizer)"
        ) from error
    tokenizer = load_tokenizer(folder)
    config = model.config
    metadata = {
        "dtype": str(torch_dtype).removeprefix("torch."), "quantization": quantize or "none",
        "optimized": str(optimize).lower(), "num_heads": str(config.num_attention_heads),
    }
    show = sys.stderr.isatty() if show_progress is None else show_progress
    steps = 1 + int(optimize) + int(bool(quantize)) + int(verify)
    with tempfile.TemporaryDirectory(prefix="jina-rag-onnx-") as work, tqdm(
        total=steps, desc="export-onnx", unit="step", disable=not show
    ) as bar:
        current = Path(work) / "exported.onnx"
        bar.set_postfix_str("export")
        example = _example_inputs(example_length, config.vocab_size)
        metadata["exporter"] = _export_graph(_EmbeddingGraph(model).eval(), example, current, exporter)
        logger.info("exported %s with the %s exporter", folder, metadata["exporter"])
        bar.update()
        if optimize:
            bar.set_postfix_str("optimize")
            current = _fuse_for_onnxruntime(current, current.with_name("optimized.onnx"), config)
            bar.update()
        if quantize:
            bar.set_postfix_str("quantize")
            current, kept = _quantize_int8(current, current.with_name("quantized.onnx"), config)
            metadata["fp32_matmuls"] = str(len(kept))
            bar.update()
        _write_metadata(current, metadata)
        result = OnnxExport(
            folder=out_dir, exporter=metadata["exporter"], dtype=metadata["dtype"], quantization=quantize,
            optimized=optimize, file_bytes=current.stat().st_size, fp32_matmuls=int(metadata.get("fp32_matmuls", 0)),
            weight_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
            operators=_operator_counts(current),
        )
        if verify:
            bar.set_postfix_str("verify")
            exact = not quantize and torch_dtype == torch.float32
            result.max_abs_diff, result.min_cosine = _check_against_torch(current, model.float(), exact=exact)
            bar.update()
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(current), out_dir / ONNX_FILE)
    saved_dtype = {"extra": {**config.extra, "torch_dtype": metadata["dtype"]}}
    dataclasses.replace(config, **saved_dtype).to_json_file(out_dir / "config.json")
    tokenizer.save_pretrained(str(out_dir))
    logger.info("wrote %s (%.1f MB)", out_dir / ONNX_FILE, result.file_bytes / 1e6)
    return result
