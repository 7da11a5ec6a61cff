"""Late chunking: one forward pass over a whole document, then one vector per passage.

Each passage vector is the mean of the document's token states over the passage's tokens, so it
is conditioned on everything around it (Günther et al., "Late Chunking", 2024). Data flows one way:
text → fast tokenizer with character offsets → passage character spans (given, or from a splitter)
→ token spans → windows of at most ``max_length`` tokens (one for most documents) → token states
→ span means. A document longer than one window is read in overlapping windows; each passage takes
its vector from the window where it sits most centrally, and the whole-document vector is the
token-weighted mean of the windows' means, as :meth:`JinaEncoder.encode` computes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload, runtime_checkable

import numpy as np
import torch

from jina_rag.batching import plan_batches
from jina_rag.encoder import (
    DEFAULT_BATCH_TOKENS,
    TOKENIZE_CHUNK_TEXTS,
    JinaEncoder,
    ProgressCallback,
    TokenProgress,
    TokensRead,
    _check_texts,
    check_finite,
    warn_unknown_words,
    window_spans,
)
from jina_rag.errors import InvalidInputError, InvalidTypeError
from jina_rag.parallel import Parallel, check_parallel


Span = tuple[int, int]
SpanFunction = Callable[[str], Sequence[Span]]
DEFAULT_CHUNK_TOKENS = 256
# Paragraphs, lines, sentence ends, words, characters: the default splitter's cuts, best first.
SEPARATORS = ["\n\n", "\n", r"(?<=[.!?])\s+", " ", ""]


@runtime_checkable
class TextSplitter(Protocol):
    """What is used of a LangChain ``TextSplitter`` (``langchain_text_splitters``)."""

    def create_documents(self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None) -> list[Any]: ...


Splitter = TextSplitter | SpanFunction


@dataclass(frozen=True, eq=False)
class LateChunks:
    """One document's late-chunked vectors.

    ``spans[i]`` is passage ``i``'s character range in ``text`` and ``vectors[i]`` its vector;
    ``token_spans`` are the same passages in document tokens (special tokens not counted),
    ``windows`` the token ranges the model read, and ``passage_windows[i]`` the window that gave
    passage ``i`` its vector.
    """

    text: str
    spans: tuple[Span, ...]
    vectors: np.ndarray
    document_vector: np.ndarray
    token_spans: tuple[Span, ...]
    windows: tuple[Span, ...]
    passage_windows: tuple[int, ...]

    @property
    def passages(self) -> list[str]:
        """The text of each passage: ``text[start:end]`` of its span."""
        return [self.text[start:end] for start, end in self.spans]


def default_splitter(tokens: int, characters: int, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> TextSplitter:
    """LangChain's recursive splitter for passages of about ``chunk_tokens`` tokens, cut at paragraphs, then
    lines, sentences and words.

    Lengths are measured in characters, scaled by the document's own characters per token: exact
    token counting calls the tokenizer on every piece the splitter tries, which costs more than
    encoding the document on a GPU.
    """
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError as error:  # an optional extra
        raise ImportError(
            "splitting documents into passages needs langchain-text-splitters: pip install 'jina-rag[langchain]', "
            "or pass spans= (character ranges) or splitter= (a function text -> spans)"
        ) from error
    chunk_size = max(1, round(chunk_tokens * characters / max(tokens, 1)))
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=0, add_start_index=True, separators=SEPARATORS, is_separator_regex=True
    )


def split_spans(text: str, splitter: Splitter) -> list[Span]:
    """Character spans of the passages a splitter makes of ``text``.

    A LangChain splitter must be built with ``add_start_index=True``, so each chunk's position is
    the one LangChain found, overlaps included; any other splitter is a function returning spans.
    """
    if isinstance(splitter, TextSplitter):
        spans = []
        for chunk in splitter.create_documents([text]):
            start = chunk.metadata.get("start_index")
            if start is None:
                raise InvalidInputError("build the LangChain splitter with add_start_index=True, so passages map to character spans")
            if start < 0 or text[start : start + len(chunk.page_content)] != chunk.page_content:
                raise InvalidInputError("the splitter changed the text of a passage: passages must be verbatim parts of the document")
            spans.append((start, start + len(chunk.page_content)))
        return spans
    return [(int(start), int(end)) for start, end in splitter(text)]


@overload
def encode_late_chunks(
    encoder: JinaEncoder, documents: str, *, spans: Sequence[Span] | None = None, splitter: Splitter | None = None,
    chunk_tokens: int = ..., batch_tokens: int = ..., normalize: bool = ..., show_progress: bool | None = ...,
    on_progress: ProgressCallback | None = ..., parallel: Parallel = ...,
) -> LateChunks: ...


@overload
def encode_late_chunks(
    encoder: JinaEncoder, documents: Sequence[str], *, spans: Sequence[Sequence[Span]] | None = None,
    splitter: Splitter | None = None, chunk_tokens: int = ..., batch_tokens: int = ..., normalize: bool = ...,
    show_progress: bool | None = ..., on_progress: ProgressCallback | None = ..., parallel: Parallel = ...,
) -> list[LateChunks]: ...


def encode_late_chunks(
    encoder: JinaEncoder,
    documents: str | Sequence[str],
    *,
    spans: Sequence[Span] | Sequence[Sequence[Span]] | None = None,
    splitter: Splitter | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    normalize: bool = True,
    show_progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    parallel: Parallel = None,
) -> LateChunks | list[LateChunks]:
    """Passage vectors conditioned on their whole document, the passages' spans, and the document vector.

    Passages come from ``spans`` (character ranges per document: a list of ``(start, end)`` for a
    single string, a list of such lists for several), else from ``splitter`` (a LangChain
    ``TextSplitter`` built with ``add_start_index=True``, or a function ``text -> spans``), else
    from LangChain's recursive splitter with passages of about ``chunk_tokens`` tokens. A passage
    covers every token that overlaps its span. Documents longer than the encoder's ``max_length``
    are read in overlapping windows whatever its ``long_text`` policy, so every passage gets a vector.
    Returns one :class:`LateChunks` per document (a single one for a single string).

    Progress is counted in tokens read (every window, special tokens included), as
    :meth:`JinaEncoder.encode` counts it: ``show_progress=None`` shows a bar on long work when stderr
    is a terminal, ``on_progress(done, total)`` is called after each batch.

    ``parallel=N`` (or a list of devices) spreads the documents over worker processes, as in
    :meth:`JinaEncoder.encode`; a ``splitter`` must then be picklable.
    """
    if spans is not None and splitter is not None:
        raise InvalidInputError("pass spans= or splitter=, not both")
    if chunk_tokens < 1:
        raise InvalidInputError(f"chunk_tokens must be positive, got {chunk_tokens}")
    check_parallel(parallel)
    single = isinstance(documents, str)
    texts = [documents] if single else list(documents)
    _check_texts(texts)
    if spans is not None:
        spans = [spans] if single else list(spans)
        if len(spans) != len(texts):
            raise InvalidInputError(f"spans has {len(spans)} entries for {len(texts)} documents: give one list of spans per document")
    backend = encoder.backend
    if not hasattr(backend, "token_states"):
        raise InvalidTypeError(f"late chunking needs token states, which the {type(backend).__name__} does not give: use the PyTorch backend")
    if not encoder.tokenizer.is_fast:
        raise InvalidTypeError("late chunking maps characters to tokens with a fast (Rust) tokenizer's offsets; this tokenizer is not one")
    options = {"splitter": splitter, "chunk_tokens": chunk_tokens, "batch_tokens": batch_tokens, "normalize": normalize}
    if parallel is not None and len(texts) > 1:
        items = list(zip(texts, spans if spans is not None else [None] * len(texts)))
        results = encoder.map_parallel(
            _late_chunks_shard, items, parallel, weights=[len(text) for text in texts], show_progress=show_progress,
            on_progress=on_progress, desc="late chunking", **options,
        )
    else:
        progress = TokenProgress(show_progress, "late chunking", on_progress)
        try:
            results = _late_chunks(encoder, texts, spans, 0, progress, **options)
        finally:
            progress.close()
    return results[0] if single else results


def _late_chunks(
    encoder: JinaEncoder, texts: list[str], spans: list[Sequence[Span]] | None, first_index: int, progress: TokenProgress,
    *, splitter: Splitter | None, chunk_tokens: int, batch_tokens: int, normalize: bool,
) -> list[LateChunks]:
    results: list[LateChunks] = []
    for first in range(0, len(texts), TOKENIZE_CHUNK_TEXTS):
        chunk = texts[first : first + TOKENIZE_CHUNK_TEXTS]
        chunk_spans = spans[first : first + TOKENIZE_CHUNK_TEXTS] if spans is not None else None
        results.extend(_encode_chunk(
            encoder, chunk, first_index + first, chunk_spans, splitter, chunk_tokens, batch_tokens, normalize, progress,
            len(texts),
        ))
    return results


def _late_chunks_shard(
    encoder: JinaEncoder, items: list[tuple[str, Sequence[Span] | None]], first_index: int, **options: Any,
) -> tuple[list[LateChunks], int]:
    texts = [text for text, _ in items]
    spans = [spans for _, spans in items] if items[0][1] is not None else None
    read = TokensRead()
    progress = TokenProgress(False, "late chunking", read)
    return _late_chunks(encoder, texts, spans, first_index, progress, **options), read.done


@dataclass
class _Plan:
    """One document's passages in tokens and the windows that read them."""

    text: str
    spans: list[Span]
    token_spans: np.ndarray  # [passages, 2], document tokens
    windows: list[Span]
    passage_windows: np.ndarray  # [passages]
    first_sequence: int  # window w is sequence first_sequence + w


