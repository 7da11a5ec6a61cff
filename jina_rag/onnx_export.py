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
from typing import Any, Literal

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
    # int8 exports: MatMuls left in fp32 (feed-forward projections, only where int8 of all drifts).
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


def _quantize_int8(
    source: Path, target: Path, config: JinaBertConfig, tokenizer: Any = None
) -> tuple[Path, list[str]]:
    """Dynamic int8: weights quantised once (per output channel), activations per batch at run time.

    First the GEGLU blocks are rewritten, exactly in fp32, into a form whose MatMuls all survive
    int8 (``_int8_friendly_geglu``, calibrated on standard-library docstrings through
    ``tokenizer``). Returns the file and the MatMuls kept in fp32: none, unless the int8 graph
    still falls below ``INT8_MIN_COSINE`` to the fp32 graph; then the feed-forward output
    projections (``wo``) stay fp32, and if that is not enough the GEGLU input projections
    (``gated_layers``) too.
    """
    rewritten = target.with_name(target.stem + "-geglu.onnx")
    batches = _calibration_batches(tokenizer, config.vocab_size) if tokenizer is not None else []
    if _int8_friendly_geglu(source, rewritten, batches) == 0:
        rewritten = source
    kept: list[str] = []
    for more in ([], _ffn_output_matmuls(rewritten, config), _gated_matmuls(rewritten, config)):
        kept += more
        if kept:
            logger.warning("int8 of the whole graph drifts from fp32; keeping %d feed-forward MatMuls in fp32", len(kept))
        _dynamic_int8(rewritten, target, kept)
        if _graph_cosine(source, target, config) >= INT8_MIN_COSINE:
            break
    return target, kept


# SmoothQuant strengths (0: all on the weights, 1: all on the activations) of the int8 GEGLU rewrite,
# for the gate/up input and for wo's input; chosen on the shipped model (issue #29).
GEGLU_SMOOTH_INPUT = 0.5
GEGLU_SMOOTH_HIDDEN = 0.8
# Standard-library docstrings the int8 rewrite calibrates on (real English prose in any CPython;
# not the modules the tests and benchmarks measure cosines on).
CALIBRATION_MODULES = (
    "collections", "logging", "pathlib", "typing", "functools", "itertools", "json", "pickle", "threading",
    "asyncio", "email", "sqlite3", "tarfile", "zipfile", "re", "string", "datetime", "decimal", "random",
    "statistics", "textwrap", "shutil", "os", "socket", "enum", "dataclasses", "contextlib", "io", "tempfile",
    "configparser", "optparse", "pdb", "queue", "ssl", "struct", "traceback", "warnings", "weakref",
)


def _calibration_texts(count: int = 64) -> list[str]:
    """Paragraphs of standard-library docstrings, joined 1 to 6 at a time: texts of mixed lengths."""
    import importlib
    import inspect

    paragraphs = []
    for name in CALIBRATION_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(module) or ""]
        docs += [
            inspect.getdoc(value) or "" for key, value in sorted(vars(module).items())
            if not key.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", None) == name
        ]
        paragraphs += [p.strip() for doc in docs for p in doc.split("\n\n") if len(p.strip()) > 200 and ">>>" not in p]
    texts, start = [], 0
    for size in range(count):
        take = 1 + size % 6
        if start + take > len(paragraphs):
            break
        texts.append("\n\n".join(paragraphs[start : start + take]))
        start += take
    return texts


