"""Writing a retrieval set in the official NarrativeQA layout (``documents.csv``, ``qaps.csv``, ``tmp/<id>.content``).

The layout is what ``jina_rag.eval.load_narrativeqa`` and ``examples/narrativeqa_long_docs.py``
read, so a set built from our own long documents runs through the same code as the real data.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

DOCUMENT_COLUMNS = [
    "document_id", "set", "kind", "story_url", "story_file_size", "wiki_url", "wiki_title",
    "story_word_count", "story_start", "story_end",
]
QAPS_COLUMNS = [
    "document_id", "set", "question", "answer1", "answer2", "question_tokenized", "answer1_tokenized", "answer2_tokenized",
]


def _tokenized(text: str) -> str:
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def _first_sentence(text: str, max_words: int = 30) -> str:
    sentence = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    return " ".join(sentence.split()[:max_words])


def write_narrativeqa(
    folder: Path,
    corpus: Sequence[dict],
    queries: Sequence[dict],
    qrels: dict[str, dict[str, int]],
    *,
    split: str = "test",
) -> None:
    """Write BEIR rows from :func:`training.data.tasks.long_retrieval_set` as a NarrativeQA folder.

    Each story is one corpus document (title and text); each question is a query whose answer
    fields hold the first sentence of the section that answers it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    ids = {row["_id"]: hashlib.sha1(row["_id"].encode()).hexdigest() for row in corpus}
    texts = {}
    with open(folder / "documents.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(DOCUMENT_COLUMNS)
        for row in corpus:
            text = f"{row['title']}\n\n{row['text']}"
            texts[row["_id"]] = text
            story = ids[row["_id"]]
            (folder / "tmp" / f"{story}.content").write_text(text, encoding="utf-8")
            words = text.split()
            writer.writerow([
                story, split, "docs", f"deb:{row['_id']}", len(text.encode()), "", row["title"],
                len(words), " ".join(words[:3]), " ".join(words[-3:]),
            ])
    with open(folder / "qaps.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(QAPS_COLUMNS)
        for query in queries:
            (doc_id,) = qrels[query["_id"]]
            meta = query["metadata"]
            answer = _first_sentence(texts[doc_id][meta["answer_char_start"]: meta["answer_char_end"]])
            writer.writerow([
                ids[doc_id], split, query["text"], answer, answer,
                _tokenized(query["text"]), _tokenized(answer), _tokenized(answer),
            ])
