"""The shipped default model (jina_rag/models/jina-rag-small-en): loads offline with no arguments and retrieves.

Skipped until the model is installed (python -m training.ship_default install FILES_DIR).
"""

from __future__ import annotations

import numpy as np
import pytest

from jina_rag import JinaEncoder
from jina_rag.loading import SHIPPED_MODEL_DIR, default_model_name

pytestmark = pytest.mark.skipif(not (SHIPPED_MODEL_DIR / "config.json").is_file(), reason="no shipped model installed")

DOCUMENTS = [
    "git rebase reapplies the commits of the current branch on top of another base commit, rewriting history.",
    "The VACUUM command rebuilds the SQLite database file, repacking it into a minimal amount of disk space.",
    "The Completely Fair Scheduler decides which runnable task the kernel runs next on each CPU.",
    "A list comprehension builds a new Python list by evaluating an expression for every item of an iterable.",
    "The ssh-keygen tool creates a new public and private key pair for authenticating to remote servers.",
]
QUERIES = [
    "how do I move my branch commits onto another base",
    "shrink a sqlite database file",
    "how does linux choose which process runs on a cpu",
    "create a list from a loop in one expression",
    "generate an ssh key pair",
]


def test_default_encoder_is_the_shipped_model_and_ranks_the_right_document_first(monkeypatch):
    monkeypatch.delenv("JINA_RAG_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_model_name() == str(SHIPPED_MODEL_DIR)
    encoder = JinaEncoder(device="cpu")
    info = encoder.info()
    assert info["model_max_length"] == 8192 and info["layers"] >= 1
    docs = encoder.encode(DOCUMENTS, show_progress=False)
    queries = encoder.encode(QUERIES, show_progress=False)
    ranks = (queries @ docs.T).argmax(axis=1)
    assert ranks.tolist() == list(range(len(QUERIES)))
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