def _calibration_batches(tokenizer: Any, vocab_size: int, batch_size: int = 8, max_length: int = 512) -> list[dict[str, np.ndarray]]:
    """Padded batches of calibration texts, as the encoder feeds the graph (padding included)."""
    from jina_rag.encoder import special_tokens, tokenize

    texts = _calibration_texts()
    if not texts:  # docstrings stripped (python -OO)
        return []
    prefix, suffix = special_tokens(tokenizer)
    rows = [prefix + ids[: max_length - len(prefix) - len(suffix)] + suffix for ids in tokenize(tokenizer, texts)]
    rows = [[min(token, vocab_size - 1) for token in row] for row in rows]
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(map(len, chunk))
        ids = np.array([row + [0] * (width - len(row)) for row in chunk], dtype=np.int64)
        mask = (np.arange(width)[None, :] < np.array([len(row) for row in chunk])[:, None]).astype(np.int64)
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def _activation_ranges(model: Any, tensors: Sequence[str], batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Largest |value| of each channel (last axis) of ``tensors`` over every position of ``batches``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors if name not in outputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for feeds in batches:
        for name, value in zip(tensors, session.run(list(tensors), feeds)):
            amax = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0).astype(np.float64)
            ranges[name] = np.maximum(ranges[name], amax) if name in ranges else amax
    return ranges


