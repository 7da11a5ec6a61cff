"""Whole-document indexing on real stores: Qdrant (:memory:, Qdrant Edge in a folder, qdrant-client's local
folder, $QDRANT_URL) and Chroma (embedded, a server).

The model has random weights, so retrieval is asserted only for exact-duplicate queries.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

for extra in ("qdrant_client", "qdrant_edge", "chromadb"):  # skipped, not broken, where a store's extra is missing
    pytest.importorskip(extra)

from jina_rag import InvalidInputError, TextTooLongError  # noqa: E402
from jina_rag.cli import main as cli_main  # noqa: E402
from jina_rag.index import (  # noqa: E402
    CollectionMismatchError,
    CollectionNotFoundError,
    Document,
    DocumentIndex,
    IndexingError,
    documents_from_records,
    open_store,
    point_id,
    read_documents,
    read_records_file,
)
from jina_rag.index.qdrant import QdrantStore  # noqa: E402
from jina_rag.index.qdrant_edge import EdgeStore  # noqa: E402

from conftest import ARTICLES, ChromaServer, free_port, sentence_spans  # noqa: E402

TOPICS = {
    "astronomy.md": ("astronomy", "Telescopes collect light from distant galaxies and nebulae; astronomers measure redshift."),
    "baking.md": ("cooking", "Knead the dough, let the yeast rise overnight, then bake the bread in a hot oven."),
    "sailing.txt": ("sport", "The crew trims the mainsail and tacks the sloop upwind across the harbour."),
    "taxes.md": ("finance", "File the annual return before April and keep receipts for deductible expenses."),
    "volcanoes.rst": ("geology", "Magma rises through the crust and erupts as lava from the volcano's vent."),
    "chess.txt": ("games", "Open with the king's pawn, develop knights before bishops and castle early."),
}


def corpus() -> list[Document]:
    return [Document(name, text, {"topic": topic}) for name, (topic, text) in TOPICS.items()]


@dataclass
class StoreSpec:
    kind: str
    location: str
    collection: str
    api_key: str | None = None
    qdrant_client_folder: bool = False  # a folder in qdrant-client's local mode, which open_store leaves to Edge

    def open(self, encoder, **options) -> DocumentIndex:
        if self.qdrant_client_folder:
            return DocumentIndex(QdrantStore.from_location(self.location, self.collection), encoder, **options)
        return DocumentIndex(open_store(self.kind, self.location, self.collection, api_key=self.api_key), encoder, **options)


STORE_KINDS = ["qdrant-memory", "qdrant-edge", "qdrant-client-path", "chroma-embedded", "chroma-server"]
if os.environ.get("QDRANT_URL"):
    STORE_KINDS.append("qdrant-server")


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path):
    collection = f"test-{uuid.uuid4().hex[:12]}"
    kind = request.param
    if kind == "qdrant-memory":
        # :memory: lives in one client, so reopening gives an empty store; tests reuse the index instead.
        yield StoreSpec("qdrant", ":memory:", collection)
    elif kind == "qdrant-edge":
        yield StoreSpec("qdrant", str(tmp_path / "qdrant"), collection)
    elif kind == "qdrant-client-path":
        yield StoreSpec("qdrant", str(tmp_path / "qdrant"), collection, qdrant_client_folder=True)
    elif kind == "qdrant-server":
        yield StoreSpec("qdrant", os.environ["QDRANT_URL"], collection, os.environ.get("QDRANT_API_KEY"))
        from qdrant_client import QdrantClient

        client = QdrantClient(url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY"))
        for name in (collection, f"{collection}-other"):
            client.delete_collection(name)
    elif kind == "chroma-embedded":
        yield StoreSpec("chroma", str(tmp_path / "chroma"), collection)
    else:
        yield StoreSpec("chroma", request.getfixturevalue("chroma_server").url, collection)


# -- reading documents ---------------------------------------------------------------------------


def test_files_get_relative_path_ids_and_unsupported_types_are_skipped_in_folders(tmp_path, caplog):
    (tmp_path / "notes" / "deep").mkdir(parents=True)
    (tmp_path / "notes" / "a.md").write_text("alpha")
    (tmp_path / "notes" / "deep" / "b.txt").write_text("beta")
    (tmp_path / "notes" / "deep" / "scan.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "notes" / ".hidden.md").write_text("hidden")
    (tmp_path / "notes" / ".git").mkdir()
    (tmp_path / "notes" / ".git" / "HEAD.txt").write_text("ref")
    with caplog.at_level(logging.WARNING):
        docs = list(read_documents(tmp_path / "notes"))
    assert [d.id for d in docs] == ["a.md", "deep/b.txt"]
    assert docs[1].text == "beta" and docs[1].metadata == {"path": "deep/b.txt", "file_type": "txt"}
    assert "skipped 1 files of unsupported types" in caplog.text and ".pdf" in caplog.text
    # A file's root is its folder; an explicit root makes ids relative to it.
    assert [d.id for d in read_documents([tmp_path / "notes" / "deep" / "b.txt"])] == ["b.txt"]
    assert [d.id for d in read_documents([tmp_path / "notes"], root=tmp_path)] == ["notes/a.md", "notes/deep/b.txt"]


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match=r"unsupported file type '\.pdf'.*supported are .*\.md"):
        list(read_documents(tmp_path / "scan.pdf"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        list(read_documents(tmp_path / "latin1.txt"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list(read_documents(tmp_path / "missing"))
    (tmp_path / "a.md").write_text("a")
    with pytest.raises(ValueError, match="not inside the root"):
        list(read_documents(tmp_path / "a.md", root=tmp_path / "elsewhere"))


def test_records_in_every_form_and_missing_ids(tmp_path):
    records = [
        Document("d1", "one"),
        {"id": "d2", "text": "two", "metadata": {"lang": "en"}},
        ("d3", "three"),
        ("d4", "four", {"n": 4}),
        {"id": 5, "text": "five"},
    ]
    docs = list(documents_from_records(records))
    assert [(d.id, d.text, dict(d.metadata)) for d in docs] == [
        ("d1", "one", {}), ("d2", "two", {"lang": "en"}), ("d3", "three", {}), ("d4", "four", {"n": 4}), ("5", "five", {}),
    ]
    for record in ({"text": "no id"}, {"id": "", "text": "empty id"}, (None, "none id")):
        with pytest.raises(ValueError, match="record 1 has no id"):
            list(documents_from_records([("ok", "fine"), record]))
    with pytest.raises(TypeError, match="record 0"):
        list(documents_from_records(["just a string"]))
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text('{"id": "x", "text": "ex", "metadata": {"k": 1}}\n\n{"text": "no id"}\n')
    with pytest.raises(ValueError, match="record 1 has no id"):
        list(read_records_file(jsonl))


def test_point_ids_are_uuid5_of_the_document_id():
    assert point_id("notes/a.md") == point_id("notes/a.md") == str(uuid.UUID(point_id("notes/a.md")))
    assert uuid.UUID(point_id("notes/a.md")).version == 5
    assert point_id("notes/a.md") != point_id("notes/b.md")


@pytest.mark.parametrize(
    ("records", "error", "message"),
    [
        ([("a", "fine"), ("b", "   \n")], ValueError, "document 'b' is empty"),
        ([("a", "fine"), ("a", "again")], ValueError, "document 'a' appears twice"),
        ([("a", "fine", {"doc_id": "x"})], ValueError, "reserved for the index"),
        ([("a", "fine", {"when": object()})], TypeError, "JSON-serialisable"),
        ([{"text": "no id"}], ValueError, "record 0 has no id"),
    ],
)
def test_bad_documents_stop_the_run_before_anything_is_written(encoder, records, error, message):
    index = StoreSpec("qdrant", ":memory:", "bad").open(encoder)
    with pytest.raises(error, match=message):
        index.index(records)
    assert not index.store.client.collection_exists("bad")


# -- indexing on every store -----------------------------------------------------------------------


def test_reindexing_is_idempotent_and_changed_documents_replace_their_point(store, encoder):
    docs = corpus()
    with store.open(encoder) as index:
        first = index.index(docs, batch_docs=2, show_progress=False)
        assert sorted(first.indexed) == sorted(d.id for d in docs) and first.tokens > 0
        assert index.count() == len(docs)
        second = index.index(docs, batch_docs=2)
        assert second.indexed == [] and sorted(second.skipped) == sorted(d.id for d in docs)
        assert second.tokens == 0  # nothing was encoded
        assert index.count() == len(docs)

        changed_text = "Orbital mechanics: a probe slingshots around Jupiter to reach the outer planets."
        docs[0] = Document(docs[0].id, changed_text, docs[0].metadata)
        docs[3] = Document(docs[3].id, docs[3].text, {"topic": "accounting"})
        third = index.index(docs, batch_docs=2)
        assert sorted(third.indexed) == sorted([docs[0].id, docs[3].id]) and len(third.skipped) == 4
        assert index.count() == len(docs)
        top = index.search(changed_text, limit=1)[0]
        assert (top.id, top.text, top.metadata) == (docs[0].id, changed_text, {"topic": "astronomy"})
        # The stored vector is the new text's: cosine 1 (hybrid's own score is a fused rank).
        assert index.search(changed_text, limit=1, mode="document")[0].score == pytest.approx(1.0, abs=1e-4)
        assert index.search(docs[3].text, limit=1)[0].metadata == {"topic": "accounting"}


def test_exact_duplicate_queries_rank_their_document_first_and_filters_hold(store, encoder):
    docs = corpus()
    with store.open(encoder) as index:
        index.index(docs, batch_docs=4)
        for doc in docs:
            hits = index.search(doc.text, limit=3)
            assert hits[0].id == doc.id and hits[0].text == doc.text and hits[0].score > hits[1].score
            dense = index.search(doc.text, limit=3, mode="document")
            assert dense[0].id == doc.id and dense[0].score == pytest.approx(1.0, abs=1e-4)
        hits = index.search(docs[0].text, limit=10, filter={"topic": "cooking"})
        assert [h.id for h in hits] == ["baking.md"]
        hits = index.search(docs[0].text, limit=10, filter={"topic": ["sport", "games", "astronomy"]})
        assert [h.id for h in hits][0] == "astronomy.md" and sorted(h.id for h in hits) == ["astronomy.md", "chess.txt", "sailing.txt"]
        assert index.search(docs[0].text, limit=10, filter={"topic": "no such topic"}) == []


def test_documents_persist_for_a_new_client_and_can_be_deleted(store, encoder):
    if store.location == ":memory:":
        pytest.skip(":memory: does not outlive its client")
    docs = corpus()
    with store.open(encoder) as index:
        index.index(docs)
    with store.open(encoder) as index:
        assert index.count() == len(docs)
        assert sorted(index.index(docs).skipped) == sorted(d.id for d in docs)
        index.delete(["chess.txt", "taxes.md"])
        assert index.count() == len(docs) - 2
        assert all(hit.id not in ("chess.txt", "taxes.md") for hit in index.search(docs[-1].text, limit=10))


def test_a_long_document_is_one_point_with_the_encoders_windowed_vector(store, encoder):
    long_text = " ".join(f"paragraph {i} of a long report on tidal energy and coastal engineering." for i in range(60))
    assert encoder.count_tokens(long_text)[0] > 4 * encoder.max_length
    with store.open(encoder, mode="document") as index:
        index.index([("report", long_text), ("note", "a short note")])
        assert index.count() == 2
        hit = index.search(long_text, limit=1)[0]
        assert hit.id == "report" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_an_existing_collection_of_another_dimension_or_distance_is_refused_untouched(store, encoder):
    other = f"{store.collection}-other"
    with store.open(encoder) as index:
        if isinstance(index.store, EdgeStore):
            import qdrant_edge as edge

            def shard(collection: str, size: int, distance):
                config = edge.EdgeConfig(vectors=edge.EdgeVectorParams(size=size, distance=distance))
                return edge.EdgeShard.create(str(Path(store.location) / collection), config)

            wrong_size = shard(store.collection, 32, edge.Distance.Cosine)
            wrong_size.update(edge.UpdateOperation.upsert_points([edge.Point(1, [0.1] * 32, {})]))
            wrong_size.close()
            shard(other, encoder.dim, edge.Distance.Euclid).close()
            other_index = DocumentIndex(EdgeStore(store.location, other), encoder)
        elif store.kind == "qdrant":
            from qdrant_client import models

            client = index.store.client
            client.create_collection(store.collection, vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE))
            client.upsert(store.collection, [models.PointStruct(id=1, vector=[0.1] * 32)])
            client.create_collection(other, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.EUCLID))
            other_index = DocumentIndex(QdrantStore(client, other), encoder)
        else:
            from jina_rag.index.chroma import ChromaStore

            client = index.store.client
            client.create_collection(store.collection, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
            client.get_collection(store.collection).add(ids=["x"], embeddings=[[0.1] * 32])
            client.create_collection(other, configuration={"hnsw": {"space": "l2"}}, embedding_function=None)
            other_index = DocumentIndex(ChromaStore(client, other), encoder)
        with pytest.raises(CollectionMismatchError, match=rf"32-dimensional.*{encoder.dim}-dimensional.*not changed"):
            index.index(corpus())
        assert index.count() == 1
        with pytest.raises(CollectionMismatchError, match="(?i)euclid|'l2'"):
            other_index.index(corpus())
        assert other_index.count() == 0


def test_long_text_error_policy_refuses_before_writing(encoder, checkpoint):
    from jina_rag import JinaEncoder

    strict = JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=128, long_text="error")
    index = StoreSpec("qdrant", ":memory:", "strict").open(strict)
    with pytest.raises(TextTooLongError, match="document 'long'.*long_text='windows'"):
        index.index([("short", "fine"), ("long", "word " * 400)])
    with pytest.raises(CollectionNotFoundError):  # nor is an empty collection left behind
        index.count()


def test_progress_bars_count_documents_and_tokens_and_can_be_hidden(encoder, capsys):
    docs = corpus()
    tokens = sum(encoder.count_tokens([d.text for d in docs]))
    with StoreSpec("qdrant", ":memory:", "progress").open(encoder) as index:
        index.index(docs[:2], show_progress=False)
        assert capsys.readouterr().err == ""
        index.index(docs, batch_docs=2, show_progress=True)
        bars = capsys.readouterr().err
    rest = tokens - sum(encoder.count_tokens([d.text for d in docs[:2]]))
    assert "documents: 100%" in bars and "6/6" in bars
    assert re.search(rf"tokens: 100%.* {rest}(\.0)?/{rest}(\.0)? ", bars)  # tqdm scales units: 77.0/77.0


# -- writes overlap encoding ----------------------------------------------------------------------


class SlowEdgeStore(EdgeStore):
    """A real Qdrant Edge store whose writes take a while, noting when and on which thread each ran."""

    def __init__(self, *args, **options) -> None:
        super().__init__(*args, **options)
        self.writes: list[tuple[str, float, float]] = []

    def upsert(self, points) -> None:
        began = time.perf_counter()
        time.sleep(0.3)
        super().upsert(points)
        self.writes.append((threading.current_thread().name, began, time.perf_counter()))


class TimedIndex(DocumentIndex):
    """Notes when each batch was encoded."""

    encodings: list[tuple[float, float]]

    def encode_points(self, docs, hashes, *args, **options):
        began = time.perf_counter()
        points = super().encode_points(docs, hashes, *args, **options)
        self.encodings.append((began, time.perf_counter()))
        return points


def test_each_batch_is_written_on_the_writer_thread_while_the_next_one_encodes(tmp_path, encoder):
    docs = corpus()
    with TimedIndex(SlowEdgeStore(tmp_path / "q", "docs"), encoder, mode="document") as index:
        index.encodings = []
        index.store.ensure_collection(encoder.dim, layout="document")  # else the first write creates it first
        acknowledged = []
        report = index.index(docs, batch_docs=2, show_progress=False, on_batch=lambda batch: acknowledged.append(batch.index))
        writes = index.store.writes
        assert sorted(report.indexed) == sorted(d.id for d in docs) and index.count() == len(docs)
        assert acknowledged == [0, 1, 2] and len(writes) == len(index.encodings) == 3
        assert all(name != threading.main_thread().name for name, _, _ in writes)
        for (_, write_began, write_ended), (encode_began, encode_ended) in zip(writes, index.encodings[1:]):
            assert encode_began < write_ended and write_began < encode_ended  # batch n+1 encoded while batch n was written


def test_after_a_refused_write_nothing_later_is_written_and_the_rerun_finishes(tmp_path, encoder):
    """The write of batch 1 fails while batch 2 encodes: batch 2 is not written, the report says so."""
    docs = corpus()

    class RefusingSecondWrite(EdgeStore):
        calls = 0

        def upsert(self, points) -> None:
            type(self).calls += 1
            if type(self).calls == 2:
                raise ConnectionError("store went away")
            super().upsert(points)

    store = RefusingSecondWrite(tmp_path / "q", "docs")
    with pytest.raises(IndexingError) as failure, DocumentIndex(store, encoder, mode="document") as index:
        index.index(docs, batch_docs=2, retries=0, show_progress=False)
    report = failure.value.report
    assert len(report.indexed) == 2 and len(report.failed) == 4 and RefusingSecondWrite.calls == 2
    with DocumentIndex(open_store("qdrant", str(tmp_path / "q"), "docs"), encoder, mode="document") as index:
        assert index.count() == 2
        rerun = index.index(docs, batch_docs=2, show_progress=False)
        assert sorted(rerun.skipped) == sorted(report.indexed) and sorted(rerun.indexed) == sorted(report.failed)
        assert index.count() == len(docs)


# -- the fault: the server dies right after the first acknowledged batch ---------------------------


@pytest.mark.parametrize("mode", ["document", "late-chunks"])
def test_server_killed_after_first_batch_then_rerun_completes_without_reencoding(tmp_path, encoder, mode):
    server = ChromaServer(tmp_path / "db").start()
    try:
        docs = corpus()
        spec = StoreSpec("chroma", server.url, "fault")
        acknowledged: list[tuple[str, ...]] = []

        def kill_after_first_batch(batch) -> None:
            acknowledged.append(batch.doc_ids)
            if batch.index == 0:
                server.kill()

        with pytest.raises(IndexingError) as failure:
            spec.open(encoder, mode=mode).index(
                docs, batch_docs=2, retries=1, retry_delay=0.05, on_batch=kill_after_first_batch
            )
        landed = set(acknowledged[0])
        missing = sorted(d.id for d in docs if d.id not in landed)
        assert len(acknowledged) == 1 and len(landed) == 2
        assert sorted(failure.value.failed_ids) == missing
        assert failure.value.report.indexed == list(acknowledged[0])
        for doc_id in missing:
            assert doc_id in str(failure.value)
        assert "Run the same indexing again" in str(failure.value)

        server.start()
        with spec.open(encoder, mode=mode) as index:
            rerun = index.index(docs, batch_docs=2, retries=1, retry_delay=0.05)
            assert sorted(rerun.skipped) == sorted(landed)  # not re-encoded
            assert sorted(rerun.indexed) == missing
            assert rerun.tokens == sum(encoder.count_tokens([d.text for d in docs if d.id in missing]))
            assert index.count() == len(docs)
            stored = index.store.client.get_collection("fault").get(include=["metadatas"])
            heads = [(i, m) for i, m in zip(stored["ids"], stored["metadatas"]) if m.get("passage_index", -1) == -1]
            assert sorted(i for i, _ in heads) == sorted(point_id(d.id) for d in docs)
            assert sorted(m["doc_id"] for _, m in heads) == sorted(d.id for d in docs)
            # Each one-sentence document is one passage record beside its document record.
            assert len(stored["ids"]) == len(docs) * (1 if mode == "document" else 2)
    finally:
        server.stop()


def test_a_batch_retried_while_the_server_restarts_lands(tmp_path, encoder, caplog):
    import threading

    server = ChromaServer(tmp_path / "db").start()
    restarted = threading.Thread(target=server.start)
    try:
        def kill_and_restart(batch) -> None:
            if batch.index == 0:
                server.kill()
                restarted.start()  # comes back while the next batch is being retried

        with StoreSpec("chroma", server.url, "retry").open(encoder) as index, caplog.at_level(logging.WARNING):
            report = index.index(corpus(), batch_docs=2, retries=8, retry_delay=0.1, on_batch=kill_and_restart)
            assert sorted(report.indexed) == sorted(d.id for d in corpus()) and report.failed == []
            assert index.count() == len(TOPICS)
        assert "retry 1 of 8" in caplog.text
    finally:
        if restarted.is_alive():
            restarted.join()
        server.stop()


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
def test_cli_index_then_search(tmp_path, checkpoint, capsys, kind):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, (topic, text) in TOPICS.items():
        (folder / name).write_text(text)
    store = ["--store", kind, "--location", str(tmp_path / kind), "--collection", "cli"]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    assert cli_main(["index", str(folder), *store, *model, "--batch-docs", "4"]) == 0
    assert "6 indexed, 0 unchanged" in capsys.readouterr().out
    assert cli_main(["index", str(folder), *store, *model]) == 0
    assert "0 indexed, 6 unchanged" in capsys.readouterr().out

    query = TOPICS["sailing.txt"][1]
    assert cli_main(["search", query, *store, *model, "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "1" and lines[0].split()[2] == "sailing.txt"
    assert cli_main(["search", query, *store, *model, "--json", "--filter", "file_type=md", "--filter", "file_type=rst"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 4 and all(h["metadata"]["file_type"] in ("md", "rst") for h in hits)


def test_cli_reports_bad_input_clearly(tmp_path, checkpoint, capsys):
    (tmp_path / "scan.pdf").write_bytes(b"%PDF")
    store = ["--store", "qdrant", "--location", str(tmp_path / "q"), "--collection", "cli"]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128"]
    assert cli_main(["index", str(tmp_path / "scan.pdf"), *store, *model]) == 2
    assert "unsupported file type '.pdf'" in capsys.readouterr().err
    assert cli_main(["index", *store, *model]) == 2
    assert "nothing to index" in capsys.readouterr().err
    assert cli_main(["search", "anything", *store, *model]) == 2
    assert re.search(r"does not exist \(.*\): index documents into it first", capsys.readouterr().err)
    nobody = f"http://127.0.0.1:{free_port()}"
    for kind, message in (("qdrant", "cannot reach the Qdrant server"), ("chroma", "Could not connect to a Chroma server")):
        assert cli_main(["search", "anything", "--store", kind, "--location", nobody, "--collection", "c", *model]) == 2
        assert message in capsys.readouterr().err


# -- late chunks: passage vectors beside the whole-document vector ----------------------------------

def articles() -> list[Document]:
    return [Document(name, " ".join(sentences), {"topic": topic}) for name, (topic, sentences) in ARTICLES.items()]


def test_late_chunk_search_returns_the_document_whose_passage_matches_with_its_span(store, encoder):
    from jina_rag import encode_late_chunks

    docs = articles()
    chunks = encode_late_chunks(encoder, [d.text for d in docs], splitter=sentence_spans)
    with store.open(encoder, mode="late-chunks", splitter=sentence_spans) as index:
        report = index.index(docs, batch_docs=3)
        assert len(report.indexed) == len(docs) and index.count() == len(docs)
        for doc, doc_chunks in zip(docs, chunks):
            for number, passage in enumerate(ARTICLES[doc.id][1]):
                query = encoder.encode(passage)
                hits = {mode: index.search(passage, limit=2, mode=mode) for mode in ("late-chunks", "document", "both")}
                top = hits["late-chunks"][0]
                assert (top.id, top.text, top.metadata) == (doc.id, doc.text, {"topic": ARTICLES[doc.id][0]})
                assert top.passage.index == number and top.passage.text == passage
                assert (top.passage.start, top.passage.end) == doc_chunks.spans[number]
                assert top.text[top.passage.start : top.passage.end] == passage
                # MAX_SIM over passages is the best passage's cosine: the re-scored passage's.
                best = float(doc_chunks.vectors[number] @ query)
                assert top.score == pytest.approx(best, abs=1e-4) and top.passage.score == pytest.approx(best, abs=1e-4)
                # Encoded in its document, the passage is not its own query's vector.
                assert best < 0.9999
                whole = hits["document"][0]
                assert whole.score == pytest.approx(float(doc_chunks.document_vector @ query), abs=1e-4)
                assert whole.passage.index == number  # whole-document ranking still names the passage
                both = hits["both"][0]
                assert both.score == pytest.approx(max(best, whole.score if whole.id == doc.id else -1), abs=1e-4)
        hits = index.search(ARTICLES["sailing.txt"][1][1], limit=4, filter={"topic": ["cooking", "finance"]})
        assert sorted(h.id for h in hits) == ["baking.md", "taxes.md"]


def test_late_chunk_reindexing_skips_unchanged_and_replaces_all_passages_of_changed(store, encoder):
    docs = articles()
    with store.open(encoder, mode="late-chunks", chunk_tokens=12) as index:
        index.index(docs, batch_docs=2)
        again = index.index(docs)
        assert sorted(again.skipped) == sorted(d.id for d in docs) and again.tokens == 0
        # Shorter text, so fewer passages: none of the old ones may survive.
        docs[1] = Document("baking.md", "Bake bread.", {"topic": "cooking"})
        changed = index.index(docs)
        assert changed.indexed == ["baking.md"] and index.count() == len(docs)
        hit = index.search("Bake bread.", limit=1)[0]
        assert hit.id == "baking.md" and hit.passage.text == "Bake bread." and hit.passage.index == 0
        if store.kind == "chroma":
            records = index.store.client.get_collection(store.collection).get(where={"doc_id": "baking.md"})
            assert len(records["ids"]) == 2  # the document record and its one passage
        elif isinstance(index.store, EdgeStore):
            point = index.store.shard.retrieve([point_id("baking.md")], with_payload=True, with_vector=True)[0]
            assert point.payload["passages"] == [[0, 11]] and len(point.vector["passages"]) == 1
        else:
            point = index.store.client.retrieve(store.collection, [point_id("baking.md")], with_vectors=True)[0]
            assert point.payload["passages"] == [[0, 11]] and len(point.vector["passages"]) == 1
    # Another chunk size makes other passages: everything is re-indexed.
    with store.open(encoder, mode="both", chunk_tokens=30) as index:
        assert sorted(index.index(docs).indexed) == sorted(d.id for d in docs)
        assert index.count() == len(docs)


def test_modes_and_collections_must_agree(store, encoder):
    docs = articles()
    with store.open(encoder, mode="document") as index:
        index.index(docs)
        with pytest.raises(ValueError, match="layout 'document': search mode 'late-chunks' needs passage vectors \\(index with mode 'late-chunks'"):
            index.search("galaxies", mode="late-chunks")
        late = DocumentIndex(index.store, encoder, mode="late-chunks")
        with pytest.raises(CollectionMismatchError, match="holds the 'document' layout \\(indexed with mode 'document'\\).*not changed"):
            late.index(docs)
        assert index.count() == len(docs) and index.search(docs[0].text, limit=1)[0].passage is None
    other = replace(store, collection=f"{store.collection}-other")
    with other.open(encoder, mode="both") as index:
        index.index(docs)
        with pytest.raises(CollectionMismatchError, match=r"holds the 'passages' layout \(indexed with mode 'late-chunks' or 'both'\)"):
            DocumentIndex(index.store, encoder, mode="document").index(docs)
        # Without a mode, an index follows its collection: passages are searched and kept up to date.
        following = DocumentIndex(index.store, encoder)
        assert following.resolved_mode() == "late-chunks"
        assert following.index(docs).skipped == [d.id for d in docs]
        assert following.search(ARTICLES["taxes.md"][1][0], limit=1)[0].passage.index == 0
        with pytest.raises(ValueError, match="unknown mode 'passages'"):
            following.search("x", mode="passages")


def test_late_chunks_of_a_document_longer_than_max_length_are_all_searchable(store, encoder):
    sentences = [f"Clause {i} sets the tide gauge number {i} at the harbour wall." for i in range(40)]
    long_text = " ".join(sentences)
    assert encoder.count_tokens(long_text)[0] > 4 * encoder.max_length
    with store.open(encoder, mode="late-chunks", splitter=sentence_spans) as index:
        index.index([("report", long_text), ("note", "A short note about bread.")])
        assert index.count() == 2
        for number in (0, 17, 39):
            hit = index.search(sentences[number], limit=1)[0]
            assert hit.id == "report" and hit.passage.index == number and hit.passage.text == sentences[number]


def test_chroma_groups_passage_records_back_into_documents(tmp_path, encoder):
    sentence = "The lighthouse keeper logs every passing ship."
    crowded = " ".join([sentence] * 12)  # twelve passages nearer the query than any other document's
    docs = [("lighthouse", crowded), *[(d.id, d.text) for d in articles()]]
    with StoreSpec("chroma", str(tmp_path / "chroma"), "grouped").open(encoder, mode="late-chunks", splitter=sentence_spans) as index:
        index.index(docs)
        records = index.store.client.get_collection("grouped").count()
        assert records == len(docs) + 12 + 3 * (len(docs) - 1)
        hits = index.search(sentence, limit=3)
        assert [h.id for h in hits][0] == "lighthouse" and len({h.id for h in hits}) == 3
        assert hits[0].passage.text == sentence and hits[0].score >= hits[1].score >= hits[2].score


def test_cli_late_chunks_index_then_search_shows_the_passage(tmp_path, checkpoint, capsys):
    records = tmp_path / "articles.jsonl"
    records.write_text("".join(json.dumps({"id": d.id, "text": d.text, "metadata": d.metadata}) + "\n" for d in articles()))
    store = ["--store", "qdrant", "--location", str(tmp_path / "qdrant"), "--collection", "late"]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    assert cli_main(["index", "--records", str(records), *store, *model, "--mode", "late-chunks", "--chunk-tokens", "16"]) == 0
    assert "4 indexed" in capsys.readouterr().out
    passage = ARTICLES["sailing.txt"][1][1]
    assert cli_main(["search", passage, *store, *model, "--limit", "1", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert hit["id"] == "sailing.txt" and hit["passage"]["text"] == passage
    assert hit["text"][hit["passage"]["start"] : hit["passage"]["end"]] == passage
    assert cli_main(["search", passage, *store, *model, "--limit", "1", "--mode", "document"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[2] == "sailing.txt" and lines[2].startswith("     passage 1 [")


# -- sync: documents no longer in the input are removed, on request only (#30 item 5) ---------------


@pytest.mark.parametrize("mode", ["document", "late-chunks", "hybrid"])
def test_sync_removes_every_point_of_documents_missing_from_the_run(store, encoder, mode):
    if mode == "hybrid" and store.kind == "chroma":
        pytest.skip("Chroma cannot hold the hybrid layout")
    docs = articles()
    kept, gone = docs[:2], docs[2:]
    with store.open(encoder, mode=mode, splitter=sentence_spans) as index:
        first = index.index(docs, batch_docs=2)
        assert first.removed is None and "removed" not in first.summary()
        assert index.store.document_ids() == sorted(d.id for d in docs)
        plain = index.index(kept)  # without sync, nothing is removed
        assert plain.removed is None and index.count() == len(docs)

        report = index.index(kept, sync=True)
        assert report.indexed == [] and sorted(report.skipped) == sorted(d.id for d in kept)
        assert report.removed == sorted(d.id for d in gone) and f"0 failed, {len(gone)} removed;" in report.summary()
        assert index.count() == len(kept) and index.store.document_ids() == sorted(d.id for d in kept)
        for doc in gone:
            assert doc.id not in {hit.id for hit in index.search(doc.text, limit=10)}
        if store.kind == "chroma":
            # A passage collection holds a record per passage beside each document's: all of a removed one's go.
            records = index.store.client.get_collection(store.collection).get(include=["metadatas"])["metadatas"]
            assert sorted({m["doc_id"] for m in records}) == sorted(d.id for d in kept)
            passages = sum(len(sentence_spans(d.text)) for d in kept) if mode != "document" else 0
            assert len(records) == len(kept) + passages
        assert index.index(kept, sync=True).removed == []

        # A sync that would remove wrongly is refused before anything is written or removed.
        with pytest.raises(InvalidInputError, match="sync with no documents would remove every document"):
            index.index([], sync=True)
        with pytest.raises(InvalidInputError, match=r"none of this run's 1 documents is among the 2 .*nothing was written or removed"):
            index.index([("elsewhere/astronomy.md", docs[0].text)], sync=True)
        assert index.store.document_ids() == sorted(d.id for d in kept)


@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
def test_cli_sync_removes_deleted_files_and_never_files_it_skipped(tmp_path, checkpoint, encoder, capsys, kind):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, (topic, text) in TOPICS.items():
        (folder / name).write_text(text)
    (folder / "scan.pdf").write_text("A scanned page about tides in the harbour.")
    store = ["--store", kind, "--location", str(tmp_path / kind), "--collection", "cli"]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    suffixes = ["--suffix", ".md", "--suffix", ".txt", "--suffix", ".rst", "--suffix", ".pdf"]

    def stored() -> list[str]:
        with DocumentIndex.open(kind, str(tmp_path / kind), "cli", encoder=encoder) as index:
            return index.store.document_ids()

    assert cli_main(["index", str(folder), *store, *model, *suffixes]) == 0
    assert "7 indexed" in capsys.readouterr().out
    (folder / "chess.txt").unlink()
    assert cli_main(["index", str(folder), *store, *model, *suffixes]) == 0
    out = capsys.readouterr().out
    assert "0 indexed, 6 unchanged" in out and "removed" not in out
    assert "chess.txt" in stored()  # without --sync a deleted file stays indexed

    # scan.pdf still exists, but without --suffix .pdf it is skipped: sync must not take it for deleted.
    assert cli_main(["index", str(folder), *store, *model, "--sync"]) == 2
    error = capsys.readouterr().err
    assert "sync refused: 1 documents" in error and "(scan.pdf: files of types not read" in error
    assert "nothing was written or removed" in error
    # Another root gives other ids: sync would remove everything.
    assert cli_main(["index", str(folder), "--root", str(tmp_path), *store, *model, *suffixes, "--sync"]) == 2
    assert "none of this run's 6 documents is among the 7" in capsys.readouterr().err
    assert len(stored()) == 7 and "docs/taxes.md" not in stored()

    assert cli_main(["index", str(folder), *store, *model, *suffixes, "--sync"]) == 0
    assert "0 indexed, 6 unchanged (skipped), 0 failed, 1 removed;" in capsys.readouterr().out
    assert stored() == sorted(name for name in [*TOPICS, "scan.pdf"] if name != "chess.txt")
    assert cli_main(["search", TOPICS["chess.txt"][1], *store, *model, "--json", "--limit", "10"]) == 0
    assert "chess.txt" not in {json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()}
