"""Scale-out indexing on Ray Data: a local Ray started here, a real ``chroma run`` server on 127.0.0.1.

Ray starts once for the module, with 3 logical CPUs (2 CPU workers and one for reading and
tokenising) and 2 declared GPUs, which no job uses: they let the worker planning be checked,
while the jobs ask for CPU workers. Every Ray job pays for starting its workers (importing torch,
loading the tiny model), so the module runs few: whole documents (through a worker crash), hybrid
into a Qdrant Edge folder and late chunks into a Chroma server, each compared point by point with
the local engine's. Readers and the tokenise stage are also tested directly, without Ray. The
model has random weights: vectors are compared, never judged.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ray = pytest.importorskip("ray")

from jina_rag.cli import main as cli_main  # noqa: E402
from jina_rag.index import Document, DocumentIndex, open_store, point_id  # noqa: E402
from jina_rag.encoder import tokenize  # noqa: E402
from jina_rag.settings import EncoderSettings  # noqa: E402
from jina_rag.index.ray_data import (  # noqa: E402
    WorkerPlan,
    index_with_ray,
    list_sources,
    plan_workers,
    read_sources,
    tokenize_documents,
)

TESTS = Path(__file__).resolve().parent
WORDS = "tidal energy coastal engineering harbour sediment turbine survey report long".split()


def text_of(n_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


def write_text_files(folder: Path, count: int) -> list[Document]:
    """Text files in a folder and a subfolder; one is long enough for several 128-token windows."""
    documents = []
    for i in range(count):
        relative = f"{'notes/' if i % 2 else ''}doc-{i:02d}.{'md' if i % 3 else 'txt'}"
        text = text_of(300 if i == 3 else 5 + 7 * i, seed=i)
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
        documents.append(Document(relative, text, {"path": relative, "file_type": relative.rsplit(".", 1)[1]}))
    return documents


@pytest.fixture(scope="module")
def ray_cluster():
    # Workers are new processes: they import this module (for the kill hook) and the checkout's jina_rag.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]))
        ray.init(num_cpus=3, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


def chroma_collection(server_url: str, name: str):
    import chromadb
    from urllib.parse import urlsplit

    url = urlsplit(server_url)
    return chromadb.HttpClient(host=url.hostname, port=url.port).get_collection(name, embedding_function=None)


def stored(collection) -> dict[str, tuple[str, dict, np.ndarray]]:
    found = collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        point: (text, metadata, np.asarray(vector))
        for point, text, metadata, vector in zip(found["ids"], found["documents"], found["metadatas"], found["embeddings"])
    }


class ExitOnce:
    """An ``on_batch`` hook: the first worker to finish a batch records it and dies (once per marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, batch) -> None:
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(descriptor, json.dumps(list(batch.doc_ids)).encode())
        os.close(descriptor)
        os._exit(1)  # the process dies after the store acknowledged the batch, before Ray hears of it


# -- readers and tokenising, without Ray ------------------------------------------------------------


