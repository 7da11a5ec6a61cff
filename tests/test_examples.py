"""The examples run offline against a tiny test checkpoint (random weights: output is checked, not quality)."""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300, env=environment,
    )


def example_main(name: str):
    """An example's ``main`` loaded in this process (for variants; each example also runs as a script)."""
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


def test_qdrant_whole_documents(checkpoint):
    result = run_example("qdrant_whole_documents.py", "--model", str(checkpoint))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 documents" in out and "4 indexed, 0 unchanged" in out and "0 indexed, 4 unchanged" in out
    assert out.count("\nQ: ") == 2
    assert "filtered to file_type=md: [" in out and "volcanoes.txt" not in out.split("filtered to file_type=md:")[1]


def test_langchain_chain_without_and_with_a_chat_model(checkpoint, capsys):
    question = "How is a Git branch stored?"
    result = run_example("langchain_chain.py", question, "--model", str(checkpoint), "-k", "2")
    assert result.returncode == 0, result.stderr
    assert "--- system ---" in result.stdout and f"--- human ---\n{question}" in result.stdout
    assert result.stdout.count("\n[") == 2  # two whole documents in the context
    # LangChain's own scripted chat model stands in for a real one: the chain passes its answer through.
    answer = "Branches are small files holding a commit hash (git-internals.md)."
    main = example_main("langchain_chain.py")
    chat_model = ["--chat-model", "langchain_core.language_models:FakeListChatModel"]
    assert main([question, "--model", str(checkpoint), *chat_model, "--chat-kwargs", json.dumps({"responses": [answer]})]) == 0
    assert capsys.readouterr().out.strip() == answer


def test_chroma_server(checkpoint, chroma_server):
    result = run_example("chroma_server.py", "--url", chroma_server.url, "--model", str(checkpoint))
    assert result.returncode == 0, result.stderr
    assert f"chroma server at {chroma_server.url}" in result.stdout
    assert "4 indexed, 0 unchanged" in result.stdout and "0 indexed, 4 unchanged" in result.stdout


@pytest.mark.parametrize("name", ["qdrant_whole_documents.py", "langchain_chain.py", "chroma_server.py"])
def test_without_a_model_the_examples_print_the_clear_error(tmp_path, monkeypatch, caplog, name):
    monkeypatch.setenv("JINA_RAG_MODEL", str(tmp_path / "no-model"))
    assert example_main(name)([]) == 1
    assert "does not exist" in caplog.text


def test_long_documents_demo(checkpoint, tmp_path):
    index = tmp_path / "index"
    result = run_example("long_documents.py", "--model", str(checkpoint), "--index", str(index))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "11 documents, 21 questions" in out and "11 indexed, 0 unchanged" in out
    assert out.count("\nQ: ") == 3 and out.count("   -> ") == 3
    table = out.split("Every method on the same 21 questions")[1]
    for method in ("| BM25 |", "| dense whole document |", "| late chunks |", "| naive chunks |", "| hybrid |",
                   "| all-MiniLM-L6-v2 chunked (256-token chunks) |"):
        assert method in table
    assert (index / "documents").is_dir()  # a Qdrant Edge collection in the folder given
    again = run_example("long_documents.py", "--model", str(checkpoint), "--index", str(index), "--no-table")
    assert again.returncode == 0, again.stderr
    assert "0 indexed, 11 unchanged" in again.stdout and "Every method" not in again.stdout


@pytest.mark.skipif(importlib.util.find_spec("langchain_ollama") is not None, reason="needs langchain-ollama absent")
def test_a_chat_model_that_is_not_installed_is_one_line_saying_what_to_install(checkpoint):
    result = run_example("langchain_chain.py", "--chat-model", "langchain_ollama:ChatOllama", "--model", str(checkpoint))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "--chat-model langchain_ollama:ChatOllama: langchain_ollama is not installed: pip install langchain-ollama "
        "(or run without --chat-model to print the prompt a model would get)"
    ]
