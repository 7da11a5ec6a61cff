"""Index a folder of long documents into Qdrant, one vector per document, then search it.

    python examples/qdrant_whole_documents.py                       # examples/documents, in memory
    python examples/qdrant_whole_documents.py --docs ~/notes --location ./qdrant-data "my question"

Runs offline on the default model ($JINA_RAG_MODEL or the model the package ships); --model
names another folder. --location takes :memory:, a folder, or a server URL (with --api-key).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from jina_rag import DocumentIndex, JinaEncoder, ModelNotFoundError, read_documents

HERE = Path(__file__).resolve().parent
QUESTIONS = ["Why do some coasts have much larger tides than others?", "How do I keep a sourdough crust from going soft?"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", nargs="*", default=QUESTIONS, help="questions to search for")
    parser.add_argument("--docs", default=str(HERE / "documents"), help="folder of text files to index")
    parser.add_argument("--location", default=":memory:", help=":memory:, a folder, or an http(s):// server URL")
    parser.add_argument("--api-key", default=None, help="API key of a Qdrant server")
    parser.add_argument("--collection", default="whole-documents")
    parser.add_argument("--model", default=None, help="model folder (default: the default model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    try:
        encoder = JinaEncoder.from_pretrained(args.model)
    except ModelNotFoundError as error:
        logging.error("%s", error)
        return 1
    documents = list(read_documents(args.docs))
    tokens = encoder.count_tokens([doc.text for doc in documents])
    print(f"{len(documents)} documents, {min(tokens)}-{max(tokens)} tokens each, one vector per document")

    with DocumentIndex.open("qdrant", args.location, args.collection, encoder=encoder, api_key=args.api_key) as index:
        print(index.index(documents).summary())
        # Indexing again touches nothing: ids and content hashes match what is stored.
        print(index.index(documents).summary())
        for question in args.questions:
            print(f"\nQ: {question}")
            for hit in index.search(question, limit=3):
                print(f"  {hit.score:.3f}  {hit.id}")
        markdown_only = index.search(args.questions[0], limit=3, filter={"file_type": "md"})
        print(f"\nfiltered to file_type=md: {[hit.id for hit in markdown_only]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
