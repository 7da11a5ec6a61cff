"""Issue 30 item 7: progress moves with tokens read, also through one long text split into windows.

A real tiny model, real tqdm bars (a subclass that records each update) and real stores; nothing mocked.
"""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest
from tqdm.auto import tqdm

import jina_rag.encoder
import jina_rag.index.core
from jina_rag.encoder import PROGRESS_MIN_TOKENS, tokenize, window_spans
from jina_rag.index import Document, DocumentIndex, open_store
from jina_rag.late_chunking import encode_late_chunks

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "telescopes collect faint light from distant galaxies while astronomers measure redshift".split()
BATCH_TOKENS = 512  # four 128-token windows a batch on the CPU's padded batches


def long_text(words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=words))


class RecordingBar(tqdm):
    """A real tqdm bar that keeps ``(n, total)`` after every update it shows; ``made`` holds every bar of a test."""

    made: list[RecordingBar] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[float, float]] = []
        RecordingBar.made.append(self)

    def update(self, n: float = 1) -> bool | None:
        shown = super().update(n)
        if not self.disable:
            self.updates.append((self.n, self.total))
        return shown


@pytest.fixture
def bars(monkeypatch) -> list[RecordingBar]:
    RecordingBar.made = []
    for module in (jina_rag.encoder, jina_rag.index.core):
        monkeypatch.setattr(module, "tqdm", RecordingBar)
    return RecordingBar.made


def tokens_read(encoder, text: str) -> int:
    """Tokens the model reads for one text: every window with its special tokens."""
    prefix, suffix = encoder.special_tokens
    [ids] = tokenize(encoder.tokenizer, [text])
    span = encoder.max_length - len(prefix) - len(suffix)
    return sum(stop - start + len(prefix) + len(suffix) for start, stop in window_spans(len(ids), span, encoder.window_overlap))


def test_one_long_text_in_windows_moves_the_bar_batch_by_batch_to_the_tokens_read(encoder, bars, capsys):
    text = long_text(5000)
    expected = tokens_read(encoder, text)
    assert expected > 12 * BATCH_TOKENS  # dozens of windows of 128 tokens
    seen: list[tuple[int, int]] = []
    vector = encoder.encode(text, batch_tokens=BATCH_TOKENS, show_progress=True, on_progress=lambda *p: seen.append(p))
    np.testing.assert_allclose(vector, encoder.encode(text, show_progress=False), atol=1e-6)  # same result

    bar, silent = bars
    assert silent.disable and not silent.updates
    assert (bar.unit, bar.desc) == ("tok", "encoding")
    moves = [n for n, total in bar.updates]
    assert len(moves) >= 10 and moves == sorted(moves)
    assert sum(n < expected for n in moves) >= 9, "the bar moved only at the end"
    assert bar.updates[-1] == (expected, expected)
    assert seen[-1] == (expected, expected) and [done for done, _ in seen] == moves
    err = capsys.readouterr().err
    assert "encoding" in err and "tok" in err


def test_no_bar_and_silent_stderr_when_progress_is_off_or_the_work_is_short(encoder, bars, capsys, monkeypatch):
    text = long_text(5000)
    encoder.encode(text, batch_tokens=BATCH_TOKENS, show_progress=False)
    encoder.encode([text, "a short one"], show_progress=None)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""
    assert all(bar.disable and bar.updates == [] for bar in bars)

    # On a terminal, the default shows a bar on long work only, judged by tokens, not by the number of texts.
    terminal = TerminalStream()
    monkeypatch.setattr(sys, "stderr", terminal)
    encoder.encode([long_text(20, seed) for seed in range(8)], show_progress=None)
    assert terminal.getvalue() == ""
    long = long_text(PROGRESS_MIN_TOKENS)  # one text of PROGRESS_MIN_TOKENS words: more tokens than that
    assert tokens_read(encoder, long) >= PROGRESS_MIN_TOKENS
    encoder.encode(long, show_progress=None)
    assert re.search(r"encoding: 100%.*tok", terminal.getvalue())


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_late_chunking_of_one_long_document_moves_by_batch_to_the_tokens_read(encoder, bars, capsys):
    text = long_text(5000, seed=1)
    spans = [(match.start(), match.end()) for match in re.finditer(r"(?:\S+ ){0,39}\S+", text)]
    seen: list[tuple[int, int]] = []
    chunks = encode_late_chunks(
        encoder, text, spans=spans, batch_tokens=BATCH_TOKENS, show_progress=True, on_progress=lambda *p: seen.append(p),
    )
    prefix, suffix = encoder.special_tokens
    expected = sum(stop - start + len(prefix) + len(suffix) for start, stop in chunks.windows)
    assert len(chunks.windows) > 20
    [bar] = bars
    assert (bar.unit, bar.desc) == ("tok", "late chunking")
    assert len(bar.updates) >= 10 and bar.updates[-1] == (expected, expected)
    assert sum(n < expected for n, _ in bar.updates) >= 9
    assert seen[-1] == (expected, expected)
    assert "late chunking" in capsys.readouterr().err

    encode_late_chunks(encoder, text, spans=spans, batch_tokens=BATCH_TOKENS, show_progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("mode", ["document", "late-chunks"])
def test_indexing_one_long_document_moves_the_token_bar_before_its_batch_is_written(encoder, bars, capsys, mode):
    docs = [Document("long.txt", long_text(3000, seed=2)), Document("short.txt", "A short note on galaxies.")]
    tokens = sum(encoder.count_tokens([d.text for d in docs]))
    long_tokens = encoder.count_tokens(docs[0].text)[0]
    at_write: list[float] = []

    def written(batch) -> None:  # the token bar's count when a batch is written
        at_write.append(next(bar for bar in bars if bar.desc == "tokens").n)

    with DocumentIndex(open_store("qdrant", ":memory:", "progress"), encoder, mode=mode, batch_tokens=BATCH_TOKENS, chunk_tokens=48) as index:
        index.index(docs[:1], show_progress=False)
        assert capsys.readouterr().err == "" and all(bar.disable and not bar.updates for bar in bars)
        index.delete(["long.txt"])
        bars.clear()
        report = index.index(docs, batch_docs=1, show_progress=True, on_batch=written)
    doc_bar = next(bar for bar in bars if bar.desc == "documents")
    token_bar = next(bar for bar in bars if bar.desc == "tokens")
    assert report.indexed == ["long.txt", "short.txt"] and report.tokens == tokens
    # The long document is the first batch (longest first): the token bar moved while it was encoded.
    before_write = [n for n, _ in token_bar.updates if n < long_tokens]
    assert len(before_write) >= 5 and before_write == sorted(before_write)
    # Written on the writer thread while the next batch encodes: by its acknowledgement the bar has
    # counted the long document and, here, the short one encoded meanwhile.
    assert at_write == [tokens, tokens]
    assert token_bar.updates[-1] == (tokens, tokens)
    assert [n for n, _ in doc_bar.updates] == [1, 2]
    err = capsys.readouterr().err
    assert "documents: 100%" in err and "tokens: 100%" in err
