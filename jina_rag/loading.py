"""Finding, loading and saving models in the published ``jinaai/jina-embeddings-v2-*`` layout.

A model is a local folder or a hub id. Nothing here runs remote code: the published
``auto_map`` is kept in ``config.json`` for other tools, and our own modeling code reads the weights.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, TypeVar

import torch

from jina_rag.errors import InvalidInputError, JinaRagError
from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM, JinaBertModel

logger = logging.getLogger(__name__)

HUB_ORGANISATION = "jinaai"
DEFAULT_HUB_MODEL = "jinaai/jina-embeddings-v2-small-en"
MODEL_ENV_VAR = "JINA_RAG_MODEL"
# The trained default model that the package ships (see training/RESULTS.md), when present.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "models" / "jina-rag-small-en"

PUBLISHED_MODELS = {
    "jina-embeddings-v2-small-en",
    "jina-embeddings-v2-base-en",
    "jina-embeddings-v2-base-de",
    "jina-embeddings-v2-base-es",
    "jina-embeddings-v2-base-zh",
}
UNSUPPORTED_MODELS = {
    "jina-embeddings-v2-base-code": "it adds LayerNorms on queries and keys whose weight names "
    "are not confirmed yet",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Weights the encoder does not use; skipped without complaint.
SKIPPED_PREFIXES = ("pooler.", "cls.")
SKIPPED_BUFFERS = ("embeddings.position_ids",)
# Tied to the word embeddings (decoder.weight) or equal to cls.predictions.bias (decoder.bias).
TIED_HEAD_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

ModelT = TypeVar("ModelT", JinaBertModel, JinaBertForMaskedLM)


class ModelNotFoundError(FileNotFoundError, JinaRagError):
    """The model is neither a local folder nor reachable on the hub (or in its cache)."""


class CheckpointError(ValueError, JinaRagError):
    """The weights are unreadable, refused, or do not fit the JinaBERT architecture (a missing key, a wrong shape)."""


def default_model_name() -> str:
    """The model used when none is named: ``$JINA_RAG_MODEL``, the shipped model, or the hub's."""
    from_env = os.environ.get(MODEL_ENV_VAR)
    if from_env:
        return from_env
    if (SHIPPED_MODEL_DIR / "config.json").is_file():
        return str(SHIPPED_MODEL_DIR)
    return DEFAULT_HUB_MODEL