def test_readers_report_unreadable_inputs_and_bad_records_and_keep_the_rest(tmp_path, checkpoint):
    (tmp_path / "ok.md").write_text("fine text")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("   ")
    (tmp_path / "r.jsonl").write_text(
        '{"id": "j1", "text": "one", "metadata": {"k": 1}}\n\nnot json\n{"text": "no id"}\n{"id": "j2", "text": "two"}\n'
    )
    pq.write_table(pa.table({
        "id": ["p1", "p2"], "text": ["first", "second"], "metadata": [{"lang": "en", "n": 1}, {"lang": "de", "n": 2}],
    }), tmp_path / "struct.parquet")
    pq.write_table(pa.table({"id": ["s1", "s2"], "text": ["x", "y"], "metadata": ['{"a": [1, 2]}', "{oops"]}), tmp_path / "strings.parquet")
    pq.write_table(pa.table({"name": ["n"], "text": ["t"]}), tmp_path / "no-id.parquet")
    sources = list_sources([tmp_path], [tmp_path], suffixes={".md", ".txt"})
    assert [(Path(s["path"]).name, s["kind"]) for s in sources] == [
        ("empty.txt", "text"), ("latin1.txt", "text"), ("ok.md", "text"),
        ("no-id.parquet", "parquet"), ("r.jsonl", "jsonl"), ("strings.parquet", "parquet"), ("struct.parquet", "parquet"),
    ]
    rows = [row for block in read_sources(pa.Table.from_pylist(sources)) for row in block.to_pylist()]
    documents = {row["id"]: (row["text"], json.loads(row["metadata"])) for row in rows if not row["error"]}
    assert documents == {
        "ok.md": ("fine text", {"path": "ok.md", "file_type": "md"}),
        "j1": ("one", {"k": 1}), "j2": ("two", {}),
        "p1": ("first", {"lang": "en", "n": 1}), "p2": ("second", {"lang": "de", "n": 2}),
        "s1": ("x", {"a": [1, 2]}),
    }
    assert next(row for row in rows if row["id"] == "j1")["content_hash"] == Document("j1", "one", {"k": 1}).content_hash()
    failures = {Path(row["id"]).name: row["error"] for row in rows if row["error"]}
    assert set(failures) == {"latin1.txt", "empty.txt", "r.jsonl:3", "r.jsonl:4", "strings.parquet:row 1", "no-id.parquet"}
    assert "not UTF-8 text" in failures["latin1.txt"] and "is empty or whitespace only" in failures["empty.txt"]
    assert "record 1 is not valid JSON" in failures["r.jsonl:3"] and "record 2 has no id" in failures["r.jsonl:4"]
    assert "record 1: metadata is not valid JSON" in failures["strings.parquet:row 1"]
    assert "need columns 'id' and 'text'" in failures["no-id.parquet"]

    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        list_sources([], [tmp_path / "missing.jsonl"])
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ValueError, match="no record files"):
        list_sources([], [tmp_path / "empty-folder"])

    ok = pa.Table.from_pylist([row for row in rows if row["id"] in ("ok.md", "j1")])
    tokenised = tokenize_documents(ok, model=str(checkpoint), max_length=4, long_text="error").to_pylist()
    assert [row["tokens"] for row in tokenised] == [4, 3]  # [CLS] fine text [SEP]; [CLS] one [SEP]
    assert tokenised[0]["error"] == "" and tokenised[1]["token_ids"]
    tokenised = tokenize_documents(ok, model=str(checkpoint), max_length=3, long_text="error").to_pylist()
    assert "document 'ok.md' has 4 tokens, over max_length=3" in tokenised[0]["error"] and not tokenised[0]["token_ids"]


def test_the_batch_step_encodes_token_ids_skips_stored_documents_and_reports_a_failed_write(tmp_path, encoder, monkeypatch):
    """DocumentIndex.index_batch, which both engines run: ids made elsewhere, look-up, failures returned, not raised."""
    docs = [Document(f"d{i}", text_of(5 + 40 * i, seed=i), {"n": i}) for i in range(3)]
    ids = tokenize(encoder.tokenizer, [d.text for d in docs])
    with DocumentIndex(open_store("qdrant", str(tmp_path / "q"), "docs"), encoder, mode="document") as index:
        index.store.ensure_collection(encoder.dim, layout="document")
        first = index.index_batch(docs[:2], token_ids=ids[:2])
        assert (first.indexed, first.skipped, first.failed, first.error) == (["d0", "d1"], [], [], None)
        second = index.index_batch(docs, token_ids=ids)
        assert (second.indexed, second.skipped) == (["d2"], ["d0", "d1"]) and second.encoding > 0
        points = index.store.shard.retrieve([point_id(d.id) for d in docs], with_payload=True, with_vector=True)
        vectors = {point.payload["doc_id"]: point.vector for point in points}  # a document layout: one unnamed vector
        np.testing.assert_allclose([vectors[d.id] for d in docs], encoder.encode([d.text for d in docs]), atol=1e-5)
        assert {point.payload["content_hash"] for point in points} == set(index.content_hashes(docs).values())

        def refuse(points):
            raise ConnectionError("store went away")

        monkeypatch.setattr(index.store, "upsert", refuse)
        third = index.index_batch([Document("d0", "changed text")], retries=1, retry_delay=0)
        assert (third.failed, third.failed_in, type(third.error)) == (["d0"], "writing", ConnectionError)


