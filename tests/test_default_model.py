"""The default model's pipeline: teacher embeddings, the distillation term, carry folder, export and install."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jina_rag import JinaEncoder
from training.config import ConfigError, config_from_dict
from training.data import DataError
from training.distributed import init_distributed
from training.loop import build_trainer
from training.models import bert_uncased_tokenizer
from training.checkpoint import STATE_FILE, checkpoint_root
from training.pairs import relational_distillation
from training.prepare_default import cut_to_tokens, prepare, write_compressed_jsonl
from training.ship_default import PIECE_BYTES, assemble, export, install, piece_names, split_file
from training.teacher import embed_pairs, default_teacher_dir, quantize_rows, reduce_dimensions, write_teacher_file
from training.teacher_vectors import TeacherEmbeddings

TINY_ARCHITECTURE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
ANIMALS = "cat dog horse cow sheep goat lion tiger bear wolf fox deer rabbit mouse owl eagle".split()
COLORS = "red blue green yellow".split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    """(colour animal → sentence) pairs, gzipped as the carry folder holds them."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl.gz"
    rows = [{"query": f"{c} {a}", "positive": f"a picture of a {c} {a} in the field"} for a in ANIMALS for c in COLORS]
    write_compressed_jsonl(path, rows)
    return path


def toy_teacher(pairs_file: Path, out: Path, dim: int | None = None) -> Path:
    """A teacher that knows the animal (one direction each) and a little of the colour."""
    rows = [(a, c) for a in ANIMALS for c in COLORS]
    def embed(animal: str, colour: str) -> np.ndarray:
        vector = np.zeros(len(ANIMALS) + len(COLORS), dtype=np.float32)
        vector[ANIMALS.index(animal)] = 1.0
        vector[len(ANIMALS) + COLORS.index(colour)] = 0.5
        return vector / np.linalg.norm(vector)
    vectors = np.stack([embed(a, c) for a, c in rows])
    write_teacher_file(out, pairs_file, vectors, vectors.copy(), model="toy", max_length=16, dim=dim)
    return out


def test_relational_distillation_matches_a_hand_computed_value():
    # Student similarities I (2x2); teacher's [[1, .6], [0, .8]]; temperature 0.5.
    q = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tq = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tp = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.5

    def kl(teacher_logits, student_logits):
        def probs(logits):
            z = sum(math.exp(x) for x in logits)
            return [math.exp(x) / z for x in logits]
        return sum(a * math.log(a / b) for a, b in zip(probs(teacher_logits), probs(student_logits)))

    # T = tq @ tp.T = [[1, .6], [0, .8]]: rows of T/t [2, 1.2], [0, 1.6]; of S/t [2, 0], [0, 2].
    rows = (kl([2.0, 1.2], [2.0, 0.0]) + kl([0.0, 1.6], [0.0, 2.0])) / 2
    columns = (kl([2.0, 0.0], [2.0, 0.0]) + kl([1.2, 1.6], [0.0, 2.0])) / 2
    one_way = relational_distillation(q, p, tq, tp, temperature=t, symmetric=False)
    assert one_way.item() == pytest.approx(rows, rel=1e-5)
    assert relational_distillation(q, p, tq, tp, temperature=t).item() == pytest.approx(rows + columns, rel=1e-5)
    mse = ((1 - 1) ** 2 + (0 - 0.6) ** 2 + (0 - 0) ** 2 + (1 - 0.8) ** 2) / 4
    assert relational_distillation(q, p, tq, tp, kind="mse").item() == pytest.approx(mse, rel=1e-5)
    # A student that copies the teacher's similarities has nothing left to learn.
    assert relational_distillation(tq, tp, tq, tp, temperature=t).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_file_stores_int8_rows_that_keep_cosines(tmp_path, pairs_file):
    path = toy_teacher(pairs_file, tmp_path / "teacher.npz")
    with np.load(path) as data:
        assert data["queries"].dtype == np.int8 and data["queries"].shape == (len(ANIMALS) * len(COLORS), 20)
    teacher = TeacherEmbeddings.load([path], [pairs_file], [len(ANIMALS) * len(COLORS)])
    queries, positives = teacher.rows([0, 1, 4])
    assert torch.allclose(queries.norm(dim=1), torch.ones(3))
    # rows 0, 1: red cat, blue cat (same animal); row 4: red dog. cos = (1 + .25 [same colour]) / 1.25
    similarity = queries @ positives.T
    assert similarity[0, 0].item() == pytest.approx(1.0, abs=1e-4)
    assert similarity[0, 1].item() == pytest.approx(1.0 / 1.25, abs=1e-2)
    assert similarity[0, 2].item() == pytest.approx(0.25 / 1.25, abs=1e-2)


