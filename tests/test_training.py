"""training/: each stage on tiny models and data the tests write, losses, GradCache, resume, torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

from jina_rag import JinaBertForMaskedLM, JinaBertModel, JinaEncoder, load_model
from training.checkpoint import STATE_FILE, list_checkpoints
from training.config import ConfigError, config_from_dict, load_config
from training.data import DataError
from training.distributed import init_distributed
from training.hard_negatives import mine_hard_negatives
from training.loop import build_trainer, learning_rate_factor
from training.mine import main as mine_main
from training.mlm import MaskingVocab, mask_tokens, masked_batch, pack_documents
from training.models import bert_uncased_tokenizer
from training.pairs import BatchTokenizer, Tokens, encode_and_backward, info_nce

REPO = Path(__file__).resolve().parent.parent
TINY_ARCHITECTURE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
ANIMALS = "cat dog horse cow sheep goat lion tiger bear wolf fox deer rabbit mouse owl eagle".split()
COLORS = "red blue green yellow black white brown pink".split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return bert_uncased_tokenizer()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Toy data: repetitive sentences for MLM, (colour animal → a sentence about it) pairs."""
    folder = tmp_path_factory.mktemp("data")
    words = "the quick brown fox jumps over the lazy dog while a small cat sleeps on the warm mat".split()
    with open(folder / "mlm.jsonl", "w") as f:
        for i in range(120):
            sentence = " ".join(words[i % 7 :] + words[: i % 7])
            f.write(json.dumps({"text": f"{sentence}. {sentence}."}) + "\n")
    (folder / "mlm-eval.txt").write_text("\n\n".join(" ".join(words[i:] + words[:i]) for i in range(16)) + "\n")
    with open(folder / "pairs.jsonl", "w") as f:
        for animal in ANIMALS:
            for color in COLORS:
                f.write(json.dumps({"query": f"{color} {animal}", "positive": f"a picture of a {color} {animal} in the field"}) + "\n")
    return folder


def run_config(tmp_path: Path, name: str, **sections) -> dict:
    config = {
        "output_dir": str(tmp_path / name),
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"steps": 20, "batch_size": 8, "log_every": 1, "device": "cpu", "progress": False},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def run(config_dict: dict, stop_after: int | None = None):
    """Train in this process; return the trainer (its model in memory) and the last checkpoint."""
    config = config_from_dict(config_dict)
    trainer, resume_from = build_trainer(config, init_distributed(config.train.device))
    return trainer, trainer.fit(resume_from, stop_after)


def losses(output_dir: str | Path) -> list[float]:
    lines = Path(output_dir, "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def assert_learns(output_dir: str | Path, margin: float) -> None:
    values = losses(output_dir)
    first, last = np.mean(values[:3]), np.mean(values[-3:])
    assert last < first - margin, f"loss did not go down: {values}"


def assert_checkpoint_matches_memory(checkpoint: Path, model: JinaBertModel, tokenizer) -> None:
    """JinaEncoder on the saved folder gives the in-memory model's embeddings."""
    texts = ["red fox in the field", "the lazy dog sleeps", "a picture of a blue owl"]
    model.eval()
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        expected = model.pool(encoded["input_ids"], encoded["attention_mask"]).numpy()
    vectors = JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=128).encode(texts, normalize=False)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-5)


# --- the chain of stages: MLM from scratch → pairs → mined negatives → hard negatives ---------


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("runs")
    config = run_config(
        tmp, "mlm", stage="mlm",
        model={"architecture": TINY_ARCHITECTURE},
        data={"train": [str(data_dir / "mlm.jsonl")], "eval": [str(data_dir / "mlm-eval.txt")]},
        mlm={"seq_len": 32, "eval_lengths": [32, 128], "eval_sequences": 4},
    )
    trainer, checkpoint = run(config)
    return config, trainer, checkpoint


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory, data_dir, mlm_run):
    tmp = tmp_path_factory.mktemp("runs")
    config = run_config(
        tmp, "pairs", stage="pairs",
        model={"init_from": mlm_run[0]["output_dir"]},
        data={"train": [str(data_dir / "pairs.jsonl")], "eval": [str(data_dir / "pairs.jsonl")]},
        contrastive={"chunk_size": 4, "query_max_length": 16, "passage_max_length": 16, "temperature": 0.1},
    )
    trainer, checkpoint = run(config)
    return config, trainer, checkpoint