def test_local_stores_are_refused_for_several_workers(tmp_path, capsys):
    (tmp_path / "a.md").write_text("text")
    for store, location in (("chroma", str(tmp_path / "chroma")), ("qdrant", str(tmp_path / "qdrant")), ("qdrant", ":memory:")):
        with pytest.raises(ValueError, match=r"local store.*2 workers.*chroma run.*without --engine ray"):
            index_with_ray([tmp_path], store=store, location=location, collection="docs", workers=2)
        with pytest.raises(ValueError, match=r"local store.*its workers \(one per GPU or CPU slot unless --workers 1\)"):
            index_with_ray([tmp_path], store=store, location=location, collection="docs")
        assert not Path(location).exists()  # refused before anything was created
    with pytest.raises(ValueError, match=r"':memory:' is a local store, in this process's memory.*without --engine ray\.$"):
        index_with_ray([tmp_path], store="qdrant", location=":memory:", collection="docs", workers=1)
    assert cli_main(["index", str(tmp_path), "--store", "chroma", "--location", str(tmp_path / "c"),
                     "--collection", "docs", "--engine", "ray", "--workers", "2"]) == 2
    assert "is a local store" in capsys.readouterr().err
    assert cli_main(["index", str(tmp_path), "--store", "chroma", "--location", str(tmp_path / "c"),
                     "--collection", "docs", "--workers", "2"]) == 2
    assert "apply to --engine ray" in capsys.readouterr().err
    pq.write_table(pa.table({"id": ["a"], "text": ["t"]}), tmp_path / "rows.parquet")
    assert cli_main(["index", "--records", str(tmp_path / "rows.parquet"), "--store", "chroma", "--location",
                     str(tmp_path / "c"), "--collection", "docs"]) == 2
    assert "Parquet files and folders of records need --engine ray" in capsys.readouterr().err


# -- jobs on a local Ray ------------------------------------------------------------------------------


def test_workers_take_a_gpu_each_when_the_cluster_has_gpus_unless_told_cpu(ray_cluster, tmp_path, checkpoint):
    assert plan_workers(None, None, 1.0) == WorkerPlan(2, "cuda", num_cpus=1, num_gpus=1, threads=1)
    assert plan_workers("cuda:1", 1, 1.0) == WorkerPlan(1, "cuda", num_cpus=1, num_gpus=1, threads=1)
    assert plan_workers("cpu", None, 1.0) == WorkerPlan(2, "cpu", num_cpus=1.0, num_gpus=0, threads=1)
    assert plan_workers("cpu", 1, 2.0) == WorkerPlan(1, "cpu", num_cpus=2.0, num_gpus=0, threads=2)
    with pytest.raises(ValueError, match="3 GPU workers need 3 GPUs; the Ray cluster has 2"):
        plan_workers(None, 3, 1.0)
    with pytest.raises(ValueError, match=r"2 CPU workers of 2 CPUs each, plus 1 CPU .* need 5 CPUs; the Ray cluster has 3"):
        plan_workers("cpu", 2, 2.0)
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        plan_workers("mps", None, 1.0)
    (tmp_path / "a.md").write_text("text")
    with pytest.raises(ValueError, match="attention='flash' runs on CUDA GPUs, and the Ray workers are CPU workers"):
        index_with_ray([tmp_path], store="qdrant", location=str(tmp_path / "q"), collection="docs", workers=1,
                       settings=EncoderSettings(checkpoint, device="cpu", attention="flash"))