def resolve_model(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """Return a local folder holding the model, downloading a hub id into the hub cache.

    ``None`` means the default model; a short published name such as
    ``jina-embeddings-v2-small-en`` means ``jinaai/<name>``.
    """
    name = str(name_or_path) if name_or_path is not None else default_model_name()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but holds no config.json: not a model folder")
        return path
    if path.suffix or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model folder {name!r} does not exist")
    short = name.split("/")[-1]
    if short in UNSUPPORTED_MODELS:
        raise InvalidInputError(f"{name} is not supported yet: {UNSUPPORTED_MODELS[short]}")
    if "/" not in name:
        if name not in PUBLISHED_MODELS:
            raise ModelNotFoundError(
                f"unknown model {name!r}: not a local folder and not one of the published models "
                f"({', '.join(sorted(PUBLISHED_MODELS))}); pass a folder or a hub id 'org/name'"
            )
        name = f"{HUB_ORGANISATION}/{name}"
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    patterns = ["*.json", "*.txt", "model.safetensors", "1_Pooling/*"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not (folder / "model.safetensors").is_file():
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns + ["pytorch_model.bin"]))
    except Exception as error:  # the hub client raises many types for "offline" and "not found"
        raise ModelNotFoundError(
            f"could not load model {repo_id!r}: it is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and the hub could not be reached or does not have it "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"Pass a local folder in the published layout (JinaEncoder.from_pretrained('/path/to/model') or "
            f"--model /path/to/model), set {MODEL_ENV_VAR}=/path/to/model, or name no model to use the one the "
            f"package ships ({SHIPPED_MODEL_DIR.name}, offline)."
        ) from error
    return folder


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` or, failing that, ``pytorch_model.bin`` (weights only)."""
    for name in WEIGHT_FILES:
        file = folder / name
        if not file.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                return load_file(file)
            except SafetensorError as error:
                raise CheckpointError(
                    f"{file} is not a readable safetensors file ({error}): it is truncated or damaged; copy or "
                    f"download the model again"
                ) from error
        return _load_pickled_weights(file)
    raise ModelNotFoundError(f"{folder} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")


# Besides the weights, the files that decide a model's vectors.
FINGERPRINTED_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json")


@functools.lru_cache(maxsize=16)
def model_fingerprint(folder: Path, weight_files: tuple[str, ...] = WEIGHT_FILES) -> str:
    """SHA-256 over a model folder's config, tokenizer files and the weights file it loads (the first of
    ``weight_files`` present): the same for a copy of the model anywhere, different for other weights.

    Reads the weights once per process: 50 ms for the shipped model's 52 MB on one EPYC core.
    """
    weights = next((name for name in weight_files if (folder / name).is_file()), None)
    digest = hashlib.sha256()
    for name in (*FINGERPRINTED_FILES, weights):
        if name is None or not (folder / name).is_file():
            continue
        file_digest = hashlib.sha256()
        with open(folder / name, "rb") as file:
            while chunk := file.read(1 << 20):
                file_digest.update(chunk)
        digest.update(f"{name} {file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()


def _load_pickled_weights(file: Path) -> dict[str, torch.Tensor]:
    """``pytorch_model.bin`` through ``torch.load(weights_only=True)``, its refusals as one line each."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is 10-20 lines; the line worth keeping names what the pickle asked to import.
        wanted = re.search(r"unsupported GLOBAL (\S+)", str(error))
        if wanted:
            raise CheckpointError(
                f"{file} was refused: it asks to import {wanted.group(1)}, which plain weights never need (so it "
                f"was not loaded and nothing in it ran); use a model.safetensors from a trusted source"
            ) from None
        raise CheckpointError(
            f"{file} is not a plain PyTorch weights file (damaged, or pickled objects other than tensors): copy "
            f"or download the model again, preferably as model.safetensors"
        ) from None
    except (RuntimeError, EOFError) as error:  # a truncated or damaged zip archive
        raise CheckpointError(
            f"{file} is not a readable PyTorch weights file ({str(error).split('.')[0]}): it is truncated or "
            f"damaged; copy or download the model again"
        ) from None


def check_device(device: str | torch.device) -> torch.device:
    """The device, refused with one line when torch cannot use it (instead of its error deep inside loading)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"unknown device {device!r} ({error}): use cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU or driver was found"
        raise InvalidInputError(
            f"device {str(device)!r} is not available: {why}; use device='cpu', or leave the device out to use "
            f"CUDA when it is there"
        )
    if device.index is not None and device.index >= count:
        raise InvalidInputError(f"device {str(device)!r} is not available: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def _encoder_key(key: str) -> str | None:
    """Map a checkpoint key to the encoder's name for it, or None when the encoder skips it."""
    key = key.removeprefix("bert.")
    if key.startswith(SKIPPED_PREFIXES) or key in SKIPPED_BUFFERS:
        return None
    return key


def _masked_lm_key(key: str) -> str | None:
    if key in TIED_HEAD_KEYS:
        return None
    if key.startswith("cls."):
        return key
    encoder_key = _encoder_key(key)
    return None if encoder_key is None else f"bert.{encoder_key}"


def match_state_dict(model: JinaBertModel | JinaBertForMaskedLM, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to the model's, checking every required key and shape."""
    to_model_key = _masked_lm_key if isinstance(model, JinaBertForMaskedLM) else _encoder_key
    expected = {k: v for k, v in model.state_dict().items() if k != "cls.predictions.decoder.weight"}
    matched: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        model_key = to_model_key(key)
        if model_key is None:
            logger.debug("skipping checkpoint key %s (not used by %s)", key, type(model).__name__)
        elif model_key not in expected:
            unexpected.append(key)
        elif tensor.shape != expected[model_key].shape:
            raise CheckpointError(
                f"weight {key!r} has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[model_key].shape)}: config.json and the weights disagree"
            )
        else:
            matched[model_key] = tensor
    if unexpected:
        raise CheckpointError(
            f"the checkpoint has weights JinaBERT does not have ({', '.join(sorted(unexpected)[:5])}"
            f"{', ...' if len(unexpected) > 5 else ''}): it is another architecture or variant"
        )
    missing = sorted(set(expected) - set(matched))
    head_only = all(k.startswith("cls.") for k in missing)
    if missing and not (head_only and isinstance(model, JinaBertForMaskedLM)):
        raise CheckpointError(f"the checkpoint lacks required weight {missing[0]!r} ({len(missing)} missing in all)")
    if missing:
        logger.warning("the checkpoint has no MLM head: it starts from a fresh initialisation")
    return matched


def check_finite(state: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or Inf (bit rot, a broken conversion): they give NaN vectors, silently."""
    for key, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        # NaN propagates through min and max, and an infinity is one of them: 5-10 ms for the shipped
        # model's 26M fp16 weights where isfinite().all() takes 240 ms (one EPYC core). Unlike a sum,
        # they cannot overflow on finite weights.
        if not torch.isfinite(torch.stack(torch.aminmax(tensor))).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"weight {key!r} holds {bad} NaN or Inf values of {tensor.numel()}: the checkpoint is damaged; "
                f"copy or download the model again"
            )


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    model_class: type[ModelT] = JinaBertModel,  # type: ignore[assignment]
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    **model_kwargs: Any,
) -> ModelT:
    """Load a JinaBERT model (encoder or MLM) from a folder or hub id, in eval mode."""
    device = check_device(device)
    folder = resolve_model(name_or_path)
    try:
        config = JinaBertConfig.from_json_file(folder / "config.json")
    except ValueError as error:
        raise CheckpointError(f"{folder}: {error}") from error
    model = model_class(config, **model_kwargs)
    state = match_state_dict(model, read_state_dict(folder))
    check_finite(state)
    model.load_state_dict(state, strict=False)
    if isinstance(model, JinaBertForMaskedLM):
        model.tie_weights()
    return model.to(device=device, dtype=dtype).eval()


# tokenizer_config.json keys passed on to the tokenizer; anything else (``auto_map``,
# ``tokenizer_class``) is ignored, so a folder cannot name code to import.
TOKENIZER_SETTINGS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
    "model_max_length", "clean_up_tokenization_spaces",
)
BERT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]", "sep_token": "[SEP]", "cls_token": "[CLS]", "pad_token": "[PAD]", "mask_token": "[MASK]",
}


def load_tokenizer(name_or_path: str | os.PathLike[str] | None = None):
    """The fast tokenizer saved beside the model (``tokenizer.json``, else a BERT ``vocab.txt``).

    Built from the files' data alone, never through transformers' Auto classes, so no
    ``auto_map`` or custom tokenizer class in the folder can make Python code run.
    """
    return tokenizer_from_folder(resolve_model(name_or_path))


def tokenizer_from_folder(folder: Path) -> Any:
    """:func:`load_tokenizer` for a folder that needs no model files (a tokenizer folder alone)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    config = _tokenizer_config(folder)
    settings = {key: _token_content(config[key]) for key in TOKENIZER_SETTINGS if key in config}
    try:
        if (folder / "tokenizer.json").is_file():
            backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.txt").is_file():
            settings = {**BERT_SPECIAL_TOKENS, **settings}
            backend = _wordpiece_from_vocab(folder / "vocab.txt", bool(config.get("do_lower_case", True)), settings)
        else:
            raise ModelNotFoundError(
                f"{folder} holds no tokenizer files: expected tokenizer.json (or a BERT vocab.txt) beside config.json"
            )
    except ModelNotFoundError:
        raise
    except Exception as error:  # the Rust tokenizers library raises plain Exception for bad files
        raise ModelNotFoundError(f"{folder} holds no usable tokenizer files: {error}") from error
    return PreTrainedTokenizerFast(tokenizer_object=backend, **settings)


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    file = folder / "tokenizer_config.json"
    if not file.is_file():
        return {}
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelNotFoundError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{file} must hold a JSON object")
    return config


def _token_content(value: Any) -> Any:
    """Special tokens are saved as plain strings or as ``{"content": ...}`` objects."""
    return value["content"] if isinstance(value, dict) and "content" in value else value


def _wordpiece_from_vocab(vocab_file: Path, lowercase: bool, special: dict[str, Any]) -> Any:
    """A BERT WordPiece tokenizer (the published English models' kind) from ``vocab.txt``."""
    from tokenizers.implementations import BertWordPieceTokenizer

    tokens = {key: special[key] for key in BERT_SPECIAL_TOKENS}
    return BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase, **tokens)._tokenizer


def save_pretrained(
    model: JinaBertModel | JinaBertForMaskedLM,
    folder: str | os.PathLike[str],
    tokenizer: Any = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the published layout: config, safetensors weights, tokenizer, sentence-transformers files."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    state = {
        key: tensor.detach().to("cpu", dtype or tensor.dtype).contiguous()
        for key, tensor in model.state_dict().items()
        if key != "cls.predictions.decoder.weight"
    }
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    saved_dtype = str(dtype or next(model.parameters()).dtype).removeprefix("torch.")
    config = dataclasses.replace(config, extra={**config.extra, "torch_dtype": saved_dtype})
    config.to_json_file(folder / "config.json")
    if tokenizer is not None:
        tokenizer.model_max_length = config.max_position_embeddings
        tokenizer.save_pretrained(str(folder))
        _complete_tokenizer_files(folder, tokenizer)
    _write_sentence_transformers_files(folder, config)
    return folder


def _complete_tokenizer_files(folder: Path, tokenizer: Any) -> None:
    """The published layout's ``vocab.txt`` (WordPiece) and ``special_tokens_map.json``, which
    transformers 5 no longer writes beside ``tokenizer.json`` (readers of the layout still look for them)."""
    tokenizer_json = folder / "tokenizer.json"
    if not (folder / "vocab.txt").exists() and tokenizer_json.is_file():
        if json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {}).get("type") == "WordPiece":
            write_vocab_txt(tokenizer_json, folder)
    if not (folder / "special_tokens_map.json").exists():
        special = {key: str(value) for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def write_vocab_txt(tokenizer_json: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """``folder/vocab.txt`` from a WordPiece ``tokenizer.json`` (one token a line, in id order)."""
    vocab = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]["vocab"]
    path = Path(folder) / "vocab.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")
    return path


def _write_sentence_transformers_files(folder: Path, config: JinaBertConfig) -> None:
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
        "sentence_bert_config.json": {"max_seq_length": config.max_position_embeddings, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": config.hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    }
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
