"""Issue 30: exactly once when the indexing process is killed (SIGKILL) mid-run, on every store written to.

Qdrant Edge has its own test (tests/test_qdrant_edge.py); here: embedded Chroma (a folder), a Chroma
server (a real ``chroma run``) and qdrant-client's local folder. Each test starts a real indexing
process (``jina-rag index`` from this checkout; for qdrant-client's folder, which the command line
leaves to Qdrant Edge, the same run through the Python API), kills it with SIGKILL once its log says
some batches were written, reruns the same command to completion, and checks the rerun's reported
counts (it encodes only what was missing), the exact number of points, no duplicates, texts and
metadata intact.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from jina_rag.index import Document, DocumentIndex, open_store, point_id

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = 80
BATCH_DOCS = 4
KILL_AFTER_BATCHES = 2
WRITTEN = re.compile(r"batch (\d+) of (\d+) written to ")
SUMMARY = re.compile(r": (\d+) indexed, (\d+) unchanged \(skipped\), (\d+) failed; (\d+) tokens in ")
WORDS = "tide harbour sloop galaxy telescope dough yeast oven receipt ledger magma crust knight bishop".split()

# The same run through the Python API, for qdrant-client's local folder (not reachable from the command line).
QDRANT_CLIENT_INDEX = """
import logging, sys
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from jina_rag import JinaEncoder
from jina_rag.index import DocumentIndex, read_records_file
from jina_rag.index.qdrant import QdrantStore
records, folder, collection, checkpoint = sys.argv[1:5]
encoder = JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=128)
with DocumentIndex(QdrantStore.from_location(folder, collection), encoder, mode="document") as index:
    report = index.index(read_records_file(records), batch_docs=int(sys.argv[5]), show_progress=False)
