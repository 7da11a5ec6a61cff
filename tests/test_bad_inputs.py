"""Issue 30, "one error family": a table of bad inputs, each a JinaRagError with a one-line message.

Every row feeds one bad input through the API (encoder, index), the CLI or a framework adapter. API rows
name the error class and a regex for its one-line message; CLI rows expect exit code 2 and one stderr
line (``jina-rag CMD: error: ...``) with no traceback. Inputs the library accepts are in
a separate table and must give finite vectors (or nothing, for nothing).

Tiny models are written into tmp folders by the tests (conftest); nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from jina_rag import (
    CheckpointError,
    CollectionMismatchError,
    CollectionNotFoundError,
    DocumentIndex,
    IndexingError,
    InvalidInputError,
    JinaEncoder,
    JinaRagError,
    ModelNotFoundError,
    TextTooLongError,
)
from jina_rag.cli import main as cli_main
from jina_rag.index import open_store

from conftest import write_published_checkpoint


class Bad:
    """What a row's callable gets: the shared tiny model and encoder, a fresh tmp folder, helpers."""

    def __init__(self, tmp_path: Path, checkpoint: Path, encoder: JinaEncoder, small_model: Path) -> None:
        self.tmp = tmp_path
        self.checkpoint = checkpoint
        self.encoder = encoder
        self.small_model = small_model  # a model of another dimension (32, not 64)

    @property
    def model_args(self) -> list[str]:
        return ["--model", str(self.checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]

    def damaged_copy(self, damage) -> Path:
        folder = Path(shutil.copytree(self.checkpoint, self.tmp / "damaged"))
        damage(folder)
        return folder

    def store(self, kind: str, name: str = "docs"):
        return open_store(kind, str(self.tmp / kind), name)

    def index_then_reopen_with_other_dim(self, kind: str, action: str) -> None:
        with DocumentIndex(self.store(kind), self.encoder, mode="document") as index:
            index.index([("a", "Tides rise and fall with the moon.")])
        small = JinaEncoder.from_pretrained(self.small_model, device="cpu", max_length=128)
        with DocumentIndex(self.store(kind), small, mode="document") as index:
            if action == "index":
                index.index([("b", "A quiet sea at dawn.")])
            else:
                index.search("tides")

    @cached_property
    def langchain(self):
        pytest.importorskip("langchain_core")
        from jina_rag import JinaEmbeddings

        return JinaEmbeddings(model_name=str(self.checkpoint), device="cpu", max_length=128)

    @cached_property
    def llama_index(self):
        pytest.importorskip("llama_index.core")
        from jina_rag import JinaEmbedding

        return JinaEmbedding(model_name=str(self.checkpoint), device="cpu", max_length=128)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    return write_published_checkpoint(
        tmp_path_factory.mktemp("small") / "model", heads=4, hidden_size=32, intermediate_size=64, seed=3
    )


@pytest.fixture
def bad(tmp_path, checkpoint, encoder, small_model, one_thread) -> Bad:
    return Bad(tmp_path, checkpoint, encoder, small_model)


# -- damaged model folders --------------------------------------------------------------------------------


def config_of_the_wrong_shape(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = "sixty-four"
    (folder / "config.json").write_text(json.dumps(config))


def config_that_is_a_list(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2]")


def config_with_heads_not_dividing_hidden(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 7
    (folder / "config.json").write_text(json.dumps(config))


def weights_of_the_wrong_shape(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    state["encoder.layer.0.mlp.wo.weight"] = torch.zeros(64, 7)
    save_file(state, folder / "model.safetensors")


def extra_layers(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    for key in [key for key in state if key.startswith("encoder.layer.1.")]:
        state[key.replace("encoder.layer.1.", "encoder.layer.2.")] = state[key].clone()
    save_file(state, folder / "model.safetensors")


def non_finite_weights(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    state["encoder.layer.1.mlp.wo.weight"][3, 5] = float("nan")
    save_file(state, folder / "model.safetensors")


def corrupt_safetensors(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00\x10garbage, not a safetensors header" + weights.read_bytes()[100:200])


def no_tokenizer_files(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            path.unlink()


def load_damaged(damage):
    def load(b: Bad):
        return JinaEncoder.from_pretrained(b.damaged_copy(damage), device="cpu").encode(["a text"])

    return load


def row(name: str, feed, error: type[JinaRagError], message: str, *marks):
    return pytest.param(feed, error, message, id=name, marks=marks)


# -- the API and adapter table -------------------------------------------------------------------------------

API_ROWS = [
    # encoder inputs
    row("encode-empty-string", lambda b: b.encoder.encode(""), InvalidInputError, r"texts\[0\] is empty or whitespace only"),
    row("encode-whitespace-only", lambda b: b.encoder.encode(["fine", " \t\n "]), InvalidInputError,
        r"texts\[1\] is empty or whitespace only"),
    row("encode-lone-surrogate", lambda b: b.encoder.encode(["bad \ud800"]), InvalidInputError,
        r"texts\[0\] holds a lone surrogate \('\\ud800' at character 4\)"),
    row("encode-None", lambda b: b.encoder.encode(None), InvalidInputError, r"texts is NoneType: pass a str or a list of str"),
    row("encode-bytes", lambda b: b.encoder.encode(b"bytes of a text"), InvalidInputError, r"texts is bytes: decode it first"),
    row("encode-int", lambda b: b.encoder.encode(42), InvalidInputError, r"texts is int: pass a str or a list of str"),
    row("encode-nested-list", lambda b: b.encoder.encode([["a", "b"]]), InvalidInputError, r"texts\[0\] is list, not str"),
    row("encode-dict", lambda b: b.encoder.encode({"a text": 1}), InvalidInputError, r"texts is dict: pass a str or a list of str"),
    row("encode-batch-tokens-0", lambda b: b.encoder.encode(["a text"], batch_tokens=0), InvalidInputError,
        r"batch_tokens must be positive, got 0"),
    row("encode-unknown-long-text", lambda b: b.encoder.encode(["a text"], long_text="squash"), InvalidInputError,
        r"long_text must be one of .*got 'squash'"),
    # encoder settings and model folders
    row("encoder-unknown-backend", lambda b: JinaEncoder(b.checkpoint, backend="tensorrt"), InvalidInputError,
        r"backend must be one of .*got 'tensorrt'"),
    row("encoder-unknown-long-text", lambda b: JinaEncoder(b.checkpoint, long_text="squash"), InvalidInputError,
        r"long_text must be one of .*got 'squash'"),
    row("encoder-device-cuda", lambda b: JinaEncoder.from_pretrained(b.checkpoint, device="cuda"), InvalidInputError,
        r"device 'cuda' is not available: .*use device='cpu'",
        *([pytest.mark.skip(reason="CUDA is available here")] if torch.cuda.is_available() else [])),
    row("unknown-model-name", lambda b: JinaEncoder.from_pretrained("no-such-org/no-such-model", device="cpu"),
        ModelNotFoundError, r"no-such-org/no-such-model"),
    row("config-hidden-size-a-string", load_damaged(config_of_the_wrong_shape), CheckpointError, r"hidden_size"),
    row("config-json-is-a-list", load_damaged(config_that_is_a_list), CheckpointError, r"config\.json"),
    row("config-heads-not-dividing-hidden", load_damaged(config_with_heads_not_dividing_hidden), CheckpointError,
        r"hidden_size \(64\) must be a multiple of num_attention_heads \(7\)"),
    row("weights-of-the-wrong-shape", load_damaged(weights_of_the_wrong_shape), CheckpointError,
        r"encoder\.layer\.0\.mlp\.wo\.weight"),
    row("extra-layers", load_damaged(extra_layers), CheckpointError, r"encoder\.layer\.2\."),
    row("non-finite-weights", load_damaged(non_finite_weights), CheckpointError,
        r"'encoder\.layer\.1\.mlp\.wo\.weight' holds 1 NaN or Inf values"),
    row("corrupt-safetensors", load_damaged(corrupt_safetensors), CheckpointError,
        r"model\.safetensors is not a readable safetensors file"),
    row("no-tokenizer-files", load_damaged(no_tokenizer_files), ModelNotFoundError, r"no tokenizer files"),
    # the index
    row("index-wrong-dimension-chroma", lambda b: b.index_then_reopen_with_other_dim("chroma", "index"),
        CollectionMismatchError, r"\b64\b.*\b32\b|\b32\b.*\b64\b"),
    row("index-wrong-dimension-qdrant-edge", lambda b: b.index_then_reopen_with_other_dim("qdrant", "index"),
        CollectionMismatchError, r"\b64\b.*\b32\b|\b32\b.*\b64\b"),
    row("search-wrong-dimension-chroma", lambda b: b.index_then_reopen_with_other_dim("chroma", "search"),
        CollectionMismatchError, r"\b64\b.*\b32\b|\b32\b.*\b64\b"),
    row("search-wrong-dimension-qdrant-edge", lambda b: b.index_then_reopen_with_other_dim("qdrant", "search"),
        CollectionMismatchError, r"\b64\b.*\b32\b|\b32\b.*\b64\b"),
    row("index-duplicate-ids", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).index([("a", "One."), ("a", "Two.")]),
        InvalidInputError, r"document 'a' appears twice: document ids must be unique within one run"),
    row("index-empty-text", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).index([("a", "One."), ("b", "  ")]),
        InvalidInputError, r"document 'b' is empty or whitespace only"),
    row("index-batch-docs-0", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).index([("a", "One.")], batch_docs=0),
        InvalidInputError, r"batch_docs must be >= 1, got 0"),
    row("index-unknown-mode", lambda b: DocumentIndex(b.store("qdrant"), b.encoder, mode="fuzzy"), InvalidInputError,
        r"unknown mode 'fuzzy'"),
    row("search-unknown-mode", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).search("tides", mode="fuzzy"),
        InvalidInputError, r"unknown mode 'fuzzy'"),
    row("search-limit-0", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).search("tides", limit=0),
        InvalidInputError, r"limit must be at least 1, got 0"),
    row("search-filter-dict-value", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).search("tides", filter={"k": {"a": 1}}),
        InvalidInputError, r"filter 'k'"),
    row("search-missing-collection", lambda b: DocumentIndex(b.store("qdrant"), b.encoder).search("tides"),
        CollectionNotFoundError, r"collection 'docs' at .* does not exist"),
    row("open-unknown-store", lambda b: open_store("redis", str(b.tmp / "r"), "docs"), InvalidInputError,
        r"unknown store 'redis'"),
    row("index-too-long-with-long-text-error",
        lambda b: DocumentIndex(b.store("qdrant"), JinaEncoder.from_pretrained(b.checkpoint, device="cpu", max_length=128,
                                                                               long_text="error")).index([("long", "word " * 400)]),
        TextTooLongError, r"document 'long' has 4\d\d tokens"),
    # adapters
    row("langchain-embed-documents-bare-string", lambda b: b.langchain.embed_documents("one document"), InvalidInputError,
        r"embed_documents takes a list of texts"),
    row("langchain-embed-query-empty", lambda b: b.langchain.embed_query(""), InvalidInputError,
        r"texts\[0\] is empty or whitespace only"),
    row("langchain-embed-documents-None", lambda b: b.langchain.embed_documents([None]), InvalidInputError,
        r"texts\[0\] is NoneType"),
    row("llama-index-text-embedding-whitespace", lambda b: b.llama_index.get_text_embedding("   "), InvalidInputError,
        r"texts\[0\] is empty or whitespace only"),
    row("llama-index-query-lone-surrogate", lambda b: b.llama_index.get_query_embedding("q \udcff"), InvalidInputError,
        r"texts\[0\] holds a lone surrogate"),
]


@pytest.mark.parametrize(("feed", "error", "message"), API_ROWS)
def test_a_bad_input_is_one_line_jina_rag_error(feed, error, message, bad):
    assert issubclass(error, JinaRagError)
    with pytest.raises(JinaRagError) as caught:
        feed(bad)
    assert isinstance(caught.value, error), repr(caught.value)
    text = str(caught.value)
    assert "\n" not in text.strip(), text
    assert re.search(message, text), text


# -- the CLI table -------------------------------------------------------------------------------------------


def invalid_utf8_file(b: Bad) -> list[str]:
    bad_file = b.tmp / "latin1.txt"
    bad_file.write_bytes("café au lait\n".encode("latin-1"))
    return ["embed", "--file", str(bad_file), *b.model_args]


def empty_folder(b: Bad) -> list[str]:
    (b.tmp / "empty").mkdir()
    return ["index", str(b.tmp / "empty"), "--store", "qdrant", "--location", str(b.tmp / "q"), "--collection", "docs", *b.model_args]


def index_args(b: Bad, *extra: str) -> list[str]:
    (b.tmp / "docs").mkdir(exist_ok=True)
    (b.tmp / "docs" / "a.md").write_text("Tides rise and fall with the moon.")
    return ["index", str(b.tmp / "docs"), "--store", "qdrant", "--location", str(b.tmp / "q"), "--collection", "docs",
            *extra, *b.model_args]


def damaged_info(damage):
    return lambda b: ["info", "--model", str(b.damaged_copy(damage)), "--device", "cpu"]


def cli_row(name: str, args, message: str, *marks):
    return pytest.param(args, message, id=name, marks=marks)


CLI_ROWS = [
    cli_row("embed-invalid-utf8-file", invalid_utf8_file, r"latin1\.txt is not UTF-8 text \(invalid continuation byte at byte 3\)"),
    cli_row("embed-missing-file", lambda b: ["embed", "--file", str(b.tmp / "nowhere.txt"), *b.model_args], r"nowhere\.txt"),
    cli_row("embed-file-is-a-folder", lambda b: ["embed", "--file", str(b.tmp), *b.model_args], r"[Ii]s a directory|is a folder|not a regular file"),
    cli_row("embed-empty-text", lambda b: ["embed", "", *b.model_args], r"texts\[0\] is empty or whitespace only"),
    cli_row("embed-whitespace-text", lambda b: ["embed", "fine", "  ", *b.model_args], r"texts\[1\] is empty or whitespace only"),
    cli_row("embed-batch-tokens-0", lambda b: ["embed", "text", "--batch-tokens", "0", *b.model_args], r"batch_tokens must be positive"),
    cli_row("embed-device-cuda", lambda b: ["embed", "text", "--model", str(b.checkpoint), "--device", "cuda"],
            r"device 'cuda' is not available",
            *([pytest.mark.skip(reason="CUDA is available here")] if torch.cuda.is_available() else [])),
    cli_row("embed-unknown-model", lambda b: ["embed", "text", "--model", str(b.tmp / "no-such-model"), "--device", "cpu"],
            r"no-such-model"),
    cli_row("info-corrupt-safetensors", damaged_info(corrupt_safetensors), r"model\.safetensors is not a readable safetensors file"),
    cli_row("info-non-finite-weights", damaged_info(non_finite_weights), r"holds 1 NaN or Inf values"),
    cli_row("info-no-tokenizer-files", damaged_info(no_tokenizer_files), r"no tokenizer files"),
    cli_row("index-empty-folder", empty_folder, r"empty holds no files it can index"),
    cli_row("index-batch-docs-0", lambda b: index_args(b, "--batch-docs", "0"), r"batch_docs must be >= 1, got 0"),
    cli_row("index-chunk-tokens-0", lambda b: index_args(b, "--chunk-tokens", "0"), r"chunk_tokens must be positive, got 0"),
    cli_row("search-missing-location", lambda b: ["search", "tides", "--store", "qdrant", "--location", str(b.tmp / "tpyo"),
                                                  "--collection", "docs", *b.model_args],
            r"collection 'docs' at .*tpyo does not exist"),
    cli_row("search-limit-0", lambda b: ["search", "tides", "--limit", "0", "--store", "qdrant", "--location", str(b.tmp / "tpyo"),
                                         "--collection", "docs", *b.model_args], r"limit must be at least 1, got 0"),
    cli_row("search-unknown-store", lambda b: ["search", "tides", "--store", "redis", "--location", str(b.tmp), "--collection", "d",
                                               *b.model_args], r"invalid choice: 'redis'"),
]


@pytest.mark.parametrize(("args", "message"), CLI_ROWS)
def test_a_bad_cli_input_is_exit_2_and_one_line(args, message, bad, capsys):
    arguments = args(bad)
    capsys.readouterr()
    code = cli_main(arguments)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"jina-rag {arguments[0]}: error: "), lines[0]
    assert re.search(message, lines[0]), lines[0]


# -- accepted: inputs that are not errors -----------------------------------------------------------------------


ACCEPTED = [
    pytest.param(lambda b: b.encoder.encode(["bell\x07 null\x00 escape\x1b[31m red"]), (1, 64), id="encode-control-characters"),
    pytest.param(lambda b: b.encoder.encode([]), (0, 64), id="encode-empty-list"),
    pytest.param(lambda b: np.asarray(b.langchain.embed_documents([])), (0,), id="langchain-embed-documents-empty-list"),
    pytest.param(lambda b: np.asarray(b.langchain.embed_query("tab\there\x0cform feed")), (64,), id="langchain-control-characters"),
    pytest.param(lambda b: b.encoder.encode(["word " * 5000]), (1, 64), id="encode-over-long-text-windows"),
]


@pytest.mark.parametrize(("feed", "shape"), ACCEPTED)
def test_an_accepted_odd_input_gives_finite_vectors(feed, shape, bad):
    vectors = np.asarray(feed(bad))
    assert vectors.shape == shape
    assert np.isfinite(vectors).all()


def test_an_over_long_query_and_unknown_filter_keys_are_accepted(bad):
    with DocumentIndex(bad.store("qdrant"), bad.encoder, mode="document") as index:
        index.index([("a", "Tides rise and fall with the moon.", {"topic": "sea"})])
        hits = index.search("tides " * 2000, limit=1)
        assert [hit.id for hit in hits] == ["a"] and np.isfinite(hits[0].score)
        assert index.search("tides", filter={"no-such-key": "x"}) == []
