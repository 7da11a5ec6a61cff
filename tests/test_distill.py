"""The distill stage: span rows, the real all-MiniLM-L6-v2 teacher's targets, pooling equal to late chunking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jina_rag import JinaEncoder, encode_late_chunks
from training.config import ConfigError, config_from_dict
from training.data import DataError
from training.distill import ALONE, PASSAGE, ROW, read_span_rows
from training.distributed import init_distributed
from training.int8 import pack_folder, unpack_folder
from training.loop import StepContext, build_trainer
from training.teacher import default_teacher_dir, embed_spans, write_span_targets

pytestmark = pytest.mark.usefixtures("one_thread")

# The teacher's width (384), so the student's vectors can match its vectors; one layer keeps it fast.
STUDENT = {"hidden_size": 384, "num_hidden_layers": 1, "num_attention_heads": 6, "intermediate_size": 64}
TOPICS = [
    ("SQLite", "SQLite keeps a whole database in one file on disk.", "Transactions are atomic even after a crash."),
    ("Git", "Git records snapshots of a tree of files.", "A branch is a movable pointer to a commit."),
    ("Kernel", "The scheduler picks which process runs next.", "Interrupts stop the processor to handle a device."),
    ("Perl", "Perl matches text with regular expressions.", "Hashes map string keys to scalar values."),
]


def document(title: str, *sentences: str) -> dict:
    """A row of a title and sentences, each sentence one passage."""
    text, spans = title + "\n\n", []
    for sentence in sentences:
        spans.append([len(text), len(text) + len(sentence)])
        text += sentence + "\n"
    return {"text": text, "spans": spans}


@pytest.fixture(scope="module")
def distill_data(tmp_path_factory) -> Path:
    """Documents with passage spans, and queries (whole-text rows), with the teacher's targets."""
    folder = tmp_path_factory.mktemp("distill")
    rows = [document(*topic) for topic in TOPICS] + [{"text": f"what does {title} do?"} for title, *_ in TOPICS]
    for name, chosen in (("train", rows), ("eval", rows[:2] + rows[-2:])):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in chosen))
        vectors = embed_spans(path, default_teacher_dir(), show_progress=False, device="cpu")
        write_span_targets(folder / f"{name}.teacher.npz", path, vectors, model="all-MiniLM-L6-v2", max_length=256)
    return folder


def distill_config(folder: Path, out: Path, **distill) -> dict:
    return {
        "stage": "distill",
        "output_dir": str(out),
        "model": {"architecture": STUDENT},
        "data": {"train": [str(folder / "train.jsonl")], "eval": [str(folder / "eval.jsonl")]},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "train": {"steps": 24, "batch_size": 4, "log_every": 4, "eval_every": 24, "device": "cpu", "progress": False},
        "distill": {"teacher_targets": [str(folder / "*.teacher.npz")], "max_length": 64, "row_tokens": 128, **distill},
    }


def test_span_rows_read_and_checked(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "one two three", "spans": [[0, 3], [4, 13]]}) + "\n" + json.dumps({"text": "a query"}) + "\n")
    rows = read_span_rows([path])
    assert [r.spans for r in rows] == [((0, 3), (4, 13)), ((0, 7),)]
    for bad in ([[0, 99]], [[3, 3]], [[3, 4]], [], "0-3"):
        path.write_text(json.dumps({"text": "one two three", "spans": bad}) + "\n")
        with pytest.raises(DataError, match="rows.jsonl:1"):
            read_span_rows([path])


def test_teacher_targets_are_the_teachers_vectors_of_each_span(distill_data):
    from training.teacher import TeacherEncoder

    targets = np.load(distill_data / "train.teacher.npz")
    rows = read_span_rows([distill_data / "train.jsonl"])
    passages = [row.text[s:e] for row in rows for s, e in row.spans]
    assert len(targets["vectors"]) == len(passages) == 4 * 2 + 4
    expected = TeacherEncoder(default_teacher_dir(), "cpu").encode(passages)
    stored = targets["vectors"].astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    assert (np.sum(stored * expected, axis=1) > 0.999).all()  # int8 rows, direction kept


