"""A LangChain retrieval chain over whole documents: retriever | prompt | chat model.

    python examples/langchain_chain.py "How is a Git branch stored?"
    python examples/langchain_chain.py --chat-model langchain_ollama:ChatOllama --chat-kwargs '{"model": "llama3.2"}'

Each document is indexed as one vector (jina-rag's DocumentIndex into Qdrant), and LangChain's
QdrantVectorStore reads the same collection as a retriever. Any LangChain chat model plugs in
with --chat-model module:Class; without one, the example prints the retrieved context and the
prompt the model would get. Runs offline on the default model; --model names another folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from langchain_core.documents import Document as LangChainDocument
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_qdrant import QdrantVectorStore

from jina_rag import DocumentIndex, ModelNotFoundError, read_documents
from jina_rag.index.qdrant import QdrantStore
from jina_rag.langchain import JinaEmbeddings

HERE = Path(__file__).resolve().parent
PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer the question from the documents below only. Name the document you used.\n\n{context}"),
    ("human", "{question}"),
])


def format_documents(documents: list[LangChainDocument]) -> str:
    return "\n\n".join(f"[{doc.metadata['path']}]\n{doc.page_content.strip()}" for doc in documents)


def load_chat_model(spec: str, kwargs: dict):
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--chat-model {spec!r}: use module:Class, e.g. langchain_ollama:ChatOllama")
    try:
        chat_model = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        package = (error.name or module).split(".")[0].replace("_", "-")
        raise SystemExit(
            f"--chat-model {spec}: {error.name or module} is not installed: pip install {package} "
            f"(or run without --chat-model to print the prompt a model would get)"
        ) from None
    except AttributeError:
        raise SystemExit(f"--chat-model {spec}: {module} has no {name!r}") from None
    return chat_model(**kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="How does Git keep a repository small?")
    parser.add_argument("--docs", default=str(HERE / "documents"), help="folder of text files to index")
    parser.add_argument("--model", default=None, help="embedding model folder (default: the default model)")
    parser.add_argument("--chat-model", default=None, help="a LangChain chat model class as module:Class")
    parser.add_argument("--chat-kwargs", default="{}", help="JSON keyword arguments for the chat model")
    parser.add_argument("-k", type=int, default=2, help="documents to retrieve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # Before indexing: a chat model that is not installed fails at once, in one line.
    chat_model = load_chat_model(args.chat_model, json.loads(args.chat_kwargs)) if args.chat_model else None

    try:
        embeddings = JinaEmbeddings(model_name=args.model)
    except ModelNotFoundError as error:
        logging.error("%s", error)
        return 1
    # mode "document": langchain-qdrant reads the one-vector layout (a hybrid point has named vectors).
    index = DocumentIndex(QdrantStore.from_location(":memory:", "documents"), embeddings.encoder, mode="document")
    index.index(read_documents(args.docs))
    retriever = QdrantVectorStore(index.store.client, "documents", embeddings).as_retriever(search_kwargs={"k": args.k})

    prompt_chain = {"context": retriever | RunnableLambda(format_documents), "question": RunnablePassthrough()} | PROMPT
    if chat_model is not None:
        chain = prompt_chain | chat_model | StrOutputParser()
        print(chain.invoke(args.question))
    else:
        print("No --chat-model given: this is what the model would receive.\n")
        for message in prompt_chain.invoke(args.question).to_messages():
            print(f"--- {message.type} ---\n{message.content}\n")
    index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