def test_reduced_dimensions_keep_dot_products_of_low_rank_data():
    generator = np.random.default_rng(0)
    basis = generator.normal(size=(3, 16))
    queries, positives = generator.normal(size=(40, 3)) @ basis, generator.normal(size=(30, 3)) @ basis
    small_q, small_p = reduce_dimensions(queries, positives, 3)
    assert small_q.shape == (40, 3)
    np.testing.assert_allclose(small_q @ small_p.T, queries @ positives.T, rtol=1e-4, atol=1e-3)
    assert np.abs(quantize_rows(small_q)).max() == 127


def test_teacher_embeddings_must_belong_to_the_pairs_file(tmp_path, pairs_file):
    teacher = toy_teacher(pairs_file, tmp_path / "teacher.npz")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"query": "q", "positive": "p"}) + "\n")
    with pytest.raises(DataError, match="no teacher embeddings for .*other.jsonl.*python -m training.teacher"):
        TeacherEmbeddings.load([teacher], [other], [1])
    with pytest.raises(DataError, match="64 rows, but .* has 10 pairs"):
        TeacherEmbeddings.load([teacher], [pairs_file], [10])
    base = {"stage": "pairs", "output_dir": "x", "model": {"init_from": "m"}, "data": {"train": ["x"]}}
    with pytest.raises(ConfigError, match="teacher_embeddings is empty"):
        config_from_dict({**base, "contrastive": {"distill_weight": 1.0}})


def test_minilm_teacher_embeds_each_pair(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [("how to rebase a branch", "git rebase moves commits onto another base"),
            ("vacuum a database", "the VACUUM command rebuilds the sqlite database file"),
            ("schedule kernel threads", "the scheduler picks which task runs next on a CPU")]
    pairs.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in rows))
    queries, positives = embed_pairs(pairs, default_teacher_dir(), show_progress=False)
    assert queries.shape == positives.shape == (3, 384)
    assert ((queries @ positives.T).argmax(axis=1) == np.arange(3)).all()


def test_pairs_stage_with_distillation_learns_both_terms(tmp_path, pairs_file, checkpoint):
    teacher = toy_teacher(pairs_file, tmp_path / "teacher.npz", dim=8)
    config = config_from_dict({
        "stage": "pairs", "output_dir": str(tmp_path / "run"),
        "model": {"init_from": str(checkpoint)},
        "data": {"train": [str(pairs_file)]},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"steps": 24, "batch_size": 16, "log_every": 1, "device": "cpu", "progress": False},
        "contrastive": {"query_max_length": 16, "passage_max_length": 16, "temperature": 0.1, "chunk_size": 8,
                        "teacher_embeddings": [str(teacher)], "distill_weight": 2.0, "distill_temperature": 0.1},
    })
    trainer, resume_from = build_trainer(config, init_distributed("cpu"))
    assert set(trainer.stage.terms) == {"infonce", "distill"}
    trainer.fit(resume_from)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for name in ("distill", "infonce"):
        values = [r[name] for r in records]
        assert np.mean(values[-4:]) < np.mean(values[:4]) - 0.1, f"{name} did not go down: {values}"
    assert all(r["loss"] == pytest.approx(r["infonce"] + 2.0 * r["distill"], rel=1e-4) for r in records)


