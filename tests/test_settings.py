"""One :class:`EncoderSettings`, made once: every encoder flag of the CLI reaches the encoder on every
command and engine, and the adapters and the Chroma function round-trip their settings.

The CLI runs for real on the tiny random-weight checkpoint; what reaches the encoder is read off
the encoder itself (``JinaEncoder.from_settings`` is wrapped to keep the encoders it returns, the
real ones) and, for Ray, off the report, whose settings come from the worker's own encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from jina_rag import EncoderSettings, InvalidInputError, InvalidTypeError, JinaEncoder
from jina_rag import cli
from jina_rag.settings import DEFAULT_SETTINGS, field_names

TESTS = Path(__file__).resolve().parent
COMMANDS_WITH_AN_ENCODER = ("embed", "info", "index", "search", "eval")


# -- the settings object ---------------------------------------------------------------------------------------------


def test_settings_are_plain_checked_once_and_frozen(tmp_path):
    settings = EncoderSettings(tmp_path, device=torch.device("cpu"), dtype=torch.bfloat16, providers=None, alibi_cutoff=64)
    assert (settings.model, settings.device, settings.dtype, settings.alibi_cutoff) == (str(tmp_path), "cpu", "bfloat16", 64.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_length = 512
    assert settings.replace(max_length=512).max_length == 512 and settings.max_length == 8192
    onnx = EncoderSettings(backend="onnx", providers=["CUDAExecutionProvider", ("CPUExecutionProvider", {"threads": 2})])
    assert onnx.providers == ("CUDAExecutionProvider", ("CPUExecutionProvider", {"threads": 2}))
    for value in (settings, onnx, DEFAULT_SETTINGS):
        as_json = json.loads(json.dumps(value.to_dict()))
        assert list(as_json) == list(field_names()) and EncoderSettings.from_dict(as_json) == value
    assert EncoderSettings.from_dict({"max_length": 512}) == EncoderSettings(max_length=512)  # missing keys: defaults

    bad = [
        (dict(backend="tensorrt"), InvalidInputError, r"backend must be one of .*got 'tensorrt'"),
        (dict(long_text="squash"), InvalidInputError, r"long_text must be one of .*got 'squash'"),
        (dict(max_length=4), InvalidInputError, r"max_length must be at least 8 tokens, got 4"),
        (dict(max_length="512"), InvalidTypeError, r"max_length must be a whole number of tokens, got '512'"),
        (dict(window_overlap=-1), InvalidInputError, r"window_overlap must be 0 or more tokens"),
        (dict(batch_tokens=0), InvalidInputError, r"batch_tokens must be positive, got 0"),
        (dict(normalize="yes"), InvalidTypeError, r"normalize must be True or False"),
        (dict(attention="sdpa"), InvalidInputError, r"attention must be 'auto' or 'flash'"),
        (dict(attention="flash", alibi_cutoff=64), InvalidInputError, r"attention='flash' runs the torch backend"),
        (dict(alibi_cutoff=-1.0), InvalidInputError, r"alibi_cutoff must be positive"),
        (dict(backend="onnx", dtype="fp16"), InvalidInputError, r"backend='onnx' runs at the precision of the export"),
        (dict(providers=["CPUExecutionProvider"]), InvalidInputError, r"pass backend='onnx' with them"),
        (dict(backend="onnx", providers=[42]), InvalidTypeError, r"provider 42: pass a name or a \(name, options\) pair"),
    ]
    for values, error, message in bad:
        with pytest.raises(error, match=message):
            EncoderSettings(**values)
        with pytest.raises(error, match=message):  # the encoder checks with the same object, nowhere else
            JinaEncoder(**values)
    with pytest.raises(InvalidInputError, match=r"unknown encoder settings \['max_lenght'\]"):
        EncoderSettings.from_dict({"max_lenght": 512})


def test_the_encoder_is_built_from_its_settings_and_encodes_with_them(checkpoint):
    settings = EncoderSettings(checkpoint, device="cpu", max_length=64, long_text="truncate", window_overlap=8,
                               batch_tokens=256, normalize=False)
    encoder = JinaEncoder.from_settings(settings)
    assert encoder.settings == settings
    assert (encoder.max_length, encoder.long_text, encoder.window_overlap, encoder.device) == (64, "truncate", 8, torch.device("cpu"))
    assert JinaEncoder(checkpoint, device="cpu").window_overlap == 8192 // 8  # None: max_length // 8
    texts = ["tidal energy report", "harbour sediment survey of the coast"]
    raw = encoder.encode(texts)  # normalize=False and batch_tokens=256 come from the settings
    np.testing.assert_allclose(raw, encoder.encode(texts, batch_tokens=256, normalize=False), rtol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(encoder.encode(texts, normalize=True), axis=1), 1.0, rtol=1e-5)
    with pytest.raises(InvalidTypeError, match="pass an EncoderSettings"):
        JinaEncoder.from_settings({"model": str(checkpoint)})


# -- the command line: every flag, every command ---------------------------------------------------------------------


# No one settings object can change every field (onnx takes no dtype; flash no cutoff and no onnx):
# three argument lists do, together.
FLAG_SETS = [
    (["--model", "some/model", "--device", "cuda:1", "--dtype", "float16", "--max-length", "512", "--long-text", "error",
      "--window-overlap", "32", "--batch-tokens", "2048", "--alibi-cutoff", "48"],
     EncoderSettings("some/model", device="cuda:1", dtype="float16", max_length=512, long_text="error", window_overlap=32,
                     batch_tokens=2048, alibi_cutoff=48.0)),
    (["--backend", "onnx", "--providers", "CUDAExecutionProvider,CPUExecutionProvider"],
     EncoderSettings(backend="onnx", providers=("CUDAExecutionProvider", "CPUExecutionProvider"))),
    (["--attention", "flash"], EncoderSettings(attention="flash")),
]


def command_args(command: str, tmp_path: Path) -> list[str]:
    """The arguments a command needs besides its encoder flags."""
    store = ["--store", "qdrant", "--location", str(tmp_path / "q"), "--collection", "docs"]
    return {"embed": ["text"], "info": [], "index": [str(tmp_path), *store], "search": ["a query", *store],
            "eval": [str(tmp_path)]}[command]


@pytest.mark.parametrize("command", COMMANDS_WITH_AN_ENCODER)
def test_every_settings_field_has_a_flag_on_every_command_that_loads_a_model(command, tmp_path):
    parser = cli.build_parser()
    changed: set[str] = set()
    for flags, expected in FLAG_SETS:
        args = parser.parse_args([command, *command_args(command, tmp_path), *flags])
        if command == "eval":  # eval reads texts up to max_length and drops the rest, unless told otherwise
            expected = expected.replace(long_text="truncate") if "--long-text" not in flags else expected
        assert cli.settings_from_args(args) == expected
        changed |= {name for name in field_names() if getattr(expected, name) != getattr(DEFAULT_SETTINGS, name)}
    args = parser.parse_args([command, *command_args(command, tmp_path), *(["--no-normalize"] if command == "embed" else [])])
    changed |= {"normalize"} if cli.settings_from_args(args).normalize is False else set()
    # Every field but normalize has a flag on every command; --no-normalize is embed's (vectors for stores stay unit length).
    assert changed == set(field_names()) - ({"normalize"} if command != "embed" else set())

def test_every_encoder_flag_is_a_settings_field():
    """The one helper that adds the encoder flags adds none that the settings do not read."""
    parser = argparse.ArgumentParser()
    cli.add_encoder_arguments(parser, normalize=True)
    flags = {action.option_strings[-1] for action in parser._actions if action.dest != "help"}
    used = {flag for flags, _ in FLAG_SETS for flag in flags if flag.startswith("--")}
    assert flags == used | {"--no-normalize", "--no-progress"}  # --no-progress is the command's, not the encoder's


@pytest.fixture
def built_encoders(monkeypatch):
    """Every encoder ``JinaEncoder.from_settings`` builds in this process (the real ones, returned as they are)."""
    built: list[JinaEncoder] = []
    original = JinaEncoder.from_settings.__func__

    def keep(cls, settings, **kwargs):
        built.append(original(cls, settings, **kwargs))
        return built[-1]

    monkeypatch.setattr(JinaEncoder, "from_settings", classmethod(keep))
    return built


def cpu_flags(checkpoint: Path) -> tuple[list[str], EncoderSettings]:
    """Every flag a CPU can run changed from its default, and the settings they make."""
    flags = ["--model", str(checkpoint), "--device", "cpu", "--dtype", "bfloat16", "--max-length", "64",
             "--long-text", "truncate", "--window-overlap", "16", "--batch-tokens", "512", "--alibi-cutoff", "32",
             "--no-progress"]
    return flags, EncoderSettings(str(checkpoint), device="cpu", dtype="bfloat16", max_length=64, long_text="truncate",
                                  window_overlap=16, batch_tokens=512, alibi_cutoff=32.0)


def write_docs(folder: Path) -> None:
    folder.mkdir()
    for i, text in enumerate(["tidal energy and coastal engineering " * 30, "harbour sediment survey", "turbine report"]):
        (folder / f"doc-{i}.md").write_text(text)


def test_cli_flags_reach_the_encoder_on_every_command_and_the_local_engine(checkpoint, tmp_path, built_encoders, capsys):
    flags, expected = cpu_flags(checkpoint)
    write_docs(tmp_path / "docs")
    store = ["--store", "qdrant", "--location", str(tmp_path / "q"), "--collection", "docs"]
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(["tides and the moon", "harbour sediment"])))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "moon tides"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("q1\td0\t1\n")
    runs = {
        "index": ["index", str(tmp_path / "docs"), *store, "--mode", "document"],
        "search": ["search", "coastal engineering", *store],
        "embed": ["embed", "tidal energy", "-o", str(tmp_path / "v.npy"), "--no-normalize"],
        "info": ["info"],
        "eval": ["eval", str(beir), "--no-bm25"],
    }
    for command, argv in runs.items():
        built_encoders.clear()
        assert cli.main([*argv, *flags]) == 0, capsys.readouterr().err
        want = expected.replace(normalize=False) if command == "embed" else expected
        assert [encoder.settings for encoder in built_encoders] == [want], command
        (encoder,) = built_encoders
        assert (encoder.max_length, encoder.long_text, encoder.window_overlap, encoder.dtype) == (64, "truncate", 16, torch.bfloat16)
        assert encoder.alibi_cutoff is None  # tile skipping is CUDA's: on CPU the settings keep it, attention is exact
    vectors = np.load(tmp_path / "v.npy")
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # --no-normalize reached encode


def test_cli_flags_reach_the_encoder_of_every_ray_worker(checkpoint, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    from jina_rag.index import ray_data

    # Ray starts here (no cluster is running) and its worker processes import the checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    reports = []
    original = ray_data.index_with_ray

    def keep_report(*args, **kwargs):
        reports.append(original(*args, **kwargs))
        return reports[-1]

    monkeypatch.setattr(ray_data, "index_with_ray", keep_report)
    flags, expected = cpu_flags(checkpoint)
    write_docs(tmp_path / "docs")
    store = ["--store", "qdrant", "--location", str(tmp_path / "q"), "--collection", "docs"]
    # --mode document as for the local engine above: 64-token windows cannot hold the default passages.
    assert cli.main(["index", str(tmp_path / "docs"), *store, *flags, "--engine", "ray", "--workers", "1", "--mode", "document"]) == 0, \
        capsys.readouterr().err
    (report,) = reports
    assert sorted(report.indexed) == ["doc-0.md", "doc-1.md", "doc-2.md"]
    assert report.encoder_settings == expected  # as the worker's own encoder holds them


# -- adapters and the Chroma function -------------------------------------------------------------------------------


ADAPTER_OPTIONS = dict(device="cpu", dtype="float32", max_length=64, long_text="truncate", window_overlap=8,
                       alibi_cutoff=16.0, batch_tokens=256, normalize=False)


def test_adapters_take_the_settings_fields_with_the_settings_defaults():
    pytest.importorskip("pydantic")
    from jina_rag.adapter_options import EncoderOptions

    fields = {("model" if name == "model_name" else name): field.default for name, field in EncoderOptions.model_fields.items()}
    assert fields == DEFAULT_SETTINGS.to_dict()
    pytest.importorskip("chromadb")
    from jina_rag.chroma_embedding import JinaEmbeddingFunction

    parameters = inspect.signature(JinaEmbeddingFunction.__init__).parameters
    defaults = {("model" if name == "model_name" else name): p.default for name, p in parameters.items() if name != "self"}
    assert defaults == DEFAULT_SETTINGS.to_dict()


@pytest.mark.parametrize("adapter", ["langchain", "llama_index", "chroma"])
def test_adapters_build_their_encoder_from_their_settings_and_round_trip_them(adapter, checkpoint):
    expected = EncoderSettings(str(checkpoint), **ADAPTER_OPTIONS)
    if adapter == "langchain":
        pytest.importorskip("langchain_core")
        from jina_rag.langchain import JinaEmbeddings as Adapter
    elif adapter == "llama_index":
        pytest.importorskip("llama_index.core")
        from jina_rag.llama_index import JinaEmbedding as Adapter
    else:
        pytest.importorskip("chromadb")
        from jina_rag.chroma_embedding import JinaEmbeddingFunction as Adapter
    made = Adapter(model_name=str(checkpoint), **ADAPTER_OPTIONS)
    assert made.settings == made.encoder.settings == expected
    if adapter == "chroma":
        assert Adapter.build_from_config(json.loads(json.dumps(made.get_config()))).settings == expected
        assert Adapter.from_settings(expected).get_config() == made.get_config()
        assert made.supported_spaces() == ["cosine"]  # raw vectors: only cosine ranks them as it should
    else:
        from jina_rag.adapter_options import EncoderOptions

        assert Adapter(**made.model_dump(include=set(EncoderOptions.model_fields))).settings == expected
    vector = np.asarray(made.embed_query("tidal energy") if adapter == "langchain" else
                        made.get_query_embedding("tidal energy") if adapter == "llama_index" else made(["tidal energy"])[0])
    np.testing.assert_allclose(vector, made.encoder.encode("tidal energy"), rtol=1e-5)  # normalize=False reached it


def test_a_chroma_collection_saved_with_the_old_config_still_loads(checkpoint, tmp_path):
    chromadb = pytest.importorskip("chromadb")
    from jina_rag.chroma_embedding import JinaEmbeddingFunction

    # The keys a collection stored before EncoderSettings: the rest take their defaults.
    old = {"model_name": str(checkpoint), "device": "cpu", "max_length": 64, "batch_tokens": 256, "normalize": True,
           "long_text": "windows", "backend": "torch", "providers": None}
    function = JinaEmbeddingFunction.build_from_config(old)
    assert function.settings == EncoderSettings(str(checkpoint), device="cpu", max_length=64, batch_tokens=256)
    assert {key: function.get_config()[key] for key in old} == old and JinaEmbeddingFunction.name() == "jina_rag"
    with pytest.raises(InvalidInputError, match=r"unknown encoder settings \['colour'\]"):
        JinaEmbeddingFunction.build_from_config({**old, "colour": "blue"})

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    client.create_collection("docs", embedding_function=function).add(ids=["a"], documents=["tidal energy"])
    reopened = chromadb.PersistentClient(path=str(tmp_path / "chroma")).get_collection("docs")
    stored = reopened.configuration_json["embedding_function"]
    assert stored["name"] == "jina_rag" and stored["config"] == function.get_config()
    assert reopened.query(query_texts=["tidal energy"], n_results=1)["ids"] == [["a"]]  # rebuilt from the config
