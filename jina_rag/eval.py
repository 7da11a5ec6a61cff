"""Retrieval evaluation: BEIR folders and NarrativeQA long-document retrieval, dense and BM25.

A run ranks every corpus document for every query by exact search (the sets are small), and is
scored with nDCG@10, Recall@10, Recall@100 and MRR@10. Dense systems take any encoder with an
``encode(texts) -> [n, dim]`` method (a :class:`~jina_rag.JinaEncoder`, or a sentence-transformers
model through :class:`SentenceTransformerEncoder`); documents are encoded whole, or cut into
chunks whose best score stands for the document (how RAG pipelines use short-context models).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jina_rag.errors import InvalidInputError

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
Run = dict[str, list[str]]  # query id -> document ids, best first
Qrels = dict[str, dict[str, int]]  # query id -> {document id: relevance}


@dataclass
class RetrievalSet:
    """Documents, queries and relevance judgements; documents are full texts (title included)."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: Qrels

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.doc_texts) or len(self.query_ids) != len(self.query_texts):
            raise InvalidInputError("ids and texts differ in length")
        if not self.doc_ids or not self.query_ids:
            raise InvalidInputError(f"{self.name}: the set has {len(self.doc_ids)} documents and {len(self.query_ids)} queries; both must be non-empty")

    def subset(self, max_queries: int, seed: int = 0) -> RetrievalSet:
        """The same corpus with at most ``max_queries`` queries, sampled reproducibly."""
        if max_queries >= len(self.query_ids):
            return self
        keep = sorted(np.random.default_rng(seed).choice(len(self.query_ids), max_queries, replace=False))
        ids = [self.query_ids[i] for i in keep]
        return RetrievalSet(self.name, self.doc_ids, self.doc_texts, ids, [self.query_texts[i] for i in keep],
                            {q: self.qrels[q] for q in ids})


def corpus_text(title: str, text: str) -> str:
    """How a BEIR document (title, text) is read: the title, a blank line, the text."""
    return f"{title}\n\n{text}" if title else text


# ---------------------------------------------------------------- loading