def _encode_chunk(
    encoder: JinaEncoder,
    texts: list[str],
    first_index: int,
    spans: list[Sequence[Span]] | None,
    splitter: Splitter | None,
    chunk_tokens: int,
    batch_tokens: int,
    normalize: bool,
    progress: TokenProgress | None = None,
    documents: int = 0,
) -> list[LateChunks]:
    """Late chunks of ``texts`` (documents ``first_index`` on, of ``documents`` in all: the progress estimate)."""
    prefix, suffix = encoder.special_tokens
    width = encoder.max_length - len(prefix) - len(suffix)
    warn_unknown_words(encoder.tokenizer, texts, first_index, "documents")
    encoded = encoder.tokenizer(
        texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
        return_token_type_ids=False, verbose=False,
    )
    plans: list[_Plan] = []
    sequences: list[list[int]] = []  # one per window
    segments: list[list[Span]] = []  # per sequence: [start, stop) rows to average
    for number, (text, ids, offsets) in enumerate(zip(texts, encoded["input_ids"], encoded["offset_mapping"])):
        index = first_index + number
        if spans is not None:
            char_spans = [(int(start), int(end)) for start, end in spans[number]]
        else:
            char_spans = split_spans(text, splitter or default_splitter(len(ids), len(text), chunk_tokens))
        token_spans = passage_token_spans(text, char_spans, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), index)
        longest = int((token_spans[:, 1] - token_spans[:, 0]).max())
        if longest > width:
            raise InvalidInputError(
                f"documents[{index}] has a passage of {longest} tokens, more than one window of max_length="
                f"{encoder.max_length} holds ({width} without special tokens): use shorter passages"
            )
        # Overlap enough that every passage fits whole inside some window.
        overlap = min(width - 1, max(encoder.window_overlap, longest - 1))
        windows = window_spans(len(ids), width, overlap)
        plan = _Plan(text, char_spans, token_spans, windows, _central_windows(token_spans, windows), len(sequences))
        plans.append(plan)
        for start, stop in windows:
            sequences.append(prefix + ids[start:stop] + suffix)
            segments.append([(0, len(sequences[-1]))])  # the whole window: its share of the document vector
        for (start, stop), window in zip(token_spans.tolist(), plan.passage_windows.tolist()):
            offset = len(prefix) - windows[window][0]
            segments[plan.first_sequence + window].append((start + offset, stop + offset))

    if progress is not None:
        tokens = sum(map(len, sequences))
        progress.add_total(tokens, expected=tokens * max(documents, len(texts)) / len(texts))
    means = _segment_means(encoder, sequences, segments, batch_tokens, progress)
    results = []
    for plan in plans:
        owned = range(plan.first_sequence, plan.first_sequence + len(plan.windows))
        weights = np.array([len(sequences[number]) for number in owned], dtype=np.float32)
        document_vector = (np.stack([means[number][0] for number in owned]) * weights[:, None]).sum(0) / weights.sum()
        # Passages were appended to their window's segments in order, after the whole-window one.
        taken = {number: 1 for number in owned}
        vectors = []
        for window in plan.passage_windows.tolist():
            sequence = plan.first_sequence + window
            vectors.append(means[sequence][taken[sequence]])
            taken[sequence] += 1
        vectors = np.stack(vectors)
        if normalize:
            document_vector = document_vector / max(float(np.linalg.norm(document_vector)), 1e-12)
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        results.append(LateChunks(
            plan.text, tuple(plan.spans), vectors.astype(np.float32), document_vector.astype(np.float32),
            tuple(map(tuple, plan.token_spans.tolist())), tuple(plan.windows), tuple(plan.passage_windows.tolist()),
        ))
    finite = [np.isfinite(r.document_vector).all() and np.isfinite(r.vectors).all() for r in results]
    check_finite(np.array(finite, dtype=bool), "documents", first_index)
    return results


