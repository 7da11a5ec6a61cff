"""Embed a few texts with the default model and rank them against a question.

Runs offline on the model the package ships (or $JINA_RAG_MODEL / a folder given as argument).
"""

from __future__ import annotations

import logging
import sys

from jina_rag import JinaEncoder, ModelNotFoundError

DOCUMENTS = [
    "The kernel scheduler decides which runnable task gets the CPU next.",
    "SQLite stores a whole database in one ordinary file on disk.",
    "Git records snapshots of a project's files as commits in a repository.",
]
QUESTION = "How does a database keep its data in a single file?"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        encoder = JinaEncoder.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else None)
    except ModelNotFoundError as error:
        logging.error("%s", error)
        return 1
    documents = encoder.encode(DOCUMENTS)
    question = encoder.encode(QUESTION)
    scores = documents @ question
    print(f"model: {encoder.info()['model']}  (dim {encoder.dim})")
    print(f"question: {QUESTION}")
    for score, document in sorted(zip(scores, DOCUMENTS), reverse=True):
        print(f"  {score:.3f}  {document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