def test_distillation_brings_the_student_to_the_teacher(distill_data, tmp_path):
    trainer, checkpoint = build_and_fit(distill_config(distill_data, tmp_path / "run"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert records[-1]["eval_cos"] > 0.8
    assert {"eval_cos_passage", "eval_cos_row", "eval_cos_alone", "cos_passage"} <= set(records[-1])
    # The checkpoint loads in jina_rag and gives what the model in memory gives.
    encoder = JinaEncoder.from_pretrained(checkpoint, device="cpu")
    trainer.model.eval()
    with torch.no_grad():
        ids = encoder.tokenizer(["what does Git do?"], return_tensors="pt")
        expected = torch.nn.functional.normalize(trainer.model.pool(ids["input_ids"], ids["attention_mask"]), dim=-1)
    assert np.allclose(encoder.encode(["what does Git do?"]), expected.numpy(), atol=1e-5)


def build_and_fit(config: dict):
    trainer, resume_from = build_trainer(config_from_dict(config), init_distributed("cpu"))
    return trainer, trainer.fit(resume_from)


def test_pooled_vectors_are_late_chunks_and_encodings(distill_data, tmp_path):
    """A passage vector is the late-chunked one, a row's and a lone passage's are what encode gives."""
    config = distill_config(distill_data, tmp_path / "run", max_length=512, row_tokens=512)
    config["train"]["steps"] = 3
    trainer, checkpoint = build_and_fit(config)
    stage = trainer.stage
    stage.model.eval()
    rows = stage.rows[:2]
    batch = stage.batch_of(rows, stage.targets[:2])
    assert len(batch.rows) == 1 and batch.kind_counts.tolist() == [4, 2, 4, 0]
    step = StepContext(stage.model, torch.device("cpu"), torch.no_grad, 1.0)
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(stage.pooled(step, batch.rows[0]), dim=-1).numpy()
    kinds = batch.rows[0].kinds.tolist()
    assert sorted(kinds) == sorted([ROW, PASSAGE, PASSAGE] * 2 + [ALONE] * 4)
    encoder = JinaEncoder.from_pretrained(checkpoint, device="cpu")
    late = encode_late_chunks(encoder, [r.text for r in rows], spans=[list(r.spans) for r in rows])
    alone = encoder.encode([r.text[s:e] for r in rows for s, e in r.spans])
    # Packing order is longest first; match each pooled vector to its reference by kind.
    expected = {ROW: [c.document_vector for c in late], PASSAGE: [v for c in late for v in c.vectors], ALONE: list(alone)}
    for kind, references in expected.items():
        got = vectors[[i for i, k in enumerate(kinds) if k == kind]]
        similarity = got @ np.stack(references).T
        assert np.allclose(similarity.max(axis=1), 1.0, atol=1e-4), kind


def test_distill_config_and_data_errors(distill_data, tmp_path):
    config = distill_config(distill_data, tmp_path / "run")
    config["distill"]["teacher_targets"] = []
    with pytest.raises(ConfigError, match="teacher_targets"):
        config_from_dict(config)
    config = distill_config(distill_data, tmp_path / "run", max_length=256, row_tokens=128)
    with pytest.raises(ConfigError, match="row_tokens"):
        config_from_dict(config)
    config = distill_config(distill_data, tmp_path / "run")
    config["contrastive"] = {"temperature": 0.05}
    with pytest.raises(ConfigError, match="contrastive: section does not apply"):
        config_from_dict(config)
    config = distill_config(distill_data, tmp_path / "run")
    config["distill"]["teacher_targets"] = [str(distill_data / "eval.teacher.npz")]
    with pytest.raises(DataError, match="no teacher vectors for .*train.jsonl"):
        build_and_fit(config)
    config = distill_config(distill_data, tmp_path / "run")
    config["model"]["architecture"] = {**STUDENT, "hidden_size": 192}
    with pytest.raises(DataError, match="384 dimensions but the student's embeddings 192"):
        build_and_fit(config)


def test_int8_round_trip_keeps_a_model(tmp_path):
    from conftest import write_published_checkpoint

    folder = write_published_checkpoint(tmp_path / "model")
    packed = pack_folder(folder, tmp_path / "packed")
    assert (packed / "weights.int8.safetensors").stat().st_size < 0.4 * (folder / "model.safetensors").stat().st_size
    restored = unpack_folder(packed, tmp_path / "restored")
    texts = ["SQLite keeps a database in one file.", "A branch points at a commit."]
    original, copy = (JinaEncoder.from_pretrained(f, device="cpu").encode(texts) for f in (folder, restored))
    assert (np.sum(original * copy, axis=1) > 0.999).all()


def test_contrastive_term_is_infonce_against_the_batchs_targets(distill_data, tmp_path):
    config = distill_config(distill_data, tmp_path / "run", max_length=512, row_tokens=512, contrastive_weight=0.5)
    config["train"]["steps"] = 16
    trainer, _ = build_and_fit(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["contrastive"] < records[0]["contrastive"]
    stage = trainer.stage
    stage.model.eval()
    batch = stage.batch_of(stage.rows[:2], stage.targets[:2])
    # Distinct targets: a passage read alone shares its target with the passage in its document.
    assert len(batch.targets) == 2 + 4 and batch.vectors == 10
    row = batch.rows[0]
    step = StepContext(stage.model, torch.device("cpu"), torch.no_grad, 1.0)
    with torch.no_grad():
        cosine, entropy, queries, choices = stage._losses(step, row, batch.targets, batch.query_targets)
        vectors = torch.nn.functional.normalize(stage.pooled(step, row), dim=-1)
    logits = (vectors @ batch.targets.T / 0.05).double()
    expected = logits.logsumexp(-1) - logits[torch.arange(len(row.labels)), row.labels]
    assert torch.allclose(entropy.double(), expected, atol=1e-4)
    assert torch.allclose(cosine, (vectors * batch.targets[row.labels]).sum(-1), atol=1e-6)
    assert queries.numel() == 0 and choices.numel() == 0  # rows without queries


QUERIES = ["where is the database kept", "what is a git branch", "how does the scheduler choose", "what maps keys to values"]


@pytest.fixture(scope="module")
def query_data(tmp_path_factory) -> Path:
    """The documents again, each with its first passage answering a query; the teacher's targets."""
    folder = tmp_path_factory.mktemp("distill-queries")
    rows = [{**document(*topic), "queries": [[0 if n % 2 == 0 else 1, query]]} for n, (topic, query) in enumerate(zip(TOPICS, QUERIES))]
    rows[0]["queries"].append([1, QUERIES[0]])  # one heading, two passages of its section
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    vectors = embed_spans(path, default_teacher_dir(), show_progress=False, device="cpu")
    write_span_targets(folder / "train.teacher.npz", path, vectors, model="all-MiniLM-L6-v2", max_length=256)
    return folder


def fit_on_queries(folder: Path, out: Path, **distill):
    """16 steps on the rows with queries; the trainer and its metric records."""
    config = distill_config(folder, out, max_length=512, row_tokens=1024, **distill)
    config["data"] = {"train": [str(folder / "train.jsonl")]}
    config["train"].update(steps=16, eval_every=None)
    trainer, _ = build_and_fit(config)
    return trainer, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_query_term_is_infonce_of_answering_passages_against_the_batchs_queries(query_data, tmp_path):
    from training.distill import QUERY
    from training.teacher import TeacherEncoder

    rows = read_span_rows([query_data / "train.jsonl"])
    assert rows[1].queries == ((1, QUERIES[1]),)
    stored = np.load(query_data / "train.teacher.npz")["vectors"].astype(np.float32)
    assert len(stored) == 4 * (2 + 1) + 1  # per row: its two spans, then its queries
    expected = TeacherEncoder(default_teacher_dir(), "cpu").encode([QUERIES[1]])[0]
    assert float(stored[6] @ expected / np.linalg.norm(stored[6])) > 0.999

    trainer, records = fit_on_queries(query_data, tmp_path / "run", query_weight=1.0)
    assert records[-1]["query_infonce"] < records[0]["query_infonce"]
    assert "cos_query" in records[-1]
    stage = trainer.stage
    stage.model.eval()
    batch = stage.batch_of(stage.rows, stage.targets)
    # Four headings: one candidate and one lone encoding each, though five passages answer them.
    assert len(batch.query_targets) == 4 and batch.kind_counts[QUERY] == 4
    assert sum(len(row.answering) for row in batch.rows) == 5
    step = StepContext(stage.model, torch.device("cpu"), torch.no_grad, 1.0)
    answering = []
    for row in batch.rows:
        with torch.no_grad():
            _, _, queries, _ = stage._losses(step, row, batch.targets, batch.query_targets)
            vectors = torch.nn.functional.normalize(stage.pooled(step, row), dim=-1)
        assert (row.kinds[row.answering] == PASSAGE).all()
        logits = (vectors[row.answering] @ batch.targets[batch.query_targets].T / 0.05).double()
        hand = logits.logsumexp(-1) - logits[torch.arange(len(row.answers)), row.answers]
        assert torch.allclose(queries.double(), hand, atol=1e-4)
        # Each answering vector's own target is the teacher's vector of the passage the row names.
        answering += [batch.targets[row.labels[v]] for v in row.answering]
    passages = [r.text[slice(*r.spans[span])] for r in stage.rows for span, _ in r.queries]
    teacher = torch.from_numpy(TeacherEncoder(default_teacher_dir(), "cpu").encode(passages))
    assert (torch.stack(answering) @ teacher.T).max(dim=1).values.min() > 0.999


def test_passage_choice_term_finds_the_answering_passage_among_the_rows_passages(query_data, tmp_path):
    trainer, records = fit_on_queries(query_data, tmp_path / "run", passage_choice_weight=1.0)
    assert records[-1]["choice_infonce"] < records[0]["choice_infonce"]
    stage = trainer.stage
    stage.model.eval()
    batch = stage.batch_of(stage.rows, stage.targets)
    step = StepContext(stage.model, torch.device("cpu"), torch.no_grad, 1.0)
    pairs = 0
    for row in batch.rows:
        with torch.no_grad():
            *_, choices = stage._losses(step, row, batch.targets, batch.query_targets)
            vectors = torch.nn.functional.normalize(stage.pooled(step, row), dim=-1)
        candidates = torch.nonzero(row.kinds == PASSAGE).squeeze(1)
        anchors = batch.targets[batch.query_targets[row.answers]]
        for pair, (passage, anchor) in enumerate(zip(row.answering, anchors)):
            # Rivals: every passage read in context in the row but the others answering the same query.
            others = row.answering[(row.answers == row.answers[pair]) & (row.answering != passage)]
            rivals = candidates[~torch.isin(candidates, others)]
            logits = (vectors[rivals] @ anchor / 0.05).double()
            hand = logits.logsumexp(0) - logits[rivals == passage][0]
            assert abs(float(choices[pair]) - float(hand)) < 1e-4
            assert len(rivals) == len(candidates) - len(others)
        pairs += len(row.answering)
    assert pairs == 5
    # The heading with two passages: each of them is left out of the other's rivals.
    assert sum(int(row.shared.sum()) for row in batch.rows) == 2


def test_heading_query_rows_pair_the_sections_passages_with_their_removed_heading():
    import random

    from training.data.extract import Document, Section
    from training.models import bert_uncased_tokenizer
    from training.prepare_default import heading_query_rows

    filler = "Every table of the database lives in one ordinary file that the library opens and locks. "
    sections = [Section("Opening a connection", 2, filler * 3), Section("Locking files on network shares", 2, filler * 4),
                Section("Recovering after a power failure", 2, "The journal restores the last transaction. " * 8)]
    documents = [Document("pkg:a", "pkg", "Database files", sections),
                 Document("pkg:b", "pkg", "Other page", [Section("Unrelated heading words here", 2, filler * 2)])]
    rows = heading_query_rows(documents, bert_uncased_tokenizer(), random.Random(0), piece_tokens=300, passage_tokens=40,
                              teacher_tokens=254)
    asked = {query for row in rows for _, query in row["queries"]}
    assert asked and asked <= {s.heading for s in sections}
    for row in rows:
        for span, query in row["queries"]:
            assert query not in row["text"]  # the heading is removed from the document
            start, end = row["spans"][span]
            section = next(s for s in sections if s.heading == query)
            assert row["text"][start:end].split()[0] in section.text  # the passage is in the answering section
    recovery = [row for row in rows if any(q == "Recovering after a power failure" for _, q in row["queries"])]
    for row in recovery:
        assert all("journal" in row["text"][slice(*row["spans"][k])] for k, q in row["queries"] if q.startswith("Recovering"))


def test_distill_rows_are_pieces_of_whole_passages_that_travel_as_xz(tmp_path):
    from training.models import bert_uncased_tokenizer
    from training.prepare_default import distill_rows, write_compressed_jsonl

    tokenizer = bert_uncased_tokenizer()

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    short = "SQLite keeps a database in one file."
    long = "SQLite keeps every table of a database in one ordinary file on disk. " * 6
    document = "\n\n".join([short, long] * 6)
    rows = distill_rows([document], tokenizer, piece_tokens=300, passage_tokens=80, teacher_tokens=40)
    assert len(rows) == 2  # about 560 tokens in pieces of at most 300
    for row in rows:
        assert tokens(row["text"]) <= 300 and row["text"] in document
        for start, end in row["spans"]:
            passage = row["text"][start:end]
            assert passage.strip() == passage and tokens(passage) <= 40  # longer passages: context only
        assert sum(end - start for start, end in row["spans"]) < len(row["text"])
    path = tmp_path / "rows.jsonl.xz"
    assert write_compressed_jsonl(path, rows + [{"text": "a query"}]) == len(rows) + 1
    read = read_span_rows([path])
    assert [list(map(list, r.spans)) for r in read[:-1]] == [row["spans"] for row in rows] and read[-1].spans == ((0, 7),)


def test_distill_resume_continues_exactly(distill_data, tmp_path):
    """3 steps, an interruption, a resume to 5: the same weights and losses as 5 straight."""
    def config(name: str) -> dict:
        out = distill_config(distill_data, tmp_path / name, max_length=128, row_tokens=256, contrastive_weight=0.2)
        out["train"].update(steps=5, checkpoint_every=3, log_every=1, eval_every=None)
        return out

    straight, _ = build_and_fit(config("straight"))
    trainer, resume_from = build_trainer(config_from_dict(config("resumed")), init_distributed("cpu"))
    assert trainer.fit(resume_from, stop_after=3).name == "step-00000003"
    resumed, final = build_and_fit(config("resumed"))
    assert final.name == "step-00000005" and resumed.position == straight.position == 5 * 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name

    def losses(name: str) -> list[float]:
        return [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert losses("straight") == losses("resumed")