def test_one_worker_writes_a_local_folder_store_in_hybrid_mode_like_the_single_process_path(
    tmp_path, ray_cluster, checkpoint, encoder, capsys
):
    """A folder store takes one writer: one worker on this one-machine Ray may write it, in any mode."""
    documents = write_text_files(tmp_path / "docs", 5)
    location = str(tmp_path / "ray-qdrant")
    report = index_with_ray(
        [tmp_path / "docs"], store="qdrant", location=location, collection="docs", mode="hybrid", chunk_tokens=32,
        settings=EncoderSettings(checkpoint, device="cpu", max_length=128), workers=1, batch_docs=2, show_progress=False,
    )
    assert sorted(report.indexed) == sorted(d.id for d in documents) and not report.failed and report.workers == 1
    assert report.mode == "hybrid" and "mode hybrid" in report.summary()
    # Started (store, model, warm-up) before its first batch; the rate after the first results is its own figure.
    assert 0 < report.worker_start_seconds <= report.seconds_to_workers_ready < report.seconds
    assert report.steady_tokens_per_second > report.tokens / report.seconds and "workers ready after" in report.summary()
    assert report.encoder_settings == EncoderSettings(str(checkpoint), device="cpu", max_length=128)  # the worker's encoder
    with DocumentIndex(open_store("qdrant", str(tmp_path / "single-qdrant"), "docs"), encoder, mode="hybrid", chunk_tokens=32) as single:
        single.index(documents, batch_docs=2, show_progress=False)
        reference = single.store.shard.retrieve([point_id(d.id) for d in documents], with_payload=True, with_vector=True)
    # The job returned once its worker let go of the folder (a Qdrant Edge collection): this process may open it now.
    distributed = open_store("qdrant", location, "docs")
    try:
        written = {point.id: point for point in distributed.shard.retrieve([p.id for p in reference], with_payload=True, with_vector=True)}
        assert distributed.count() == len(documents) and distributed.layout() == "hybrid"
    finally:
        distributed.close()
    assert sorted(written) == sorted(point.id for point in reference)
    assert max(len(point.payload["passages"]) for point in reference) > 1  # 32-token passages: several in the long one
    for point in reference:
        ours = written[point.id]
        assert ours.payload == point.payload  # text, metadata, content hash, passage spans
        np.testing.assert_allclose(ours.vector["document"], point.vector["document"], atol=1e-5)
        np.testing.assert_allclose(np.asarray(ours.vector["passages"]), np.asarray(point.vector["passages"]), atol=1e-5)
        assert list(ours.vector["bm25"].indices) == list(point.vector["bm25"].indices)
        assert list(ours.vector["bm25"].values) == list(point.vector["bm25"].values)

    # The job again from the command line, the mode left to the collection: nothing is encoded.
    store = ["--store", "qdrant", "--location", location, "--collection", "docs"]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    ray_job = [str(tmp_path / "docs"), *store, *model, "--engine", "ray", "--workers", "1"]
    assert cli_main(["index", *ray_job, "--chunk-tokens", "32"]) == 0
    out = capsys.readouterr().out
    assert f"0 indexed, {len(documents)} unchanged (skipped), 0 failed" in out and "mode hybrid" in out
    # Another layout into this collection is refused, as the local engine refuses it.
    assert cli_main(["index", *ray_job, "--mode", "late-chunks"]) == 2
    assert "holds the 'hybrid' layout" in capsys.readouterr().err


