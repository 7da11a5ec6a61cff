"""Index whole documents into a Chroma server, then search it, from Python and from the CLI.

    python examples/chroma_server.py                               # starts `chroma run` on a temp folder
    python examples/chroma_server.py --url http://127.0.0.1:8000   # an already running server

Runs offline on the default model; --model names another folder.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from jina_rag import DocumentIndex, JinaEncoder, ModelNotFoundError, read_documents

HERE = Path(__file__).resolve().parent


@contextmanager
def chroma_run():
    """A `chroma run` server on 127.0.0.1 with a temporary folder, stopped on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [shutil.which("chroma") or "chroma", "run", "--path", folder, "--port", str(port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("chroma run did not start within a minute")
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def run(url: str, encoder: JinaEncoder, docs: str, question: str) -> None:
    print(f"chroma server at {url}")
    with DocumentIndex.open("chroma", url, "whole-documents", encoder=encoder) as index:
        print(index.index(read_documents(docs)).summary())
        print(index.index(read_documents(docs)).summary())
        print(f"\nQ: {question}")
        for hit in index.search(question, limit=3):
            print(f"  {hit.score:.3f}  {hit.id}")
        print(f"\nthe same from the shell:\n  jina-rag search {question!r} --store chroma --location {url} --collection whole-documents")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="What warns volcanologists before an eruption?")
    parser.add_argument("--url", default=None, help="a running Chroma server (default: start one)")
    parser.add_argument("--docs", default=str(HERE / "documents"), help="folder of text files to index")
    parser.add_argument("--model", default=None, help="model folder (default: the default model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    try:
        encoder = JinaEncoder.from_pretrained(args.model)
    except ModelNotFoundError as error:
        logging.error("%s", error)
        return 1
    if args.url:
        run(args.url, encoder, args.docs, args.question)
    else:
        with chroma_run() as url:
            run(url, encoder, args.docs, args.question)
    return 0


if __name__ == "__main__":
    sys.exit(main())
