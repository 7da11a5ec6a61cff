"""A JinaBERT student that starts as its BERT teacher: weights copied, GEGLU made to compute GELU.

```bash
python -m training.teacher_init --out runs/student-init [--teacher FOLDER]   # default: all-MiniLM-L6-v2
```

Distilling into a student trained from scratch leaves it far from the teacher (cosine 0.78 after
3,800 steps, training/RESULTS.md). A student with the teacher's shape can instead start from the
teacher's weights, as DistilBERT did. Two parts of JinaBERT differ from BERT:

- positions: JinaBERT has no position embeddings but ALiBi. The teacher's mean position embedding
  (over its 512 positions) is folded into the token-type embeddings, so the embedding LayerNorm
  sees inputs of the same scale; the teacher's heads are assigned to ALiBi slopes by how local
  their attention is on sample text (the most local head gets the steepest slope). What the
  teacher read from absolute positions is what training must recover.
- the feed-forward: BERT's ``gelu(x W1 + b1) W2 + b2`` against GEGLU's bias-free
  ``(gelu(x Wg) * (x Wu)) Wo + bo``. Its input ``x`` is a LayerNorm output ``gamma * n + beta``
  whose normalised part ``n`` sums to zero over the features, so ``x . w = 1`` for every token when
  ``w_i = c / gamma_i`` with ``c = 1 / sum_i(beta_i / gamma_i)``. With every row of ``Wu`` equal to
  ``w`` and ``Wg = W1 + b1 w^T`` the GEGLU computes the teacher's feed-forward exactly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from jina_rag.loading import save_pretrained
from jina_rag.modeling import JinaBertConfig, JinaBertModel, alibi_slopes
from training.models import VOCAB_MULTIPLE, bert_uncased_tokenizer, write_vocab_txt
from training.teacher import TeacherEncoder, default_teacher_dir

logger = logging.getLogger(__name__)


def ones_vector(layernorm: torch.nn.LayerNorm) -> torch.Tensor:
    """``w`` with ``LayerNorm(h) . w == 1`` for every input ``h`` (see the module docstring)."""
    gamma, beta = layernorm.weight.double(), layernorm.bias.double()
    total = (beta / gamma).sum()
    if total.abs() < 1e-3:
        raise ValueError("the LayerNorm's bias is too small to carry a constant: GEGLU cannot copy this feed-forward")
    return (1 / (gamma * total)).float()


@torch.no_grad()
def attention_distances(teacher: TeacherEncoder, texts: Sequence[str]) -> torch.Tensor:
    """Mean |i - j| under each head's attention, ``[layers, heads]``, over ``texts``.

    The attention is recomputed from each layer's input and its query/key weights, since
    transformers' SDPA attention returns no probabilities.
    """
    model = teacher.model
    heads = model.config.num_attention_heads
    totals = None
    for text in texts:
        ids = torch.tensor([teacher.tokenizer.encode(text).ids], device=teacher.device)
        inputs = model(ids, output_hidden_states=True).hidden_states[:-1]  # each layer's input
        length = ids.shape[1]
        positions = torch.arange(length, device=ids.device, dtype=torch.float32)
        distance = (positions[:, None] - positions[None, :]).abs()
        means = []
        for x, layer in zip(inputs, model.encoder.layer):
            q = layer.attention.self.query(x[0].float()).view(length, heads, -1).transpose(0, 1)
            k = layer.attention.self.key(x[0].float()).view(length, heads, -1).transpose(0, 1)
            probs = (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).softmax(-1)
            means.append((probs * distance).sum(-1).mean(-1))
        totals = torch.stack(means) if totals is None else totals + torch.stack(means)
    return totals / len(texts)


def student_config(teacher_config: dict) -> JinaBertConfig:
    vocab = -(-teacher_config["vocab_size"] // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return JinaBertConfig(
        vocab_size=vocab,
        hidden_size=teacher_config["hidden_size"],
        num_hidden_layers=teacher_config["num_hidden_layers"],
        num_attention_heads=teacher_config["num_attention_heads"],
        intermediate_size=teacher_config["intermediate_size"],
        layer_norm_eps=teacher_config.get("layer_norm_eps", 1e-12),
    )


@torch.no_grad()
def student_from_teacher(teacher: TeacherEncoder, sample_texts: Sequence[str]) -> JinaBertModel:
    """The JinaBERT student, fp32, initialised from ``teacher`` (an fp32 one on the CPU) as the module docstring says."""
    bert = teacher.model
    if teacher.device.type != "cpu":
        raise ValueError("build the student from a teacher on the CPU (TeacherEncoder(folder, device='cpu')): fp32 weights")
    config = student_config(bert.config.to_dict())
    if bert.config.hidden_act != "gelu":
        raise ValueError(f"the teacher's activation is {bert.config.hidden_act!r}; GEGLU copies only exact GELU")
    student = JinaBertModel(config)
    heads, head_dim = config.num_attention_heads, config.head_dim

    embeddings = bert.embeddings
    student.embeddings.word_embeddings.weight.zero_()
    student.embeddings.word_embeddings.weight[: embeddings.word_embeddings.weight.shape[0]] = embeddings.word_embeddings.weight
    student.embeddings.token_type_embeddings.weight.copy_(
        embeddings.token_type_embeddings.weight + embeddings.position_embeddings.weight.mean(0)
    )
    student.embeddings.LayerNorm.load_state_dict(embeddings.LayerNorm.state_dict())

    # Slopes are steepest first within each half of the table (power-of-two part, then the odd
    # extension), so rank heads by slope, not by index.
    slope_rank = torch.argsort(alibi_slopes(heads), descending=True)
    distances = attention_distances(teacher, sample_texts)
    for i, (source, target) in enumerate(zip(bert.encoder.layer, student.encoder.layer)):
        # order[k]: the teacher head placed in student head k (the k-th steepest slope gets the
        # k-th most local teacher head).
        order = torch.empty(heads, dtype=torch.long)
        order[slope_rank] = torch.argsort(distances[i])
        rows = (order[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        attention, self_attention = target.attention, source.attention.self
        for name in ("query", "key", "value"):
            layer = getattr(self_attention, name)
            getattr(attention.self, name).weight.copy_(layer.weight[rows])
            getattr(attention.self, name).bias.copy_(layer.bias[rows])
        attention.output.dense.weight.copy_(source.attention.output.dense.weight[:, rows])
        attention.output.dense.bias.copy_(source.attention.output.dense.bias)
        attention.output.LayerNorm.load_state_dict(source.attention.output.LayerNorm.state_dict())

        w = ones_vector(source.attention.output.LayerNorm)
        w1, b1 = source.intermediate.dense.weight, source.intermediate.dense.bias
        gate = w1 + b1[:, None] * w[None, :]
        up = w[None, :].expand_as(w1)
        # Balance the scale between Wu and Wo (their product is what counts).
        scale = w.norm() / w1.norm(dim=1).mean()
        target.mlp.gated_layers.weight.copy_(torch.cat([gate, up / scale]))
        target.mlp.wo.weight.copy_(source.output.dense.weight * scale)
        target.mlp.wo.bias.copy_(source.output.dense.bias)
        target.mlp.layernorm.load_state_dict(source.output.LayerNorm.state_dict())
    return student


def student_tokenizer(folder: Path) -> Any:
    """BERT-uncased WordPiece from the teacher's vocabulary (its tokenizer.json keeps a 128-token truncation).

    The student starts as the teacher only if it reads the same token ids: :data:`SAMPLE_TEXT` must
    tokenise alike with both, else this raises.
    """
    import tempfile

    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = bert_uncased_tokenizer(write_vocab_txt(folder / "tokenizer.json", tmp))
    teacher = Tokenizer.from_file(str(folder / "tokenizer.json"))
    teacher.no_truncation()
    teacher.no_padding()
    expected, got = teacher.encode(SAMPLE_TEXT).ids, tokenizer(SAMPLE_TEXT)["input_ids"]
    if got != expected:
        raise RuntimeError(
            f"the student's tokenizer reads other ids than the teacher's ({got[:8]}... vs {expected[:8]}...): "
            "a student started from the teacher's weights would see other tokens"
        )
    return tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.teacher_init", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the student (published layout)")
    parser.add_argument("--teacher", type=Path, default=None, help="BERT teacher folder (default: all-MiniLM-L6-v2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = args.teacher or default_teacher_dir()
    teacher = TeacherEncoder(folder, device="cpu", max_length=512)
    student = student_from_teacher(teacher, [SAMPLE_TEXT])
    save_pretrained(student, args.out, student_tokenizer(folder))
    logger.info("student (%d parameters) from %s written to %s", student.config.num_parameters(), folder, args.out)
    return 0


# Head locality is measured on ordinary prose (any text of a few hundred tokens would do).
SAMPLE_TEXT = (
    "Retrieval-augmented generation answers a question by first finding the passages of a corpus "
    "that are most likely to hold the answer, and then asking a language model to write the answer "
    "from those passages. The finding step is usually done with dense vectors: every passage is "
    "encoded once into a vector, the question is encoded at query time, and the passages whose "
    "vectors lie closest to the question's vector are returned. How well this works depends on the "
    "encoder. An encoder that reads only the first few hundred tokens of a long document must either "
    "truncate it, losing what comes later, or split it into chunks, losing the context that connects "
    "them. Long-context encoders read the whole document at once. Their attention lets every token "
    "see every other token, and a bias that grows with distance keeps nearby words more important "
    "than distant ones, so the model can be trained on short sequences and still read long ones. "
    "Each vector is then an average of the token states, and documents that discuss the same topic "
    "end up near each other even when they share few words."
)

if __name__ == "__main__":
    sys.exit(main())