def _smoothing(activation_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel scale ``amax^alpha / wmax^(1 - alpha)`` (floors at 1% of the largest), geometric mean 1."""
    activation_max = np.maximum(activation_max, 0.01 * activation_max.max() + 1e-12)
    weight_max = np.maximum(weight_max, 0.01 * weight_max.max() + 1e-12)
    scale = activation_max**alpha / weight_max ** (1 - alpha)
    return scale / np.exp(np.log(scale).mean())


def _int8_friendly_geglu(source: Path, target: Path, batches: Sequence[dict[str, np.ndarray]]) -> int:
    """Rewrite each GEGLU block (``x @ W -> Split -> Gelu(gate) * up -> @ Wo``) so that int8 keeps it; same fp32 function.

    - The block's input ``x`` is a LayerNorm output ``gamma * n + beta`` whose ``n`` sums to zero,
      so ``x . w == 1`` for ``w_i = 1 / (gamma_i * sum(beta / gamma))``. Each column of ``W``
      loses its component along ``w`` to a bias (``x @ W == x @ (W - w a^T) + a``). A model
      initialised from a GELU BERT (``training/teacher_init.py``) has ``up`` rows of ``w`` whose
      large terms cancel to 1: per-tensor int8 activations destroy that sum, not the rest.
    - SmoothQuant, calibrated on ``batches``: ``x`` is divided per channel by ``s`` (a Mul) and the
      rows of ``W`` multiplied by it; ``gelu(gate) * up`` is linear in ``up``, so ``up`` columns
      divided by ``t`` and the rows of ``Wo`` multiplied by it move ``Wo``'s input outliers into
      its weights with no extra node. Without batches, only the projection.

    Writes ``target`` and returns the number of blocks rewritten (0: ``target`` not written).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_user(tensor: str, op_type: str) -> Any:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    blocks = []
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in weights or len(weights[node.input[1]].dims) != 2:
            continue
        split = only_user(node.output[0], "Split")
        if split is None or len(split.output) != 2:
            continue
        gelu, mul = only_user(split.output[0], "Gelu"), only_user(split.output[1], "Mul")
        norm = producer.get(node.input[0])
        if gelu is None or mul is None or set(mul.input) != {gelu.output[0], split.output[1]} or norm is None:
            continue
        wo = only_user(mul.output[0], "MatMul")
        params = {"LayerNormalization": (1, 2), "SkipLayerNormalization": (2, 3)}.get(norm.op_type)
        if wo is None or wo.input[1] not in weights or params is None or len(norm.input) <= params[1]:
            continue
        if not all(norm.input[i] in weights for i in params) or norm.output[0] != node.input[0]:
            continue
        blocks.append((index, node, split, mul, wo, norm, params))
    if not blocks:
        return 0
    ranges = _activation_ranges(model, [t for block in blocks for t in (block[1].input[0], block[3].output[0])], batches) if batches else {}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(weights[name]).astype(np.float64)

    before: dict[int, Any] = {}  # the new nodes to put before / after the node at that index
    after: dict[int, Any] = {}
    for index, node, split, mul, wo, norm, (gamma_at, beta_at) in blocks:
        tag = f"int8_geglu_{index}"
        weight, out = array(node.input[1]), array(wo.input[1])
        half = weight.shape[1] // 2
        bias = np.zeros(weight.shape[1])
        gamma, beta = array(norm.input[gamma_at]), array(norm.input[beta_at])
        ratio = (beta / np.where(gamma == 0, np.inf, gamma)).sum()
        if np.all(gamma != 0) and abs(ratio) >= 1e-3:
            ones = 1 / (gamma * ratio)  # x . ones == 1 for every LayerNorm output x
            along = ones @ weight / (ones @ ones)
            weight -= np.outer(ones, along)
            bias += along
        x, hidden = node.input[0], mul.output[0]
        if hidden in ranges:
            scale = _smoothing(ranges[hidden], np.abs(out).max(axis=1), GEGLU_SMOOTH_HIDDEN)
            weight[:, half:] /= scale
            bias[half:] /= scale
            out *= scale[:, None]
        if x in ranges:
            scale = _smoothing(ranges[x], np.abs(weight).max(axis=1), GEGLU_SMOOTH_INPUT)
            weight *= scale[:, None]
            graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), f"{tag}_smooth"))
            smoothed = f"{tag}_input"
            before[index] = helper.make_node("Mul", [x, f"{tag}_smooth"], [smoothed], name=f"{tag}_smooth")
            node.input[0] = smoothed
        for matmul, value in ((node, weight), (wo, out)):
            name = f"{tag}_{matmul.input[1]}"
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
            matmul.input[1] = name
        graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{tag}_bias"))
        unbiased = f"{tag}_unbiased"
        after[index] = helper.make_node("Add", [unbiased, f"{tag}_bias"], [node.output[0]], name=f"{tag}_bias")
        node.output[0] = unbiased
    nodes = []
    for index, node in enumerate(graph.node):
        nodes += [*([before[index]] if index in before else []), node, *([after[index]] if index in after else [])]
    nodes = [onnx.NodeProto.FromString(node.SerializeToString()) for node in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    for position in reversed(range(len(graph.initializer))):
        if graph.initializer[position].name not in used:
            del graph.initializer[position]
    onnx.save(model, str(target))
    return len(blocks)


def _dynamic_int8(source: Path, target: Path, fp32_nodes: Sequence[str] = ()) -> None:
    """ONNX Runtime's dynamic quantisation as the export uses it: int8 weights per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=list(fp32_nodes))


def _matmuls_with_weight(path: Path, shapes: set[tuple[int, int]]) -> list[str]:
    """Names of the MatMul/Gemm nodes that take an initializer of one of ``shapes``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    return [
        node.name for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and any(dims.get(name) in shapes for name in node.input)
    ]


def _gated_matmuls(path: Path, config: JinaBertConfig) -> list[str]:
    """Names of the MatMul/Gemm nodes whose weight is a ``gated_layers`` matrix ([H, 2I] or [2I, H])."""
    hidden, inner = config.hidden_size, 2 * config.intermediate_size
    return _matmuls_with_weight(path, {(hidden, inner), (inner, hidden)})


def _ffn_output_matmuls(path: Path, config: JinaBertConfig) -> list[str]:
    """Names of the feed-forward output MatMuls (``wo``): those fed by ``gelu(gate) * up``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {output: node for node in model.graph.node for output in node.output}
    weights = {tensor.name for tensor in model.graph.initializer}

    def gated(tensor: str) -> bool:
        node = producer.get(tensor)
        return node is not None and node.op_type == "Mul" and any(
            producer.get(name) is not None and producer[name].op_type == "Gelu" for name in node.input
        )

    return [
        node.name for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in weights and gated(node.input[0])
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
            current, kept = _quantize_int8(current, current.with_name("quantized.onnx"), config, tokenizer)
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