def passage_token_spans(text: str, spans: Sequence[Span], offsets: np.ndarray, index: int = 0) -> np.ndarray:
    """Token ranges ``[first, stop)`` of the tokens overlapping each character span."""
    if not spans:
        raise InvalidInputError(f"documents[{index}] has no passages: give at least one span")
    for number, (start, end) in enumerate(spans):
        if not 0 <= start < end <= len(text):
            raise InvalidInputError(
                f"documents[{index}] span {number} ({start}, {end}) is not a non-empty range within its "
                f"{len(text)} characters"
            )
        if not text[start:end].strip():
            raise InvalidInputError(f"documents[{index}] span {number} ({start}, {end}) is whitespace only: drop it")
    bounds = np.array(spans, dtype=np.int64)
    # Offsets grow with the token index: the first token ending after the span starts, up to the
    # last token starting before it ends.
    first = np.searchsorted(offsets[:, 1], bounds[:, 0], side="right")
    stop = np.searchsorted(offsets[:, 0], bounds[:, 1], side="left")
    empty = np.flatnonzero(stop <= first)
    if empty.size:
        start, end = spans[empty[0]]
        raise InvalidInputError(f"documents[{index}] span {int(empty[0])} ({start}, {end}) covers no token: {text[start:end]!r}")
    return np.stack([first, stop], axis=1)