def test_cut_to_tokens_keeps_whole_word_pieces():
    texts = ["one two three four five", "short", "unbelievably long"]
    assert cut_to_tokens(texts, bert_uncased_tokenizer(), 3) == ["one two three", "short", "unbelie"]


def test_split_names_match_split_and_join_back(tmp_path):
    assert piece_names(3) == ["model.part-aa", "model.part-ab", "model.part-ac"]
    data = bytes(range(256)) * 1000
    (tmp_path / "blob").write_bytes(data)
    (tmp_path / "out").mkdir()
    pieces = split_file(tmp_path / "blob", tmp_path / "out", piece_bytes=100_000)
    assert [p.stat().st_size for p in pieces] == [100_000, 100_000, 56_000]
    assert b"".join(p.read_bytes() for p in pieces) == data
    assert PIECE_BYTES == 15 * 2**20


def test_export_then_install_gives_the_same_fp16_model(tmp_path, checkpoint):
    run = tmp_path / "run"
    shutil.copytree(checkpoint, checkpoint_root(run) / "step-00000005")
    (checkpoint_root(run) / "step-00000005" / STATE_FILE).touch()  # what makes a checkpoint complete
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    files = tmp_path / "files"
    manifest = export([tmp_path / "missing-run", run], files, max_pieces=3)
    assert sorted(p.name for p in files.iterdir()) == ["model-files.tar.gz", "model.part-aa"]
    assert manifest["checkpoint"].endswith("step-00000005")
    report = install(files, tmp_path / "models" / "jina-rag-small-en", records=tmp_path / "records")
    installed = tmp_path / "models" / "jina-rag-small-en"
    assert (tmp_path / "records" / "run" / "metrics.jsonl").is_file()
    assert json.loads((installed / "config.json").read_text())["torch_dtype"] == "float16"
    texts = ["red fox in the field", "a lazy dog"]
    expected = JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=64).encode(texts)
    got = JinaEncoder.from_pretrained(installed, device="cpu", max_length=64).encode(texts)
    np.testing.assert_allclose(got, expected, atol=5e-3)
    assert report["dim"] == expected.shape[1]
    # A damaged piece is refused before anything is replaced.
    piece = files / "model.part-aa"
    piece.write_bytes(piece.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="does not match the exported sha256"):
        assemble(files, tmp_path / "again")


def write_beir(folder: Path, docs: dict[str, str], queries: dict[str, tuple[str, str]]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in queries.items()))
    return folder


