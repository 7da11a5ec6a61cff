"""``JinaEncoder``: texts in, one vector per text out, in the spirit of sentence-transformers' ``encode``.

Data flows one way: text → tokenizer → windows (long texts) → token-budget batches → backend
(token states → mean pooling) → window averaging → normalisation.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from jina_rag.batching import pack_batch, pad_batch, plan_batches
from jina_rag.errors import InvalidInputError, InvalidTypeError, JinaRagError, check_unicode
from jina_rag.loading import WEIGHT_FILES, check_device, load_model, load_tokenizer, model_fingerprint, resolve_model
from jina_rag.modeling import segment_mean
from jina_rag.parallel import EncoderPool, Parallel, check_parallel, worker_devices
from jina_rag.settings import (  # noqa: F401  (LONG_TEXT_POLICIES, BACKENDS: imported from here too)
    BACKENDS,
    DEFAULT_BATCH_TOKENS,
    LONG_TEXT_POLICIES,
    AttentionName,
    BackendName,
    EncoderSettings,
    LongTextPolicy,
)

logger = logging.getLogger(__name__)

TOKENIZE_CHUNK_TEXTS = 1024
# Long work, which gets a progress bar by default (when stderr is a terminal): this many tokens or more,
# a few seconds on a CPU.
PROGRESS_MIN_TOKENS = 32768

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class TextTooLongError(ValueError, JinaRagError):
    """A text exceeds ``max_length`` tokens under the ``error`` long-text policy."""


class NonFiniteVectorError(ValueError, JinaRagError):
    """The model gave NaN or Inf for a text; ``index`` is the text's position in the input."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def check_finite(finite: np.ndarray, what: str = "texts", first_index: int = 0) -> None:
    """Raise :class:`NonFiniteVectorError` naming the first item whose ``finite`` flag is False.

    Never handing out NaN or Inf keeps them out of stores, where they break search silently.
    """
    bad = np.flatnonzero(~finite)
    if len(bad):
        index = first_index + int(bad[0])
        raise NonFiniteVectorError(
            f"{what}[{index}] gave a vector holding NaN or Inf ({len(bad)} of {len(finite)} did): the model's "
            f"outputs overflow (in float16: use dtype='bfloat16' or 'float32') or its weights are damaged",
            index,
        )


