"""Issue 30: bad models and inputs fail early, with one line saying what to do; nothing bad is stored.

Real checkpoint files, real processes and real stores (Qdrant Edge and Chroma, embedded and server).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from jina_rag import CheckpointError, DocumentIndex, IndexingError, JinaEncoder, NonFiniteVectorError, load_model
from jina_rag.index import open_store
from jina_rag.late_chunking import encode_late_chunks

from conftest import bert_tokenizer, write_published_checkpoint

TEXTS = ["Tides rise and fall with the moon.", "The volcano erupts with red lava.", "A quiet sea at dawn."]


def jina_rag_cli() -> str:
    cli = shutil.which("jina-rag")
    assert cli, "the jina-rag command is installed with the package"
    return cli


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([jina_rag_cli(), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- non-finite weights and vectors ------------------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing_checkpoint(tmp_path_factory) -> Path:
    """Finite weights whose forward pass overflows on one word ("volcano"): the load check passes, the
    vectors of texts holding the word are NaN, the others are fine."""
    folder = write_published_checkpoint(tmp_path_factory.mktemp("overflow") / "model")
    state = load_file(folder / "model.safetensors")
    word = bert_tokenizer()("volcano", add_special_tokens=False)["input_ids"]
    state["embeddings.word_embeddings.weight"][word] = 3e38
    save_file(state, folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, value):
    folder = write_published_checkpoint(tmp_path / "rotten")
    state = load_file(folder / "model.safetensors")
    state["encoder.layer.1.mlp.wo.weight"][3, 5] = value
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'encoder.layer.1.mlp.wo.weight' holds 1 NaN or Inf values"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="checkpoint is damaged"):
        JinaEncoder.from_pretrained(folder, device="cpu")


def test_a_non_finite_vector_is_an_error_naming_the_text(overflowing_checkpoint, one_thread):
    encoder = JinaEncoder.from_pretrained(overflowing_checkpoint, device="cpu", max_length=128)
    assert encoder.encode(TEXTS[::2]).shape == (2, 64)  # texts without the word are fine
    with pytest.raises(NonFiniteVectorError, match=r"texts\[1\] gave a vector holding NaN or Inf") as caught:
        encoder.encode(TEXTS)
    assert caught.value.index == 1
    with pytest.raises(NonFiniteVectorError, match=r"texts\[1\]"):
        encoder.encode(TEXTS, normalize=False)
    with pytest.raises(NonFiniteVectorError, match=r"documents\[1\]"):
        encode_late_chunks(encoder, TEXTS, spans=[[(0, 5)], [(0, 3)], [(0, 7)]])


@pytest.fixture(params=["qdrant-edge", "chroma-embedded", "chroma-server"])
def store_location(request, tmp_path) -> tuple[str, str]:
    """A real store: kind and location."""
    if request.param == "qdrant-edge":
        return "qdrant", str(tmp_path / "qdrant")
    if request.param == "chroma-embedded":
        return "chroma", str(tmp_path / "chroma")
    return "chroma", request.getfixturevalue("chroma_server").url


def test_indexing_a_non_finite_vector_writes_nothing_and_blames_the_model(overflowing_checkpoint, store_location, one_thread):
    kind, location = store_location
    encoder = JinaEncoder.from_pretrained(overflowing_checkpoint, device="cpu", max_length=128)
    collection = f"nan-{uuid.uuid4().hex[:8]}"
    documents = [{"id": f"doc-{number}", "text": text} for number, text in enumerate(TEXTS)]
    with DocumentIndex(open_store(kind, location, collection), encoder) as index:
        with pytest.raises(IndexingError) as caught:
            index.index(documents)
        message = str(caught.value)
        assert "document 'doc-1' got a vector holding NaN or Inf, so its batch was not written" in message
        assert "fix the model" in message and "reachable" not in message
        assert sorted(caught.value.failed_ids) == ["doc-0", "doc-1", "doc-2"]
        assert caught.value.report.indexed == []
        assert index.count() == 0


def test_cli_embed_of_a_non_finite_vector_exits_non_zero_with_one_line(overflowing_checkpoint, tmp_path):
    output = tmp_path / "vectors.jsonl"
    result = run_cli("embed", *TEXTS, "--model", str(overflowing_checkpoint), "--device", "cpu", "-o", str(output))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "jina-rag embed: error: texts[1] gave a vector holding NaN or Inf (1 of 3 did): the model's outputs overflow "
        "(in float16: use dtype='bfloat16' or 'float32') or its weights are damaged"
    ]
    assert not output.exists()
