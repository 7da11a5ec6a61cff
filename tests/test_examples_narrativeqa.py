"""examples/narrativeqa_long_docs.py runs end to end on the shipped sample with a small checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "narrativeqa_long_docs.py"


def load_example():
    spec = importlib.util.spec_from_file_location("narrativeqa_long_docs", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_writes_table_plot_and_json(checkpoint, tmp_path, capsys):
    example = load_example()
    # Short lengths keep the test quick on CPU; the default 512,2048,8192 runs the same code.
    code = example.main(["--model", str(checkpoint), "--device", "cpu", "--output-dir", str(tmp_path), "--max-lengths", "64,128,256"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "stories" in printed and "| max_length=256 |" in printed and "| BM25 |" in printed
    png = tmp_path / "narrativeqa_max_length.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = json.loads((tmp_path / "narrativeqa_max_length.json").read_text())
    assert [r["system"] for r in rows] == ["max_length=64", "max_length=128", "max_length=256", "BM25"]
    assert all(0.0 <= r["metrics"]["ndcg@10"] <= 1.0 for r in rows)
    # BM25 finds most stories from a heading whose words the section repeats.
    assert rows[-1]["metrics"]["recall@10"] > 0.5


def test_example_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JINA_RAG_MODEL", str(tmp_path / "no-such-model"))
    assert load_example().main(["--output-dir", str(tmp_path), "--no-bm25"]) == 2
    assert "does not exist" in capsys.readouterr().err