print(report.summary(), flush=True)
"""


def corpus() -> list[Document]:
    rng = np.random.default_rng(30)
    return [
        Document(f"doc-{number:03d}.txt", " ".join(rng.choice(WORDS, size=int(rng.integers(12, 60)))) + ".",
                 {"topic": str(rng.choice(["sea", "sky", "kitchen"])), "number": number})
        for number in range(DOCUMENTS)
    ]


def write_records(path: Path, docs: list[Document]) -> Path:
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text, "metadata": dict(d.metadata)}) + "\n" for d in docs))
    return path


def child_env() -> dict[str, str]:
    # This checkout's jina_rag, one torch thread (the CI machine has two cores).
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def cli_index(records: Path, store: str, location: str, collection: str, checkpoint: Path, mode: str) -> list[str]:
    """``jina-rag -v index`` (INFO logs: a line per written batch) as this checkout runs it."""
    return [
        sys.executable, "-m", "jina_rag.cli", "-v", "index", "--records", str(records), "--store", store,
        "--location", location, "--collection", collection, "--mode", mode, "--model", str(checkpoint),
        "--device", "cpu", "--max-length", "128", "--batch-docs", str(BATCH_DOCS), "--no-progress",
    ]


def kill_mid_run(command: list[str]) -> int:
    """Start the indexing command, SIGKILL it once its log says KILL_AFTER_BATCHES batches were written; the batches it
    reported written."""
    child = subprocess.Popen(command, env=child_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    log = []
    written = 0
    try:
        for line in child.stderr:
            log.append(line)
            match = WRITTEN.search(line)
            if match:
                written, total = int(match[1]), int(match[2])
                assert total == DOCUMENTS // BATCH_DOCS
                if written >= KILL_AFTER_BATCHES:
                    child.send_signal(signal.SIGKILL)
                    break
    finally:
        if child.poll() is None:
            child.kill()  # SIGKILL too: sent again if it was, and an assertion above must not leave it running
        code = child.wait(timeout=120)
        child.stdout.close()
        child.stderr.close()
    assert code == -signal.SIGKILL, f"the indexing process was not killed mid-run (exit {code}):\n{''.join(log)[-3000:]}"
    return written


def rerun(command: list[str]) -> tuple[int, int, int, int]:
    """Run the indexing command to completion: (indexed, skipped, failed, tokens) from its summary."""
    done = subprocess.run(command, env=child_env(), text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    match = SUMMARY.search(done.stdout)
    assert match, done.stdout
    return tuple(map(int, match.groups()))  # type: ignore[return-value]


def stored_after_kill(index: DocumentIndex, docs: list[Document]) -> set[str]:
    """Ids of the documents the killed run left stored with their hash (what a rerun skips)."""
    with index:
        hashes = index.store.existing_hashes([d.id for d in docs])
        assert index.count() == len(hashes)
    return set(hashes)


def check_rerun(counts: tuple[int, int, int, int], docs: list[Document], survived: set[str], written: int, encoder) -> None:
    indexed, skipped, failed, tokens = counts
    assert written * BATCH_DOCS <= len(survived) < len(docs), "the kill did not land mid-run"
    # Content hashes: the rerun skipped what survived and encoded exactly the rest.
    assert (indexed, skipped, failed) == (len(docs) - len(survived), len(survived), 0)
    assert tokens == sum(encoder.count_tokens([d.text for d in docs if d.id not in survived]))


def check_chroma(index: DocumentIndex, collection: str, docs: list[Document], passages: bool) -> None:
    """Every document stored once, intact; in the passage layout, its passage records once each and no orphan."""
    with index:
        assert index.count() == len(docs)
        stored = index.store.client.get_collection(collection).get(include=["metadatas", "documents"])
        assert len(stored["ids"]) == len(set(stored["ids"]))
        heads = [(i, m, t) for i, m, t in zip(stored["ids"], stored["metadatas"], stored["documents"]) if m.get("passage_index", -1) == -1]
        by_doc = {m["doc_id"]: (i, m, t) for i, m, t in heads}
        assert len(heads) == len(by_doc) == len(docs)
        for doc in docs:
            record_id, metadata, text = by_doc[doc.id]
            assert (record_id, text) == (point_id(doc.id), doc.text)
            assert {k: metadata[k] for k in doc.metadata} == dict(doc.metadata)
        if passages:
            rest = [(m["doc_id"], m["passage_index"], t, m) for m, t in zip(stored["metadatas"], stored["documents"]) if m.get("passage_index", -1) >= 0]
            assert len(rest) == len({(doc_id, number) for doc_id, number, _, _ in rest}) >= len(docs)
            texts = {d.id: d.text for d in docs}
            for doc_id, _, text, metadata in rest:
                assert texts[doc_id][metadata["passage_start"] : metadata["passage_end"]] == text
            # Every document's passages cover it from its first to its last character.
            for doc in docs:
                spans = sorted((m["passage_start"], m["passage_end"]) for doc_id, _, _, m in rest if doc_id == doc.id)
                assert spans and spans[0][0] == 0 and spans[-1][1] == len(doc.text.rstrip())
        hit = index.search(docs[7].text, limit=1)[0]
        assert (hit.id, hit.text) == (docs[7].id, docs[7].text)
        assert index.index(docs, batch_docs=64, show_progress=False).indexed == []


@pytest.mark.parametrize("where", ["embedded", "server"])
def test_chroma_indexing_killed_mid_run_then_rerun_stores_every_document_once(where, tmp_path, checkpoint, encoder, request):
    docs = corpus()
    records = write_records(tmp_path / "docs.jsonl", docs)
    location = str(tmp_path / "chroma") if where == "embedded" else request.getfixturevalue("chroma_server").url
    collection = f"kill-{uuid.uuid4().hex[:8]}"
    # Embedded: whole documents; server: late chunks (passage records written before the document's).
    mode = "document" if where == "embedded" else "late-chunks"
    command = cli_index(records, "chroma", location, collection, checkpoint, mode)

    written = kill_mid_run(command)
    survived = stored_after_kill(DocumentIndex(open_store("chroma", location, collection), encoder, mode=mode), docs)
    check_rerun(rerun(command), docs, survived, written, encoder)
    check_chroma(DocumentIndex(open_store("chroma", location, collection), encoder, mode=mode), collection, docs, mode != "document")


def test_qdrant_client_folder_indexing_killed_mid_run_then_rerun_stores_every_document_once(tmp_path, checkpoint, encoder):
    from jina_rag.index.qdrant import QdrantStore

    docs = corpus()
    records = write_records(tmp_path / "docs.jsonl", docs)
    folder = str(tmp_path / "qdrant-client")
    command = [sys.executable, "-c", QDRANT_CLIENT_INDEX, str(records), folder, "docs", str(checkpoint), str(BATCH_DOCS)]

    written = kill_mid_run(command)
    survived = stored_after_kill(DocumentIndex(QdrantStore.from_location(folder, "docs"), encoder, mode="document"), docs)
    check_rerun(rerun(command), docs, survived, written, encoder)

    with DocumentIndex(QdrantStore.from_location(folder, "docs"), encoder, mode="document") as index:
        assert index.count() == len(docs)
        points, _ = index.store.client.scroll("docs", limit=10 * len(docs), with_payload=True)
        assert len(points) == len(docs)
        by_doc = {point.payload["doc_id"]: point for point in points}
        assert len(by_doc) == len(docs)
        for doc in docs:
            point = by_doc[doc.id]
            assert str(point.id) == point_id(doc.id)
            assert (point.payload["page_content"], point.payload["metadata"]) == (doc.text, dict(doc.metadata))
        hit = index.search(docs[7].text, limit=1)[0]
        assert (hit.id, hit.text) == (docs[7].id, docs[7].text)
        assert index.index(docs, batch_docs=64, show_progress=False).indexed == []
