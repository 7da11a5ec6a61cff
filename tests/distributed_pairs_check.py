"""Run by tests/test_training.py as ``torchrun --nproc_per_node 2`` (gloo on CPU).

1. Loss and gradients of InfoNCE with embeddings gathered across the two ranks (each rank
   holding half of the batch) equal those of one process holding the whole global batch, both
   with plain encoding and with GradCache; rank 0 writes the figures to OUT_JSON.
2. The pairs stage runs through the real entry point (``python -m training CONFIG``).

usage: distributed_pairs_check.py MODEL_DIR CONFIG OUT_JSON
"""

from __future__ import annotations

import json
import sys

import torch

from jina_rag import JinaBertModel, load_model
from training.__main__ import main as training_main
from training.distributed import all_reduce_mean, average_gradients, init_distributed
from training.models import load_tokenizer_folder
from training.pairs import BatchTokenizer, Tokens, encode_and_backward, info_nce

QUERIES = ["red cat", "blue dog", "green owl", "black fox", "white cow", "pink pig", "brown bear", "grey wolf"]
NEGATIVES_PER_QUERY = 2


def loss_and_grads(model, tokenizer, queries, chunk_size, gather):
    positives = [f"a photo of a {q} in a field" for q in queries]
    negatives = [f"a drawing of a {q.split()[1]} number {i}" for q in queries for i in range(NEGATIVES_PER_QUERY)]
    groups = [BatchTokenizer(tokenizer, 32)(texts) for texts in (queries, positives, negatives)]
    model.zero_grad(set_to_none=True)

    def encode(tokens: Tokens) -> torch.Tensor:
        return model.pool(tokens.input_ids, tokens.attention_mask)

    def loss_fn(embeddings):
        return info_nce(*embeddings, temperature=0.05, symmetric=True, gather=gather)

    loss = encode_and_backward(encode, groups, loss_fn, chunk_size=chunk_size)
    return loss, {name: p.grad.clone() for name, p in model.named_parameters()}


def main(model_dir: str, config: str, out: str) -> int:
    env = init_distributed("cpu")
    tokenizer = load_tokenizer_folder(model_dir)
    model = load_model(model_dir, JinaBertModel)  # eval mode: no dropout, so both sides are deterministic
    per_rank = len(QUERIES) // env.world_size
    local = QUERIES[env.rank * per_rank : (env.rank + 1) * per_rank]
    results = {"world_size": env.world_size}
    for chunk_size in (None, 2):
        local_loss, _ = loss_and_grads(model, tokenizer, local, chunk_size, gather=True)
        average_gradients(model)
        gathered = {name: p.grad.clone() for name, p in model.named_parameters()}
        distributed_loss = float(all_reduce_mean(local_loss))
        # Without gathering, each rank sees only its own half as negatives: a different loss.
        ungathered_loss = float(all_reduce_mean(loss_and_grads(model, tokenizer, local, chunk_size, gather=False)[0]))
        if env.is_main:
            single_loss, single = loss_and_grads(model, tokenizer, QUERIES, None, gather=False)
            results[f"chunk_size={chunk_size}"] = {
                "distributed_loss": distributed_loss,
                "ungathered_loss": ungathered_loss,
                "single_process_loss": float(single_loss),
                "max_grad_difference": max(float((gathered[n] - single[n]).abs().max()) for n in single),
                "max_grad": max(float(g.abs().max()) for g in single.values()),
            }
    if env.is_main:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return training_main([config])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