def test_mlm_stage_learns_evaluates_long_lengths_and_saves_a_loadable_checkpoint(mlm_run, tokenizer):
    config, trainer, checkpoint = mlm_run
    assert_learns(config["output_dir"], margin=1.0)
    last = json.loads(Path(config["output_dir"], "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 20 and 0.0 < last["mlm_accuracy"] <= 1.0
    # The extrapolation check: MLM accuracy on eval text packed at the training length and 4x it.
    for length in (32, 128):
        assert 0.0 < last[f"eval_mlm_accuracy@{length}"] <= 1.0 and last[f"eval_mlm_loss@{length}"] > 0
    assert {p.name for p in checkpoint.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "modules.json", "1_Pooling", STATE_FILE}
    assert json.loads((checkpoint / "config.json").read_text())["vocab_size"] == 30528  # BERT-uncased padded to 64
    model = trainer.model.eval()
    ids = torch.tensor([tokenizer("the quick brown [MASK] jumps")["input_ids"]])
    with torch.no_grad():
        np.testing.assert_array_equal(load_model(checkpoint, JinaBertForMaskedLM)(ids)[1].numpy(), model(ids)[1].numpy())
    assert_checkpoint_matches_memory(checkpoint, model.bert, tokenizer)


def test_pairs_stage_starts_from_mlm_run_learns_and_saves(pairs_run, mlm_run, tokenizer):
    config, trainer, checkpoint = pairs_run
    assert_learns(config["output_dir"], margin=0.3)
    records = [json.loads(line) for line in Path(config["output_dir"], "metrics.jsonl").read_text().splitlines()]
    assert all(math.isclose(r["loss"], r["infonce"], rel_tol=1e-6) for r in records)
    assert records[-1]["eval_recall@1"] > 0.5
    # Initialised from the MLM run's last checkpoint: a vocabulary row no pair uses (30527, padding
    # of the vocabulary) gets no gradient, only weight decay, so it keeps the MLM run's direction.
    unused_mlm = load_model(mlm_run[2]).embeddings.word_embeddings.weight[-1]
    unused_now = trainer.model.embeddings.word_embeddings.weight.detach()[-1]
    assert torch.allclose(unused_now / unused_now.norm(), unused_mlm / unused_mlm.norm(), atol=1e-6)
    with safe_open(checkpoint / "model.safetensors", "pt") as weights:
        assert not any(key.startswith("cls.") for key in weights.keys())  # the encoder alone
    assert_checkpoint_matches_memory(checkpoint, trainer.model, tokenizer)


def test_mining_takes_top_ranked_non_positives_after_skipping(pairs_run, data_dir):
    encoder = JinaEncoder.from_pretrained(pairs_run[2], device="cpu", max_length=64)
    pairs = [(json.loads(line)["query"], json.loads(line)["positive"]) for line in (data_dir / "pairs.jsonl").read_text().splitlines()]
    pairs = pairs[:40] + [(pairs[0][0], pairs[1][1])]  # one query with two positives
    corpus = ["a picture of an empty field", pairs[0][0]]  # the query text itself is in the pool
    pool = list(dict.fromkeys(corpus + [p for _, p in pairs]))
    scores = encoder.encode([q for q, _ in pairs]) @ encoder.encode(pool).T
    for skip in (0, 2):
        rows = mine_hard_negatives(encoder, pairs, corpus, num_negatives=3, skip_top=skip)
        assert [(r["query"], r["positive"]) for r in rows] == pairs
        for row, row_scores in zip(rows, scores):
            positives = {p for q, p in pairs if q == row["query"]}
            ranked = np.argsort(-row_scores, kind="stable")
            allowed = [pool[i] for i in ranked if pool[i] not in positives and pool[i] != row["query"]]
            assert row["negatives"] == allowed[skip : skip + 3]


def test_mine_command_then_hard_negatives_stage(tmp_path, pairs_run, data_dir, tokenizer):
    mined = tmp_path / "hard.jsonl"
    code = mine_main([
        "--model", pairs_run[0]["output_dir"], "--pairs", str(data_dir / "pairs.jsonl"), "--out", str(mined),
        "--skip-top", "1", "--num-negatives", "2", "--max-length", "64", "--no-progress",
    ])
    assert code == 0
    rows = [json.loads(line) for line in mined.read_text().splitlines()]
    assert len(rows) == len(ANIMALS) * len(COLORS) and all(len(r["negatives"]) == 2 for r in rows)
    assert all(r["positive"] not in r["negatives"] for r in rows)
    config = run_config(
        tmp_path, "hard", stage="hard_negatives",
        model={"init_from": pairs_run[0]["output_dir"]},
        data={"train": [str(mined)]},
        train={"steps": 12, "batch_size": 8},
        contrastive={"num_negatives": 2, "query_max_length": 16, "passage_max_length": 16, "temperature": 0.1},
    )
    trainer, checkpoint = run(config)
    assert_learns(config["output_dir"], margin=0.1)
    assert_checkpoint_matches_memory(checkpoint, trainer.model, tokenizer)


def test_hard_negatives_rows_need_enough_negatives(tmp_path, pairs_run):
    data = tmp_path / "few.jsonl"
    data.write_text(json.dumps({"query": "q", "positive": "p", "negatives": ["n1"]}) + "\n")
    config = run_config(tmp_path, "few", stage="hard_negatives", model={"init_from": pairs_run[0]["output_dir"]},
                        data={"train": [str(data)]}, contrastive={"num_negatives": 2})
    with pytest.raises(DataError, match=r"few.jsonl:1: 1 negatives, contrastive.num_negatives is 2"):
        run(config)


# --- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["mlm", "pairs"])
def test_resume_continues_exactly(tmp_path, data_dir, stage):
    """k steps, an interruption, a resume to N: the same weights, optimizer state and data as N straight."""
    if stage == "mlm":
        sections = dict(stage="mlm", data={"train": [str(data_dir / "mlm.jsonl")]}, mlm={"seq_len": 32})
    else:  # GradCache with dropout: the RNG streams must be restored too
        sections = dict(stage="pairs", data={"train": [str(data_dir / "pairs.jsonl")]},
                        contrastive={"chunk_size": 3, "query_max_length": 16, "passage_max_length": 16})
    common = dict(model={"architecture": TINY_ARCHITECTURE}, train={"steps": 6, "batch_size": 5, "checkpoint_every": 3}, **sections)
    straight, _ = run(run_config(tmp_path, "straight", **common))
    interrupted, checkpoint = run(run_config(tmp_path, "resumed", **common), stop_after=4)
    assert checkpoint.name == "step-00000004" and interrupted.step == 4
    assert [step for step, _ in list_checkpoints(tmp_path / "resumed")] == [3, 4]
    resumed, final = run(run_config(tmp_path, "resumed", **common))
    assert final.name == "step-00000006"
    assert resumed.position == straight.position == 6 * 5
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    state_a, state_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg_sq"], state_b[k]["exp_avg_sq"]) for k in state_a)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


# --- losses ------------------------------------------------------------------------------------


def test_info_nce_matches_a_hand_computed_value():
    q = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # not unit length: InfoNCE works on cosines
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    n = torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    t = 0.5

    def ce(logits, label):
        return -(logits[label] - math.log(sum(math.exp(x) for x in logits)))

    q_to_p = (ce([2.0, 1.2], 0) + ce([0.0, 1.6], 1)) / 2
    p_to_q = (ce([2.0, 0.0], 0) + ce([1.2, 1.6], 1)) / 2
    assert info_nce(q, p, temperature=t, symmetric=False).item() == pytest.approx(q_to_p, rel=1e-6)
    assert info_nce(q, p, temperature=t).item() == pytest.approx(q_to_p + p_to_q, rel=1e-6)
    with_negatives = (ce([2.0, 1.2, 1.6, 2.0], 0) + ce([0.0, 1.6, 1.2, 0.0], 1)) / 2
    assert info_nce(q, p, n, temperature=t, symmetric=False).item() == pytest.approx(with_negatives, rel=1e-6)


def test_symmetric_loss_uses_both_directions():
    generator = torch.Generator().manual_seed(0)
    q, p = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    forward = info_nce(q, p, symmetric=False)
    backward = info_nce(p, q, symmetric=False)
    assert not torch.isclose(forward, backward)
    assert torch.isclose(info_nce(q, p), forward + backward)
    assert torch.isclose(info_nce(q, p), info_nce(p, q))


# --- GradCache ---------------------------------------------------------------------------------


def contrastive_groups(tokenizer) -> list[Tokens]:
    queries = [f"{c} {a}" for c, a in zip(COLORS, ANIMALS)]
    positives = [f"a picture of a {c} {a} in the field today" for c, a in zip(COLORS, ANIMALS)]
    return [BatchTokenizer(tokenizer, 16)(queries), BatchTokenizer(tokenizer, 16)(positives)]


def loss_of(embeddings: list[torch.Tensor]) -> torch.Tensor:
    return info_nce(*embeddings, temperature=0.05)


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def assert_same_gradients(a: dict, b: dict) -> None:
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_grad_cache_equals_whole_batch_gradients(checkpoint, tokenizer):
    model = load_model(checkpoint)  # eval mode: no dropout
    groups = contrastive_groups(tokenizer)

    def encode(tokens):
        return model.pool(tokens.input_ids, tokens.attention_mask)

    loss = encode_and_backward(encode, groups, loss_of, chunk_size=None)
    whole = gradients(model)
    cached_loss = encode_and_backward(encode, groups, loss_of, chunk_size=3)
    assert torch.isclose(loss, cached_loss, rtol=1e-5)
    assert_same_gradients(whole, gradients(model))


def test_grad_cache_replays_dropout_masks(checkpoint, tokenizer):
    model = load_model(checkpoint)
    groups = contrastive_groups(tokenizer)

    def encode(tokens):
        return model.pool(tokens.input_ids, tokens.attention_mask)

    without_dropout = (encode_and_backward(encode, groups, loss_of, chunk_size=3), gradients(model))
    model.train()  # hidden dropout 0.1
    # The large-batch loss with the graph of every chunk kept, chunks drawing dropout in order.
    torch.manual_seed(7)
    reference = loss_of([torch.cat([encode(chunk) for chunk in group.chunks(3)]) for group in groups])
    reference.backward()
    reference_grads = gradients(model)
    torch.manual_seed(7)
    cached = encode_and_backward(encode, groups, loss_of, chunk_size=3)
    assert torch.isclose(reference, cached, rtol=1e-5)
    assert_same_gradients(reference_grads, gradients(model))
    # Dropout was really on: the result differs from the deterministic one.
    assert not torch.isclose(cached, without_dropout[0], rtol=1e-3)


# --- distributed -------------------------------------------------------------------------------


def test_torchrun_two_processes_gathered_loss_equals_single_process(tmp_path, checkpoint, data_dir):
    config = run_config(
        tmp_path, "dist", stage="pairs",
        model={"init_from": str(checkpoint)},  # a published-layout folder
        data={"train": [str(data_dir / "pairs.jsonl")]},
        train={"steps": 3, "batch_size": 4},
        contrastive={"chunk_size": 2, "query_max_length": 16, "passage_max_length": 16},
    )
    config_file = tmp_path / "dist.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "distributed_pairs_check.py"), str(checkpoint), str(config_file), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    check = json.loads(out.read_text())
    assert check["world_size"] == 2
    for mode in ("chunk_size=None", "chunk_size=2"):
        figures = check[mode]
        assert figures["distributed_loss"] == pytest.approx(figures["single_process_loss"], rel=1e-5)
        assert figures["ungathered_loss"] < figures["single_process_loss"] - 0.1  # the other rank's negatives count
        assert figures["max_grad_difference"] < 1e-5 * max(1.0, figures["max_grad"])
    checkpoints = list_checkpoints(tmp_path / "dist")
    assert [step for step, _ in checkpoints] == [3]
    state = torch.load(checkpoints[-1][1] / STATE_FILE, weights_only=False)
    assert state["world_size"] == 2 and state["data_position"] == 3 * 4 * 2
    assert len(losses(tmp_path / "dist")) == 3


# --- data, masking, schedule, config -------------------------------------------------------------


def test_packing_joins_documents_with_sep_and_pads_the_last_row(tokenizer):
    packed = pack_documents(["alpha beta gamma", "delta epsilon"], tokenizer, seq_len=4)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    stream = ids("alpha beta gamma") + [sep] + ids("delta epsilon") + [sep]
    expected = [[cls] + stream[i : i + 3] for i in range(0, len(stream), 3)]
    expected[-1] += [pad] * (4 - len(expected[-1]))
    assert packed.tolist() == expected


def test_batch_tokenizer_matches_the_transformers_call(tokenizer):
    texts = ["a short one", "a much longer text " * 20, "Ünïcode and UPPER case"]
    expected = tokenizer(texts, max_length=24, truncation=True, padding=True, return_tensors="pt")
    tokens = BatchTokenizer(tokenizer, 24)(texts)
    assert torch.equal(tokens.input_ids, expected["input_ids"]) and torch.equal(tokens.attention_mask, expected["attention_mask"])


def test_masking_is_30_percent_80_10_10_and_spares_special_tokens(tokenizer):
    ids = torch.randint(1000, 29000, (64, 512), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, 100], ids[:, -20:] = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    inputs, labels = mask_tokens(ids, MaskingVocab.of(tokenizer), 0.3, torch.Generator().manual_seed(1))
    selected = labels != -100
    specials = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert not (selected & specials).any() and torch.equal(inputs[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected])
    assert selected.sum() / (~specials).sum() == pytest.approx(0.3, abs=0.01)
    masked = (inputs[selected] == tokenizer.mask_token_id).float().mean()
    kept = (inputs[selected] == ids[selected]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.01) and kept == pytest.approx(0.1, abs=0.01)


def test_masks_depend_on_stream_position_only(tokenizer):
    packed = np.random.default_rng(0).integers(1000, 2000, (10, 32)).astype(np.uint16)
    vocab = MaskingVocab.of(tokenizer)
    one = masked_batch(packed, [3, 5], [40, 41], vocab, 0.3, seed=0)
    other = masked_batch(packed, [7, 5], [12, 41], vocab, 0.3, seed=0)
    assert torch.equal(one["labels"][1], other["labels"][1])
    assert not torch.equal(one["labels"][1], masked_batch(packed, [5], [42], vocab, 0.3, seed=0)["labels"][0])


def test_masked_positions_give_the_same_loss_and_accuracy(tokenizer):
    from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM
    from training.mlm import mlm_metrics

    packed = np.random.default_rng(0).integers(1000, 2000, (3, 40)).astype(np.uint16)
    batch = masked_batch(packed, [0, 1, 2], [0, 1, 2], MaskingVocab.of(tokenizer), 0.3, seed=0)
    positions, labels = batch["masked_positions"], batch["labels"].flatten()
    selected = (labels != -100).nonzero().squeeze(1)
    assert positions.numel() == 256 and torch.equal(positions[: selected.numel()], selected)
    assert (labels[positions[selected.numel():]] == -100).all()
    torch.manual_seed(0)
    config = JinaBertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = JinaBertForMaskedLM(config).eval()
    with torch.no_grad():
        static = mlm_metrics(model, batch)
        found = mlm_metrics(model, {k: v for k, v in batch.items() if k != "masked_positions"})
    assert static[0].item() == pytest.approx(found[0].item(), rel=1e-6)
    assert static[1] == found[1] and static[2] == found[2] == selected.numel()


def test_learning_rate_schedules():
    base = {"stage": "mlm", "output_dir": "x", "model": {"architecture": {}}, "data": {"train": ["x"]}, "train": {"steps": 10}}
    linear = learning_rate_factor(config_from_dict({**base, "optim": {"warmup_steps": 2}}))
    assert [linear(s) for s in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    cosine = learning_rate_factor(config_from_dict({**base, "optim": {"warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.1}}))
    assert [cosine(s) for s in (2, 6, 10)] == pytest.approx([1.0, 0.55, 0.1])


def test_shipped_configs_parse_and_bad_configs_say_what_is_wrong(tmp_path):
    shipped = sorted((REPO / "training" / "configs").rglob("*.yaml"))
    assert {load_config(path).stage for path in shipped} == {"mlm", "pairs", "hard_negatives", "distill"}
    config = load_config(REPO / "training" / "configs" / "gpu-smoke-mlm.yaml", ["train.steps=70", "optim.lr=1e-4"])
    assert config.train.steps == 70 and config.optim.lr == 1e-4
    base = {"stage": "pairs", "output_dir": "x", "model": {"init_from": "m"}, "data": {"train": ["x"]}}
    with pytest.raises(ConfigError, match="unknown key 'temprature'"):
        config_from_dict({**base, "contrastive": {"temprature": 0.05}})
    with pytest.raises(ConfigError, match="exactly one of init_from"):
        config_from_dict({**base, "model": {}})
    with pytest.raises(ConfigError, match="the mlm: section does not apply"):
        config_from_dict({**base, "mlm": {"seq_len": 512}})
    with pytest.raises(ConfigError, match="train.steps: expected int"):
        config_from_dict({**base, "train": {"steps": "many"}})


def test_bad_training_rows_name_file_and_line(tmp_path, checkpoint):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"query": "q", "positive": "p"}) + "\n" + json.dumps({"query": "q", "passage": "p"}) + "\n")
    config = run_config(tmp_path, "bad", stage="pairs", model={"init_from": str(checkpoint)}, data={"train": [str(data)]})
    with pytest.raises(DataError, match=r"pairs.jsonl:2: field 'positive' must be a non-empty string"):
        run(config)


# --- CUDA (run on the GPU machine: python -m pytest -m gpu tests/test_training.py) ---------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_grad_cache_replays_cuda_dropout_masks(checkpoint, tokenizer):
    model = load_model(checkpoint, device="cuda").train()
    groups = [g.to(torch.device("cuda")) for g in contrastive_groups(tokenizer)]

    def encode(tokens):
        return model.pool(tokens.input_ids, tokens.attention_mask)

    torch.manual_seed(7)
    reference = loss_of([torch.cat([encode(chunk) for chunk in group.chunks(3)]) for group in groups])
    reference.backward()
    reference_grads = gradients(model)
    torch.manual_seed(7)
    cached = encode_and_backward(encode, groups, loss_of, chunk_size=3, device=torch.device("cuda"))
    assert torch.isclose(reference, cached, rtol=1e-4)
    assert_same_gradients(reference_grads, gradients(model))


@pytest.mark.gpu
@needs_cuda
def test_stages_run_in_bf16_on_cuda(tmp_path, data_dir, tokenizer):
    mlm = run_config(
        tmp_path, "mlm", stage="mlm",
        model={"architecture": {**TINY_ARCHITECTURE, "hidden_size": 64}, "attn_implementation": "flex"},
        data={"train": [str(data_dir / "mlm.jsonl")], "eval": [str(data_dir / "mlm-eval.txt")]},
        train={"device": "cuda", "precision": "bf16"}, mlm={"seq_len": 128, "eval_lengths": [128, 512]},
    )
    run(mlm)
    assert_learns(mlm["output_dir"], margin=1.0)
    pairs = run_config(
        tmp_path, "pairs", stage="pairs", model={"init_from": mlm["output_dir"]},
        data={"train": [str(data_dir / "pairs.jsonl")]}, train={"device": "cuda", "precision": "bf16"},
        contrastive={"chunk_size": 4, "query_max_length": 16, "passage_max_length": 16, "temperature": 0.1},
    )
    trainer, checkpoint = run(pairs)
    assert_learns(pairs["output_dir"], margin=0.3)
    assert_checkpoint_matches_memory(checkpoint, trainer.model.float().cpu(), tokenizer)


def test_vocabulary_folder_from_the_environment(tmp_path, monkeypatch):
    from training.models import VOCAB_DIR_ENV, bert_uncased_tokenizer, bert_uncased_vocab_dir

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "tide", "##s"]) + "\n")
    monkeypatch.setenv(VOCAB_DIR_ENV, str(tmp_path))
    assert bert_uncased_vocab_dir() == tmp_path
    assert bert_uncased_tokenizer()("tides")["input_ids"] == [2, 5, 6, 3]


def test_bert_uncased_tokenizer_holds_the_whole_vocabulary():
    from training.models import bert_uncased_tokenizer, bert_uncased_vocab_dir

    vocab = (bert_uncased_vocab_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = bert_uncased_tokenizer()
    assert len(tokenizer) == len(vocab) == 30522
    assert tokenizer("Hello World")["input_ids"] == [vocab.index(t) for t in ("[CLS]", "hello", "world", "[SEP]")]


def test_vocab_txt_from_a_tokenizer_json_is_the_packages_vocabulary(tmp_path):
    import jina_rag
    from training.models import bert_uncased_vocab_dir, write_vocab_txt

    shipped = Path(jina_rag.__file__).parent / "models" / "jina-rag-small-en" / "tokenizer.json"
    written = write_vocab_txt(shipped, tmp_path / "vocab")
    assert written.read_text(encoding="utf-8") == (bert_uncased_vocab_dir() / "vocab.txt").read_text(encoding="utf-8")