def test_late_chunks_into_a_chroma_server_like_the_single_process_path(tmp_path, ray_cluster, chroma_server, checkpoint, encoder, capsys):
    documents = write_text_files(tmp_path / "docs", 6)
    collection = f"ray-lc-{uuid.uuid4().hex[:8]}"
    store = ["--store", "chroma", "--location", chroma_server.url, "--collection", collection]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    job = [str(tmp_path / "docs"), *store, *model, "--engine", "ray", "--workers", "2", "--batch-docs", "2"]
    assert cli_main(["index", *job, "--mode", "late-chunks", "--chunk-tokens", "32"]) == 0
    out = capsys.readouterr().out
    assert f"{len(documents)} indexed, 0 unchanged (skipped), 0 failed" in out and "mode late-chunks" in out

    # The same points as the local engine's (passage records included), in another collection of the server.
    with DocumentIndex(open_store("chroma", chroma_server.url, f"{collection}-single"), encoder, mode="late-chunks", chunk_tokens=32) as single:
        single.index(documents, batch_docs=3, show_progress=False)
    distributed = stored(chroma_collection(chroma_server.url, collection))
    reference = stored(chroma_collection(chroma_server.url, f"{collection}-single"))
    assert sorted(distributed) == sorted(reference) and len(reference) > 2 * len(documents)  # passages too
    for record, (text, metadata, vector) in reference.items():
        assert distributed[record][:2] == (text, metadata)  # passage spans and content hashes included
        np.testing.assert_allclose(distributed[record][2], vector, atol=1e-5)
    # The local engine finds every document stored and unchanged (the mode follows the collection).
    with DocumentIndex(open_store("chroma", chroma_server.url, collection), encoder, chunk_tokens=32) as local:
        again = local.index(documents, show_progress=False)
    assert again.indexed == [] and sorted(again.skipped) == sorted(d.id for d in documents)


