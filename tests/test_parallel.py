"""Encoding and indexing over worker processes (``parallel=``): same results, order kept, clear failures."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

from jina_rag import DocumentIndex, JinaEncoder
from jina_rag.encoder import TextTooLongError
from jina_rag.errors import InvalidInputError, InvalidTypeError
from jina_rag.parallel import WorkerError, shard_bounds, worker_devices

WORDS = "kernel schedules processes while the index keeps every document whole and searchable".split()


def texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 300)))) for _ in range(count)]


@pytest.mark.parametrize("weights", [[1] * 10, [100, 1, 1, 1, 1], [5], [1, 1], [3, 9, 1, 40, 2, 2, 7]])
@pytest.mark.parametrize("shards", [1, 3, 8])
def test_shards_cover_the_items_in_order(weights, shards):
    bounds = shard_bounds(weights, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(weights)
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))
    assert len(bounds) <= max(shards, 1) + 1


def test_worker_devices():
    assert worker_devices(3, "cpu") == ["cpu", "cpu", "cpu"]
    assert worker_devices(["cuda:0", "cuda:1"], "cuda") == ["cuda:0", "cuda:1"]
    for bad, error in ((0, InvalidInputError), ([], InvalidInputError), ("cuda:0", InvalidTypeError), (True, InvalidTypeError)):
        with pytest.raises(error):
            worker_devices(bad, "cpu")


@pytest.fixture(scope="module")
def parallel_encoder(checkpoint):
    encoder = JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=128)
    yield encoder
    encoder.close()


def test_parallel_encode_gives_the_single_process_vectors_in_order(parallel_encoder):
    batch = texts(40) + [" ".join(WORDS * 40)]  # the last one is read in windows
    single = parallel_encoder.encode(batch)
    spread = parallel_encoder.encode(batch, parallel=2)
    assert spread.shape == single.shape
    np.testing.assert_allclose(spread, single, atol=2e-5)
    workers = {p.pid for p in multiprocessing.active_children()}
    assert len(workers) >= 2
    again = parallel_encoder.encode(batch[:5], parallel=2)  # the same workers, started once
    np.testing.assert_allclose(again, single[:5], atol=2e-5)
    assert workers <= {p.pid for p in multiprocessing.active_children()}


def test_worker_errors_keep_their_type(parallel_encoder):
    too_long = " ".join(WORDS * 40)
    with pytest.raises(TextTooLongError):
        parallel_encoder.encode(texts(6) + [too_long], parallel=2, long_text="error")


def test_a_killed_worker_is_a_clear_error_and_the_next_call_works(parallel_encoder):
    parallel_encoder.encode(texts(4), parallel=2)  # workers up
    batch = texts(400, seed=3)

    def kill_a_worker():
        time.sleep(0.3)
        os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    with pytest.raises(WorkerError, match="worker process died"):
        for _ in range(20):  # until the kill lands inside a call
            parallel_encoder.encode(batch, parallel=2)
    killer.join()
    np.testing.assert_allclose(parallel_encoder.encode(batch[:8], parallel=2), parallel_encoder.encode(batch[:8]), atol=2e-5)


def test_parallel_indexing_writes_what_a_single_process_writes(tmp_path, checkpoint, parallel_encoder):
    records = [{"id": f"doc-{i}", "text": text} for i, text in enumerate(texts(24, seed=5))]
    counts = {}
    for name, parallel in (("single", None), ("spread", 2)):
        with DocumentIndex.open("qdrant", str(tmp_path / name), "docs", encoder=parallel_encoder, mode="hybrid", chunk_tokens=32) as index:
            report = index.index(records, show_progress=False, parallel=parallel)
            counts[name] = (len(report.indexed), index.count())
            hits = index.search("kernel schedules processes", limit=24)  # every document: RRF ties may swap places
            counts[name + "-hits"] = sorted((round(hit.score, 4), hit.id) for hit in hits)
    assert counts["single"] == counts["spread"] == (24, 24)
    assert counts["single-hits"] == counts["spread-hits"]


def test_late_chunks_with_given_spans_in_workers(parallel_encoder):
    from jina_rag import encode_late_chunks

    documents = texts(6, seed=7)
    spans = [[(start, min(start + 200, len(text))) for start in range(0, len(text), 200)] for text in documents]
    single = encode_late_chunks(parallel_encoder, documents, spans=spans)
    spread = encode_late_chunks(parallel_encoder, documents, spans=spans, parallel=2)
    for one, other in zip(single, spread):
        assert one.spans == other.spans
        np.testing.assert_allclose(one.vectors, other.vectors, atol=2e-5)


def test_cli_parallel(tmp_path, checkpoint, capsys):
    from jina_rag.cli import main as cli_main

    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(texts(8, seed=9)):
        (folder / f"{i}.txt").write_text(text)
    model = ["--model", str(checkpoint), "--device", "cpu", "--max-length", "128", "--no-progress"]
    store = ["--store", "qdrant", "--location", str(tmp_path / "store"), "--collection", "docs"]
    assert cli_main(["index", str(folder), *store, *model, "--chunk-tokens", "32", "--parallel", "2"]) == 0
    assert "8 indexed" in capsys.readouterr().out
    assert cli_main(["embed", "one text", "another text", *model, "--parallel", "2", "-o", str(tmp_path / "a.npy")]) == 0
    assert cli_main(["embed", "one text", "another text", *model, "-o", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=2e-5)
    capsys.readouterr()
    assert cli_main(["embed", "text", *model, "--parallel", "0"]) == 2
    assert "parallel must be >= 1" in capsys.readouterr().err
    assert cli_main(["embed", "text", *model, "--parallel", "cuda:0,3"]) == 2
    assert cli_main(["index", str(folder), *store, *model, "--engine", "ray", "--parallel", "2"]) == 2
    assert "use --workers" in capsys.readouterr().err