class Backend(Protocol):
    """Runs the model: token id sequences in, mean-pooled fp32 vectors out (a device tensor or array)."""

    dim: int
    max_positions: int
    packed: bool  # whether batches are packed rows (cost = sum of lengths) or padded
    config: Any

    def embed(self, sequences: list[list[int]]) -> torch.Tensor | np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class TorchBackend:
    """The PyTorch model on one device and dtype.

    The model's attention backend says how to batch here (:meth:`jina_rag.attention.AttentionBackend.batching`).
    Packed (CUDA with FlexAttention), batches become one row without padding, its width rounded up
    to a few fixed buckets (powers of two), one compiled graph each. Results stay on the device
    until the caller collects them, so the hot loop has no host-device sync.
    """

    def __init__(self, model: Any, device: torch.device, pad_id: int = 0) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        self.config = model.config
        self.dim = model.config.hidden_size
        self.max_positions = model.config.max_position_embeddings
        self.batching = model.attention.batching(device, next(model.parameters()).dtype)
        self.packed = self.batching.packed
        # One compiled graph per width bucket fuses LayerNorm, GELU and residual adds. A symbolic
        # width (dynamic=True) would compile once, but inductor fails on the block mask's tile
        # arithmetic on CUDA (torch 2.11, "CantSplit", H200 2026-12-01) and the encoder fell back
        # to the uncompiled forward, 19% slower at 512 tokens.
        self._compiled_forward = torch.compile(model.forward_packed, dynamic=False) if self.packed else None

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def embed(self, sequences: list[list[int]]) -> torch.Tensor:
        if self.packed:
            input_ids, sequence_ids = pack_batch(sequences, packed_width(sum(map(len, sequences))), self.pad_id)
            hidden, sequence_ids = self._forward_packed(input_ids, sequence_ids)
            return segment_mean(hidden, sequence_ids, len(sequences))
        input_ids, attention_mask = pad_batch(sequences, self.pad_id)
        return self.model.pool(self._to_device(input_ids), self._to_device(attention_mask))

    @torch.inference_mode()
    def token_states(self, sequences: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
        """Token states of a batch as rows ``[T, H]`` on the device, and the row where each sequence starts.

        Row ``starts[i] + t`` holds token ``t`` of ``sequences[i]`` (packed on CUDA, padded elsewhere).
        """
        if self.packed:
            input_ids, sequence_ids = pack_batch(sequences, packed_width(sum(map(len, sequences))), self.pad_id)
            hidden, _ = self._forward_packed(input_ids, sequence_ids)
            return hidden, np.cumsum([0, *map(len, sequences[:-1])]).tolist()
        input_ids, attention_mask = pad_batch(sequences, self.pad_id)
        hidden = self.model(self._to_device(input_ids), self._to_device(attention_mask))
        width = input_ids.shape[1]
        return hidden.reshape(-1, hidden.shape[-1]), [row * width for row in range(len(sequences))]

    def _forward_packed(self, input_ids: np.ndarray, sequence_ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of one packed row, and its sequence ids, both on the device."""
        cu_seqlens = None
        offsets = self.batching.cu_seqlens(sequence_ids)
        if offsets is not None:
            cu_seqlens = self._to_device(offsets)
            # Its length is the row's number of sequences: one compiled graph per width serves them all.
            torch._dynamo.mark_dynamic(cu_seqlens, 0)
        input_ids, sequence_ids = self._to_device(input_ids), self._to_device(sequence_ids)
        if self._compiled_forward is not None:
            try:
                return self._compiled_forward(input_ids, sequence_ids, cu_seqlens), sequence_ids
            except Exception as error:  # compilation problems surface at the first call
                logger.warning("compiling the packed forward failed (%s: %s); running it uncompiled",
                               type(error).__name__, error)
                self._compiled_forward = None
        return self.model.forward_packed(input_ids, sequence_ids, cu_seqlens), sequence_ids

    def describe(self) -> dict[str, Any]:
        dtype = next(self.model.parameters()).dtype
        info = {"backend": "torch", "device": str(self.device), "dtype": str(dtype).removeprefix("torch.")}
        from jina_rag.fused_geglu import fused_geglu_supported

        fused = fused_geglu_supported(self.device, dtype) and self.model.encoder.layer[0].mlp.fused
        info["feed_forward"] = "fused GEGLU (Triton)" if fused else "GEGLU"
        info["attention"] = self.batching.name
        if self.packed:
            info["alibi_cutoff"] = self.batching.alibi_cutoff
        return info


def packed_width(tokens: int, granularity: int = 1024) -> int:
    """Round a packed row up to a power of two (at least ``granularity``): few shapes to compile."""
    width = granularity
    while width < tokens:
        width *= 2
    return width


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise InvalidInputError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}") from None


@functools.lru_cache(maxsize=8)
def _load(
    folder: Path, backend: BackendName, device: torch.device, dtype: torch.dtype, providers: tuple | None,
    alibi_cutoff: float | None = None,
    attention: str = "auto",
) -> tuple[Any, Backend]:
    """Load tokenizer and model once per (folder, backend, device, dtype, providers, cutoff, attention): adapters share one."""
    tokenizer = load_tokenizer(folder)
    pad_id = tokenizer.pad_token_id or 0
    if backend == "onnx":
        from jina_rag.onnx_backend import OnnxBackend

        logger.info("loading %s on ONNX Runtime (%s)", folder, ", ".join(map(str, providers)))
        return tokenizer, OnnxBackend(folder, providers, pad_id=pad_id)
    logger.info("loading %s on %s (%s)", folder, device, dtype)
    model = load_model(folder, dtype=dtype, device=device, alibi_cutoff=alibi_cutoff, attn_implementation=attention)
    return tokenizer, TorchBackend(model, device, pad_id)


def window_spans(num_tokens: int, span: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, stop)`` of overlapping windows covering ``num_tokens`` tokens."""
    if num_tokens <= span:
        return [(0, num_tokens)]
    stride = span - overlap
    spans = []
    start = 0
    while True:
        stop = min(start + span, num_tokens)
        spans.append((start, stop))
        if stop == num_tokens:
            return spans
        start += stride


@functools.lru_cache(maxsize=8)
def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special ids around a single sequence, read off the tokenizer's own template.

    Works for WordPiece and BPE tokenizers alike, and on transformers 4 and 5 (5 dropped
    ``build_inputs_with_special_tokens`` from its tokenizers).
    """
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise InvalidInputError("cannot find the special-token template of this tokenizer")


def tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens: what the encoder windows, counts and embeds."""
    return tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False,
    )["input_ids"]


@functools.lru_cache(maxsize=8)
def _long_run(limit: int) -> re.Pattern[str]:
    return re.compile(rf"\S{{{limit + 1},}}")


def warn_unknown_words(tokenizer: Any, texts: Sequence[str], first_index: int = 0, what: str = "texts") -> None:
    """Log a warning, once per text, for a word too long for the tokenizer: WordPiece turns a word of more than
    ``max_input_chars_per_word`` characters (100 for BERT's) into one unknown token, so its content is lost.

    Cheap: a regular expression finds runs without whitespace over the limit; only those are split into words
    (at punctuation, as the tokenizer does) to check.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    limit = getattr(getattr(backend, "model", None), "max_input_chars_per_word", None)
    if not isinstance(limit, int) or limit <= 0:
        return  # no word limit (BPE, unigram): long words become many tokens
    pattern = _long_run(limit)
    for number, text in enumerate(texts):
        for run in pattern.finditer(text):
            if any(len(word) > limit for word in _words(backend, run.group())):
                logger.warning(
                    "%s[%d] holds a run of %d characters without whitespace; the tokenizer reads words of at most %d "
                    "characters and makes a longer one a single unknown token ([UNK]), losing its content: break it "
                    "up with spaces or remove it",
                    what, first_index + number, len(run.group()), limit,
                )
                break


def _words(backend: Any, run: str) -> list[str]:
    """A run of text as the tokenizer's words: normalised, then split at punctuation (and around CJK characters)."""
    if backend.normalizer is not None:
        run = backend.normalizer.normalize_str(run)
    if backend.pre_tokenizer is None:
        return run.split()
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(run)]