def test_two_workers_index_files_jsonl_and_parquet_through_a_worker_crash_like_the_single_process_path(
    tmp_path, ray_cluster, chroma_server, checkpoint, encoder, capsys
):
    """One job covers it all (each job costs worker start-ups): mixed inputs, bad inputs, a crash."""
    documents = write_text_files(tmp_path / "docs", 8)
    (tmp_path / "docs" / "notes" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    records = [Document(f"rec-{i}", text_of(9 + i, seed=50 + i), {"source": "jsonl", "n": i}) for i in range(4)]
    lines = [json.dumps({"id": d.id, "text": d.text, "metadata": d.metadata}) for d in records]
    (tmp_path / "records.jsonl").write_text("\n".join(lines[:2] + ["{not json", '{"text": "no id"}'] + lines[2:]) + "\n")
    table = [Document(f"row-{i}", text_of(12 + i, seed=80 + i), {"source": "parquet", "n": i}) for i in range(4)]
    pq.write_table(pa.table({
        "id": [d.id for d in table], "text": [d.text for d in table], "metadata": [json.dumps(d.metadata) for d in table],
    }), tmp_path / "rows.parquet")
    expected = documents + records + table
    marker = tmp_path / "killed-batch.json"

    collection = f"ray-{uuid.uuid4().hex[:8]}"
    report = index_with_ray(
        [tmp_path / "docs"], records=[tmp_path / "records.jsonl", tmp_path / "rows.parquet"],
        store="chroma", location=chroma_server.url, collection=collection,
        settings=EncoderSettings(checkpoint, device="cpu", max_length=128), workers=2, batch_docs=3, on_batch=ExitOnce(marker),
        show_progress=False,
    )
    # The hook ran, so a worker died right after its first write. Ray restarted it and retried the
    # batch, which found the points the dead attempt had written: reported unchanged, not rewritten.
    killed = json.loads(marker.read_text())
    assert 1 <= len(killed) <= 3 and sorted(report.skipped) == sorted(killed)
    assert sorted(report.indexed + report.skipped) == sorted(d.id for d in expected)
    assert report.duplicates == [] and report.workers == 2 and report.device == "cpu"
    encoded = [d.text for d in expected if d.id not in killed]
    assert report.tokens == sum(encoder.count_tokens(encoded))
    bad_file = str(tmp_path / "docs" / "notes" / "latin1.txt")
    assert report.failures == {
        bad_file: report.failures[bad_file],
        f"{tmp_path / 'records.jsonl'}:3": "record 2 is not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{tmp_path / 'records.jsonl'}:4": "record 3 has no id: every document needs a unique, non-empty 'id'",
    }
    assert "unreadable, skipped" in report.failures[bad_file] and "not UTF-8 text" in report.failures[bad_file]
    summary = report.summary()
    assert f"{len(expected) - len(killed)} indexed, {len(killed)} unchanged (skipped), 3 failed" in summary
    assert "tokens/s" in summary and "encoding" in summary and "latin1.txt" in summary

    # Exactly one point per document, with the single-process path's ids, texts, metadata, hashes
    # and vectors (that path indexes the same documents into another collection of the server).
    with DocumentIndex(open_store("chroma", chroma_server.url, f"{collection}-single"), encoder) as single:
        single.index(expected, batch_docs=5)
    distributed = stored(chroma_collection(chroma_server.url, collection))
    reference = stored(chroma_collection(chroma_server.url, f"{collection}-single"))
    assert sorted(distributed) == sorted(reference) == sorted(point_id(d.id) for d in expected)
    for point, (text, metadata, vector) in reference.items():
        assert distributed[point][:2] == (text, metadata)  # metadata holds doc_id and content_hash
        np.testing.assert_allclose(distributed[point][2], vector, atol=1e-5)

    # The whole job again, from the command line: nothing is encoded, the count stays.
    store = ["--store", "chroma", "--location", chroma_server.url, "--collection", collection]
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    sources = [str(tmp_path / "docs"), "--records", str(tmp_path / "records.jsonl"), "--records", str(tmp_path / "rows.parquet")]
    assert cli_main(["index", *sources, *store, *model, "--engine", "ray", "--workers", "2"]) == 1  # 1: failures
    out = capsys.readouterr().out
    assert f"0 indexed, {len(expected)} unchanged (skipped), 3 failed" in out and "2 CPU workers" in out
    assert "failed: " in out and "latin1.txt: unreadable, skipped" in out
    assert chroma_collection(chroma_server.url, collection).count() == len(expected)


def test_bad_settings_are_refused_before_ray_starts(tmp_path, checkpoint, capsys):
    (tmp_path / "a.md").write_text("text")
    store = ["--store", "qdrant", "--location", str(tmp_path / "q"), "--collection", "docs", "--engine", "ray", "--workers", "1"]
    assert cli_main(["index", str(tmp_path), *store, "--model", str(checkpoint), "--alibi-cutoff", "-1"]) == 2
    assert "alibi_cutoff must be positive" in capsys.readouterr().err
    assert cli_main(["index", str(tmp_path), *store, "--model", str(checkpoint), "--dtype", "float8"]) == 2
    assert "unknown dtype 'float8'" in capsys.readouterr().err
    # Index settings are the local engine's, refused as it refuses them; what Ray cannot do is refused, never ignored.
    assert cli_main(["index", str(tmp_path), *store, "--model", str(checkpoint), "--chunk-tokens", "0"]) == 2
    assert "chunk_tokens must be positive" in capsys.readouterr().err
    assert cli_main(["index", str(tmp_path), *store, "--model", str(checkpoint), "--sync"]) == 2
    assert "--sync needs the local engine" in capsys.readouterr().err
    chroma = ["--store", "chroma", "--location", str(tmp_path / "c"), "--collection", "docs", "--engine", "ray", "--workers", "1"]
    assert cli_main(["index", str(tmp_path), *chroma, "--model", str(checkpoint), "--mode", "hybrid"]) == 2
    assert "mode 'hybrid' needs sparse (BM25) search" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() and not (tmp_path / "c").exists()