def _central_windows(token_spans: np.ndarray, windows: list[Span]) -> np.ndarray:
    """For each passage, the window holding it whole with the most context on its tighter side."""
    bounds = np.array(windows, dtype=np.int64)
    before = token_spans[:, :1] - bounds[None, :, 0]
    after = bounds[None, :, 1] - token_spans[:, 1:]
    margin = np.where((before >= 0) & (after >= 0), np.minimum(before, after), -1)
    return margin.argmax(axis=1)


def _segment_means(
    encoder: JinaEncoder, sequences: list[list[int]], segments: list[list[Span]], batch_tokens: int,
    progress: TokenProgress | None = None,
) -> list[np.ndarray]:
    """Mean token state over each ``[start, stop)`` of each sequence: ``[segments, H]`` per sequence."""
    backend = encoder.backend
    means: list[np.ndarray | None] = [None] * len(sequences)
    lengths = [len(sequence) for sequence in sequences]
    for batch in plan_batches(lengths, batch_tokens, packed=backend.packed):
        hidden, starts = backend.token_states([sequences[i] for i in batch])
        rows = [(starts[slot] + start, starts[slot] + stop) for slot, i in enumerate(batch) for start, stop in segments[i]]
        bounds = torch.tensor(rows, dtype=torch.int64, device=hidden.device)
        # A NaN or Inf token state stays in its own spans: in the prefix sums it would spoil every later
        # sequence of the batch, and the error would name an innocent document.
        finite = torch.isfinite(hidden).all(dim=1)
        hidden = torch.where(finite[:, None], hidden, 0)
        non_finite = torch.nn.functional.pad((~finite).cumsum(0), (1, 0))
        # Float64 prefix sums keep span means exact to float32 precision over 8192 tokens.
        sums = torch.nn.functional.pad(hidden.to(torch.float64).cumsum(0), (0, 0, 1, 0))
        pooled = (sums[bounds[:, 1]] - sums[bounds[:, 0]]) / (bounds[:, 1:] - bounds[:, :1])
        pooled[non_finite[bounds[:, 1]] > non_finite[bounds[:, 0]]] = float("nan")
        pooled = pooled.float().cpu().numpy()  # waits for the device: the batch is done
        if progress is not None:
            progress.add_done(sum(lengths[i] for i in batch))
        cursor = 0
        for i in batch:
            means[i] = pooled[cursor : cursor + len(segments[i])]
            cursor += len(segments[i])
    return means  # type: ignore[return-value]