def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise InvalidInputError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def load_beir(folder: str | Path, split: str = "test") -> RetrievalSet:
    """A BEIR folder: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
    ``text``) and ``qrels/<split>.tsv`` (query id, corpus id, score; a header line is optional).
    Queries without judgements in the split are left out, as BEIR does."""
    folder = Path(folder)
    corpus_file, queries_file, qrels_file = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    for file in (corpus_file, queries_file, qrels_file):
        if not file.is_file():
            available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            hint = f" (qrels splits present: {', '.join(available)})" if available and file == qrels_file else ""
            raise FileNotFoundError(f"{folder} is not a BEIR folder: {file.relative_to(folder)} is missing{hint}")
    qrels: Qrels = {}
    with open(qrels_file, encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (number == 1 and not row[-1].lstrip("-").isdigit()):
                continue  # blank line or header
            if len(row) < 3:
                raise InvalidInputError(f"{qrels_file}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {row}")
            qrels.setdefault(row[0], {})[row[1]] = int(row[-1])
    doc_ids, doc_texts = [], []
    for number, row in enumerate(_read_jsonl(corpus_file), start=1):
        if "_id" not in row or "text" not in row:
            raise InvalidInputError(f"{corpus_file}:{number}: a corpus row needs '_id' and 'text'")
        doc_ids.append(str(row["_id"]))
        doc_texts.append(corpus_text(row.get("title") or "", row["text"]))
    known = set(doc_ids)
    query_ids, query_texts = [], []
    for row in _read_jsonl(queries_file):
        query_id = str(row["_id"])
        if query_id in qrels:
            query_ids.append(query_id)
            query_texts.append(row["text"])
    unknown = {d for judged in qrels.values() for d in judged} - known
    if unknown:
        raise InvalidInputError(f"{qrels_file} judges {len(unknown)} documents missing from the corpus, e.g. {sorted(unknown)[0]!r}")
    return RetrievalSet(f"{folder.name} ({split})", doc_ids, doc_texts, query_ids, query_texts,
                        {q: qrels[q] for q in query_ids})


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("p", "br", "div", "tr", "li", "pre", "h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _story_text(raw: bytes, start: str, end: str) -> str:
    """A NarrativeQA story: decoded, stripped of HTML when it is a web page, cut to ``start`` … ``end``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if re.search(r"<(html|body|pre|p|br)\b", text[:5000], re.I):
        parser = _TextOfHtml()
        parser.feed(text)
        text = html.unescape("".join(parser.parts))
    begin = text.find(start) if start else -1
    if begin >= 0:
        text = text[begin:]
    finish = text.rfind(end) if end else -1
    if finish >= 0:
        text = text[: finish + len(end)]
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()


def load_narrativeqa(folder: str | Path, split: str = "test", stories_dir: str | Path | None = None) -> RetrievalSet:
    """NarrativeQA as whole-story retrieval: each question's one relevant document is its story.

    ``folder`` holds the official ``documents.csv`` and ``qaps.csv``; the stories are the
    ``<document_id>.content`` files that the official ``download_stories.sh`` writes to ``tmp/``
    (or ``stories_dir``). Stories that are missing are skipped with a warning (their downloads
    often fail); questions about them are skipped too.
    """
    folder = Path(folder)
    for name in ("documents.csv", "qaps.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a NarrativeQA folder: {name} is missing")
    if stories_dir is None:
        stories_dir = next((folder / d for d in ("tmp", "stories") if (folder / d).is_dir()), folder / "tmp")
    stories_dir = Path(stories_dir)
    with open(folder / "documents.csv", encoding="utf-8", newline="") as f:
        documents = [row for row in csv.DictReader(f) if row["set"] == split]
    if not documents:
        raise InvalidInputError(f"{folder}/documents.csv has no documents in split {split!r} (splits are train, valid, test)")
    doc_ids, doc_texts, missing = [], [], []
    for row in documents:
        story = stories_dir / f"{row['document_id']}.content"
        if not story.is_file():
            missing.append(row["document_id"])
            continue
        text = _story_text(story.read_bytes(), row.get("story_start", ""), row.get("story_end", ""))
        if text:
            doc_ids.append(row["document_id"])
            doc_texts.append(text)
    if missing:
        logger.warning("%d of %d %s stories have no file in %s; their questions are skipped", len(missing), len(documents), split, stories_dir)
    if not doc_ids:
        raise FileNotFoundError(
            f"no story of split {split!r} found in {stories_dir}: run the official download_stories.sh "
            f"(it writes tmp/<document_id>.content) or pass the folder holding the .content files"
        )
    known = set(doc_ids)
    query_ids, query_texts, qrels = [], [], {}
    with open(folder / "qaps.csv", encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.DictReader(f)):
            if row["set"] == split and row["document_id"] in known:
                query_id = f"{row['document_id']}:{number}"
                query_ids.append(query_id)
                query_texts.append(row["question"])
                qrels[query_id] = {row["document_id"]: 1}
    return RetrievalSet(f"NarrativeQA {folder.name} ({split})", doc_ids, doc_texts, query_ids, query_texts, qrels)


def load_dataset(path: str | Path, split: str = "test", stories_dir: str | Path | None = None) -> RetrievalSet:
    """A BEIR or NarrativeQA folder, told apart by the files in it."""
    path = Path(path)
    if (path / "documents.csv").is_file() and (path / "qaps.csv").is_file():
        return load_narrativeqa(path, split, stories_dir)
    if (path / "corpus.jsonl").is_file():
        return load_beir(path, split)
    raise FileNotFoundError(f"{path}: neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) nor a NarrativeQA folder (documents.csv, qaps.csv)")


# ---------------------------------------------------------------- metrics

def ndcg_at_k(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """nDCG@k with gains equal to the judged relevance and log2(rank + 1) discounts (trec_eval's)."""
    dcg = sum(relevant.get(d, 0) / math.log2(rank + 2) for rank, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return next((1.0 / (rank + 1) for rank, d in enumerate(ranked[:k]) if relevant.get(d, 0) > 0), 0.0)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired per-query scores and its 95% bootstrap interval ``(mean, low, high)``.

    Queries are resampled with replacement, the same draw for both systems, so the interval says
    how far the difference of two systems on one set could move with another draw of its queries.
    """
    if len(a) != len(b) or not len(a):
        raise InvalidInputError(f"paired_bootstrap needs two equal-length, non-empty score lists, got {len(a)} and {len(b)}")
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # Blocks of 1,000 resamples keep memory at 1,000 x queries indices however many resamples.
    means = np.concatenate([
        differences[rng.integers(0, differences.size, size=(min(1000, resamples - start), differences.size))].mean(axis=1)
        for start in range(0, resamples, 1000)
    ])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)


def score_run(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100 and MRR@10 over the judged queries with a relevant document."""
    judged = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not judged:
        raise InvalidInputError("no query has a relevant document")
    per_query = {
        "ndcg@10": [ndcg_at_k(run.get(q, []), qrels[q], 10) for q in judged],
        "recall@10": [recall_at_k(run.get(q, []), qrels[q], 10) for q in judged],
        "recall@100": [recall_at_k(run.get(q, []), qrels[q], 100) for q in judged],
        "mrr@10": [mrr_at_k(run.get(q, []), qrels[q], 10) for q in judged],
    }
    return {name: float(np.mean(values)) for name, values in per_query.items()}


# ---------------------------------------------------------------- systems

class TextEncoder(Protocol):
    """What a dense system needs: unit vectors for texts, and the tokenizer (for chunking)."""

    tokenizer: Any

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """A sentence-transformers model (a local folder works offline) with a chosen ``max_length``."""

    def __init__(self, model: str | Path, *, max_length: int | None = None, device: str | None = None, batch_size: int = 32) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError("comparing with a sentence-transformers model needs `pip install sentence-transformers`") from None
        self.model = SentenceTransformer(str(model), device=device)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.max_length = self.model.max_seq_length
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        return self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=bool(show_progress),
        ).astype(np.float32)


def chunk_texts(texts: Sequence[str], tokenizer: Any, max_tokens: int = 256) -> tuple[list[str], np.ndarray]:
    """Cut each text into consecutive chunks of at most ``max_tokens`` tokens, special tokens included.

    Returns the chunks and, for each, the index of its text; chunks are substrings of the text,
    cut at token boundaries.
    """
    span = max_tokens - tokenizer.num_special_tokens_to_add(pair=False)
    if span < 1:
        raise InvalidInputError(f"chunks of {max_tokens} tokens leave no room for text")
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    chunks, owners = [], []
    for index, (text, offsets) in enumerate(zip(texts, encoded["offset_mapping"])):
        if not offsets:
            chunks.append(text)
            owners.append(index)
        for start in range(0, len(offsets), span):
            piece = offsets[start: start + span]
            chunks.append(text[piece[0][0]: piece[-1][1]])
            owners.append(index)
    return chunks, np.asarray(owners)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first (exact search)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass
class DenseRetriever:
    """Exact dense search with one encoder; ``chunk_tokens`` set means documents are scored by their best chunk."""

    name: str
    encoder: TextEncoder
    chunk_tokens: int | None = None

    def search(self, data: RetrievalSet, k: int, show_progress: bool = False) -> Run:
        queries = self.encoder.encode(data.query_texts, show_progress=show_progress)
        if self.chunk_tokens:
            chunks, owners = chunk_texts(data.doc_texts, self.encoder.tokenizer, self.chunk_tokens)
            chunk_vectors = self.encoder.encode(chunks, show_progress=show_progress)
            # Chunks of one document are contiguous: the document's score is the max over its run.
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
            scores = np.maximum.reduceat(queries @ chunk_vectors.T, starts, axis=1)
        else:
            scores = queries @ self.encoder.encode(data.doc_texts, show_progress=show_progress).T
        best = top_k(scores, k)
        return {q: [data.doc_ids[i] for i in row] for q, row in zip(data.query_ids, best)}


@dataclass
class BM25Retriever:
    """BM25 (``bm25s``, Lucene's variant) over lower-cased words, English stop words removed, Snowball-stemmed."""

    name: str = "BM25"
    k1: float = 1.5
    b: float = 0.75

    def search(self, data: RetrievalSet, k: int, show_progress: bool = False) -> Run:
        try:
            import bm25s
        except ImportError:
            raise ImportError("the BM25 baseline needs `pip install bm25s` (or jina-rag[eval])") from None
        try:
            import Stemmer

            stemmer = Stemmer.Stemmer("english").stemWords
        except ImportError:
            logger.warning("PyStemmer is not installed: BM25 runs without stemming (pip install PyStemmer)")
            stemmer = None
        tokenize = lambda texts: bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=show_progress)  # noqa: E731
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(tokenize(data.doc_texts), show_progress=show_progress)
        indices, _ = retriever.retrieve(tokenize(data.query_texts), k=min(k, len(data.doc_ids)), show_progress=show_progress)
        return {q: [data.doc_ids[i] for i in row] for q, row in zip(data.query_ids, indices)}


class Retriever(Protocol):
    name: str

    def search(self, data: RetrievalSet, k: int, show_progress: bool = False) -> Run: ...


@dataclass
class IndexRetriever:
    """A :class:`~jina_rag.index.DocumentIndex` searched in one mode (and fusion): the user path.

    The index must already hold the set's documents under their ids.
    """

    name: str
    index: Any  # DocumentIndex
    mode: str
    fusion: Any = None  # Fusion; None: the index's

    def search(self, data: RetrievalSet, k: int, show_progress: bool = False) -> Run:
        queries = self.index.prepare_queries(data.query_texts, mode="hybrid")  # BM25 too: any mode can use them
        return {q: [hit.id for hit in self.index.search(query, limit=k, mode=self.mode, fusion=self.fusion)]
                for q, query in zip(data.query_ids, queries)}


def hybrid_retrievers(index: Any) -> list[IndexRetriever]:
    """Every way to search a hybrid index: BM25 alone, the dense modes, hybrid (the index's fusion)
    and hybrid with each representation left out or, where the fusion leaves it out, added."""
    from jina_rag.index.store import REPRESENTATIONS, SPARSE_VECTOR

    fusion = index.fusion
    used = dict(fusion.used())
    names = {"document": "the whole-document vector", "passages": "late chunks", "bm25": "BM25"}
    retrievers = [
        IndexRetriever("BM25 alone (the index's sparse vectors, IDF in the store)", index, "hybrid", dataclasses.replace(fusion, weights={SPARSE_VECTOR: 1.0})),
        IndexRetriever("dense whole document", index, "document"),
        IndexRetriever("late chunks", index, "late-chunks"),
        IndexRetriever("late chunks or whole (mode both)", index, "both"),
    ]
    for name in REPRESENTATIONS:
        if name in used and len(used) > 1:
            weights, label = {n: w for n, w in used.items() if n != name}, f"hybrid without {names[name]}"
        elif name not in used:
            weights, label = {**used, name: 1.0}, f"hybrid with {names[name]} too"
        else:
            continue
        retrievers.append(IndexRetriever(label, index, "hybrid", dataclasses.replace(fusion, weights=weights)))
    return [*retrievers, IndexRetriever("hybrid", index, "hybrid")]


@dataclass
class PassageRetriever:
    """Naive chunking: late chunking's passages (the same splitter), each encoded alone; a document
    scores as its best passage (exact search)."""

    name: str
    encoder: Any  # JinaEncoder
    chunk_tokens: int

    def search(self, data: RetrievalSet, k: int, show_progress: bool = False) -> Run:
        from jina_rag.late_chunking import default_splitter, split_spans

        counts = self.encoder.count_tokens(data.doc_texts)
        spans = [split_spans(text, default_splitter(n, len(text), self.chunk_tokens)) for text, n in zip(data.doc_texts, counts)]
        passages = [text[start:end] for text, doc_spans in zip(data.doc_texts, spans) for start, end in doc_spans]
        vectors = self.encoder.encode(passages, show_progress=show_progress)
        queries = self.encoder.encode(data.query_texts, show_progress=False)
        starts = np.cumsum([0, *[len(doc_spans) for doc_spans in spans[:-1]]])
        scores = np.maximum.reduceat(queries @ vectors.T, starts, axis=1)
        return {q: [data.doc_ids[i] for i in row] for q, row in zip(data.query_ids, top_k(scores, k))}


@dataclass
class Result:
    system: str
    dataset: str
    metrics: dict[str, float]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(data: RetrievalSet, retriever: Retriever, *, k: int = 100, show_progress: bool = False) -> Result:
    """Rank the corpus for every query and score the run."""
    started = time.perf_counter()
    run = retriever.search(data, k, show_progress=show_progress)
    seconds = time.perf_counter() - started
    result = Result(retriever.name, data.name, score_run(run, data.qrels), seconds)
    logger.info("%s on %s: %s (%.1f s)", retriever.name, data.name,
                ", ".join(f"{m} {v:.4f}" for m, v in result.metrics.items()), seconds)
    return result


def jina_retrievers(
    model: str | Path | None, max_lengths: Sequence[int], make_encoder: Callable[[int], TextEncoder] | None = None,
    **encoder_kwargs: Any,
) -> list[DenseRetriever]:
    """Our model read whole up to each ``max_length`` (the rest cut off, as in the paper's curve)."""
    if make_encoder is None:
        from jina_rag.encoder import JinaEncoder

        def make_encoder(max_length: int) -> TextEncoder:
            return JinaEncoder.from_pretrained(model, max_length=max_length, **{"long_text": "truncate", **encoder_kwargs})
    return [DenseRetriever(f"jina max_length={m}", make_encoder(m)) for m in max_lengths]


def comparison_retrievers(
    model: str | Path, max_lengths: Sequence[int | None] = (None, 512), chunk_tokens: int | None = 256,
    device: str | None = None, name: str | None = None,
) -> list[DenseRetriever]:
    """A sentence-transformers model read whole at each ``max_length`` (None: its own default), and
    chunked: chunks of ``chunk_tokens`` tokens, the best chunk scoring the document."""
    name = name or Path(model).name or str(model)
    retrievers = []
    for length in max_lengths:
        encoder = SentenceTransformerEncoder(model, max_length=length, device=device)
        retrievers.append(DenseRetriever(f"{name} max_length={encoder.max_length}", encoder))
    if chunk_tokens:
        encoder = SentenceTransformerEncoder(model, max_length=chunk_tokens, device=device)
        retrievers.append(DenseRetriever(f"{name} chunked ({chunk_tokens}-token chunks)", encoder, chunk_tokens))
    return retrievers


def format_table(results: Sequence[Result], metrics: Sequence[str] = METRICS) -> str:
    """A Markdown table: one row per system and data set."""
    lines = ["| data set | system | " + " | ".join(metrics) + " | seconds |",
             "|---|---|" + "---:|" * (len(metrics) + 1)]
    for r in results:
        lines.append(f"| {r.dataset} | {r.system} | " + " | ".join(f"{r.metrics[m]:.4f}" for m in metrics) + f" | {r.seconds:.1f} |")
    return "\n".join(lines)


def write_results(results: Sequence[Result], path: str | Path) -> None:
    rows = [{"system": r.system, "dataset": r.dataset, "metrics": r.metrics, "seconds": r.seconds, **r.extra} for r in results]
    Path(path).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
