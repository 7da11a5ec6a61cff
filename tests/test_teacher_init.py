"""training.teacher_init: a JinaBERT student built from the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import pytest
import torch

from jina_rag import JinaEncoder
from training.teacher import TeacherEncoder, default_teacher_dir
from training.teacher_init import main, ones_vector, student_from_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "SQLite keeps a whole database in one file on disk, and transactions stay atomic after a crash.",
    "A git branch is a movable pointer to a commit.",
]


@pytest.fixture(scope="module")
def teacher() -> TeacherEncoder:
    return TeacherEncoder(default_teacher_dir(), device="cpu", max_length=128)


def test_ones_vector_gives_one_for_every_layernorm_output():
    torch.manual_seed(0)
    layernorm = torch.nn.LayerNorm(64)
    with torch.no_grad():
        layernorm.weight.uniform_(0.5, 1.5)
        layernorm.bias.uniform_(-0.3, 0.5)
    dots = layernorm(torch.randn(100, 64) * 3 + 1).double() @ ones_vector(layernorm).double()
    assert torch.allclose(dots, torch.ones_like(dots), atol=1e-4)
    with torch.no_grad():
        layernorm.bias.zero_()
    with pytest.raises(ValueError, match="GEGLU"):
        ones_vector(layernorm)


@torch.no_grad()
def test_student_computes_the_teacher_where_positions_do_not_matter(teacher):
    """With ALiBi off and the teacher's positions replaced by their mean, both are the same function.

    That checks every copied weight, the head placement (queries, keys, values and the output
    projection permuted alike) and the GEGLU that reproduces BERT's GELU feed-forward.
    """
    student = student_from_teacher(teacher, TEXTS).eval()
    student.alibi_slopes.zero_()
    bert = teacher.model.float().eval()
    positions = bert.embeddings.position_embeddings.weight
    positions.copy_(positions.mean(0).expand_as(positions))
    ids = torch.tensor([teacher.tokenizer.encode(TEXTS[0]).ids])
    expected = bert(ids).last_hidden_state
    got = student(ids)
    assert (got - expected).abs().max() < 1e-3
    # The check can fail: with ALiBi on, the student reads positions and differs.
    student_alibi = student_from_teacher(teacher, TEXTS).eval()
    assert (student_alibi(ids) - expected).abs().max() > 0.1


def test_cli_writes_a_folder_jina_rag_loads(tmp_path):
    assert main(["--out", str(tmp_path / "student")]) == 0
    encoder = JinaEncoder.from_pretrained(tmp_path / "student", device="cpu")
    assert encoder.backend.model.config.num_hidden_layers == 6
    vectors = encoder.encode(TEXTS, show_progress=False)
    assert vectors.shape == (2, 384)
    # The tokenizer reads whole texts: the teacher's 128-token truncation is not carried over.
    assert len(encoder.tokenizer("word " * 300)["input_ids"]) == 302


def test_student_tokenizer_reads_the_teachers_ids(tmp_path, monkeypatch):
    import training.teacher_init as teacher_init
    from training.models import bert_uncased_tokenizer

    tokenizer = teacher_init.student_tokenizer(default_teacher_dir())
    assert len(tokenizer) == 30522
    assert tokenizer("SQLite databases")["input_ids"][1:-1] == tokenizer.convert_tokens_to_ids(["sql", "##ite", "databases"])

    # What transformers 5 built from vocab_file=: five special tokens, every word [UNK].
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    monkeypatch.setattr(teacher_init, "bert_uncased_tokenizer", lambda _: bert_uncased_tokenizer(tmp_path / "vocab.txt"))
    with pytest.raises(RuntimeError, match="other ids than the teacher"):
        teacher_init.student_tokenizer(default_teacher_dir())
