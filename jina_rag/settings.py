""":class:`EncoderSettings`: the encoder's options, declared and checked in this one place.

The command line, the framework adapters, the Chroma embedding function and the Ray engine each
build one and hand it on whole; :meth:`JinaEncoder.from_settings <jina_rag.encoder.JinaEncoder.from_settings>`
builds the encoder from it. This module imports neither torch nor a runtime: what needs them (is
the device there, is the ONNX provider installed) is checked when the encoder is made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jina_rag.errors import InvalidInputError, InvalidTypeError

LongTextPolicy = Literal["windows", "truncate", "error"]
LONG_TEXT_POLICIES = ("windows", "truncate", "error")
BackendName = Literal["torch", "onnx"]
BACKENDS = ("torch", "onnx")
AttentionName = Literal["auto", "flash"]
ATTENTIONS = ("auto", "flash")
DEFAULT_MAX_LENGTH = 8192
DEFAULT_BATCH_TOKENS = 16384
# An ONNX Runtime execution provider: a name, or (name, options).
Provider = str | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class EncoderSettings:
    """How to build and run a :class:`~jina_rag.JinaEncoder`; checked when made, never changed after.

    ``model`` is a folder or hub id (None: the default model). ``device`` and ``dtype`` are torch
    names (None: CUDA when available, bf16 there, fp32 on CPU). Texts over ``max_length`` tokens
    follow ``long_text`` ("windows" of ``window_overlap`` tokens' overlap, None: ``max_length // 8``;
    "truncate"; "error"). ``backend="onnx"`` runs an ``export-onnx`` folder with ``providers``.
    ``alibi_cutoff`` and ``attention`` choose the CUDA attention. ``batch_tokens`` and ``normalize``
    are :meth:`~jina_rag.JinaEncoder.encode`'s defaults. ``to_dict``/``from_dict`` give and take
    JSON values; ``replace(**changes)`` makes a changed copy, checked again.
    """

    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    long_text: LongTextPolicy = "windows"
    window_overlap: int | None = None
    backend: BackendName = "torch"
    providers: tuple[Provider, ...] | None = None
    alibi_cutoff: float | None = None
    attention: AttentionName = "auto"
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    normalize: bool = True

    def __post_init__(self) -> None:
        # Plain values only: a path as str, torch.device and torch.dtype by name, providers as a tuple.
        plain = object.__setattr__
        if self.model is not None:
            if not isinstance(self.model, (str, os.PathLike)):
                raise InvalidTypeError(f"model is {type(self.model).__name__}: pass a folder or hub id (str or path), or None")
            plain(self, "model", os.fspath(self.model))
        if self.device is not None and not isinstance(self.device, str):
            plain(self, "device", str(self.device))  # torch.device("cuda:1") -> "cuda:1"
        if self.dtype is not None and not isinstance(self.dtype, str):
            plain(self, "dtype", str(self.dtype).removeprefix("torch."))  # torch.bfloat16 -> "bfloat16"
        if self.providers is not None:
            plain(self, "providers", _providers(self.providers))
        for name in ("max_length", "batch_tokens") + (("window_overlap",) if self.window_overlap is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidTypeError(f"{name} must be a whole number of tokens, got {value!r} ({type(value).__name__})")
        if not isinstance(self.normalize, bool):
            raise InvalidTypeError(f"normalize must be True or False, got {self.normalize!r}")
        if self.alibi_cutoff is not None:
            if not isinstance(self.alibi_cutoff, (int, float)) or isinstance(self.alibi_cutoff, bool):
                raise InvalidTypeError(f"alibi_cutoff must be a number of logits or None, got {self.alibi_cutoff!r}")
            plain(self, "alibi_cutoff", float(self.alibi_cutoff))
        self._check()

    def _check(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.long_text not in LONG_TEXT_POLICIES:
            raise InvalidInputError(f"long_text must be one of {LONG_TEXT_POLICIES}, got {self.long_text!r}")
        if self.max_length < 8:
            raise InvalidInputError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if self.window_overlap is not None and self.window_overlap < 0:
            raise InvalidInputError(f"window_overlap must be 0 or more tokens (None: max_length // 8), got {self.window_overlap}")
        if self.batch_tokens <= 0:
            raise InvalidInputError(f"batch_tokens must be positive, got {self.batch_tokens}")
        if self.attention not in ATTENTIONS:
            raise InvalidInputError(f"attention must be 'auto' or 'flash', got {self.attention!r}")
        if self.attention == "flash" and (self.backend != "torch" or self.alibi_cutoff is not None):
            raise InvalidInputError("attention='flash' runs the torch backend with exact attention: drop backend/alibi_cutoff")
        if self.alibi_cutoff is not None and not self.alibi_cutoff > 0:
            raise InvalidInputError(
                f"alibi_cutoff must be positive (logits) or None for exact attention, got {self.alibi_cutoff!r}")
        if self.backend == "onnx" and self.dtype is not None:
            raise InvalidInputError(
                "backend='onnx' runs at the precision of the export: drop dtype (export with --dtype/--quantize instead)")
        if self.backend != "onnx" and self.providers is not None:
            raise InvalidInputError("providers are ONNX Runtime execution providers: pass backend='onnx' with them")

    def replace(self, **changes: Any) -> EncoderSettings:
        """A copy with ``changes`` (field names), checked like a new one."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON value (providers as a list; ``(name, options)`` as ``[name, options]``)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.providers is not None:
            values["providers"] = [p if isinstance(p, str) else [p[0], dict(p[1])] for p in self.providers]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderSettings:
        """Settings from :meth:`to_dict`'s output; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(values, Mapping):
            raise InvalidTypeError(f"encoder settings must be a mapping of field names to values, got {type(values).__name__}")
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise InvalidInputError(f"unknown encoder settings {unknown}: known ones are {', '.join(field_names())}")
        return cls(**values)


def field_names() -> tuple[str, ...]:
    """The names of :class:`EncoderSettings`' fields, in order."""
    return tuple(field.name for field in dataclasses.fields(EncoderSettings))


DEFAULT_SETTINGS = EncoderSettings()


def _providers(providers: Any) -> tuple[Provider, ...]:
    if isinstance(providers, str):
        return (providers,)
    if isinstance(providers, Mapping) or not hasattr(providers, "__iter__"):
        raise InvalidTypeError(f"providers is {type(providers).__name__}: pass a list of names or (name, options) pairs")
    normalised: list[Provider] = []
    for provider in providers:
        if isinstance(provider, str):
            normalised.append(provider)
        elif isinstance(provider, (tuple, list)) and len(provider) == 2 and isinstance(provider[0], str) \
                and isinstance(provider[1], Mapping):
            normalised.append((provider[0], dict(provider[1])))
        else:
            raise InvalidTypeError(f"provider {provider!r}: pass a name or a (name, options) pair")
    return tuple(normalised)