def test_default_model_benchmark_prints_the_acceptance_table(tmp_path, checkpoint, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("default_model", Path(__file__).resolve().parent.parent / "benchmarks" / "default_model.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    filler = " ".join(f"word{i}" for i in range(300))  # pushes the answers of the long set past 256 tokens
    long_docs = {f"d{i}": f"{filler} the {a} lives in the forest and eats berries" for i, a in enumerate(ANIMALS[:6])}
    short_docs = {f"p{i}": f"the {a} sleeps" for i, a in enumerate(ANIMALS[:6])}
    write_beir(tmp_path / "data" / "long", long_docs, {f"q{i}": (f"where does the {ANIMALS[i]} live", f"d{i}") for i in range(3)})
    write_beir(tmp_path / "data" / "short", short_docs, {f"q{i}": (f"{ANIMALS[i]}", f"p{i}") for i in range(3)})
    output = tmp_path / "out.json"
    assert benchmark.main(["--data", str(tmp_path / "data"), "--model", str(checkpoint), "--max-lengths", "64,512",
                           "--max-docs", "5", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "| jina max_length=64 |" in printed and "| BM25 |" in printed and "chunked (256-token chunks)" in printed
    assert printed.count("target") == 2
    report = json.loads(output.read_text())
    assert report["sets"] == {"long": {"documents": 5, "queries": 3}, "short": {"documents": 5, "queries": 3}}
    bm25 = {r["dataset"]: r["metrics"]["ndcg@10"] for r in report["results"] if r["system"] == "BM25"}
    assert bm25 == {"long": 1.0, "short": 1.0}  # each query names its document's one distinctive word
    # On the short set every passage fits 64 tokens: the 512 run is the 64 run, not computed again.
    shared = [r for r in report["results"] if r["dataset"] == "short" and r["system"] == "jina max_length=512"][0]
    assert shared["same_as"] == "jina max_length=64"


def test_default_model_benchmark_compares_several_models_without_baselines(tmp_path, checkpoint, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("default_model", Path(__file__).resolve().parent.parent / "benchmarks" / "default_model.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    docs = {f"p{i}": f"the {a} sleeps" for i, a in enumerate(ANIMALS[:4])}
    write_beir(tmp_path / "data" / "short", docs, {f"q{i}": (f"{ANIMALS[i]}", f"p{i}") for i in range(2)})
    (tmp_path / "first").symlink_to(checkpoint)
    (tmp_path / "second").symlink_to(checkpoint)
    output = tmp_path / "out.json"
    assert benchmark.main(["--data", str(tmp_path / "data"), "--sets", "short", "--model", str(tmp_path / "first"), str(tmp_path / "second"),
                           "--max-lengths", "64", "--compare", "none", "--no-bm25", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "| first jina max_length=64 |" in printed and "| second jina max_length=64 |" in printed
    assert "BM25" not in printed and "MiniLM" not in printed and "target" not in printed
    scores = {r["system"]: r["metrics"]["ndcg@10"] for r in json.loads(output.read_text())["results"]}
    assert set(scores) == {"first jina max_length=64", "second jina max_length=64"}
    assert scores["first jina max_length=64"] == scores["second jina max_length=64"]  # the same weights


def test_prepare_without_teacher_or_mlm_writes_long_pairs_split_by_page(tmp_path):
    data = tmp_path / "built"
    (data / "mlm").mkdir(parents=True)
    (data / "pairs").mkdir()
    (data / "mlm" / "train.jsonl").write_text(json.dumps({"id": "a", "text": "some text"}) + "\n")
    rows = [{"query": f"heading {i}", "positive": f"section {i} " * 50, "kind": "heading_section", "doc_id": f"p{i % 5}"} for i in range(40)]
    rows += [{"query": f"deep heading {i}", "positive": "word " * 3000, "kind": "heading_document", "doc_id": f"p{i // 3}"} for i in range(60)]
    (data / "pairs" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "gpu"
    manifest = prepare(data, out, mlm_mb=0, mlm_eval_docs=0, pairs=100, eval_pairs=16, passage_tokens=32, seed=0,
                       long_mb=1.0, long_tokens=1000, teacher=False)
    assert not (out / "teacher").exists() and not (out / "mlm-train.jsonl.gz").exists()
    read = lambda name: [json.loads(line) for line in gzip.open(out / name, "rt")]  # noqa: E731
    short = read("pairs-train.jsonl.gz") + read("pairs-eval.jsonl.gz")
    assert len(short) == 40 and all(not r["query"].startswith("deep") for r in short)
    long_train, long_eval = read("long-train.jsonl.gz"), read("long-eval.jsonl.gz")
    assert len(long_train) + len(long_eval) == 60 and len(long_eval) == 3  # one page of three headings
    assert not {r["query"] for r in long_eval} & {r["query"] for r in long_train}
    pages = lambda rs: {int(r["query"].split()[-1]) // 3 for r in rs}  # noqa: E731
    assert not pages(long_eval) & pages(long_train)
    assert all(len(r["positive"].split()) == 1000 for r in long_train)  # "word " is one token each
    assert manifest["long_pairs"] == {"train": 57, "eval": 3, "passage_tokens": 1000, "kinds": ["heading_document"]}