ProgressCallback = Callable[[int, int], None]


class TokenProgress:
    """Progress in tokens encoded: a tqdm bar and/or a callback ``on_progress(done, total)``.

    The total grows as work is tokenised (:meth:`add_total`); :meth:`add_done` counts a batch once the
    model ran it. A CUDA result is counted when the device has finished it (an event recorded after its
    launch, polled without waiting), so the bar follows the device, not the launches running ahead of
    it; :meth:`finish` counts the rest once results were collected. ``show=None`` decides at the first
    :meth:`add_total`: a bar when the work is expected to reach :data:`PROGRESS_MIN_TOKENS` and stderr
    is a terminal. With no bar and no callback it does nothing.
    """

    def __init__(self, show: bool | None, desc: str, on_progress: ProgressCallback | None = None) -> None:
        self.show = show
        self.desc = desc
        self.on_progress = on_progress
        self.done = 0
        self.total = 0
        self.bar: Any = None
        self._pending: deque[tuple[torch.cuda.Event, int]] = deque()

    @property
    def active(self) -> bool:
        return self.on_progress is not None or (self.bar is not None and not self.bar.disable)

    def add_total(self, tokens: int, expected: float = 0.0) -> None:
        """``tokens`` more to encode; ``expected``: the whole work's estimated tokens (decides ``show=None``)."""
        self.total += tokens
        if self.bar is None:
            show = self.show
            if show is None:
                show = max(tokens, expected) >= PROGRESS_MIN_TOKENS and sys.stderr.isatty()
            self.bar = tqdm(total=self.total, unit="tok", unit_scale=True, desc=self.desc, disable=not show)
        elif not self.bar.disable:
            self.bar.total = self.total
            container = getattr(self.bar, "container", None)  # tqdm.notebook's widget keeps its own maximum
            if container is not None:
                container.children[1].max = self.total
            self.bar.refresh()

    def add_done(self, tokens: int, result: Any = None) -> None:
        """A batch of ``tokens`` ran (``result``: its output; a CUDA tensor's are counted when the device is done)."""
        if not self.active:
            return
        if isinstance(result, torch.Tensor) and result.is_cuda:
            event = torch.cuda.Event()
            event.record()
            self._pending.append((event, tokens))
            while self._pending and self._pending[0][0].query():
                self._advance(self._pending.popleft()[1])
        else:
            self._advance(tokens)

    def finish(self) -> None:
        """Count every pending batch done: call once the results were collected from the device."""
        while self._pending:
            self._advance(self._pending.popleft()[1])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _advance(self, tokens: int) -> None:
        self.done += tokens
        if self.bar is not None:
            self.bar.update(tokens)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


