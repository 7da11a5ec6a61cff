"""Run an exported JinaBERT (``jina-rag export-onnx``) on ONNX Runtime, behind the encoder's Backend protocol."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jina_rag.batching import pad_batch
from jina_rag.modeling import JinaBertConfig
from jina_rag.errors import InvalidInputError

logger = logging.getLogger(__name__)

# The contract between export_onnx and this backend (and optimum's ORTModelForFeatureExtraction).
ONNX_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("last_hidden_state", "sentence_embedding")
# Keys of the ONNX metadata that say how a file was made.
METADATA_PREFIX = "jina_rag."

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# A provider as ONNX Runtime takes it: a name, or (name, options).
Provider = str | tuple[str, dict[str, Any]]


def _name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def _frozen(provider: Provider) -> Provider:
    # Providers key the encoder's model cache, so their options must be hashable.
    return provider if isinstance(provider, str) else (provider[0], tuple(sorted(dict(provider[1]).items())))


def _for_onnxruntime(provider: Provider) -> Provider:
    return provider if isinstance(provider, str) else (provider[0], dict(provider[1]))


def resolve_providers(
    providers: Sequence[Provider] | None = None, *, available: Sequence[str] | None = None
) -> tuple[Provider, ...]:
    """Check requested execution providers against this onnxruntime build; CPU is the default and the fallback.

    A provider is a name or ``(name, options)``; the result is hashable. ``available`` defaults
    to ``onnxruntime.get_available_providers()``.
    """
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    if providers is None:
        return (CPU,)
    if isinstance(providers, str):
        providers = [providers]
    if not providers:
        raise InvalidInputError(f"providers is empty: pass None for {CPU} or a list such as [{CUDA!r}, {CPU!r}]")
    for provider in providers:
        name = _name(provider)
        if name in available:
            continue
        if name == CUDA:
            raise InvalidInputError(
                f"{CUDA} was requested but this onnxruntime build has no CUDA support (available: "
                f"{', '.join(available)}). Install the GPU build (pip uninstall onnxruntime && pip install "
                f"onnxruntime-gpu) with a matching CUDA and cuDNN, or use providers=[{CPU!r}]"
            )
        raise InvalidInputError(f"execution provider {name!r} is not available in this onnxruntime build (available: {', '.join(available)})")
    resolved = tuple(_frozen(p) for p in providers)
    # Nodes a provider cannot run fall back to the CPU provider; list it so that is explicit.
    return resolved if CPU in map(_name, resolved) else (*resolved, CPU)


def providers_for_device(providers: Sequence[Provider] | None, device: Any) -> Sequence[Provider] | None:
    """``device="cuda[:N]"`` without providers means the CUDA provider (on GPU N); anything else leaves providers as given."""
    if providers is None and device is not None and str(device).startswith("cuda"):
        _, _, index = str(device).partition(":")
        return [(CUDA, {"device_id": int(index)})] if index else [CUDA]
    return providers


def _cuda_device_id(providers: Sequence[Provider]) -> int:
    for provider in providers:
        if _name(provider) == CUDA:
            return int(dict(provider[1]).get("device_id", 0)) if not isinstance(provider, str) else 0
    return 0


class OnnxBackend:
    """An exported model on an ONNX Runtime session: token id sequences in, mean-pooled fp32 vectors out.

    Batches are padded (the graph takes ``input_ids`` and ``attention_mask``), never packed.
    """

    packed = False

    def __init__(
        self,
        folder: str | os.PathLike[str],
        providers: Sequence[Provider] | None = None,
        *,
        file_name: str = ONNX_FILE,
        session_options: Any = None,
        pad_id: int = 0,
    ) -> None:
        import onnxruntime

        folder = Path(folder)
        path = folder / file_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} holds no {file_name}: export the model first "
                f"(jina-rag export-onnx MODEL {folder}) or load it with backend='torch'"
            )
        self.pad_id = pad_id
        self.config = JinaBertConfig.from_json_file(folder / "config.json")
        self.dim = self.config.hidden_size
        self.max_positions = self.config.max_position_embeddings
        self.providers = resolve_providers(providers)
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=session_options, providers=[_for_onnxruntime(p) for p in self.providers]
        )
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if not set(INPUT_NAMES) <= inputs or "sentence_embedding" not in outputs:
            raise InvalidInputError(
                f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; expected {list(INPUT_NAMES)} "
                f"in and 'sentence_embedding' out: export it with jina-rag export-onnx"
            )
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.export_info = {k.removeprefix(METADATA_PREFIX): v for k, v in metadata.items() if k.startswith(METADATA_PREFIX)}
        self.path = path
        self._cuda_device = _cuda_device_id(self.providers) if CUDA in self.session.get_providers() else None
        self._warn_on_precision_mismatch()

    def _warn_on_precision_mismatch(self) -> None:
        dtype = self.export_info.get("dtype", "float32")
        on_cuda = CUDA in self.session.get_providers()
        if on_cuda and dtype == "float32" and self.export_info.get("quantization", "none") == "none":
            logger.info("running an fp32 export on CUDA: an fp16 export (export-onnx --dtype fp16) is faster there")
        if on_cuda and self.export_info.get("quantization", "none") != "none":
            logger.warning("dynamic int8 models run on the CPU provider; on CUDA use an fp16 export instead")
        if not on_cuda and dtype == "float16":
            logger.warning("an fp16 export on the CPU provider is slow or unsupported: use an fp32 or int8 export on CPU")

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        input_ids, attention_mask = pad_batch(sequences, self.pad_id)
        if self._cuda_device is None:
            (pooled,) = self.session.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})
        else:
            pooled = self._run_on_cuda(input_ids, attention_mask)
        return pooled.astype(np.float32, copy=False)

    def _run_on_cuda(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """IO binding: inputs copied to the GPU once, the pooled vectors the only thing copied back."""
        from onnxruntime import OrtValue

        binding = self.session.io_binding()
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            binding.bind_ortvalue_input(name, OrtValue.ortvalue_from_numpy(array, "cuda", self._cuda_device))
        binding.bind_output("sentence_embedding", "cuda", self._cuda_device)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    def describe(self) -> dict[str, Any]:
        """Where and how the model runs, for ``JinaEncoder.info``."""
        return {
            "backend": "onnx",
            "file": str(self.path),
            "providers": ",".join(self.session.get_providers()),
            "dtype": self.export_info.get("dtype", "unknown"),
            "quantization": self.export_info.get("quantization", "unknown"),
            "optimized": self.export_info.get("optimized", "unknown"),
        }