@dataclass
class _Segment:
    text_index: int
    input_ids: list[int]


class JinaEncoder:
    """Embeds texts with a JinaBERT model; loads the model lazily on first use.

    ``long_text`` decides what happens to a text longer than ``max_length`` tokens:
    ``"windows"`` (default) encodes overlapping windows and averages them, weighted by token
    count, into one vector, so no text is dropped; ``"truncate"`` keeps the first
    ``max_length`` tokens and logs a warning; ``"error"`` raises :class:`TextTooLongError`.

    ``backend="onnx"`` runs a folder written by ``jina-rag export-onnx`` on ONNX Runtime with the
    given execution ``providers`` (default CPU; ``device="cuda"`` means the CUDA provider); its
    precision is the export's, so ``dtype`` is not taken.

    ``alibi_cutoff`` (logits, e.g. :data:`~jina_rag.attention.flex.ALIBI_CUTOFF` = 64) lets attention
    skip key tiles whose ALiBi distance penalty alone is at least that large, so their softmax
    weight is negligible (below e^-64 of the diagonal key's); ``None`` (the default) is exact
    attention. It pays on long documents (at 8192 tokens a third of the tiles remain) and costs
    on short ones; only the CUDA packed (FlexAttention) path uses it: on CPU and with
    ``backend="onnx"`` attention is always exact.

    ``attention="flash"`` runs the CUDA packed rows through FlashAttention-4's varlen kernel
    (``pip install "jina-rag[flash]"``, Hopper or Blackwell GPUs; exact attention, no cutoff):
    faster than FlexAttention from about 1024 tokens, slower at 512. ``"auto"`` is SDPA on CPU and
    FlexAttention on CUDA, where, with exact attention and FlashAttention-4 installed, batches
    holding a text of at least :data:`FLASH_MIN_TOKENS` tokens run FlashAttention-4.

    ``batch_tokens`` and ``normalize`` are what :meth:`encode` uses when a call does not say.
    Every option is checked by :class:`~jina_rag.settings.EncoderSettings` (kept as ``settings``);
    :meth:`from_settings` builds an encoder from one.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 8192,
        long_text: LongTextPolicy = "windows",
        window_overlap: int | None = None,
        backend: BackendName = "torch",
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        alibi_cutoff: float | None = None,
        attention: AttentionName = "auto",
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        normalize: bool = True,
    ) -> None:
        self.settings = settings = EncoderSettings(
            model_name_or_path, device=device, dtype=dtype, max_length=max_length, long_text=long_text,
            window_overlap=window_overlap, backend=backend, providers=providers, alibi_cutoff=alibi_cutoff,
            attention=attention, batch_tokens=batch_tokens, normalize=normalize,
        )
        self.attention = attention
        self.model_name_or_path = model_name_or_path
        self.backend_name = backend
        self.providers = None
        if backend == "onnx":
            from jina_rag.onnx_backend import providers_for_device, resolve_providers

            self.providers = resolve_providers(providers_for_device(settings.providers, device))
            self.device = torch.device("cuda" if "CUDAExecutionProvider" in self.providers else "cpu")
            self.dtype = None
        else:
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
        # Only the CUDA packed path skips tiles: elsewhere the cutoff is dropped, so encoders that
        # differ only in it share one loaded model.
        uses_cutoff = alibi_cutoff is not None and backend == "torch" and self.device.type == "cuda"
        self.alibi_cutoff = float(alibi_cutoff) if uses_cutoff else None
        self.max_length = max_length
        self.long_text = long_text
        self.window_overlap = max_length // 8 if window_overlap is None else window_overlap
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Backend] | None = None
        self._pools: dict[tuple[str, ...], EncoderPool] = {}

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> JinaEncoder:
        """Create an encoder and load its model now (errors surface here, not at first use)."""
        encoder = cls(model_name_or_path, **kwargs)
        encoder.load()
        return encoder

    @classmethod
    def from_settings(cls, settings: EncoderSettings, *, load: bool = True) -> JinaEncoder:
        """The encoder ``settings`` describe; its model loads now unless ``load=False``."""
        if not isinstance(settings, EncoderSettings):
            raise InvalidTypeError(f"settings is {type(settings).__name__}: pass an EncoderSettings")
        options = {name: getattr(settings, name) for name in settings.to_dict() if name != "model"}
        encoder = cls(settings.model, **options)
        if load:
            encoder.load()
        return encoder

    def load(self) -> None:
        with self._lock:
            if self._loaded is None:
                folder = resolve_model(self.model_name_or_path)
                self._loaded = _load(
                    folder.resolve(), self.backend_name, self.device, self.dtype, self.providers, self.alibi_cutoff,
                    self.attention,
                )
                if self.max_length > self._loaded[1].max_positions:
                    limit = self._loaded[1].max_positions
                    self._loaded = None
                    raise InvalidInputError(f"max_length {self.max_length} exceeds the model's limit of {limit} tokens")

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._loaded[0]

    @property
    def backend(self) -> Backend:
        self.load()
        return self._loaded[1]

    @property
    def fingerprint(self) -> str:
        """The model's identity (:func:`~jina_rag.loading.model_fingerprint` of the files this backend reads);
        stored content hashes include it, so another model re-embeds documents."""
        from jina_rag.onnx_backend import ONNX_FILE

        weights = (ONNX_FILE,) if self.backend_name == "onnx" else WEIGHT_FILES
        return model_fingerprint(resolve_model(self.model_name_or_path).resolve(), weights)

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self.backend.dim

    def count_tokens(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens per text as the model would see it whole, special tokens included."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        _check_texts(texts)
        prefix, suffix = self.special_tokens
        return [len(prefix) + len(ids) + len(suffix) for ids in self._tokenize(texts)]

    @property
    def special_tokens(self) -> tuple[list[int], list[int]]:
        """Ids the tokenizer puts before and after one sequence (``[CLS]``, ``[SEP]`` for BERT)."""
        return special_tokens(self.tokenizer)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return tokenize(self.tokenizer, texts)

    def _segments(self, token_ids: list[list[int]], policy: LongTextPolicy, first_index: int = 0) -> list[_Segment]:
        prefix, suffix = self.special_tokens
        span = self.max_length - len(prefix) - len(suffix)
        segments = []
        truncated = 0
        for index, ids in enumerate(token_ids, start=first_index):
            if len(ids) > span:
                if policy == "error":
                    raise TextTooLongError(
                        f"texts[{index}] has {len(ids) + self.max_length - span} tokens, over max_length="
                        f"{self.max_length}; pass long_text='windows' (one averaged vector) or 'truncate'"
                    )
                if policy == "truncate":
                    truncated += 1
                    ids = ids[:span]
            for start, stop in window_spans(len(ids), span, min(self.window_overlap, span - 1)):
                segments.append(_Segment(index, prefix + ids[start:stop] + suffix))
        if truncated:
            logger.warning(
                "%d of %d texts were truncated to max_length=%d tokens (long_text='truncate')",
                truncated, len(token_ids), self.max_length,
            )
        return segments

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_tokens: int | None = None,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        convert_to: Literal["numpy", "torch"] = "numpy",
        long_text: LongTextPolicy | None = None,
        on_progress: ProgressCallback | None = None,
        parallel: Parallel = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts; returns ``[n, dim]`` float32 (``[dim]`` for a single string).

        Batches hold at most ``batch_tokens`` tokens, padding included; order is preserved.
        Progress is counted in tokens the model has read (every window of a long text, special tokens
        included) and moves after each batch, so one long text split into windows moves it too.
        ``show_progress=None`` shows a bar on long work (:data:`PROGRESS_MIN_TOKENS` tokens or more)
        when stderr is a terminal; ``False`` shows none. ``on_progress(done, total)``, if given, is
        called after each batch with the tokens done and the tokens known so far (the total grows as
        texts are tokenised, 1,024 at a time).

        ``parallel=N`` spreads the texts over N worker processes sharing this machine's cores (or
        ``parallel=["cuda:0", "cuda:1"]``: one worker per device); see :meth:`map_parallel`.
        """
        if convert_to not in ("numpy", "torch"):
            raise InvalidInputError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        policy = self._policy(long_text)
        check_parallel(parallel)
        batch_tokens = self.settings.batch_tokens if batch_tokens is None else batch_tokens
        normalize = self.settings.normalize if normalize is None else normalize
        single = isinstance(texts, str)
        texts = [texts] if single else _text_list(texts)
        _check_texts(texts)
        if not texts:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        elif parallel is not None and len(texts) > 1:
            rows = self.map_parallel(
                _encode_shard, texts, parallel, show_progress=show_progress, on_progress=on_progress, desc="encoding",
                batch_tokens=batch_tokens, normalize=normalize, long_text=policy,
            )
            vectors = np.stack(rows)
        else:
            vectors = self._encode(texts, False, policy, batch_tokens, normalize, show_progress, on_progress)
        if single:
            vectors = vectors[0]
        return torch.from_numpy(vectors) if convert_to == "torch" else vectors

    def encode_tokenized(
        self,
        token_ids: Sequence[Sequence[int]],
        *,
        batch_tokens: int | None = None,
        normalize: bool | None = None,
        long_text: LongTextPolicy | None = None,
    ) -> np.ndarray:
        """Embed texts already split by :func:`tokenize` (ids without special tokens); ``[n, dim]`` float32.

        Gives the vectors :meth:`encode` gives for the same texts, so tokenising can run elsewhere
        (on other CPUs than the ones feeding the device).
        """
        policy = self._policy(long_text)
        batch_tokens = self.settings.batch_tokens if batch_tokens is None else batch_tokens
        normalize = self.settings.normalize if normalize is None else normalize
        if not token_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode([list(ids) for ids in token_ids], True, policy, batch_tokens, normalize, False)

    def warm_up(self, batch_tokens: int | None = None) -> float:
        """Load the model and, where batches are packed rows (CUDA), compile every row width a batch of
        up to ``batch_tokens`` tokens can take, so later calls start at full speed; returns the seconds
        spent. One graph per width takes tens of seconds cold; torch's on-disk caches make it seconds
        when the same model and shapes were compiled before on this machine."""
        started = time.perf_counter()
        backend = self.backend
        filler = tokenize(self.tokenizer, ["."])[0][:1]
        if not backend.packed:
            self.encode_tokenized([filler])
            return time.perf_counter() - started
        batch_tokens = self.settings.batch_tokens if batch_tokens is None else batch_tokens
        width, last = packed_width(1), packed_width(batch_tokens)
        while width <= last:
            tokens = 3 * width // 4  # above half the width: packs into exactly this one
            texts = -(-tokens // self.max_length)
            specials = sum(map(len, self.special_tokens()))
            self.encode_tokenized([filler * (tokens // texts - specials)] * texts, batch_tokens=width)
            width *= 2
        return time.perf_counter() - started

    def start_pool(self, parallel: Parallel, *, threads: int | None = None) -> EncoderPool:
        """The worker processes for ``parallel`` (a count on this encoder's device, or device names),
        started now or reused; each loads the model once. CPU workers share the cores: ``threads``
        torch threads each (default: cores // workers). :meth:`close` stops them."""
        devices = tuple(worker_devices(parallel, self.settings.device or str(self.device)))
        pool = self._pools.get(devices)
        if pool is None or pool.broken or threads is not None:
            if pool is not None:
                pool.close()
            pool = self._pools[devices] = EncoderPool(functools.partial(_worker_encoder, self.settings), devices, threads)
        return pool

    def map_parallel(
        self,
        function: Callable[..., tuple[list[Any], int]],
        items: Sequence[Any],
        parallel: Parallel,
        *,
        weights: Sequence[int] | None = None,
        show_progress: bool | None = None,
        on_progress: ProgressCallback | None = None,
        desc: str = "encoding",
        **options: Any,
    ) -> list[Any]:
        """``function(encoder, shard, first_index, **options) -> (results, tokens read)`` over
        contiguous shards of ``items`` of about equal ``weights`` (default: the texts' lengths) in the
        workers of :meth:`start_pool`; one result per item, in order. Progress moves in tokens as
        shards finish. A worker that dies raises :class:`~jina_rag.parallel.WorkerError`; the next
        call starts new workers."""
        pool = self.start_pool(parallel)
        weights = [len(item) for item in items] if weights is None else list(weights)
        progress = TokenProgress(show_progress, desc, on_progress)
        done = 0

        def shard_done(start: int, stop: int, tokens: int) -> None:
            nonlocal done
            done += sum(weights[start:stop])
            progress.add_total(tokens, expected=tokens * sum(weights) / max(done, 1))
            progress.add_done(tokens)

        try:
            return pool.map(function, items, weights, shard_done, **options)
        finally:
            progress.close()

    def close(self) -> None:
        """Stop the worker processes of ``parallel=`` calls (the model stays loaded here)."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def _policy(self, long_text: LongTextPolicy | None) -> LongTextPolicy:
        policy = long_text or self.long_text
        if policy not in LONG_TEXT_POLICIES:
            raise InvalidInputError(f"long_text must be one of {LONG_TEXT_POLICIES}, got {policy!r}")
        return policy

    def _encode(
        self,
        items: list[str] | list[list[int]],
        tokenized: bool,
        policy: LongTextPolicy,
        batch_tokens: int,
        normalize: bool,
        show_progress: bool | None,
        on_progress: ProgressCallback | None = None,
        first_index: int = 0,
    ) -> np.ndarray:
        """Vectors of ``items``; ``first_index``: their position in the caller's input (for messages)."""
        backend = self.backend
        segments: list[_Segment] = []
        parts, order = [], []
        progress = TokenProgress(show_progress, "encoding", on_progress)
        try:
            # Tokenising chunk by chunk overlaps it with the device working on the previous chunk:
            # launches are asynchronous and results are collected only at the end.
            for first in range(0, len(items), TOKENIZE_CHUNK_TEXTS):
                part = items[first : first + TOKENIZE_CHUNK_TEXTS]
                if not tokenized:
                    warn_unknown_words(self.tokenizer, part, first_index + first)
                chunk = self._segments(part if tokenized else self._tokenize(part), policy, first_index + first)
                lengths = [len(s.input_ids) for s in chunk]
                progress.add_total(sum(lengths), expected=sum(lengths) * len(items) / len(part))
                for batch in plan_batches(lengths, batch_tokens, packed=backend.packed):
                    parts.append(backend.embed([chunk[i].input_ids for i in batch]))
                    order.extend(len(segments) + i for i in batch)
                    progress.add_done(sum(lengths[i] for i in batch), parts[-1])
                segments.extend(chunk)
            lengths = [len(s.input_ids) for s in segments]
            pooled = np.empty((len(segments), self.dim), dtype=np.float32)
            pooled[order] = _to_numpy(parts)
            progress.finish()
        finally:
            progress.close()
        # Windows of one text are averaged, weighted by their token counts.
        owners = np.array([s.text_index for s in segments]) - first_index
        weights = np.array(lengths, dtype=np.float32)
        vectors = np.zeros((len(items), self.dim), dtype=np.float32)
        np.add.at(vectors, owners, pooled * weights[:, None])
        vectors /= np.bincount(owners, weights=weights, minlength=len(items))[:, None].astype(np.float32)
        if normalize:
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        check_finite(np.isfinite(vectors).all(axis=1), first_index=first_index)
        return vectors

    def info(self) -> dict[str, Any]:
        """Facts about the model, for ``jina-rag info`` and logs."""
        config = self.backend.config
        return {
            "model": str(resolve_model(self.model_name_or_path)),
            "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size,
            "parameters": config.num_parameters(),
            "dim": self.dim,
            "max_length": self.max_length,
            "model_max_length": config.max_position_embeddings,
            "long_text": self.long_text,
            **self.backend.describe(),
        }


def _worker_encoder(settings: EncoderSettings, device: str) -> JinaEncoder:
    return JinaEncoder.from_settings(settings.replace(device=device), load=False)


class TokensRead:
    """An ``on_progress`` callback keeping the tokens read so far (a worker's count for its shard)."""

    def __init__(self) -> None:
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        self.done = done


def _encode_shard(
    encoder: JinaEncoder, texts: list[str], first_index: int, *, batch_tokens: int, normalize: bool, long_text: LongTextPolicy,
) -> tuple[list[np.ndarray], int]:
    read = TokensRead()
    vectors = encoder._encode(texts, False, long_text, batch_tokens, normalize, False, read, first_index)
    return list(vectors), read.done


def _text_list(texts: Any) -> list[Any]:
    """A list of the texts given, refusing what would silently turn into other texts (bytes, a dict's keys)."""
    if isinstance(texts, (bytes, bytearray)):
        raise InvalidTypeError("texts is bytes: decode it first (e.g. data.decode('utf-8')) and pass a str or a list of str")
    if isinstance(texts, dict) or not hasattr(texts, "__iter__"):
        raise InvalidTypeError(f"texts is {type(texts).__name__}: pass a str or a list of str")
    return list(texts)


def _check_texts(texts: list[Any]) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTypeError(f"texts[{index}] is {type(text).__name__}, not str: pass strings only")
        if not text.strip():
            raise InvalidInputError(f"texts[{index}] is empty or whitespace only: remove it or give it text")
        check_unicode(text, f"texts[{index}]")


def _to_numpy(parts: list[torch.Tensor | np.ndarray]) -> np.ndarray:
    """Concatenate batch results; device tensors are copied to the host once, at the end."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts).float().cpu().numpy()
    return np.concatenate(parts).astype(np.float32, copy=False)
